"""Internal: connections the app lends the store, from its SQLAlchemy engine or its psycopg2 pool, one
per statement; each goes back as lent (autocommit restored, no transaction open) or is dropped if dead.
What the store promises on them is in docs/deployment.md ("Using your app's own engine or pool")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.extensions
import psycopg2.pool

from ._codec_tags import loads
from ._drivers.connections import first_line, readable
from .errors import ConfigurationError, StoreUnavailable

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import PoolProxiedConnection

__all__ = ["EngineConnections", "LentConnections", "PoolConnections", "use_own_typecasters"]

Connection = psycopg2.extensions.connection

#: How many dead connections one borrow drops before it gives up (after a restart, all may be dead).
_MAX_DEAD = 64

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
_IN_TRANSACTION = (
    psycopg2.extensions.TRANSACTION_STATUS_INTRANS,
    psycopg2.extensions.TRANSACTION_STATUS_INERROR,
)


def _jsonb(value: str | bytes | None, cur: psycopg2.extensions.cursor) -> Any:
    return None if value is None else loads(value)


#: jsonb read as the codec reads it, on each connection the store makes and each cursor on one the
#: app made (which may carry typecasters of its own: SQLAlchemy's json_deserializer...).
JSONB = psycopg2.extensions.new_type((3802,), "PGSESSION_JSONB", _jsonb)


def use_own_typecasters(cur: psycopg2.extensions.cursor) -> None:
    """Read jsonb and timestamptz on ``cur`` (on an app's connection) as on the store's own, whatever
    the app registered: the answers must not depend on where the connection came from."""
    psycopg2.extensions.register_type(JSONB, cur)
    psycopg2.extensions.register_type(psycopg2.extensions.PYDATETIMETZ, cur)


def _is_dead(conn: Connection) -> bool:
    """Whether a lent, idle connection is gone, without a round trip: unlike the store's own, it may
    have something to read while alive (a ``NOTIFY``), so that is read with ``poll()``."""
    if conn.closed:
        return True
    try:
        # A hang-up reads as a message (the server's FATAL, which libpq files as a notice), then
        # as the end of the stream, which poll() raises for: a few rounds tell it from traffic.
        for _ in range(4):
            if not readable(conn.fileno()):
                return False
            conn.poll()
    except (OSError, ValueError, psycopg2.Error):
        return True
    return True  # still more to read: not an idle connection's state, so not to be trusted


def _idle_after_rollback(conn: Connection) -> bool:
    """End any transaction open on ``conn`` (with ``ROLLBACK`` too: psycopg2's ``rollback()`` misses
    a ``BEGIN`` sent on an autocommit connection); whether it is now idle and fit to use."""
    status = conn.info.transaction_status
    if status == _IDLE:
        return True
    if status not in _IN_TRANSACTION:
        return False  # busy, or the server is gone
    conn.rollback()
    if conn.info.transaction_status != _IDLE and conn.autocommit:
        with conn.cursor() as cur:
            cur.execute("ROLLBACK")
    return bool(conn.info.transaction_status == _IDLE)


class LentConnections:
    """Borrows a connection per use and gives it back as it was lent; subclasses say from where.

    :param timeout: seconds a borrower may wait for a connection (the store's setup waits as long).
    """

    #: Where the connections come from, for messages.
    origin = "your pool"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._closed = False

    def _take(self) -> tuple[Any, Connection]:
        """Borrow one: a handle to give it back with, and the psycopg2 connection."""
        raise NotImplementedError

    def _give_back(self, handle: Any, conn: Connection, healthy: bool) -> None:
        """Return a connection to the app's pool, or drop it there if it is not ``healthy``."""
        raise NotImplementedError

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """Borrow a live autocommit connection; it goes back as lent, or is dropped.

        :raises StoreUnavailable: none came in time, the database cannot be reached, or the store
            was closed.
        """
        handle, conn, autocommit = self._borrow()
        try:
            yield conn
        finally:
            healthy = not conn.closed  # the driver closes a connection that broke
            if healthy:
                try:
                    # Left mid-way by an error, or by an explicit BEGIN: never hand that state back.
                    healthy = _idle_after_rollback(conn)
                    if healthy:
                        conn.autocommit = autocommit
                except psycopg2.Error:
                    healthy = False
            self._give_back(handle, conn, healthy)

    def _borrow(self) -> tuple[Any, Connection, bool]:
        for _ in range(_MAX_DEAD):
            if self._closed:
                raise StoreUnavailable("the session store was closed; create a new PostgresStore")
            handle, conn = self._take()
            if not isinstance(conn, Connection):
                self._give_back(handle, conn, True)
                raise ConfigurationError(
                    f"{self.origin} lent a {type(conn).__name__}, not a psycopg2 connection: "
                    "the store needs the psycopg2 driver"
                )
            if _is_dead(conn):
                self._give_back(handle, conn, False)
                continue
            try:
                autocommit = bool(conn.autocommit)
                if _idle_after_rollback(conn):  # a transaction open on a lent connection is nobody's
                    conn.autocommit = True
                    return handle, conn, autocommit
            except psycopg2.Error:
                pass
            self._give_back(handle, conn, False)
        raise StoreUnavailable(
            f"{self.origin} lent {_MAX_DEAD} dead or unusable connections in a row; check that "
            "PostgreSQL is running"
        )

    def close(self) -> None:
        """Refuse further loans; the app's pool and its connections are left open."""
        self._closed = True


class EngineConnections(LentConnections):
    """Connections borrowed through a SQLAlchemy engine's pool (``engine.raw_connection()``), which
    decides how many there are and how long a borrower waits; a broken one is invalidated.

    :param engine: a :class:`sqlalchemy.engine.Engine` on the ``postgresql+psycopg2`` driver.
    :raises ConfigurationError: not an Engine, or another database or driver.
    """

    origin = "your SQLAlchemy engine"

    def __init__(self, engine: Engine) -> None:
        from sqlalchemy.engine import Engine

        if not isinstance(engine, Engine):
            hint = (
                "an async engine lends no psycopg2 connections; make a sync one with "
                "create_engine('postgresql+psycopg2://...')"
                if hasattr(engine, "sync_engine")
                else "pass the Engine itself (sqlalchemy.create_engine(...)), not a Connection or Session"
            )
            raise ConfigurationError(
                f"from_engine() takes a SQLAlchemy Engine, not {type(engine).__name__}: {hint}"
            )
        name, driver = engine.dialect.name, engine.dialect.driver
        if name != "postgresql" or driver != "psycopg2":
            raise ConfigurationError(
                f"the engine uses {name}+{driver}; PostgresStore borrows psycopg2 connections: "
                "create the engine with a postgresql+psycopg2:// URL (or use AsyncPostgresStore "
                "for psycopg 3)"
            )
        pool_timeout = getattr(engine.pool, "timeout", None)
        super().__init__(float(pool_timeout()) if callable(pool_timeout) else 30.0)
        self.engine = engine

    def _take(self) -> tuple[PoolProxiedConnection, Connection]:
        import sqlalchemy.exc

        try:
            lent = self.engine.raw_connection()
        except sqlalchemy.exc.TimeoutError:
            raise StoreUnavailable(
                f"no connection of {self.origin} became free within its pool_timeout "
                f"({self.timeout}s); raise the engine's pool_size or max_overflow, or look for slow queries"
            ) from None
        except (psycopg2.Error, sqlalchemy.exc.DBAPIError) as exc:
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL through {self.origin} ({first_line(exc)}); check that "
                "the server is running and the engine's URL is right"
            ) from None
        return lent, lent.dbapi_connection  # type: ignore[return-value]

    def _give_back(self, handle: PoolProxiedConnection, conn: Connection, healthy: bool) -> None:
        if healthy:
            handle.close()  # back to the engine's pool, which resets it as usual
        else:
            handle.invalidate()  # closed and forgotten: the pool makes a new one when needed

    @property
    def dsn(self) -> str:
        """The engine's URL as a libpq DSN (password included), read as the engine connects
        (``create_connect_args``), so socket hosts and query parameters come out right.

        :raises ConfigurationError: the URL names nothing (an engine made with ``creator=``).
        """
        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        dsn = psycopg2.extensions.make_dsn(*cargs[:1], **cparams)
        if not dsn:
            raise ConfigurationError(
                f"{self.origin}'s URL names no database (was it made with creator=?), so the store "
                "knows no DSN; use the DSN your app connects with"
            )
        return dsn


class PoolConnections(LentConnections):
    """Connections borrowed from a psycopg2 pool (``getconn`` / ``putconn``). It raises at once when
    all are out, so the store asks again, sleeping briefly, until ``timeout`` has passed.

    :param pool: a :class:`psycopg2.pool.AbstractConnectionPool` (``ThreadedConnectionPool`` when
        requests run in threads).
    :raises ConfigurationError: not a psycopg2 pool.
    """

    origin = "your psycopg2 pool"

    def __init__(self, pool: psycopg2.pool.AbstractConnectionPool, timeout: float) -> None:
        if not isinstance(pool, psycopg2.pool.AbstractConnectionPool):
            raise ConfigurationError(
                f"from_pool() takes a psycopg2 pool (psycopg2.pool.ThreadedConnectionPool), not "
                f"{type(pool).__name__}; for a SQLAlchemy engine use PostgresStore.from_engine()"
            )
        super().__init__(timeout)
        self.pool = pool

    def _take(self) -> tuple[Connection, Connection]:
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while True:
            try:
                conn: Connection = self.pool.getconn()
                return conn, conn
            except psycopg2.pool.PoolError:
                if self.pool.closed:
                    raise StoreUnavailable(f"{self.origin} was closed; give the store an open pool") from None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreUnavailable(
                        f"no connection of {self.origin} became free within pool_timeout="
                        f"{self.timeout}s (its maxconn={self.pool.maxconn} are all out); raise maxconn "
                        "or look for slow queries"
                    ) from None
                time.sleep(min(pause, remaining))
                pause = min(pause * 2, 0.05)
            except psycopg2.Error as exc:
                raise StoreUnavailable(
                    f"cannot connect to PostgreSQL through {self.origin} ({first_line(exc)}); check "
                    "that the server is running and the pool's DSN is right"
                ) from None

    def _give_back(self, handle: Connection, conn: Connection, healthy: bool) -> None:
        # A pool closed meanwhile has closed this connection too (closeall closes those out).
        with suppress(psycopg2.pool.PoolError):
            self.pool.putconn(conn, close=not healthy)
