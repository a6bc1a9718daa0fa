"""``PostgresStore``: where sessions live, and the pool every statement goes through.

Each request-path statement is a single autocommit statement that touches one row by its primary
key and filters ``expires_at > now()``, so an expired row is never served whether or not it has
been purged yet, and the store works unchanged behind PgBouncer in transaction mode::

    from pgsession_wsgi import PostgresStore, SessionMiddleware, current_session

    store = PostgresStore("postgresql://app@db/app", max_connections=20)
    app = SessionMiddleware(app, store, secret_key=os.environ["SECRET_KEY"])
    store.revoke_user(user_id, keep=current_session)  # in a view: "log out everywhere else"
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.pool

from .borrowed import EngineConnections, LentConnections, PoolConnections, lent_settings, use_own_typecasters
from .core import (
    KEEP_USER,
    Delete,
    Insert,
    Load,
    LoadedRow,
    Operation,
    Touch,
    Write,
    WriteResult,
    user_id_text,
)
from .defaults import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PURGE_BATCH_SIZE,
    DEFAULT_PURGE_INTERVAL,
    DEFAULT_SCHEMA,
    DEFAULT_TABLE,
    check_store_options,
)
from .dsn import normalize_dsn as normalize_dsn  # re-exported: cli and legacy import it from here
from .dsn import store_connect_arguments
from .errors import (
    ConfigurationError,
    SessionError,
    SessionTooLarge,
    StoreUnavailable,
)
from .layout import (
    check_layout,
    check_persistence,
    missing_table_error,
    needs_upgrade,
    privilege_error,
    setup_plan,
)
from .pool import ConnectionPool, _first_line
from .purge import PurgeWorker
from .session import checked_row, reading_row, skipping_unreadable_row
from .sql import (
    CURRENT_ROLE,
    LAYOUT,
    LOCK,
    PERSISTENCE,
    SETTINGS,
    SETUP_STATE,
    Statements,
    grant_statements,
    guard,
    lock_key,
    persistence_statement,
    prepared,
    quote_identifier,
    setup_names,
    with_literals,
)

# LoadedRow, WriteResult, KEEP_USER and user_id_text live in core; importable here as in 0.1.0.
__all__ = ["PostgresStore", "SessionInfo"]

log = logging.getLogger("pgsession_wsgi")

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

T = TypeVar("T")
S = TypeVar("S", bound="PostgresStore")
Cursor = psycopg2.extensions.cursor
#: A statement's values that come from the app's settings: (placeholder name, value) pairs.
Fixed = tuple[tuple[str, Any], ...]

#: The request statements a store prepares on its own connections (with prepared_statements).
PREPARED_KINDS = ("load", "insert", "write", "merge", "touch", "delete")

#: The most EXECUTE texts with an app's settings written in that a store keeps (an app needs one
#: per statement; a store shared by apps with other settings, one per app and statement).
MAX_BOUND_STATEMENTS = 64

#: Up to this many expired rows are counted exactly for a purge's progress; beyond it they are
#: estimated from about SAMPLED_PAGES of the table's pages (16 MB), so counting never takes long.
EXACT_COUNT_LIMIT = 100_000
SAMPLED_PAGES = 2000


@dataclass(frozen=True)
class SessionInfo:
    """One live session of a user, for a "your devices" page; never carries the session id.

    :param id_hash: the hex SHA-256 of the session id: tells sessions apart, opens none.
    :param created_at: when the session began (a regenerated id keeps it).
    :param accessed_at: when its expiry was last pushed forward (at most every touch interval).
    :param expires_at: when it ends unless it is used again.
    """

    id_hash: str
    created_at: datetime
    accessed_at: datetime
    expires_at: datetime


class PostgresStore:
    """Sessions in one PostgreSQL table, keyed by the SHA-256 of their id so a leak opens none.

    Every method that reaches the database raises :class:`StoreUnavailable` when it cannot do
    so in time, and :class:`SessionError` when a statement fails.

    Built from a DSN, the store has a pool of its own. An app that already has a SQLAlchemy
    engine or a psycopg2 pool can lend the store its connections instead (:meth:`from_engine`,
    :meth:`from_pool`), or say how to open them (:meth:`from_factory`).

    :param dsn: a libpq connection string or ``postgresql://`` URL.
    :param table: table name; quoted as an identifier, so any name is safe.
    :param schema: schema holding the table; created if missing.
    :param max_connections: pool size per process.
    :param pool_timeout: seconds a request waits for a free connection before
        :class:`StoreUnavailable`.
    :param connect_timeout: seconds to wait for a new connection.
    :param statement_timeout: seconds any one statement may run (sent as a startup option).
    :param synchronous_commit: ``True`` keeps the server's setting. ``False`` acknowledges writes
        before their WAL reaches disk: much faster writes, but a database *crash* (not a clean
        restart) can lose the last fraction of a second of session changes. Sessions are never
        corrupted either way.
    :param create_table: create the schema, table and indexes on first use.
    :param purge_interval: seconds between background purges of expired rows; None for none.
    :param unlogged: keep sessions in an ``UNLOGGED`` table: writes skip the WAL (faster, and
        ``synchronous_commit`` no longer matters for them), but after a database *crash* the
        table is emptied (everyone is logged out), and it is not copied to streaming replicas:
        the durability of Redis without persistence. An existing table that differs is refused
        with a :class:`ConfigurationError` (``pgsession-wsgi init --unlogged`` / ``--logged``
        converts it); None takes an existing table as it is (a new one is logged).
    :param prepared_statements: prepare the request statements (load, insert, write, touch,
        delete) on the server, once per connection: PostgreSQL then skips parsing and planning
        them on every request, and each write sends its values only (about 250 bytes instead of
        1.2 KB). The ``PREPARE`` travels in the same message as the first ``EXECUTE``, so no
        round trip is added. Off by itself behind PgBouncer in transaction mode (as found at the
        first connection, or when a prepared statement goes missing); False turns it off, e.g.
        for another pooler that shares server connections between clients.
    :raises ConfigurationError: the DSN is not PostgreSQL's, or a number is out of range.
    """

    def __init__(
        self,
        dsn: str,
        table: str = DEFAULT_TABLE,
        schema: str = DEFAULT_SCHEMA,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        statement_timeout: float | None = 5.0,
        synchronous_commit: bool = True,
        create_table: bool = True,
        purge_interval: float | None = DEFAULT_PURGE_INTERVAL,
        unlogged: bool | None = False,
        prepared_statements: bool = True,
    ) -> None:
        dsn = normalize_dsn(dsn)
        check_store_options(max_connections, pool_timeout, connect_timeout, purge_interval)
        # The settings kept are only those we send, so a user's own is never "re-applied".
        connect_kwargs, settings = store_connect_arguments(
            dsn,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
            synchronous_commit=synchronous_commit,
        )
        pool = ConnectionPool(
            connect_kwargs, max_connections, pool_timeout, on_connect=self._check_first_connection
        )
        self._set_up(pool, table, schema, statement_timeout, settings, create_table, purge_interval, unlogged)
        self._prepare_statements(prepared_statements)

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

        Each statement borrows a connection from the engine's pool (``engine.raw_connection()``)
        and gives it back at once, as it was lent (see :mod:`pgsession_wsgi.borrowed`). The
        engine's pool sets how many connections there are and how long a request waits for one
        (its ``pool_size``, ``max_overflow``, ``pool_timeout``: SQLAlchemy's default wait is 30
        s, a shorter one answers 503 sooner). ``pool_pre_ping`` is not needed: the store finds
        dead connections without a round trip, and pre-ping would add one per statement.

        :param engine: a :class:`sqlalchemy.engine.Engine` with the ``postgresql+psycopg2``
            driver; :meth:`close` leaves it open.
        :param table: as for :class:`PostgresStore`.
        :param schema: as for :class:`PostgresStore`.
        :param statement_timeout: seconds any one of the store's statements may run, set with
            ``SET LOCAL`` on each (the engine's connections are the app's: nothing outlives the
            statement); None leaves the connection's own setting.
        :param synchronous_commit: as for :class:`PostgresStore`, also with ``SET LOCAL``.
        :param create_table: as for :class:`PostgresStore`; False when a migration tool (e.g.
            Alembic with :func:`pgsession_wsgi.sqlalchemy.session_table`) creates the table.
        :param purge_interval: as for :class:`PostgresStore`; the background purge borrows a
            connection for each batch alone, so it never holds one of the app's for long.
        :param unlogged: as for :class:`PostgresStore`.
        :raises ConfigurationError: not an Engine, or not ``postgresql+psycopg2``.
        """
        check_store_options(1, 1.0, 1.0, purge_interval)
        return cls._lent(
            EngineConnections(engine),
            table,
            schema,
            statement_timeout,
            synchronous_commit,
            create_table,
            purge_interval,
            unlogged,
        )

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

        Each connection goes back with ``putconn`` right after its statement, as it was lent,
        or with ``putconn(conn, close=True)`` if it broke. Use a ``ThreadedConnectionPool``
        when requests run in threads.

        :param pool: a :class:`psycopg2.pool.AbstractConnectionPool`; :meth:`close` leaves it open.
        :param table: as for :class:`PostgresStore`.
        :param schema: as for :class:`PostgresStore`.
        :param pool_timeout: seconds to wait for one of the pool's connections while all are out
            (psycopg2's pools refuse at once; the store asks again until then), then
            :class:`StoreUnavailable`.
        :param statement_timeout: as for :meth:`from_engine`.
        :param synchronous_commit: as for :meth:`from_engine`.
        :param create_table: as for :class:`PostgresStore`.
        :param purge_interval: as for :meth:`from_engine`.
        :param unlogged: as for :class:`PostgresStore`.
        :raises ConfigurationError: not a psycopg2 pool, or a number out of range.
        """
        check_store_options(1, pool_timeout, 1.0, purge_interval)
        return cls._lent(
            PoolConnections(pool, pool_timeout),
            table,
            schema,
            statement_timeout,
            synchronous_commit,
            create_table,
            purge_interval,
            unlogged,
        )

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

        For credentials only the app knows how to get (a secrets manager, a rotating token):
        the factory is called for each new connection, and the store pools, checks and closes
        them as it does its own. The store's settings travel with each statement (``SET
        LOCAL``) unless the factory's connections already have them, which is checked once.

        :param factory: returns a new psycopg2 connection, e.g.
            ``lambda: psycopg2.connect(dsn, password=fetch_token())``.
        :param table: as for :class:`PostgresStore`.
        :param schema: as for :class:`PostgresStore`.
        :param max_connections: as for :class:`PostgresStore`.
        :param pool_timeout: as for :class:`PostgresStore`.
        :param statement_timeout: as for :meth:`from_engine`.
        :param synchronous_commit: as for :meth:`from_engine`.
        :param create_table: as for :class:`PostgresStore`.
        :param purge_interval: as for :class:`PostgresStore` (the purge has a connection of its
            own, from the factory).
        :param unlogged: as for :class:`PostgresStore`.
        :param prepared_statements: as for :class:`PostgresStore` (off when the factory's
            connections lack the store's settings, which then travel with each statement).
        :raises ConfigurationError: ``factory`` is not callable, or a number out of range.
        """
        if not callable(factory):
            raise ConfigurationError(
                "from_factory() takes a callable returning a new psycopg2 connection, "
                "e.g. lambda: psycopg2.connect(dsn)"
            )
        check_store_options(max_connections, pool_timeout, 1.0, purge_interval)
        store = cls.__new__(cls)
        pool = ConnectionPool(
            {}, max_connections, pool_timeout, on_connect=store._check_first_connection, factory=factory
        )
        settings = lent_settings(statement_timeout, synchronous_commit)
        store._set_up(
            pool, table, schema, statement_timeout, settings, create_table, purge_interval, unlogged
        )
        store._prepare_statements(prepared_statements)
        store._origin = "your connection factory"
        return store

    @classmethod
    def _lent(
        cls: type[S],
        source: LentConnections,
        table: str,
        schema: str,
        statement_timeout: float | None,
        synchronous_commit: bool,
        create_table: bool,
        purge_interval: float | None,
        unlogged: bool | None = False,
    ) -> S:
        store = cls.__new__(cls)
        settings = lent_settings(statement_timeout, synchronous_commit)
        store._set_up(
            source, table, schema, statement_timeout, settings, create_table, purge_interval, unlogged
        )
        # No startup option reaches a lent connection: every statement sets them (SET LOCAL).
        store._sql = Statements(schema, table, guard(settings))
        store._settings_checked = True  # and no prepared statements on the app's connections
        store._origin = source.origin
        return store

    def _set_up(
        self,
        pool: ConnectionPool | LentConnections,
        table: str,
        schema: str,
        statement_timeout: float | None,
        settings: dict[str, str],
        create_table: bool,
        purge_interval: float | None,
        unlogged: bool | None = False,
    ) -> None:
        """What every constructor does once it knows where the connections come from."""
        #: The table's name, as given (unquoted).
        self.table = table
        #: The schema's name, as given (unquoted).
        self.schema = schema
        #: Seconds any one statement may run, as given; None for no limit (or, on an app's
        #: connections, their own).
        self.statement_timeout = statement_timeout
        #: Seconds between background purges, as given; None for none.
        self.purge_interval = purge_interval
        self._create_table = create_table
        #: Whether the table is (made) unlogged, as given; None takes an existing one as it is.
        self.unlogged = unlogged
        self._qualified = f"{quote_identifier(schema, 'schema')}.{quote_identifier(table, 'table')}"
        self._lock_key = lock_key(schema, table)
        self._pool = pool
        # The settings the store itself sets, by startup option or SET LOCAL.
        self._settings = settings
        # Where the app's connections come from ("your SQLAlchemy engine"), None for a DSN.
        self._origin: str | None = None
        self._sql = Statements(schema, table, "")
        # Server-side prepared statements: kind -> (PREPARE, EXECUTE); None when off. Only on
        # the store's own connections (never on an app's), and never with a SET LOCAL guard.
        self._prepared: dict[str, tuple[str, str]] | None = None
        # Per connection, kind -> True (prepared there) or False (tried: it may be there).
        self._prepared_on: weakref.WeakKeyDictionary[psycopg2.extensions.connection, dict[str, bool]] = (
            weakref.WeakKeyDictionary()
        )
        # (kind, the settings' values) -> that kind's EXECUTE with those values written in.
        self._bound: dict[tuple[str, Fixed], str] = {}
        self._settings_checked = False
        self._ready_pid: int | None = None
        self._table_created = False
        self._layout_checked = False
        self._ready_lock = threading.Lock()
        self._purger: PurgeWorker | None = None

    def __repr__(self) -> str:
        return f"<PostgresStore {self._qualified}>"

    @property
    def dsn(self) -> str:
        """The DSN the store connects with (as given, normalised); it may hold a password.

        A store on an engine answers the engine's URL (as libpq reads it).

        :raises ConfigurationError: the store takes its connections from a psycopg2 pool or a
            connection factory, and so knows no DSN: use the one the app built them with.
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
        """Whether every connection is borrowed from the app's engine or pool (the store then
        opens none of its own, and its background purge borrows one per batch)."""
        return isinstance(self._pool, LentConnections)

    @property
    def qualified_name(self) -> str:
        """The table's quoted, schema-qualified name, as the store's SQL names it."""
        return self._qualified

    # -- setup -----------------------------------------------------------------------------

    def ddl(self) -> str:
        """The statements that create the table and its indexes, for a DBA to run by hand.

        They also bring a table made by an older version up to date (its missing columns). With
        ``unlogged=True`` the table is created ``UNLOGGED``.
        """
        schema_sql, table_sql, *index_sql = self._sql.create_unlogged if self.unlogged else self._sql.create
        return ";\n".join([schema_sql, table_sql, self._sql.upgrade, *index_sql]) + ";\n"

    def create_table(self, *, convert: bool = False) -> None:
        """Create schema, table and indexes if missing; safe when many processes start at once.

        ``CREATE ... IF NOT EXISTS`` alone races in PostgreSQL (a concurrent create fails on a
        catalog unique index), so the statements run under a transaction-scoped advisory lock.
        A table made by an older version gets the columns added since (metadata only).

        :param convert: make an existing table unlogged or logged as ``unlogged`` says
            (``ALTER TABLE ... SET UNLOGGED`` / ``SET LOGGED``: the table is rewritten under an
            exclusive lock, and ``SET LOGGED`` writes all of it to the WAL) instead of refusing it.
        :raises LegacyTableError: the table has flask-pg-session's layout; convert it first.
        :raises ConfigurationError: the table exists with another layout, or (without
            ``convert``) is unlogged when ``unlogged`` is False, or the reverse.
        """

        def create(cur: Cursor) -> None:
            cur.execute("BEGIN")
            try:
                cur.execute(LOCK, (self._lock_key,))
                cur.execute(SETUP_STATE, setup_names(self.schema, self.table))
                missing_schema, missing_objects = _one_row(cur)
                create = self._sql.create_unlogged if self.unlogged else self._sql.create
                before, after = setup_plan(missing_schema, missing_objects, create)
                for statement in before:
                    cur.execute(statement)
                # Before the indexes, which need our columns.
                self._check_layout(cur, upgrade=True, convert=convert)
                for statement in after:
                    cur.execute(statement)
                cur.execute("COMMIT")
            except BaseException:
                if not cur.connection.closed:
                    cur.execute("ROLLBACK")
                raise

        self._run(create, retry=True, setup=True)
        self._table_created = True

    def grant_access(self, role: str) -> None:
        """Grant ``role`` what an app needs to use the table, and nothing more.

        USAGE on the schema and SELECT, INSERT, UPDATE, DELETE on the table: run by the table's
        owner (``pgsession-wsgi init --grant ROLE``), so the app's own role needs no CREATE
        privilege and does not own the table. Start that app's store with ``create_table=False``
        (Flask and Quart: ``PGSESSION_CREATE_TABLE = False``), or leave it on: a store finds the
        table and its indexes there and runs no DDL.

        :param role: the app's role, as named in PostgreSQL (quoted here).
        :raises PrivilegeError: this store's role may not grant them (it is not the owner).
        """
        statements = grant_statements(self.schema, self.table, role)

        def grant(cur: Cursor) -> None:
            for statement in statements:
                cur.execute(statement)

        self._run(grant, retry=True, setup=True)

    def check_table(self) -> None:
        """Check, without changing anything, that the table exists and is a pgsession-wsgi table.

        What a store with ``create_table=False`` runs at its first request anyway; call it at
        start-up (the Flask extension does) so that a missing table stops the app with one line
        naming ``pgsession-wsgi init``, instead of failing every request.

        :raises ConfigurationError: the table is missing, or is not a pgsession-wsgi table (a
            :class:`~pgsession_wsgi.LegacyTableError` for flask-pg-session's).
        :raises PrivilegeError: the store's role may not read the table's layout.
        :raises StoreUnavailable: the database cannot be reached.
        """
        self._run(lambda cur: self._check_layout(cur, upgrade=False), retry=True, setup=True)
        self._layout_checked = True

    def _check_layout(self, cur: Cursor, *, upgrade: bool, convert: bool = False) -> None:
        """Refuse a table that is not ours; with ``upgrade``, add what an older one of ours lacks.

        A missing table (create_table=False) is refused, naming the command that creates it.
        One whose persistence differs from ``unlogged`` is refused, or with ``convert`` altered.
        """
        cur.execute(LAYOUT, (self._qualified,))
        columns = dict(cur.fetchall())
        if upgrade and needs_upgrade(columns):
            # ALTER TABLE waits for an exclusive lock even when there is nothing to add: only now.
            cur.execute(self._sql.upgrade)
            cur.execute(LAYOUT, (self._qualified,))
            columns = dict(cur.fetchall())
        if not columns:
            raise missing_table_error(
                qualified=self._qualified, table=self.table, schema=self.schema, driver_class="PostgresStore"
            )
        check_layout(columns, qualified=self._qualified, table=self.table, schema=self.schema)
        if self.unlogged is None:
            return
        cur.execute(PERSISTENCE, (self._qualified,))
        is_unlogged = bool(_one_row(cur)[0])
        if convert and is_unlogged != self.unlogged:
            log.warning(
                "converting the session table %s: %s",
                self._qualified,
                "SET UNLOGGED" if self.unlogged else "SET LOGGED",
            )
            cur.execute(persistence_statement(self._qualified, self.unlogged))
            is_unlogged = self.unlogged
        check_persistence(is_unlogged, self.unlogged, qualified=self._qualified)

    def _check_first_connection(self, conn: psycopg2.extensions.connection) -> None:
        """Find out once whether the server kept our startup options.

        PgBouncer in transaction mode drops them; then every statement carries its own
        ``SET LOCAL`` (still one round trip, a little more server work).
        """
        if self._settings_checked:
            return
        with conn.cursor() as cur:
            cur.execute(SETTINGS, (list(self._settings),))
            kept = dict(cur.fetchall())
        if kept != self._settings:
            self._sql = Statements(self.schema, self.table, guard(self._settings))
            self._prepared = None  # PgBouncer in transaction mode would lose them between statements
            log.info("startup options not kept (PgBouncer?); setting them per statement")
        self._settings_checked = True

    def _prepare_statements(self, enabled: bool) -> None:
        """Turn server-side prepared statements on (the store's own connections only)."""
        # Built from the unguarded text: a guard (found at the first connection) turns them off.
        if enabled:
            self._prepared = {kind: prepared(kind, getattr(self._sql, kind)) for kind in PREPARED_KINDS}

    def _send(self, cur: Cursor, kind: str, params: dict[str, Any], fixed: Fixed = ()) -> None:
        """Send the request statement ``kind``: ``EXECUTE`` where it is prepared on this connection,
        ``PREPARE ...; EXECUTE ...`` in one message where not yet, the plain text where off.

        ``fixed`` holds the values that come from the app's settings, not from the request
        (lifetimes, the size limit): an ``EXECUTE`` has them written in once, as literals.
        """
        statements = self._prepared
        if statements is None:
            cur.execute(getattr(self._sql, kind), {**params, **dict(fixed)} if fixed else params)
            return
        try:
            execute = self._bound.get((kind, fixed))
        except TypeError:  # an unhashable setting, surely of the wrong kind: _bind names it
            execute = None
        if execute is None:
            execute = self._bind(kind, statements[kind][1], fixed)
        conn = cur.connection
        done = self._prepared_on.get(conn)
        if done is None:
            done = self._prepared_on[conn] = {}
        before = done.get(kind)
        try:
            if before:
                cur.execute(execute, params)
            else:
                # A PREPARE stays even when the EXECUTE after it fails: remember the attempt.
                done[kind] = False
                cur.execute(f"{statements[kind][0]}; {execute}", params)
                done[kind] = True
        except (psycopg2.errors.InvalidSqlStatementName, psycopg2.errors.DuplicatePreparedStatement) as exc:
            # Nothing ran: the statement failed before it started.
            if before is False and isinstance(exc, psycopg2.errors.DuplicatePreparedStatement):
                done[kind] = True  # our own earlier attempt did prepare it
                cur.execute(execute, params)
                return
            # Gone, or there without our asking: the server connection is shared with other
            # clients (PgBouncer in transaction mode, not found by the startup check).
            self._prepared = None
            log.info("prepared statements dropped by the server side (PgBouncer?); sending plain statements")
            cur.execute(getattr(self._sql, kind), {**params, **dict(fixed)})

    def _bind(self, kind: str, execute: str, fixed: Fixed) -> str:
        """``execute`` with the settings' values written in, kept for the next request."""
        bound = with_literals(execute, {name: _literal(name, value) for name, value in fixed})
        if len(self._bound) < MAX_BOUND_STATEMENTS:
            self._bound[(kind, fixed)] = bound
        return bound

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
            if self._create_table and not self._table_created:
                self.create_table()
            elif not self._create_table and not self._layout_checked:
                # Once per process: an older table is named with its fix, not a failing SELECT.
                self.check_table()
            if self.purge_interval is not None:
                self._purger = PurgeWorker(self, self.purge_interval)
                self._purger.start()
            self._ready_pid = pid
        finally:
            self._ready_lock.release()

    # -- running statements ----------------------------------------------------------------

    def _run(self, work: Callable[[Cursor], T], *, retry: bool, setup: bool = False) -> T:
        """Run ``work`` on a pooled connection, turning database trouble into clear errors.

        ``retry`` is for statements that are safe to repeat (reads, idempotent writes): they get
        one more try on a fresh connection when the first one turns out to be broken.
        """
        if not setup:
            self._ensure_ready()
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            try:
                with self._pool.connection() as conn, conn.cursor() as cur:
                    if self._origin is not None:
                        use_own_typecasters(cur)
                    try:
                        return work(cur)
                    except psycopg2.errors.InsufficientPrivilege as exc:
                        role = _current_role(cur)
                        raise privilege_error(
                            _first_line(exc), role=role, table=self.table, schema=self.schema
                        ) from None
            except psycopg2.errors.QueryCanceled:
                limit = (
                    f"statement_timeout={self.statement_timeout}s"
                    if "statement_timeout" in self._settings
                    else "the statement_timeout your DSN or server sets"
                )
                raise StoreUnavailable(
                    f"a session statement ran longer than {limit}; check the database load, "
                    "or raise statement_timeout"
                ) from None
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                if attempt + 1 < attempts:
                    continue
                raise StoreUnavailable(
                    f"lost the connection to PostgreSQL ({_first_line(exc)}); it is retried on the "
                    "next request"
                ) from None
            except psycopg2.errors.UndefinedTable:
                raise SessionError(
                    f"the session table {self._qualified} does not exist: create it with "
                    "`pgsession-wsgi init` or PostgresStore(create_table=True)"
                ) from None
            except psycopg2.Error as exc:
                raise SessionError(f"the session store failed: {_first_line(exc)}") from None
        raise AssertionError("unreachable")

    # -- the request path ------------------------------------------------------------------

    def execute(self, operation: Operation) -> Any:
        """Run one statement the core asked for (see :mod:`pgsession_wsgi.core`), answer it.

        :param operation: a ``Load``, ``Insert``, ``Write``, ``Touch`` or ``Delete``.
        :returns: the answer that operation's docstring names.
        """
        if isinstance(operation, Load):
            return self.load(operation.id_hash, operation.touch_interval)
        if isinstance(operation, Write):
            return self.write(
                operation.id_hash,
                operation.changed_json,
                operation.removed,
                replace=operation.replace,
                new_hash=operation.new_hash,
                user_id=operation.user_id,
                idle=operation.idle,
                absolute=operation.absolute,
                touch_interval=operation.touch_interval,
                max_size=operation.max_size,
                set_expiry=operation.set_expiry,
                idle_timeout=operation.idle_timeout,
                ends_at=operation.ends_at,
            )
        if isinstance(operation, Insert):
            op = operation
            return self.insert(
                op.id_hash,
                op.data_json,
                op.user_id,
                op.idle,
                op.absolute,
                op.max_size,
                idle_timeout=op.idle_timeout,
                ends_at=op.ends_at,
            )
        if isinstance(operation, Touch):
            return self.touch(operation.id_hash, operation.idle, operation.absolute)
        if isinstance(operation, Delete):
            return self.delete(operation.id_hash)
        raise TypeError(f"not a session store operation: {operation!r}")

    def load(self, id_hash: bytes, touch_interval: timedelta) -> LoadedRow | None:
        """The live row for ``id_hash``, or None: the answer to a ``Load``.

        :param id_hash: the SHA-256 of the session id.
        :param touch_interval: how old ``accessed_at`` may get before ``touch_due`` is set.
        :raises SessionDataError: the row holds JSON the codec never writes, or a time or a
            duration no Python value holds (``infinity``, year 10000...).
        """

        def select(cur: Cursor) -> LoadedRow | None:
            self._send(cur, "load", {"id": id_hash}, (("touch", touch_interval),))
            with reading_row():  # JSON our codec never writes, a time or duration out of range
                row = checked_row(cur.fetchone())
            return None if row is None else LoadedRow(*row)

        return self._run(select, retry=True)

    def insert(
        self,
        id_hash: bytes,
        data_json: str,
        user_id: str | None,
        idle: timedelta,
        absolute: timedelta | None,
        max_size: int | None = None,
        *,
        idle_timeout: timedelta | None = None,
        ends_at: datetime | None = None,
    ) -> None:
        """Store a new session; :class:`SessionTooLarge` (nothing stored) if it is over ``max_size``.

        The size is what the database stores (``octet_length(data::text)``), checked in the
        same statement.

        :param id_hash: the SHA-256 of the new id.
        :param data_json: the whole session, a JSON object.
        :param user_id: the text of the user column, or None.
        :param idle: the row expires this long after its last touch.
        :param absolute: the row expires this long after its creation at the latest; None: never.
        :param max_size: the most bytes the stored data may take; None for no limit.
        :param idle_timeout: the session's own idle lifetime, instead of ``idle``; None: ``idle``.
        :param ends_at: the session's fixed end, instead of any idle expiry; None: none.
        :raises SessionTooLarge: the data is over ``max_size``.
        """
        params = {
            "id": id_hash,
            "data": data_json,
            "user_id": user_id,
            "idle_timeout": idle_timeout,
            "ends_at": ends_at,
        }
        fixed = (("idle", idle), ("absolute", absolute), ("max_size", max_size))

        def execute(cur: Cursor) -> None:
            self._send(cur, "insert", params, fixed)
            if cur.rowcount == 0 and max_size is not None:
                cur.execute(self._sql.size_of, params)
                raise SessionTooLarge(int(_one_row(cur)[0]), max_size)

        self._run(execute, retry=False)

    def write(
        self,
        id_hash: bytes,
        changed_json: str,
        removed: Sequence[str],
        *,
        replace: bool,
        new_hash: bytes | None,
        user_id: Any = KEEP_USER,
        idle: timedelta,
        absolute: timedelta | None,
        touch_interval: timedelta,
        max_size: int | None = None,
        set_expiry: bool = False,
        idle_timeout: timedelta | None = None,
        ends_at: datetime | None = None,
    ) -> WriteResult:
        """Merge changed keys into a live row, moving it to ``new_hash`` if given.

        The merged row is measured in the same statement, so concurrent writes cannot pass
        ``max_size`` together. The expiry columns change only when a touch is due (or with
        ``set_expiry``), so most
        writes leave every indexed column as it was and PostgreSQL can update the row in place
        (a HOT update).

        :param id_hash: the SHA-256 of the current id.
        :param changed_json: the changed keys, a JSON object merged over the stored one.
        :param removed: the keys to delete from the stored object.
        :param replace: start from an empty object instead (after ``clear()``).
        :param new_hash: the SHA-256 of a new id to move the row to; None to keep the id.
        :param user_id: the user column's new text, None to clear it, or :data:`KEEP_USER`.
        :param idle: as for :meth:`insert`; applied only when a touch is due.
        :param absolute: as for :meth:`insert`.
        :param touch_interval: a touch is due when ``accessed_at`` is older than this.
        :param max_size: the most bytes the merged data may take; None for no limit.
        :param set_expiry: write ``idle_timeout`` and ``ends_at`` and recompute the expiry now.
        :param idle_timeout: as for :meth:`insert`; written only with ``set_expiry``.
        :param ends_at: as for :meth:`insert`; written only with ``set_expiry``.
        :returns: whether the row was there, whether its expiry moved, its ``_permanent``, and
            its own lifetime.
        :raises SessionTooLarge: the merged row is over ``max_size``; nothing was written.
        """
        params = {
            "id": id_hash,
            "new_id": new_hash,
            "changed": changed_json,
            "removed": list(removed),
            "replace": replace,
            "set_user": user_id is not KEEP_USER,
            "user_id": None if user_id is KEEP_USER else user_id,
            "set_expiry": set_expiry,
            "idle_timeout": idle_timeout,
            "ends_at": ends_at,
        }

        # Only data changes (the common write): the statement without the other columns' cases.
        kind = (
            "merge" if new_hash is None and not (replace or set_expiry) and user_id is KEEP_USER else "write"
        )

        fixed = (("touch", touch_interval), ("idle", idle), ("absolute", absolute), ("max_size", max_size))

        def execute(cur: Cursor) -> WriteResult:
            self._send(cur, kind, params, fixed)
            with reading_row():  # the row's own lifetime, as stored
                row = checked_row(cur.fetchone())
            if row is None:
                if max_size is not None:
                    # Rare: the row is gone, or the merge would pass the limit. Ask which.
                    cur.execute(self._sql.merged_size, params)
                    found = cur.fetchone()
                    if found is not None and found[0] > max_size:
                        raise SessionTooLarge(int(found[0]), max_size)
                return WriteResult(updated=False, touched=False, permanent=None)
            permanent, touched, own_idle, own_end = row  # permanent: a bool, or NULL if unset
            return WriteResult(True, touched, permanent, own_idle, own_end)

        return self._run(execute, retry=False)

    def touch(self, id_hash: bytes, idle: timedelta, absolute: timedelta | None) -> bool:
        """Push a live row's expiry forward (by its own lifetime, if it has one), data untouched.

        :param id_hash: the SHA-256 of the session id.
        :param idle: as for :meth:`insert`.
        :param absolute: as for :meth:`insert`.
        :returns: whether the row was there.
        """

        def execute(cur: Cursor) -> bool:
            self._send(cur, "touch", {"id": id_hash}, (("idle", idle), ("absolute", absolute)))
            return bool(cur.rowcount)

        return self._run(execute, retry=True)

    def delete(self, id_hash: bytes) -> bool:
        """Remove a session; true if a row was there.

        :param id_hash: the SHA-256 of the session id.
        """

        def execute(cur: Cursor) -> bool:
            self._send(cur, "delete", {"id": id_hash})
            return bool(cur.rowcount)

        return self._run(execute, retry=True)

    # -- maintenance -----------------------------------------------------------------------

    def purge_expired(
        self,
        batch_size: int = DEFAULT_PURGE_BATCH_SIZE,
        *,
        on_batch: Callable[[int, int], bool | None] | None = None,
    ) -> int:
        """Delete expired rows in batches of ``batch_size``; returns how many went.

        Each batch is one short statement, its own transaction, that skips rows other
        transactions hold, so requests never wait on it and a stop between batches leaves nothing
        half-done. Batches take a transaction-scoped advisory lock: while another process is
        purging, this call stops early (and may return 0).

        :param batch_size: rows per statement: shorter statements against more round trips.
        :param on_batch: for a long purge, to show progress or stop it: called as
            ``on_batch(removed, expected)`` once before the first batch (``removed`` 0) and after
            each committed batch, ``removed`` counting every row gone so far. ``expected`` is how
            many rows were expired at the start: an exact count up to
            :data:`EXACT_COUNT_LIMIT`, beyond it an estimate from a sample of the table's pages
            (rows expiring meanwhile are purged too, so ``removed`` may pass it). Return
            ``False`` to stop there; the rows removed so far stay removed and are counted in the
            result. Without it, no count is made.
        :raises ConfigurationError: ``batch_size`` is below 1.
        """
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        # Kept across the one retry on a fresh connection, so the count never goes back.
        removed = 0
        expected: int | None = None

        def batch_done(count: int) -> bool:
            nonlocal removed
            removed += count
            return on_batch is None or on_batch(removed, expected or 0) is not False

        def purge(cur: Cursor) -> int:
            nonlocal expected
            if on_batch is not None and expected is None:
                expected = self._count_expired(cur)
                if on_batch(0, expected) is False:
                    return 0
            self._purge_batches(cur, batch_size, batch_done)
            return removed

        return self._run(purge, retry=True)

    def purge_on(self, conn: psycopg2.extensions.connection, batch_size: int) -> int:
        """:meth:`purge_expired` on a connection outside the pool (the purge worker's own).

        :param conn: an open autocommit connection, e.g. from :meth:`connect_unpooled`.
        :param batch_size: rows per statement.
        """
        with conn.cursor() as cur:
            return self._purge_batches(cur, batch_size)

    def connect_unpooled(self) -> psycopg2.extensions.connection:
        """A connection outside the pool, for work that must never make a request wait.

        :raises ConfigurationError: the store borrows the app's connections (an engine or a
            psycopg2 pool) and opens none: see :meth:`purge_batch_by_batch`.
        """
        if isinstance(self._pool, LentConnections):
            raise ConfigurationError(
                f"this store borrows every connection from {self._origin} and opens none of its "
                "own; purge with purge_expired() or purge_batch_by_batch()"
            )
        return self._pool.connect_unpooled()

    def purge_batch_by_batch(self, batch_size: int = DEFAULT_PURGE_BATCH_SIZE) -> int:
        """:meth:`purge_expired`, borrowing a connection for each batch alone; how many rows went.

        The background purge of a store on the app's engine or pool: between batches the
        connection is back in the app's pool, so the purge never keeps one from a request for
        longer than one short statement.

        :param batch_size: rows per statement.
        :raises ConfigurationError: ``batch_size`` is below 1.
        """
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        total, after = 0, "-infinity"
        while True:

            def batch(cur: Cursor, after: Any = after) -> tuple[int, Any]:
                cur.execute(self._sql.purge, {"lock": self._lock_key, "limit": batch_size, "after": after})
                removed, last = _one_row(cur)
                return int(removed), last

            removed, after = self._run(batch, retry=True)
            total += removed
            if removed < batch_size:
                return total

    def _purge_batches(
        self, cur: Cursor, batch_size: int, batch_done: Callable[[int], bool] | None = None
    ) -> int:
        """Purge batch after batch until one comes back short; ``batch_done(count)`` is told of
        each committed batch and stops the purge by returning False."""
        # Each batch starts where the last one ended in expires_at order, so it never walks
        # over index entries of rows already deleted (and not yet vacuumed).
        total, after = 0, "-infinity"
        while True:
            cur.execute(self._sql.purge, {"lock": self._lock_key, "limit": batch_size, "after": after})
            removed, last = _one_row(cur)
            total += removed
            if batch_done is not None and not batch_done(int(removed)):
                return int(total)
            if removed < batch_size:
                return int(total)
            after = last

    def _count_expired(self, cur: Cursor) -> int:
        """About how many rows are expired: exact up to EXACT_COUNT_LIMIT, else estimated from
        a sample of the table's pages (counting millions of rows would delay the purge it is
        meant to describe, and the planner's statistics lag behind a burst of expiries)."""
        cur.execute(self._sql.expired_count, {"cap": EXACT_COUNT_LIMIT})
        (counted,) = _one_row(cur)
        if counted < EXACT_COUNT_LIMIT:
            return int(counted)
        cur.execute(self._sql.expired_sample, {"pages": SAMPLED_PAGES, "name": self._qualified})
        (estimate,) = _one_row(cur)
        return max(int(counted), int(estimate or 0))

    def sessions_for_user(self, user_id: Any, *, key_prefix: str = "") -> list[SessionInfo]:
        """The live sessions whose ``user_key`` value is ``user_id``, most recently used first.

        :param user_id: a str, int or UUID (``42`` and ``"42"`` are the same user, and so are a
            UUID's spellings), matched as :func:`~pgsession_wsgi.core.user_id_text` stores it.
        :param key_prefix: the app's ``key_prefix`` (``SESSION_KEY_PREFIX``): only that app's
            sessions are listed; "" for an app without one.
        :returns: the sessions; one whose row holds a time no ``datetime`` holds (``infinity``,
            year 10000: never written by pgsession-wsgi) is left out, with a warning.
        :raises SessionError: ``user_id`` is of another type.
        """
        user_text = user_id_text(user_id, key_prefix=key_prefix)

        def select(cur: Cursor) -> list[SessionInfo]:
            cur.execute(self._sql.for_user, {"user_id": user_text})
            found = []
            for index in range(cur.rowcount):  # by position: a row that cannot be read is skipped
                cur.scroll(index, mode="absolute")
                with skipping_unreadable_row():
                    found.append(SessionInfo(*checked_row(cur.fetchone() or ())))
            return found

        return self._run(select, retry=True)

    def revoke_user(self, user_id: Any, keep: Any = None, *, key_prefix: str = "") -> int:
        """Delete every session of ``user_id`` ("log out everywhere"), except ``keep``.

        :param user_id: as for :meth:`sessions_for_user`.
        :param keep: a :class:`Session` or a session id to spare, typically the current one.
        :param key_prefix: the app's ``key_prefix``: only that app's sessions end; "" for none.
        :returns: how many sessions were deleted.
        :raises SessionError: ``user_id`` is not a str, int or UUID.
        """
        user_text = user_id_text(user_id, key_prefix=key_prefix)
        keep_hash = None
        if keep is not None:
            from .cookies import hash_session_id

            keep_id = keep if isinstance(keep, str) else getattr(keep, "id", None)
            keep_hash = hash_session_id(keep_id) if keep_id else None

        def execute(cur: Cursor) -> int:
            cur.execute(self._sql.revoke, {"user_id": user_text, "keep": keep_hash})
            return int(cur.rowcount)

        return self._run(execute, retry=True)

    def stats(self) -> dict[str, int]:
        """How full the table is, for monitoring and ``pgsession-wsgi stats``.

        :returns: ``live`` and ``expired`` rows, distinct ``users`` with a live session, and
            ``total_bytes``, the table's size on disk with its indexes.
        """

        def select(cur: Cursor) -> dict[str, int]:
            cur.execute(self._sql.stats, {"name": self._qualified})
            live, expired, users, size = _one_row(cur)
            return {"live": live, "expired": expired, "users": users, "total_bytes": size}

        return self._run(select, retry=True)

    def close(self) -> None:
        """Stop the purge thread and close pooled connections; the store is unusable after."""
        if self._purger is not None:
            self._purger.stop()
        self._pool.close()


def _literal(name: str, value: Any) -> str:
    """A setting's value as SQL text, exactly as psycopg2 would send it as a parameter.

    Only the kinds of value the settings take (durations, byte counts, None) are written into a
    statement's text; anything else is refused here rather than pasted into SQL.
    """
    if isinstance(value, bool) or not (value is None or isinstance(value, (timedelta, int, float))):
        parameter = "touch_interval" if name == "touch" else name
        raise TypeError(f"{parameter} must be a timedelta, a number or None, not {type(value).__name__}")
    return str(psycopg2.extensions.adapt(value).getquoted().decode("ascii"))


def _one_row(cur: Cursor) -> tuple[Any, ...]:
    row = cur.fetchone()
    if row is None:
        raise SessionError("the database returned no row where one was expected")
    return row


def _current_role(cur: Cursor) -> str | None:
    """The role the connection works as, for a privilege error; None if it cannot be asked."""
    try:
        cur.execute(CURRENT_ROLE)
        return str(_one_row(cur)[0])
    except psycopg2.Error:
        return None
