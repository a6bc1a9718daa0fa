"""Internal: the small, bounded, blocking pool of psycopg2 connections a store goes through. Not
``psycopg2.pool``, which raises at once when empty instead of waiting, does not notice dead
connections, and hands a forked child the parent's sockets."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from typing import Any

import psycopg2
import psycopg2.extensions

from ._drivers.connections import choose_readable as _choose_readable
from ._drivers.connections import first_line, refused
from .borrowed import JSONB
from .errors import ConfigurationError, StoreUnavailable

__all__ = ["ConnectionPool"]

Connection = psycopg2.extensions.connection
_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE

_pools: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()
# Connections a forked child inherited. Closing them would end the parent's sessions on the
# server, so the child only keeps them referenced and never touches them.
_inherited: list[Connection] = []


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        _inherited.extend(pool._idle)
        pool._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_readable = _choose_readable()  # chosen once, at import


def _is_dead(conn: Connection) -> bool:
    """Whether an idle connection was closed by the server: it has something to read (one system call)."""
    if conn.closed:
        return True
    try:
        return _readable(conn.fileno())
    except (OSError, ValueError, psycopg2.Error):
        return True


class ConnectionPool:
    """Hands out autocommit connections, at most ``max_connections``, waiting while all are busy.

    :param connect_kwargs: the arguments of ``psycopg2.connect``.
    :param max_connections: the most connections open at once.
    :param timeout: seconds a borrower waits for a free connection.
    :param on_connect: called with each new connection before its first use.
    :param factory: makes each new connection instead of ``psycopg2.connect(**connect_kwargs)``
        (an app's own connection factory); the pool still owns, checks and closes them.
    """

    def __init__(
        self,
        connect_kwargs: dict[str, Any],
        max_connections: int,
        timeout: float,
        on_connect: Callable[[Connection], None] | None = None,
        factory: Callable[[], Connection] | None = None,
    ) -> None:
        self.connect_kwargs = connect_kwargs
        self._on_connect = on_connect
        self._factory = factory
        self.max_connections = max_connections
        self.timeout = timeout
        self._closed = False
        self._reset()
        _pools.add(self)

    def _reset(self) -> None:
        """No connection open or idle (a new pool, or a forked child's, which forgets the parent's)."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting = 0  # borrowers in self._cond.wait(): a release wakes one only if any
        self._idle: list[Connection] = []
        self._open = 0

    def _connect(self) -> Connection:
        try:
            conn: Connection = (
                psycopg2.connect(**self.connect_kwargs) if self._factory is None else self._factory()
            )
        except psycopg2.OperationalError as exc:
            raise refused(exc, self.connect_kwargs) from None
        if not isinstance(conn, Connection):
            raise ConfigurationError(
                f"the connection factory returned {type(conn).__name__}, not a psycopg2 connection: "
                "make it return psycopg2.connect(...)"
            )
        conn.autocommit = True
        psycopg2.extensions.register_type(JSONB, conn)  # the codec's JSON, not the global one
        if self._on_connect is not None:
            try:
                self._on_connect(conn)
            except psycopg2.Error as exc:
                conn.close()
                raise StoreUnavailable(
                    f"a new database connection failed its first check ({first_line(exc)})"
                ) from None
        return conn

    def _acquire(self) -> Connection:
        deadline = None
        with self._lock:
            while True:
                if self._closed:
                    raise StoreUnavailable("the session store was closed; create a new PostgresStore")
                while self._idle:
                    conn = self._idle.pop()
                    if not _is_dead(conn):
                        return conn
                    self._discard_locked(conn)
                if self._open < self.max_connections:
                    self._open += 1
                    break
                if deadline is None:  # only a borrower that must wait reads the clock
                    deadline = time.monotonic() + self.timeout
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreUnavailable(
                        f"no database connection became free within pool_timeout={self.timeout}s "
                        f"(max_connections={self.max_connections}); raise max_connections or "
                        "look for slow queries"
                    )
                self._waiting += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._waiting -= 1
        try:
            return self._connect()
        except BaseException:
            with self._lock:
                self._open -= 1
                self._cond.notify()
            raise

    def _discard_locked(self, conn: Connection) -> None:
        self._open -= 1
        with suppress(psycopg2.Error):
            conn.close()

    def _release(self, conn: Connection) -> None:
        with self._lock:
            # Closed (by the driver, when it broke), or left in a transaction by an error: discarded.
            if conn.closed or self._closed or conn.get_transaction_status() != _IDLE:
                self._discard_locked(conn)
            else:
                self._idle.append(conn)
            if self._waiting:
                self._cond.notify()

    def connection(self) -> AbstractContextManager[Connection]:
        """Borrow a connection (``with pool.connection() as conn``); it goes back unless it broke.

        :raises StoreUnavailable: none became free within ``timeout``, a new one could not
            connect, or the pool is closed.
        """
        return _Borrowing(self)

    def connect_unpooled(self) -> Connection:
        """A connection outside the pool, for work that must never make a request wait."""
        return self._connect()

    def close(self) -> None:
        """Close the idle connections and refuse new borrowers; borrowed ones close on return."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            for conn in idle:
                self._discard_locked(conn)
            self._cond.notify_all()


class _Borrowing:
    """One ``with pool.connection()``: a class, as a generator would cost twice as much, twice a request."""

    __slots__ = ("_pool", "_conn")

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def __enter__(self) -> Connection:
        self._conn = self._pool._acquire()
        return self._conn

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self._pool._release(self._conn)
