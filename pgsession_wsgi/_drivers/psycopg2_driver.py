"""Internal: the psycopg2 side of :class:`~pgsession_wsgi.store.PostgresStore`: where its connections
come from (its own pool, or an app's factory, engine or pool) and how a statement runs on one; the
steps of :mod:`pgsession_wsgi.store_steps` decide everything else."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.pool

from .._store import exchange
from .._store.base import StoreBase
from .._store.exchange import ALL, COUNT, EACH, ONE, ROW, TRIES, Unreadable, converse
from ..borrowed import EngineConnections, LentConnections, PoolConnections, use_own_typecasters
from ..core import Operation
from ..defaults import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PURGE_BATCH_SIZE,
    DEFAULT_PURGE_INTERVAL,
    DEFAULT_SCHEMA,
    DEFAULT_TABLE,
    check_store_options,
)
from ..dsn import lent_settings
from ..errors import ConfigurationError, StoreUnavailable
from ..pool import ConnectionPool
from ..purge import PurgeWorker
from ..session import UNREADABLE_VALUE_ERRORS

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["ERRORS", "Psycopg2Connections"]

T = TypeVar("T")
S = TypeVar("S", bound="Psycopg2Connections")
Cursor = psycopg2.extensions.cursor

#: psycopg2's errors, by what the store does about them.
ERRORS = exchange.DriverErrors(psycopg2)


class Psycopg2Connections(StoreBase):
    """A store's psycopg2 connections, and how its steps run on them (see the module)."""

    _errors = ERRORS
    _pool: ConnectionPool | LentConnections

    def _driver_state(self) -> None:
        self._ready_pid: int | None = None
        self._ready_lock = threading.Lock()
        self._purger: PurgeWorker | None = None

    def _own_connections(self, connect_kwargs: dict[str, Any], max_connections: int, timeout: float) -> None:
        check = self._check_first_connection
        self._pool = ConnectionPool(connect_kwargs, max_connections, timeout, on_connect=check)

    @classmethod
    def from_engine(
        cls: type[S],
        engine: Engine,
        table: str = DEFAULT_TABLE,
        schema: str = DEFAULT_SCHEMA,
        *,
        statement_timeout: float | None = 5.0,
        synchronous_commit: bool = True,
        create_table: bool = True,
        purge_interval: float | None = DEFAULT_PURGE_INTERVAL,
        unlogged: bool | None = False,
    ) -> S:
        """A store on the app's SQLAlchemy engine: one engine, one set of credentials, one pool.

        Each statement borrows a connection (``engine.raw_connection()``) and gives it back at
        once, as it was lent. The engine's pool sets how many there are and how long a request
        waits (SQLAlchemy's default ``pool_timeout`` is 30 s; a shorter one answers 503 sooner).
        ``pool_pre_ping`` is not needed: the store finds dead connections without a round trip.

        ``table``, ``schema`` and ``unlogged`` are as for :class:`PostgresStore`.

        :param engine: a :class:`sqlalchemy.engine.Engine` with the ``postgresql+psycopg2``
            driver; :meth:`close` leaves it open.
        :param statement_timeout: seconds any one of the store's statements may run, set with
            ``SET LOCAL`` on each; None leaves the connection's own setting.
        :param synchronous_commit: as for :class:`PostgresStore`, also with ``SET LOCAL``.
        :param create_table: False when a migration tool (e.g. Alembic with
            :func:`pgsession_wsgi.sqlalchemy.session_table`) creates the table.
        :param purge_interval: as for :class:`PostgresStore`; the background purge borrows a
            connection for each batch alone, so it never holds one of the app's for long.
        :raises ConfigurationError: not an Engine, or not ``postgresql+psycopg2``.
        """
        check_store_options(1, 1.0, 1.0, purge_interval)
        lent = EngineConnections(engine)
        options = (statement_timeout, synchronous_commit, create_table, purge_interval, unlogged)
        return cls._lend(lent, table, schema, *options)

    @classmethod
    def from_pool(
        cls: type[S],
        pool: psycopg2.pool.AbstractConnectionPool,
        table: str = DEFAULT_TABLE,
        schema: str = DEFAULT_SCHEMA,
        *,
        pool_timeout: float = 5.0,
        statement_timeout: float | None = 5.0,
        synchronous_commit: bool = True,
        create_table: bool = True,
        purge_interval: float | None = DEFAULT_PURGE_INTERVAL,
        unlogged: bool | None = False,
    ) -> S:
        """A store on the app's psycopg2 pool, borrowing one connection per statement.

        Each goes back with ``putconn`` right after its statement, as lent (``close=True`` if it
        broke). Use a ``ThreadedConnectionPool`` when requests run in threads. The other
        parameters are as for :meth:`from_engine`.

        :param pool: a :class:`psycopg2.pool.AbstractConnectionPool`; :meth:`close` leaves it open.
        :param pool_timeout: seconds to wait for one of the pool's connections while all are out
            (psycopg2's pools refuse at once; the store asks again until then), then
            :class:`StoreUnavailable`.
        :raises ConfigurationError: not a psycopg2 pool, or a number out of range.
        """
        check_store_options(1, pool_timeout, 1.0, purge_interval)
        lent = PoolConnections(pool, pool_timeout)
        options = (statement_timeout, synchronous_commit, create_table, purge_interval, unlogged)
        return cls._lend(lent, table, schema, *options)

    @classmethod
    def from_factory(
        cls: type[S],
        factory: Callable[[], psycopg2.extensions.connection],
        table: str = DEFAULT_TABLE,
        schema: str = DEFAULT_SCHEMA,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float = 5.0,
        statement_timeout: float | None = 5.0,
        synchronous_commit: bool = True,
        create_table: bool = True,
        purge_interval: float | None = DEFAULT_PURGE_INTERVAL,
        unlogged: bool | None = False,
        prepared_statements: bool = True,
    ) -> S:
        """A store whose own pool opens its connections with the app's factory.

        For credentials only the app knows how to get (a secrets manager, a rotating token): the
        store pools, checks and closes the factory's connections as its own. Its settings travel
        with each statement (``SET LOCAL``) unless the first connection already has them. The
        other parameters are as for :class:`PostgresStore` (``statement_timeout`` and
        ``synchronous_commit`` as for :meth:`from_engine`).

        :param factory: returns a new psycopg2 connection, e.g.
            ``lambda: psycopg2.connect(dsn, password=fetch_token())``.
        :param prepared_statements: off when the factory's connections lack the store's settings.
        :raises ConfigurationError: ``factory`` is not callable, or a number out of range.
        """
        if not callable(factory):
            raise ConfigurationError(
                "from_factory() takes a callable returning a new psycopg2 connection, "
                "e.g. lambda: psycopg2.connect(dsn)"
            )
        check_store_options(max_connections, pool_timeout, 1.0, purge_interval)
        store = cls.__new__(cls)
        settings = lent_settings(statement_timeout, synchronous_commit)
        store._configure(table, schema, statement_timeout, settings, create_table, purge_interval, unlogged)
        store._pool = ConnectionPool(
            {}, max_connections, pool_timeout, on_connect=store._check_first_connection, factory=factory
        )
        if prepared_statements:
            store._steps.prepared.enable()
        store._origin = "your connection factory"
        return store

    @property
    def dsn(self) -> str:
        """The DSN the store connects with, normalised (on an engine: its URL); it may hold a password.

        :raises ConfigurationError: the store takes its connections from a psycopg2 pool or a
            connection factory, and so knows no DSN.
        """
        if isinstance(self._pool, EngineConnections):
            return self._pool.dsn
        if isinstance(self._pool, ConnectionPool) and "dsn" in self._pool.connect_kwargs:
            return str(self._pool.connect_kwargs["dsn"])
        raise ConfigurationError(
            f"this store takes its connections from {self._origin} and knows no DSN; use the DSN "
            "your app opens them with (e.g. pgsession-wsgi --dsn ...)"
        )

    @property
    def borrows_connections(self) -> bool:
        """Whether every connection is borrowed from the app's engine or pool (none of its own)."""
        return isinstance(self._pool, LentConnections)

    def purge_on(self, conn: psycopg2.extensions.connection, batch_size: int) -> int:
        """:meth:`purge_expired` on a connection outside the pool (the purge worker's own).

        :param conn: an open autocommit connection, e.g. from :meth:`connect_unpooled`.
        """
        with conn.cursor() as cur:
            return converse(self._steps.purge(batch_size).batches(), _send, cur)

    def connect_unpooled(self) -> psycopg2.extensions.connection:
        """A connection outside the pool, for work that must never make a request wait.

        :raises ConfigurationError: the store borrows the app's connections and opens none.
        """
        if isinstance(self._pool, LentConnections):
            raise ConfigurationError(
                f"this store borrows every connection from {self._origin} and opens none of its "
                "own; purge with purge_expired() or purge_batch_by_batch()"
            )
        return self._pool.connect_unpooled()

    def purge_batch_by_batch(self, batch_size: int = DEFAULT_PURGE_BATCH_SIZE) -> int:
        """:meth:`purge_expired`, borrowing a connection for each batch alone; how many rows went.

        The background purge of a store on the app's engine or pool: it never keeps a connection
        from a request for longer than one short statement.

        :raises ConfigurationError: ``batch_size`` (rows per statement) is below 1.
        """
        purge = self._steps.purge(batch_size)
        while purge.more:
            self._do(purge.batch)
        return purge.removed

    def _check_first_connection(self, conn: psycopg2.extensions.connection) -> None:
        """On each new connection: the first tells whether the startup options were kept."""
        if not self._steps.settings_checked:
            with conn.cursor() as cur:
                converse(self._steps.check_settings(), _send, cur)

    def _ensure_ready(self) -> None:
        pid = os.getpid()
        if self._ready_pid == pid:
            return
        # Requests queue here only while the first one sets up; never longer than a pool wait.
        if not self._ready_lock.acquire(timeout=self._pool.timeout):
            raise StoreUnavailable(
                f"the session table setup did not finish within pool_timeout={self._pool.timeout}s; "
                "check that PostgreSQL is reachable"
            )
        try:
            if self._ready_pid == pid:
                return
            setup = self._steps.table.due()
            if setup is not None:
                self._do(setup, setup=True)
            if self.purge_interval is not None:
                self._purger = PurgeWorker(self, self.purge_interval)
                self._purger.start()
            self._ready_pid = pid
        finally:
            self._ready_lock.release()

    def _run(self, work: Callable[..., T], *args: Any, retry: bool, setup: bool = False) -> T:
        """Run ``work(cursor, *args)`` on a pooled connection, turning database trouble into clear errors;
        with ``retry`` (safe to repeat), once more on a fresh connection when the first was broken."""
        if not setup:
            self._ensure_ready()
        for last in TRIES[retry]:
            try:
                with self._pool.connection() as conn, conn.cursor() as cur:
                    if self._origin is not None:
                        use_own_typecasters(cur)
                    try:
                        return work(cur, *args)
                    except psycopg2.errors.InsufficientPrivilege as exc:
                        role = converse(self._steps.current_role(), _send, cur)
                        raise self._steps.refused(exc, role) from None
            except psycopg2.Error as exc:
                self._steps.fail(exc, last)
        raise AssertionError("unreachable")

    def _do(self, make: Callable[[], exchange.Steps[T]], *, retry: bool = True, setup: bool = False) -> T:
        """Run the steps ``make`` makes, made anew for each try (see :meth:`_run`)."""
        return self._run(_steps_on, make, retry=retry, setup=setup)  # type: ignore[no-any-return]


def _steps_on(cur: Cursor, make: Callable[[], exchange.Steps[T]]) -> T:
    """Work for ``_run``: the steps ``make`` makes, on ``cur`` (no closure made per call)."""
    return converse(make(), _send, cur)


def _answer_on(cur: Cursor, steps: Callable[[Operation, Any], exchange.Steps[T]], operation: Operation) -> T:
    """Work for ``_run``: the steps answering one of the core's operations, on ``cur``."""
    return converse(steps(operation, cur.connection), _send, cur)


def _send(cur: Cursor, statement: exchange.Statement) -> Any:
    """Send one statement (psycopg2 binds the values on the client) and answer as it asks."""
    cur.execute(statement.text, statement.params)
    read = statement.read
    if read == ROW:
        try:
            return cur.fetchone()
        except UNREADABLE_VALUE_ERRORS as exc:
            return Unreadable(exc)
    if read == COUNT:
        return cur.rowcount
    if read == ONE:
        return cur.fetchone()
    if read == ALL:
        return cur.fetchall()
    if read == EACH:
        return [_row_at(cur, index) for index in range(cur.rowcount)]
    return None


def _row_at(cur: Cursor, index: int) -> Any:
    """The row at ``index``: one that cannot be read leaves the others readable."""
    cur.scroll(index, mode="absolute")
    try:
        return cur.fetchone()
    except UNREADABLE_VALUE_ERRORS as exc:
        return Unreadable(exc)
