"""Internal: the async store's background purge, an asyncio task deleting expired rows on a connection
of its own (on an app's pool, one borrowed per batch), never one a request waits for."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any, Protocol

import psycopg

from ..defaults import DEFAULT_PURGE_BATCH_SIZE
from ..errors import SessionError
from .connections import first_line

__all__ = ["AsyncPurgeTask"]

log = logging.getLogger("pgsession_wsgi")

#: The purge task's name, for ``asyncio.all_tasks()``.
TASK_NAME = "pgsession-purge"


class Purgeable(Protocol):
    """What the task needs of a store."""

    @property
    def qualified_name(self) -> str: ...
    @property
    def borrows_connections(self) -> bool: ...
    async def purge_batch_by_batch(self, batch_size: int = ...) -> int: ...
    async def connect_unpooled(self) -> psycopg.AsyncConnection[Any]: ...
    async def purge_on(self, conn: psycopg.AsyncConnection[Any], batch_size: int) -> int: ...


class AsyncPurgeTask:
    """Purges ``store`` every ``interval`` seconds (the first after one interval) until :meth:`stop`.

    It holds the store weakly, so a store dropped without ``close()`` still stops it.
    """

    def __init__(self, store: Purgeable, interval: float) -> None:
        self._store = weakref.ref(store)
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the task in the running event loop (the one the store serves)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=TASK_NAME)

    async def stop(self) -> None:
        """Cancel the task and wait until its connection is closed."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        failing = False
        try:
            while True:
                await asyncio.sleep(self._interval)
                store = self._store()
                if store is None:
                    return
                try:
                    if store.borrows_connections:
                        removed = await store.purge_batch_by_batch(DEFAULT_PURGE_BATCH_SIZE)
                    else:
                        if conn is None or conn.closed:
                            conn = await store.connect_unpooled()
                        removed = await store.purge_on(conn, DEFAULT_PURGE_BATCH_SIZE)
                    if removed:
                        log.info("purged %d expired sessions from %s", removed, store.qualified_name)
                    failing = False
                except (SessionError, psycopg.Error) as exc:
                    if conn is not None and isinstance(exc, psycopg.Error):
                        await conn.close()
                    if not failing:
                        log.warning("purging expired sessions failed, will retry: %s", first_line(exc))
                    failing = True
                del store
        finally:
            if conn is not None and not conn.closed:
                await conn.close()
