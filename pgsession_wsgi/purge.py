"""Internal: the background purge, one thread per process deleting expired rows off the pool."""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Protocol

import psycopg2
import psycopg2.extensions

from ._drivers.connections import first_line
from .defaults import DEFAULT_PURGE_BATCH_SIZE
from .errors import SessionError

__all__ = ["PurgeWorker"]

log = logging.getLogger("pgsession_wsgi")


class Purgeable(Protocol):
    """What the worker needs of a store."""

    @property
    def qualified_name(self) -> str: ...
    @property
    def borrows_connections(self) -> bool: ...
    def purge_batch_by_batch(self, batch_size: int = ...) -> int: ...
    def connect_unpooled(self) -> psycopg2.extensions.connection: ...
    def purge_on(self, conn: psycopg2.extensions.connection, batch_size: int) -> int: ...


class PurgeWorker(threading.Thread):
    """Purges ``store`` every ``interval`` seconds on a connection of its own (or, on an app's
    engine or pool, one borrowed for each batch).

    One per process, started (again, in forked children) by the store. It holds the store
    weakly, so a store dropped without ``close()`` still stops it.
    """

    def __init__(self, store: Purgeable, interval: float) -> None:
        super().__init__(name="pgsession-purge", daemon=True)
        self._store = weakref.ref(store)
        self._interval = interval
        self._stopped = threading.Event()
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stop after the purge under way, waiting for it a few seconds at most."""
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)

    def run(self) -> None:
        """Purge every ``interval`` until stopped; an outage is logged once and retried."""
        conn: psycopg2.extensions.connection | None = None
        failing = False
        while not self._stopped.wait(self._interval):
            store = self._store()
            if store is None:
                break
            try:
                if store.borrows_connections:
                    removed = store.purge_batch_by_batch(DEFAULT_PURGE_BATCH_SIZE)
                else:
                    if conn is None or conn.closed:
                        conn = store.connect_unpooled()
                    removed = store.purge_on(conn, DEFAULT_PURGE_BATCH_SIZE)
                if removed:
                    log.info("purged %d expired sessions from %s", removed, store.qualified_name)
                failing = False
            except (SessionError, psycopg2.Error) as exc:
                if conn is not None and not conn.closed and isinstance(exc, psycopg2.Error):
                    conn.close()
                if not failing:
                    log.warning("purging expired sessions failed, will retry: %s", first_line(exc))
                failing = True
            del store
        if conn is not None and not conn.closed:
            conn.close()
