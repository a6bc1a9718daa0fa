"""The async store's connections: ``psycopg_pool.AsyncConnectionPool``, set up to behave like the
sync pool (:mod:`pgsession_wsgi.pool`) where a request can tell the difference.

Three things the pool does not do by itself, added here with its public API only:

* **Dead idle connections are dropped without a round trip.** After a server restart every idle
  connection is dead; the pool's own ``check`` would cost a statement per checkout and sleeps with
  a growing backoff between failed checks. Here a connection handed out is first polled (one
  system call, as the sync pool does) and a dead one is closed and replaced, at once.
* **A refused connection fails the waiting request at once**, as it does in the sync pool, rather
  than after ``pool_timeout``: the pool connects in background tasks and tells a waiting client
  nothing when that fails. Its ``reconnect_failed`` callback, run once it has given up (and freed
  the slot, so a request arriving later makes a new attempt), wakes the requests waiting.
* **Connections are made on demand** (``min_size=0``) and a failed attempt is not retried in the
  background (``reconnect_timeout=0``): the next request that needs a connection tries again. The
  pool's own backoff would otherwise leave an app answering 503 for up to minutes after the
  database came back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from ..dsn import hide_password
from ..errors import StoreUnavailable
from .connections import first_line, gone

__all__ = ["AsyncPool"]

Connection = AsyncConnection[Any]
OnConnect = Callable[[Connection], Awaitable[None]]


class _Failures:
    """Wakes every request waiting for a connection when the pool gives up making one.

    Its event is made inside the running loop (Python 3.9's asyncio objects bind the loop they are
    created in, and a store is often built at import time, before the server's loop exists).
    """

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self.last: BaseException | None = None

    def current(self) -> asyncio.Event:
        """The event the next failure sets: take it *before* starting to wait."""
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def record(self, exc: BaseException) -> None:
        """Keep why an attempt failed, for the message of the requests it fails."""
        self.last = exc

    def gave_up(self, pool: object = None) -> None:
        """The pool's ``reconnect_failed``: wake those waiting now; later waiters wait for a later one.

        :param pool: the pool that gave up (the callback's argument; there is only ours).
        """
        event, self._event = self._event, None
        if event is not None:
            event.set()


def _watched_connection_class(failures: _Failures) -> type[Connection]:
    """The pool's ``connection_class``: an ``AsyncConnection`` whose failed connects are recorded."""

    class WatchedConnection(AsyncConnection[Any]):
        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any) -> WatchedConnection:
            try:
                return await super().connect(conninfo, **kwargs)
            except psycopg.Error as exc:
                failures.record(exc)
                raise

    return WatchedConnection


def _idle_counter(pool: AsyncConnectionPool[Any]) -> Callable[[], int]:
    """How many idle connections ``pool`` holds, asked on every request.

    The pool's own answer, ``get_stats()["pool_available"]``, builds a dict of every figure (about
    a fifth of a checkout's cost); the length of its deque of idle connections (``_pool``, the
    same object for the pool's life in every psycopg_pool release we support) is one call. Should
    a release name it otherwise, the public answer is used.
    """
    idle = getattr(pool, "_pool", None)
    if type(idle) is deque:
        return idle.__len__
    return lambda: int(pool.get_stats()["pool_available"])


def _is_dead(conn: Connection) -> bool:
    """True if an idle connection has been closed by the server: it has something to read."""
    return gone(conn.closed or conn.broken, conn.fileno, psycopg.Error)


class AsyncPool:
    """Autocommit psycopg 3 connections for one store, at most ``max_connections`` at once.

    Build it inside the event loop that will use it (the store does so in ``open()``).

    :param connect_kwargs: :func:`pgsession_wsgi.dsn.connect_arguments`' answer: the DSN (``dsn``)
        and the libpq parameters it leaves to us, so the DSN's own parameters win.
    :param max_connections: the pool's size; requests beyond it wait up to ``timeout``.
    :param timeout: seconds a request waits for a connection before :class:`StoreUnavailable`.
    :param on_connect: run on every new connection before its first use (adapters, the settings
        check); its failure counts as a failed connection attempt.
    """

    def __init__(
        self, connect_kwargs: dict[str, Any], max_connections: int, timeout: float, on_connect: OnConnect
    ) -> None:
        kwargs = dict(connect_kwargs)
        self._conninfo = str(kwargs.pop("dsn"))
        # What hide_password needs to keep the password out of a refusal's message.
        self._secrets = {"dsn": self._conninfo, "password": kwargs.get("password")}
        # prepare_threshold=None: psycopg 3 would prepare a statement run 5 times; PgBouncer in
        # transaction mode then fails it on another server connection, and PgBouncer cannot be
        # told apart reliably (it keeps startup options that it is configured to pass on).
        self._kwargs: dict[str, Any] = {**kwargs, "autocommit": True, "prepare_threshold": None}
        self.max_connections = max_connections
        self.timeout = timeout
        self._on_connect = on_connect
        self._failures = _Failures()
        self._connection_class = _watched_connection_class(self._failures)
        self._pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self._conninfo,
            connection_class=self._connection_class,
            kwargs=self._kwargs,
            min_size=0,
            max_size=max_connections,
            open=False,
            configure=self._configure,
            timeout=timeout,
            reconnect_timeout=0,
            reconnect_failed=self._failures.gave_up,
            name="pgsession-wsgi",
        )
        self._idle = _idle_counter(self._pool)
        self._closed = False

    async def open(self) -> None:
        """Start the pool's workers; no connection is made until one is needed."""
        await self._pool.open(wait=False)

    async def _configure(self, conn: Connection) -> None:
        try:
            await self._on_connect(conn)
        except psycopg.Error as exc:
            self._failures.record(exc)
            await conn.close()  # the pool drops it without closing it
            raise

    def connection(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        """Borrow a live connection (``async with pool.connection() as conn``); it goes back to
        the pool, or is replaced if it broke."""
        return _Checkout(self)

    async def acquire(self) -> Connection:
        """Borrow a live connection; give it back with :meth:`release`. (The store's own path:
        one await fewer than ``async with connection()``.)"""
        # Each dead idle connection is closed (the pool replaces it) and the next one tried; after
        # a restart, all of them may be dead, so this stops only when a live one or a new one comes.
        for _ in range(self.max_connections + 1):
            conn = await self._getconn()
            if not _is_dead(conn):
                return conn
            with contextlib.suppress(psycopg.Error):
                await conn.close()
            await self._pool.putconn(conn)
        return await self._getconn()

    async def release(self, conn: Connection) -> None:
        """Give back a connection from :meth:`acquire`; a broken one is replaced."""
        await self._pool.putconn(conn)

    async def _getconn(self) -> Connection:
        if self._closed:
            raise _closed_error()
        try:
            if self._idle():
                # An idle connection is there: the pool hands it over at once, and no connection
                # attempt can fail while this waits (no need to watch for one).
                return await self._pool.getconn()
            return await self._getconn_watched()
        except PoolTimeout:
            raise StoreUnavailable(
                f"no database connection became free within pool_timeout={self.timeout}s "
                f"(max_connections={self.max_connections}); raise max_connections or look for slow queries"
            ) from None
        except PoolClosed:
            raise _closed_error() from None

    async def _getconn_watched(self) -> Connection:
        """Wait for a connection, or for the pool to give up making one (a refused connection)."""
        failed = self._failures.current()
        getter = asyncio.ensure_future(self._pool.getconn())
        watcher = asyncio.ensure_future(failed.wait())
        try:
            await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not getter.done():
                getter.cancel()
        try:
            return await getter
        except asyncio.CancelledError:
            if not watcher.done() or watcher.cancelled():
                raise  # the request itself was cancelled
            raise _refused(self._failures.last, self._secrets) from None

    async def connect_unpooled(self) -> Connection:
        """A connection outside the pool, for work that must never make a request wait."""
        try:
            conn = await self._connection_class.connect(self._conninfo, **self._kwargs)
        except psycopg.Error as exc:
            raise _refused(exc, self._secrets) from None
        try:
            await self._on_connect(conn)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Close every connection; a request after this gets :class:`StoreUnavailable`."""
        self._closed = True
        await self._pool.close()


class _Checkout:
    """One ``async with pool.connection()``: a class, as it runs twice per request (a
    generator-based context manager costs several times more)."""

    __slots__ = ("_owner", "_conn")

    def __init__(self, owner: AsyncPool) -> None:
        self._owner = owner

    async def __aenter__(self) -> Connection:
        self._conn: Connection = await self._owner.acquire()
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        await self._owner.release(self._conn)


def _refused(exc: BaseException | None, secrets: dict[str, Any]) -> StoreUnavailable:
    reason = hide_password(first_line(exc), secrets) if exc is not None else "the attempt failed"
    return StoreUnavailable(
        f"cannot connect to PostgreSQL ({reason}); check that the server is running and the DSN is right"
    )


#: What using a closed async store answers (the store, its pool and a lent pool alike).
CLOSED_MESSAGE = (
    "the session store was closed: `await store.open()` opens it again (as an app's lifespan startup does)"
)


def _closed_error() -> StoreUnavailable:
    return StoreUnavailable(CLOSED_MESSAGE)
