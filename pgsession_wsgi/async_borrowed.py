"""Internal: connections an asyncio app lends the async store from its ``psycopg_pool`` pool, with the
promises of :mod:`pgsession_wsgi.borrowed`, except that an idle connection with anything to read (a
hang-up, or a ``NOTIFY``: psycopg 3 cannot read one without waiting) is closed for the pool to replace."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from ._drivers.async_pool import CLOSED_MESSAGE, _Checkout, _is_dead
from .errors import ConfigurationError, StoreUnavailable

__all__ = ["LentAsyncPool"]

Connection = AsyncConnection[Any]

#: Dead connections one borrow drops before it gives up.
_MAX_DEAD = 64


class LentAsyncPool:
    """Borrows connections from an app's :class:`psycopg_pool.AsyncConnectionPool`.

    :param pool: the app's pool, opened by the app; :meth:`close` leaves it open.
    :param timeout: seconds to wait for one of its connections; None: the pool's own timeout.
    :raises ConfigurationError: not a psycopg_pool ``AsyncConnectionPool``.
    """

    origin = "your psycopg_pool pool"

    def __init__(self, pool: AsyncConnectionPool[Any], timeout: float | None = None) -> None:
        if not isinstance(pool, AsyncConnectionPool):
            raise ConfigurationError(
                f"AsyncPostgresStore.from_pool() takes a psycopg_pool.AsyncConnectionPool, not "
                f"{type(pool).__name__}"
            )
        self.pool = pool
        self.timeout = float(pool.timeout if timeout is None else timeout)
        self._closed = False
        # Each connection on loan (by id), and the autocommit it came with, to give it back so.
        self._lent: dict[int, bool] = {}

    def connection(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        """Borrow a live autocommit connection (``async with``); back as lent, or closed if it broke.

        :raises StoreUnavailable: none came within ``timeout``, or the pool or the store is closed.
        """
        return _Checkout(self)

    async def acquire(self) -> Connection:
        """:meth:`connection` without ``async with``; give it back with :meth:`release`."""
        for _ in range(_MAX_DEAD):
            if self._closed:
                raise StoreUnavailable(CLOSED_MESSAGE)
            try:
                conn: Connection = await self.pool.getconn(timeout=self.timeout)
            except PoolTimeout:
                raise StoreUnavailable(
                    f"no connection of {self.origin} became free within {self.timeout}s; raise its "
                    "max_size, look for slow queries, or check that PostgreSQL is running"
                ) from None
            except PoolClosed:
                raise StoreUnavailable(
                    f"{self.origin} is closed, or not open yet: open it (await pool.open()) before "
                    "the store's first use"
                ) from None
            if not _is_dead(conn):
                try:
                    autocommit = conn.autocommit
                    await conn.rollback()  # a transaction left open on a lent connection is nobody's
                    await conn.set_autocommit(True)
                    self._lent[id(conn)] = autocommit
                    return conn
                except psycopg.Error:
                    pass
            with contextlib.suppress(psycopg.Error):
                await conn.close()
            await self.pool.putconn(conn)  # closed: the pool replaces it
        raise StoreUnavailable(
            f"{self.origin} lent {_MAX_DEAD} dead or unusable connections in a row; check that "
            "PostgreSQL is running"
        )

    async def release(self, conn: Connection) -> None:
        """Give back a connection from :meth:`acquire`, as it was lent (closed if it broke)."""
        autocommit = self._lent.pop(id(conn))
        try:
            if conn.closed or conn.broken:
                raise psycopg.InterfaceError("the connection broke")
            if conn.info.transaction_status != TransactionStatus.IDLE:
                await conn.rollback()  # left mid-way by an error, or by an explicit BEGIN
            await conn.set_autocommit(autocommit)
        except psycopg.Error:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
        await self.pool.putconn(conn)

    async def connect_unpooled(self) -> Connection:
        """Raises :class:`ConfigurationError`: the store opens no connection of its own on an app's pool."""
        raise ConfigurationError(
            f"this store borrows every connection from {self.origin} and opens none of its own; "
            "purge with purge_expired() or purge_batch_by_batch()"
        )

    async def close(self) -> None:
        """Refuse further loans; the app's pool and its connections are left open."""
        self._closed = True

    def reopen(self) -> None:
        """Lend again after :meth:`close` (the store was opened again)."""
        self._closed = False
