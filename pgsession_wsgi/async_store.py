"""``AsyncPostgresStore``: the async twin of :class:`~pgsession_wsgi.store.PostgresStore` on psycopg 3.

It runs the same steps as the sync store (:mod:`pgsession_wsgi.store_steps`: the same statements,
answers, retries and errors), so an async front end saves with::

    headers = await run_async(core.save(session), store.execute)

The store is asyncio-only and lives in one event loop: the one that opens it, explicitly or at
its first use.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from types import TracebackType
from typing import Any

from .errors import MissingExtraError

try:
    import psycopg  # noqa: F401 - the [asgi] extra, checked here: the message names this module
    import psycopg_pool  # noqa: F401
except ModuleNotFoundError as missing:
    raise (MissingExtraError.of(missing, __name__) or missing) from None

from ._drivers.psycopg_driver import PsycopgConnections
from ._store.base import StoreMethods, awaiting
from .core import Operation

__all__ = ["AsyncPostgresStore"]


class AsyncPostgresStore(PsycopgConnections):
    """Sessions in one PostgreSQL table, keyed by the SHA-256 of their id, for asyncio apps.

    The parameters are :class:`~pgsession_wsgi.store.PostgresStore`'s, with the same meaning.
    The pool and the table (``create_table``) are made when the store opens, at :meth:`open` or
    its first statement, and the purge (``purge_interval``) is a task of the loop that opened it.
    """

    _store_class = "AsyncPostgresStore"

    async def open(self) -> None:
        """Open the pool, create the table (if ``create_table``) and start the purge task.

        Safe to call again, and from many requests at once; not needed before :meth:`execute`,
        but finds a wrong DSN at startup. After :meth:`close` it opens the store again (a lifespan
        may run more than once in a process: each ``with TestClient(app):``).

        :raises StoreUnavailable: the database cannot be reached.
        :raises LegacyTableError: the table still has flask-pg-session's layout.
        :raises ConfigurationError: the table exists and is not a pgsession-wsgi table.
        """
        if self._closed:
            self._reopen()
        await self._ensure_ready()

    async def close(self) -> None:
        """Stop the purge task and close every connection (a pool of the app's stays open).

        Until :meth:`open` is called again, any use raises :class:`StoreUnavailable`.
        """
        self._closed = True
        setup = self._setup
        if setup is not None and not setup.done():
            setup.cancel()  # a first-use setup still running: it must not outlive the pool
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await setup
        if self._purger is not None:
            await self._purger.stop()
        if self._pool is not None:
            await self._pool.close()

    async def __aenter__(self) -> AsyncPostgresStore:
        await self.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def create_table(self, *, convert: bool = False) -> None:
        """Create schema, table and indexes if missing; safe when many processes start at once.

        As :meth:`PostgresStore.create_table <pgsession_wsgi.store.PostgresStore.create_table>`.

        :param convert: make an existing table unlogged or logged as ``unlogged`` says (a
            rewrite) instead of refusing it.
        :raises LegacyTableError: the table still has flask-pg-session's layout.
        :raises ConfigurationError: the table exists and is not a pgsession-wsgi table, or
            (without ``convert``) its persistence differs from ``unlogged``.
        """
        await self._do(self._steps.table.creating(convert=convert), pool=await self._open_pool())

    async def execute(self, operation: Operation) -> Any:
        """Run one statement the core asked for (see :mod:`pgsession_wsgi.core`), answer it.

        :param operation: a :class:`Load`, :class:`Insert`, :class:`Write`, :class:`Touch` or
            :class:`Delete`; answered with a :class:`LoadedRow` or None, None,
            a :class:`WriteResult`, and True/False (the row was there) respectively.
        :raises SessionTooLarge: an insert or write over its ``max_size`` (nothing written).
        :raises StoreUnavailable: the database cannot be reached in time.
        """
        steps, retry = self._steps.plans.get(type(operation)) or self._steps.plan(operation)
        return await self._run(partial(steps, operation), retry=retry)

    _answer = execute  # what StoreMethods' methods answer through

    # StoreMethods' methods, written once, awaited.
    load = awaiting(StoreMethods.load)
    insert = awaiting(StoreMethods.insert)
    write = awaiting(StoreMethods.write)
    touch = awaiting(StoreMethods.touch)
    delete = awaiting(StoreMethods.delete)
    purge_expired = awaiting(StoreMethods.purge_expired)
    sessions_for_user = awaiting(StoreMethods.sessions_for_user)
    revoke_user = awaiting(StoreMethods.revoke_user)
    delete_all = awaiting(StoreMethods.delete_all)
    stats = awaiting(StoreMethods.stats)
