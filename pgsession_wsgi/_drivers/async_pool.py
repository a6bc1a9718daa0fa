"""Internal: the async store's ``psycopg_pool.AsyncConnectionPool``, set up to behave like the sync
pool: dead idle connections dropped without a round trip, a refused connection failing the waiting
requests at once, connections made on demand and never retried in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from ..errors import StoreUnavailable
from .connections import gone, refused

__all__ = ["AsyncPool"]

Connection = AsyncConnection[Any]
OnConnect = Callable[[Connection], Awaitable[None]]


class _Failures:
    """Wakes the requests waiting for a connection when the pool gives up making one (it tells them
    nothing, so they would wait out ``pool_timeout``); ``last`` keeps why, for their message.

    Its event is made in the running loop: Python 3.9 binds asyncio objects to the loop they are
    made in, and a store is often built at import time, before the server's loop exists.
    """

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self.last: BaseException | None = None

    def current(self) -> asyncio.Event:
        """The event the next failure sets: take it *before* starting to wait."""
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def gave_up(self, pool: object = None) -> None:
        """The pool's ``reconnect_failed`` (``pool`` is ours): wake those waiting now."""
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
                failures.last = exc
                raise

    return WatchedConnection


def _idle_counter(pool: AsyncConnectionPool[Any]) -> Callable[[], int]:
    """How many idle connections ``pool`` holds, asked on every request: the length of its idle deque
    (``_pool``), as ``get_stats()`` builds a dict of every figure (a fifth of a checkout's cost); the
    public answer should a psycopg_pool release rename it."""
    idle = getattr(pool, "_pool", None)
    if type(idle) is deque:
        return idle.__len__
    return lambda: int(pool.get_stats()["pool_available"])


def _is_dead(conn: Connection) -> bool:
    """True if an idle connection has been closed by the server: it has something to read."""
    return gone(conn.closed or conn.broken, conn.fileno, psycopg.Error)


class AsyncPool:
    """Autocommit psycopg 3 connections for one store, at most ``max_connections`` at once; build it
    in the event loop that will use it.

    :param connect_kwargs: :func:`pgsession_wsgi.dsn.connect_arguments`' answer (``dsn`` included).
    :param timeout: seconds a request waits for a connection before :class:`StoreUnavailable`.
    :param on_connect: run on every new connection before its first use; its failure counts as a
        failed connection attempt.
    """

    def __init__(
        self, connect_kwargs: dict[str, Any], max_connections: int, timeout: float, on_connect: OnConnect
    ) -> None:
        kwargs = dict(connect_kwargs)
        self._conninfo = str(kwargs.pop("dsn"))
        self._secrets = {"dsn": self._conninfo, "password": kwargs.get("password")}
        # prepare_threshold=None: psycopg 3 would prepare a statement run 5 times, which PgBouncer in
        # transaction mode fails on another server connection (and PgBouncer cannot be told apart).
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
            # On demand, no retries in the background: the next request tries again (the pool's
            # backoff would leave the app answering 503 for minutes after the database came back).
            min_size=0,
            reconnect_timeout=0,
            max_size=max_connections,
            open=False,
            configure=self._configure,
            timeout=timeout,
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
            self._failures.last = exc
            await conn.close()  # the pool drops it without closing it
            raise

    def connection(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        """Borrow a live connection (``async with``); it goes back, or is replaced if it broke."""
        return _Checkout(self)

    async def acquire(self) -> Connection:
        """Borrow a live connection, given back with :meth:`release` (an await fewer than ``async with``)."""
        # A dead one is closed (the pool replaces it) without a round trip (the pool's own check
        # costs one); after a restart all may be dead, so try until a live or new one comes.
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
            raise StoreUnavailable(CLOSED_MESSAGE)
        try:
            if self._idle():
                # An idle one is handed over at once: no connection attempt can fail meanwhile.
                return await self._pool.getconn()
            return await self._getconn_watched()
        except PoolTimeout:
            raise StoreUnavailable(
                f"no database connection became free within pool_timeout={self.timeout}s "
                f"(max_connections={self.max_connections}); raise max_connections or look for slow queries"
            ) from None
        except PoolClosed:
            raise StoreUnavailable(CLOSED_MESSAGE) from None

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
            raise refused(self._failures.last, self._secrets) from None

    async def connect_unpooled(self) -> Connection:
        """A connection outside the pool, for work that must never make a request wait."""
        try:
            conn = await self._connection_class.connect(self._conninfo, **self._kwargs)
        except psycopg.Error as exc:
            raise refused(exc, self._secrets) from None
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


class _Lender(Protocol):
    """A pool :class:`_Checkout` borrows from: :class:`AsyncPool` or a lent ``psycopg_pool`` one."""

    async def acquire(self) -> Connection: ...

    async def release(self, conn: Connection) -> None: ...


class _Checkout:
    """One ``async with pool.connection()``, on either pool: a class, as a generator costs more."""

    __slots__ = ("_owner", "_conn")

    def __init__(self, owner: _Lender) -> None:
        self._owner = owner

    async def __aenter__(self) -> Connection:
        self._conn: Connection = await self._owner.acquire()
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        await self._owner.release(self._conn)


#: What using a closed async store answers (the store, its pool and a lent pool alike).
CLOSED_MESSAGE = (
    "the session store was closed: `await store.open()` opens it again (as an app's lifespan startup does)"
)
