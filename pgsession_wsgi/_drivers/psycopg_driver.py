"""Internal: the psycopg 3 side of :class:`~pgsession_wsgi.async_store.AsyncPostgresStore`: where its
connections come from (its own pool, or an app's) and how a statement runs on one, so that an answer
never depends on which store gave it; the steps of :mod:`pgsession_wsgi.store_steps` decide the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar, Union

import psycopg
import psycopg.errors
from psycopg import AsyncClientCursor, AsyncConnection, AsyncCursor
from psycopg.types.datetime import TimestamptzLoader
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from .._codec_tags import loads
from .._store import exchange
from .._store.base import StoreBase
from .._store.exchange import ALL, COUNT, EACH, ONE, ROW, TRIES, Unreadable, converse_async
from ..async_borrowed import LentAsyncPool
from ..defaults import (
    DEFAULT_PURGE_BATCH_SIZE,
    DEFAULT_PURGE_INTERVAL,
    DEFAULT_SCHEMA,
    DEFAULT_TABLE,
    check_store_options,
)
from ..errors import ConfigurationError, StoreUnavailable
from ..session import UNREADABLE_VALUE_ERRORS
from .async_pool import CLOSED_MESSAGE, AsyncPool
from .async_purge import AsyncPurgeTask

__all__ = ["ERRORS", "PsycopgConnections"]

T = TypeVar("T")
S = TypeVar("S", bound="PsycopgConnections")
Connection = AsyncConnection[Any]
Cursor = AsyncCursor[Any]
StepsFor = Callable[[Connection], exchange.Steps[T]]
Pool = Union[AsyncPool, LentAsyncPool]

#: psycopg 3's errors, by what the store does about them.
ERRORS = exchange.DriverErrors(psycopg)
#: What reading a value psycopg 3 cannot turn into Python raises (a time out of range...).
_UNREADABLE: tuple[type[Exception], ...] = (*UNREADABLE_VALUE_ERRORS, psycopg.DataError)


class _Named(AsyncCursor[Any]):
    """A cursor for a statement prepared under ``name``: psycopg 3 sends only bind and execute.

    psycopg's own preparation stays off: its names (``_pg3_0``...) are the same on every connection,
    so behind PgBouncer they could meet another client's statement; ours name their text's hash.
    """

    __slots__ = ("_statement_name",)

    def __init__(self, conn: Connection, name: bytes) -> None:
        super().__init__(conn)
        self._statement_name = name

    def _get_prepared(self, pgq: Any, prepare: bool | None = None) -> tuple[Any, bytes]:
        return _PREPARED_ALREADY, self._statement_name


# psycopg's answer "prepared already", if this psycopg asks its cursors (3.1 and later); without it,
# prepared statements are sent as the sync store sends them (``EXECUTE`` text).
try:
    from psycopg._preparing import Prepare
except ImportError:  # pragma: no cover - a psycopg that moved it
    _PREPARED_ALREADY: Any = None
else:
    _PREPARED_ALREADY = Prepare.YES if hasattr(AsyncCursor, "_get_prepared") else None


class PsycopgConnections(StoreBase):
    """A store's psycopg 3 connections, and how its steps run on them (see the module)."""

    _errors = ERRORS
    _prepares_by_name = _PREPARED_ALREADY is not None
    _pool: Pool | None
    #: The pool's size and wait, as given (an app's pool: its own ``max_size`` and timeout).
    max_connections: int
    pool_timeout: float

    def _driver_state(self) -> None:
        self._pool = None
        self._connect_kwargs: dict[str, Any] = {}
        self._not_open_yet()

    def _not_open_yet(self) -> None:
        """The state of a store not opened: what the first :meth:`open` (or use) sets up in its loop."""
        self._pool_lock: asyncio.Lock | None = None  # made in the loop (Python 3.9 binds it)
        self._setup: asyncio.Future[None] | None = None
        self._ready = False
        self._closed = False
        self._purger: AsyncPurgeTask | None = None

    def _reopen(self) -> None:
        """After :meth:`close`: the next :meth:`open` starts afresh, as the first one did."""
        if isinstance(self._pool, LentAsyncPool):
            self._pool.reopen()
        else:
            self._pool = None  # a closed psycopg_pool pool cannot be opened again
        self._not_open_yet()

    def _own_connections(self, connect_kwargs: dict[str, Any], max_connections: int, timeout: float) -> None:
        self.max_connections = max_connections
        self.pool_timeout = timeout
        self._connect_kwargs = connect_kwargs  # the pool is made in the event loop, at first use

    @classmethod
    def from_pool(
        cls: type[S],
        pool: AsyncConnectionPool[Any],
        table: str = DEFAULT_TABLE,
        schema: str = DEFAULT_SCHEMA,
        *,
        pool_timeout: float | None = None,
        statement_timeout: float | None = 5.0,
        synchronous_commit: bool = True,
        create_table: bool = True,
        purge_interval: float | None = DEFAULT_PURGE_INTERVAL,
        unlogged: bool | None = False,
    ) -> S:
        """A store on the app's psycopg 3 pool, borrowing one connection per statement.

        As :meth:`PostgresStore.from_pool <pgsession_wsgi.store.PostgresStore.from_pool>` does:
        each connection is given back as lent (closed if it broke), the store's settings go with
        each statement as ``SET LOCAL``, and :meth:`close` leaves the pool open. The app opens the
        pool (``await pool.open()``) before the store's first use.

        The other parameters are as for :meth:`PostgresStore.from_pool
        <pgsession_wsgi.store.PostgresStore.from_pool>`.

        :param pool: a :class:`psycopg_pool.AsyncConnectionPool` of the app's.
        :param pool_timeout: seconds to wait for one of the pool's connections before
            :class:`StoreUnavailable`; None: the pool's own ``timeout``.
        :param statement_timeout: seconds any one of the store's statements may run, set with
            ``SET LOCAL`` on each; None leaves the connection's own setting.
        :raises ConfigurationError: not a psycopg_pool ``AsyncConnectionPool``, or a number out
            of range.
        """
        lent = LentAsyncPool(pool, pool_timeout)
        check_store_options(1, lent.timeout, 1.0, purge_interval)
        options = (statement_timeout, synchronous_commit, create_table, purge_interval, unlogged)
        store = cls._lend(lent, table, schema, *options)
        store.max_connections = pool.max_size
        store.pool_timeout = lent.timeout
        return store

    @property
    def dsn(self) -> str:
        """The DSN the store connects with (normalised); it may hold a password.

        :raises ConfigurationError: the store borrows an app's pool and knows no DSN.
        """
        if "dsn" not in self._connect_kwargs:
            raise ConfigurationError(
                "this store takes its connections from your psycopg_pool pool and knows no DSN; "
                "use the DSN your app opens them with"
            )
        return str(self._connect_kwargs["dsn"])

    @property
    def borrows_connections(self) -> bool:
        """Whether every connection is borrowed from the app's pool (:meth:`from_pool`)."""
        return isinstance(self._pool, LentAsyncPool)

    async def connect_unpooled(self) -> Connection:
        """A connection outside the pool (the purge task's), set up as the pool's are.

        :raises ConfigurationError: the store borrows an app's pool and opens none of its own.
        """
        await self._ensure_ready()
        assert self._pool is not None
        return await self._pool.connect_unpooled()

    async def purge_batch_by_batch(self, batch_size: int = DEFAULT_PURGE_BATCH_SIZE) -> int:
        """:meth:`purge_expired`, borrowing a connection for each batch alone; how many rows went.

        The background purge of a store on the app's pool: it never keeps a connection from a
        request for longer than one short statement.

        :raises ConfigurationError: ``batch_size`` (rows per statement) is below 1.
        """
        purge = self._steps.purge(batch_size)
        while purge.more:
            await self._do(purge.batch)
        return purge.removed

    async def purge_on(self, conn: Connection, batch_size: int) -> int:
        """:meth:`purge_expired` on a given connection; driver errors are left to the caller.

        :param conn: an autocommit connection from :meth:`connect_unpooled` (or the pool).
        """
        return await converse_async(self._steps.purge(batch_size).batches(), self._send, conn)

    async def _ensure_ready(self) -> None:
        if self._closed:
            raise StoreUnavailable(CLOSED_MESSAGE)
        if self._ready:
            return
        # One setup for all the requests that arrive before it is done; each waits at most
        # pool_timeout, and one that gives up (or is cancelled) leaves it running for the others.
        if self._setup is None or self._setup.done():
            self._setup = asyncio.ensure_future(self._set_up())
            self._setup.add_done_callback(_retrieve_exception)
        try:
            await asyncio.wait_for(asyncio.shield(self._setup), self.pool_timeout)
        except asyncio.TimeoutError:
            raise StoreUnavailable(
                f"the session table setup did not finish within pool_timeout={self.pool_timeout}s; "
                "check that PostgreSQL is reachable"
            ) from None

    async def _open_pool(self) -> Pool:
        if self._closed:
            raise StoreUnavailable(CLOSED_MESSAGE)
        if self._pool_lock is None:
            self._pool_lock = asyncio.Lock()
        async with self._pool_lock:
            if self._pool is None:
                pool = AsyncPool(
                    self._connect_kwargs, self.max_connections, self.pool_timeout, self._on_connect
                )
                await pool.open()
                self._pool = pool
        return self._pool

    async def _set_up(self) -> None:
        pool = await self._open_pool()
        setup = self._steps.table.due()
        if setup is not None:
            await self._do(setup, pool=pool)
        if self.purge_interval is not None and self._purger is None and not self._closed:
            self._purger = AsyncPurgeTask(self, self.purge_interval)
            self._purger.start()
        self._ready = True

    async def _on_connect(self, conn: Connection) -> None:
        """Every new connection: the codec's JSON decoding (not psycopg's global one, which the app
        may change); the first: were the startup options kept?"""
        set_json_loads(loads, conn)
        if not self._steps.settings_checked:
            await converse_async(self._steps.check_settings(), self._send, conn)

    async def _run(self, steps_for: StepsFor[T], *, retry: bool, pool: Pool | None = None) -> T:
        """Run ``steps_for(conn)`` on a connection of ``pool`` (the store's, by default); with ``retry``
        (safe to repeat), once more on a fresh connection when the first was broken."""
        if pool is None:
            if self._closed or not self._ready:
                await self._ensure_ready()
            pool = self._pool
            assert pool is not None
        for last in TRIES[retry]:
            try:
                conn = await pool.acquire()
                try:
                    return await converse_async(steps_for(conn), self._send, conn)
                except psycopg.errors.InsufficientPrivilege as exc:
                    role = await converse_async(self._steps.current_role(), self._send, conn)
                    raise self._steps.refused(exc, role) from None
                finally:
                    await pool.release(conn)
            except psycopg.Error as exc:
                self._steps.fail(exc, last)
        raise AssertionError("unreachable")

    async def _do(
        self, make: Callable[[], exchange.Steps[T]], *, retry: bool = True, pool: Pool | None = None
    ) -> T:
        """Run the steps ``make`` makes, made anew for each try (see :meth:`_run`)."""
        return await self._run(lambda conn: make(), retry=retry, pool=pool)

    async def _send(self, conn: Connection, statement: exchange.Statement) -> Any:
        """Send one statement and answer as it asks, from its last result (past a ``SET LOCAL`` guard
        or a ``PREPARE``)."""
        attempt = statement.attempt
        # Several commands (``SET LOCAL ...; ...``) cannot go in one extended-protocol statement:
        # one simple-protocol message, as psycopg2 sends it, in one implicit transaction.
        if statement.client:
            cur: Cursor = AsyncClientCursor(conn)
        elif attempt is not None and attempt.name is not None:  # prepared here: by name
            cur = _Named(conn, attempt.name)
        else:
            cur = conn.cursor()
        if self._origin is not None:  # the app's connections: its own loaders do not apply
            set_json_loads(loads, cur)
            cur.adapters.register_loader("timestamptz", TimestamptzLoader)
        await cur.execute(statement.text, statement.params)
        while cur.nextset():
            pass
        read = statement.read
        if read == ROW:
            try:
                return await cur.fetchone()
            except _UNREADABLE as exc:
                return Unreadable(exc)
        if read == COUNT:
            return cur.rowcount
        if read == ONE:
            return await cur.fetchone()
        if read == ALL:
            return await cur.fetchall()
        if read == EACH:
            return [await _row_at(cur, index) for index in range(cur.rowcount)]
        return None


async def _row_at(cur: Cursor, index: int) -> Any:
    """The row at ``index``: one that cannot be read leaves the others readable."""
    await cur.scroll(index, mode="absolute")
    try:
        return await cur.fetchone()
    except _UNREADABLE as exc:
        return Unreadable(exc)


def _retrieve_exception(future: asyncio.Future[None]) -> None:
    """Mark a failed setup's error as seen: the requests that waited for it have their own."""
    if not future.cancelled():
        future.exception()
