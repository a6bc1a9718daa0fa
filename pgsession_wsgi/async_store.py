"""``AsyncPostgresStore``: the async twin of :class:`~pgsession_wsgi.store.PostgresStore` on psycopg 3.

It runs the same statement text (:mod:`pgsession_wsgi.sql`) and answers the core's operations
exactly as the sync store does, so an async front end saves with::

    headers = await run_async(core.save(session), store.execute)

Driver choices, each made so that an answer never depends on which store gave it:

* **JSON** comes back through ``json.loads`` on every connection, as psycopg2 does (psycopg 3's
  global default could be changed by the app); values go out as text cast by the statements
  (``%(data)s::jsonb``), which psycopg 3 sends untyped, so the server reads them as jsonb.
* **Prepared statements as the sync store has them**, on the store's own connections: each
  request statement (load, insert, write, touch, delete) is prepared under a name that holds a
  hash of its text (``pgsession_load_<hash>``), its ``PREPARE`` sent with the first ``EXECUTE``
  in one message, values bound on the client (``AsyncClientCursor``). psycopg 3's own automatic
  preparation stays off (``prepare_threshold=None``): its names (``_pg3_0``...) are the same on
  every connection, so behind a PgBouncer the first check misses they could meet another
  client's statement. Off behind PgBouncer, on an app's pool, with
  ``prepared_statements=False``, and once a prepared statement goes missing.
* **Behind PgBouncer** the startup options are dropped, so (as the sync store does) each statement
  is prefixed with ``SET LOCAL ...``. Several commands cannot go in one extended-protocol
  statement, so such statements go through psycopg's ``AsyncClientCursor``: values bound on the
  client, the whole text in one simple-protocol message, exactly what psycopg2 sends: one round
  trip, one implicit transaction, so ``SET LOCAL`` covers the statement and nothing after it.
  Otherwise values are bound on the server (one extended-protocol round trip).

The store is asyncio-only (psycopg 3's async connections and pool need asyncio) and lives in one
event loop: the one that opens it, explicitly or at its first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from .errors import MissingExtraError

try:
    import psycopg
    import psycopg.errors
    from psycopg import AsyncClientCursor, AsyncConnection, AsyncCursor
    from psycopg.types.datetime import TimestamptzLoader
    from psycopg.types.json import set_json_loads
    from psycopg_pool import AsyncConnectionPool
except ModuleNotFoundError as missing:  # the [asgi] extra: say which command installs it
    raise (MissingExtraError.of(missing, __name__) or missing) from None

from . import store as store_module
from .async_borrowed import LentAsyncPool
from .async_pool import AsyncPool
from .async_purge import AsyncPurgeTask
from .borrowed import lent_settings
from .cookies import hash_session_id
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
from .dsn import normalize_dsn, store_connect_arguments
from .errors import ConfigurationError, SessionError, SessionTooLarge, StoreUnavailable
from .layout import (
    check_layout,
    check_persistence,
    missing_table_error,
    needs_upgrade,
    privilege_error,
    setup_plan,
)
from .pool import _first_line
from .session import checked_row, reading_row, skipping_unreadable_row
from .sql import (
    CURRENT_ROLE,
    LAYOUT,
    LOCK,
    PERSISTENCE,
    SETTINGS,
    SETUP_STATE,
    Statements,
    guard,
    lock_key,
    persistence_statement,
    prepared,
    quote_identifier,
    setup_names,
)
from .store import SessionInfo

__all__ = ["AsyncPostgresStore"]

log = logging.getLogger("pgsession_wsgi")

T = TypeVar("T")
S = TypeVar("S", bound="AsyncPostgresStore")
Connection = AsyncConnection[Any]
Cursor = AsyncCursor[Any]


@dataclass(frozen=True)
class _Dialect:
    """The statements and how to send them; replaced as a whole when PgBouncer is found."""

    sql: Statements
    client_side: bool  # guarded statements hold several commands: bind on the client
    lent: bool = False  # the app's connections: its own jsonb and timestamptz loaders do not apply
    #: The request statements' (PREPARE, EXECUTE) templates by kind; None: not prepared.
    prepared: dict[str, tuple[str, str]] | None = None

    def cursor(self, conn: Connection) -> Cursor:
        cur: Cursor = AsyncClientCursor(conn) if self.client_side else conn.cursor()
        if self.lent:
            set_json_loads(json.loads, cur)
            cur.adapters.register_loader("timestamptz", TimestamptzLoader)
        return cur


#: The request statements prepared on the store's own connections (with prepared_statements).
PREPARED_KINDS = ("load", "insert", "write", "touch", "delete")

#: A prepared statement missing on the server, or one of the same name there without our asking.
_PREPARED_GONE = (psycopg.errors.InvalidSqlStatementName, psycopg.errors.DuplicatePreparedStatement)

#: What runs on a borrowed connection: given it and the statements to use.
Work = Callable[[Connection, _Dialect], Awaitable[T]]


async def _execute(dialect: _Dialect, conn: Connection, statement: str, params: dict[str, Any]) -> Cursor:
    """Run one statement; the cursor is left on its last result (past a ``SET LOCAL`` prefix)."""
    cur = dialect.cursor(conn)
    await cur.execute(statement, params)
    while cur.nextset():
        pass
    return cur


async def _one_row(cur: Cursor) -> tuple[Any, ...]:
    row = await cur.fetchone()
    if row is None:
        raise SessionError("the database returned no row where one was expected")
    return tuple(row)


class AsyncPostgresStore:
    """Sessions in one PostgreSQL table, keyed by the SHA-256 of their id, for asyncio apps.

    The parameters are :class:`~pgsession_wsgi.store.PostgresStore`'s, with the same meaning:

    :param dsn: a libpq connection string or ``postgresql://`` URL; its own parameters win over
        the store's defaults (``application_name``, ``options``, timeouts...).
    :param table: table name; quoted as an identifier, so any name is safe.
    :param schema: schema holding the table; created if missing.
    :param max_connections: pool size per process; requests beyond it wait for a connection.
    :param pool_timeout: seconds a request waits for a free connection before
        :class:`StoreUnavailable` (a 503, not a hung request).
    :param connect_timeout: seconds to wait for a new connection.
    :param statement_timeout: seconds any one statement may run (a startup option, or a
        ``SET LOCAL`` per statement behind PgBouncer); None for the server's own limit.
    :param synchronous_commit: ``False`` acknowledges writes before their WAL reaches disk: faster,
        but a database crash can lose the last fraction of a second of session changes.
    :param create_table: create the schema, table and indexes when the store opens.
    :param purge_interval: seconds between background purges of expired rows; None for none.
    :param unlogged: an ``UNLOGGED`` table: writes skip the WAL, and a database crash empties
        the table (everyone is logged out); an existing table that differs is refused. None
        takes an existing table as it is.
    :param prepared_statements: prepare the request statements on the server, once per
        connection (no parsing or planning per request); off by itself behind PgBouncer. False
        for a pooler that shares server connections between clients and is not found.
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
        connect_kwargs, settings = store_connect_arguments(
            dsn,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
            synchronous_commit=synchronous_commit,
        )
        self._init_common(table, schema, statement_timeout, purge_interval, create_table, settings, unlogged)
        if prepared_statements:
            sql = Statements(schema, table, "")
            templates = {kind: prepared(kind, getattr(sql, kind)) for kind in PREPARED_KINDS}
            self._dialect = _Dialect(sql, client_side=False, prepared=templates)
        self.max_connections = max_connections
        self.pool_timeout = pool_timeout
        self._connect_kwargs = connect_kwargs

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

        As :meth:`PostgresStore.from_pool <pgsession_wsgi.store.PostgresStore.from_pool>` does
        (see :mod:`pgsession_wsgi.async_borrowed`): each connection is switched to autocommit for
        the statement and given back with its own setting; the store's settings go with each
        statement as ``SET LOCAL``; a dead or broken connection is closed for the pool to
        replace; :meth:`close` leaves the pool open; the background purge borrows a connection
        per batch. The app opens the pool (``await pool.open()``) before the store's first use.

        :param pool: a :class:`psycopg_pool.AsyncConnectionPool` of the app's.
        :param table: as for :class:`AsyncPostgresStore`.
        :param schema: as for :class:`AsyncPostgresStore`.
        :param pool_timeout: seconds to wait for one of the pool's connections before
            :class:`StoreUnavailable`; None: the pool's own ``timeout``.
        :param statement_timeout: seconds any one of the store's statements may run, set with
            ``SET LOCAL`` on each; None leaves the connection's own setting.
        :param synchronous_commit: as for :class:`AsyncPostgresStore`, also with ``SET LOCAL``.
        :param create_table: as for :class:`AsyncPostgresStore`.
        :param purge_interval: as for :class:`AsyncPostgresStore`.
        :param unlogged: as for :class:`AsyncPostgresStore`.
        :raises ConfigurationError: not a psycopg_pool ``AsyncConnectionPool``, or a number out
            of range.
        """
        lent = LentAsyncPool(pool, pool_timeout)
        check_store_options(1, lent.timeout, 1.0, purge_interval)
        settings = lent_settings(statement_timeout, synchronous_commit)
        store = cls.__new__(cls)
        store._init_common(table, schema, statement_timeout, purge_interval, create_table, settings, unlogged)
        store.max_connections = pool.max_size
        store.pool_timeout = lent.timeout
        store._connect_kwargs = {}
        store._pool = lent
        # No startup option reaches a lent connection: every statement sets them (SET LOCAL),
        # several commands in one message, so bound on the client.
        store._dialect = _Dialect(Statements(schema, table, guard(settings)), client_side=True, lent=True)
        store._settings_checked = True
        return store

    def _init_common(
        self,
        table: str,
        schema: str,
        statement_timeout: float | None,
        purge_interval: float | None,
        create_table: bool,
        settings: dict[str, str],
        unlogged: bool | None = False,
    ) -> None:
        """What every constructor does, whichever pool the connections come from."""
        self.table = table
        self.schema = schema
        self.statement_timeout = statement_timeout
        self.purge_interval = purge_interval
        self._create_table = create_table
        #: Whether the table is (made) unlogged, as given; None takes an existing one as it is.
        self.unlogged = unlogged
        self._qualified = f"{quote_identifier(schema, 'schema')}.{quote_identifier(table, 'table')}"
        self._lock_key = lock_key(schema, table)
        self._settings = settings
        self._dialect = _Dialect(Statements(schema, table, ""), client_side=False)
        self._settings_checked = False
        # Per connection, kind -> True (prepared there) or False (tried: it may be there).
        self._prepared_on: weakref.WeakKeyDictionary[Connection, dict[str, bool]] = (
            weakref.WeakKeyDictionary()
        )
        self._pool: AsyncPool | LentAsyncPool | None = None
        self._pool_lock: asyncio.Lock | None = None  # made in the loop (Python 3.9 binds it)
        self._setup: asyncio.Future[None] | None = None
        self._ready = False
        self._table_created = False
        self._layout_checked = False
        self._closed = False
        self._purger: AsyncPurgeTask | None = None

    def __repr__(self) -> str:
        return f"<AsyncPostgresStore {self._qualified}>"

    @property
    def dsn(self) -> str:
        """The DSN the store connects with (as given, normalised); it may hold a password.

        :raises ConfigurationError: the store borrows an app's pool (:meth:`from_pool`) and
            knows no DSN.
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

    @property
    def qualified_name(self) -> str:
        """The table's quoted, schema-qualified name, as the store's SQL names it."""
        return self._qualified

    # -- opening and closing ---------------------------------------------------------------

    async def open(self) -> None:
        """Open the pool, create the table (if ``create_table``) and start the purge task.

        Safe to call again, and from many requests at once: the work is done once. Not needed
        before :meth:`execute`, which opens the store at its first use; an app calls it at
        startup (e.g. in its lifespan) to find a wrong DSN before the first request does.

        :raises StoreUnavailable: the database cannot be reached, or the store was closed.
        :raises LegacyTableError: the table still has flask-pg-session's layout.
        :raises ConfigurationError: the table exists and is not a pgsession-wsgi table.
        """
        await self._ensure_ready()

    async def close(self) -> None:
        """Stop the purge task and close every connection; the store cannot be opened again."""
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

    async def _ensure_ready(self) -> None:
        if self._closed:
            raise StoreUnavailable("the session store was closed; create a new AsyncPostgresStore")
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

    async def _open_pool(self) -> AsyncPool | LentAsyncPool:
        if self._closed:
            raise StoreUnavailable("the session store was closed; create a new AsyncPostgresStore")
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
        if self._create_table and not self._table_created:
            await self._create(pool)
        elif not self._create_table and not self._layout_checked:
            # Once per process: an older table is named with its fix, not a failing SELECT.
            await self._run_on(pool, lambda conn, _: self._check_layout(conn, upgrade=False), retry=True)
            self._layout_checked = True
        if self.purge_interval is not None and self._purger is None and not self._closed:
            self._purger = AsyncPurgeTask(self, self.purge_interval)
            self._purger.start()
        self._ready = True

    async def _on_connect(self, conn: Connection) -> None:
        """Every new connection: psycopg2's JSON decoding; the first: were our settings kept?

        PgBouncer in transaction mode drops startup options; then every statement carries its own
        ``SET LOCAL`` (still one round trip, a little more server work).
        """
        set_json_loads(json.loads, conn)
        if self._settings_checked:
            return
        cur = await conn.execute(SETTINGS, (list(self._settings),))
        kept = dict(await cur.fetchall())
        if kept != self._settings:
            self._dialect = _Dialect(Statements(self.schema, self.table, guard(self._settings)), True)
            log.info("startup options not kept (PgBouncer?); setting them per statement")
        self._settings_checked = True

    # -- setup -----------------------------------------------------------------------------

    def ddl(self) -> str:
        """The statements that create the table and its indexes, for a DBA to run by hand.

        They also bring a table made by an older version up to date (its missing columns). With
        ``unlogged=True`` the table is created ``UNLOGGED``.
        """
        sql = self._dialect.sql
        schema_sql, table_sql, *index_sql = sql.create_unlogged if self.unlogged else sql.create
        return ";\n".join([schema_sql, table_sql, sql.upgrade, *index_sql]) + ";\n"

    async def create_table(self, *, convert: bool = False) -> None:
        """Create schema, table and indexes if missing; safe when many processes start at once.

        The statements run in one transaction under the table's advisory lock (concurrent
        ``CREATE ... IF NOT EXISTS`` race in PostgreSQL), then the table's layout is checked; a
        table made by an older version gets the columns added since (metadata only).

        :param convert: as for :meth:`PostgresStore.create_table
            <pgsession_wsgi.store.PostgresStore.create_table>`: make an existing table unlogged
            or logged as ``unlogged`` says (a rewrite) instead of refusing it.
        :raises LegacyTableError: the table still has flask-pg-session's layout.
        :raises ConfigurationError: the table exists and is not a pgsession-wsgi table, or
            (without ``convert``) its persistence differs from ``unlogged``.
        """
        await self._create(await self._open_pool(), convert=convert)

    async def _create(self, pool: AsyncPool | LentAsyncPool, *, convert: bool = False) -> None:
        async def create(conn: Connection, dialect: _Dialect) -> None:
            async with conn.transaction():
                await conn.execute(LOCK, (self._lock_key,))
                cur = await conn.execute(SETUP_STATE, setup_names(self.schema, self.table))
                missing_schema, missing_objects = await _one_row(cur)
                sql = dialect.sql
                create = sql.create_unlogged if self.unlogged else sql.create
                before, after = setup_plan(missing_schema, missing_objects, create)
                for statement in before:
                    await conn.execute(statement)
                # Before the indexes: they need our columns.
                await self._check_layout(conn, upgrade=True, convert=convert)
                for statement in after:
                    await conn.execute(statement)

        await self._run_on(pool, create, retry=True)
        self._table_created = True

    async def _check_layout(self, conn: Connection, *, upgrade: bool, convert: bool = False) -> None:
        """Refuse a table that is not ours; with ``upgrade``, add what an older one of ours lacks.

        A missing table (create_table=False) is refused, naming the command that creates it.
        One whose persistence differs from ``unlogged`` is refused, or with ``convert`` altered.
        """
        cur = await conn.execute(LAYOUT, (self._qualified,))
        columns = dict(await cur.fetchall())
        if upgrade and needs_upgrade(columns):
            # ALTER TABLE waits for an exclusive lock even when there is nothing to add: only now.
            await conn.execute(self._dialect.sql.upgrade)
            cur = await conn.execute(LAYOUT, (self._qualified,))
            columns = dict(await cur.fetchall())
        if not columns:
            raise missing_table_error(
                qualified=self._qualified,
                table=self.table,
                schema=self.schema,
                driver_class="AsyncPostgresStore",
            )
        check_layout(columns, qualified=self._qualified, table=self.table, schema=self.schema)
        if self.unlogged is None:
            return
        cur = await conn.execute(PERSISTENCE, (self._qualified,))
        is_unlogged = bool((await _one_row(cur))[0])
        if convert and is_unlogged != self.unlogged:
            log.warning(
                "converting the session table %s: %s",
                self._qualified,
                "SET UNLOGGED" if self.unlogged else "SET LOGGED",
            )
            await conn.execute(persistence_statement(self._qualified, self.unlogged))
            is_unlogged = self.unlogged
        check_persistence(is_unlogged, self.unlogged, qualified=self._qualified)

    # -- running statements ----------------------------------------------------------------

    async def _run(self, work: Work[T], *, retry: bool) -> T:
        await self._ensure_ready()
        assert self._pool is not None
        return await self._run_on(self._pool, work, retry=retry)

    async def _run_on(self, pool: AsyncPool | LentAsyncPool, work: Work[T], *, retry: bool) -> T:
        """Run ``work`` on a pooled connection, turning database trouble into clear errors.

        ``work`` is given the statements to use, read once the connection is out of the pool:
        the first connection may just have found PgBouncer. ``retry`` is for statements that are
        safe to repeat (reads, idempotent writes): they get one more try on a fresh connection
        when the first one turns out to be broken.
        """
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            try:
                async with pool.connection() as conn:
                    try:
                        return await work(conn, self._dialect)
                    except psycopg.errors.InsufficientPrivilege as exc:
                        role = await _current_role(conn)
                        raise privilege_error(
                            _first_line(exc), role=role, table=self.table, schema=self.schema
                        ) from None
            except psycopg.errors.QueryCanceled:
                limit = (
                    f"statement_timeout={self.statement_timeout}s"
                    if "statement_timeout" in self._settings
                    else "the statement_timeout your DSN or server sets"
                )
                raise StoreUnavailable(
                    f"a session statement ran longer than {limit}; check the database load, "
                    "or raise statement_timeout"
                ) from None
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if attempt + 1 < attempts:
                    continue
                raise StoreUnavailable(
                    f"lost the connection to PostgreSQL ({_first_line(exc)}); it is retried on the "
                    "next request"
                ) from None
            except psycopg.errors.UndefinedTable:
                raise SessionError(
                    f"the session table {self._qualified} does not exist: create it with "
                    "`pgsession-wsgi init` or AsyncPostgresStore(create_table=True)"
                ) from None
            except psycopg.Error as exc:
                raise SessionError(f"the session store failed: {_first_line(exc)}") from None
        raise AssertionError("unreachable")

    async def _send(self, dialect: _Dialect, conn: Connection, kind: str, params: dict[str, Any]) -> Cursor:
        """Send the request statement ``kind``: ``EXECUTE`` where it is prepared on this connection,
        ``PREPARE ...; EXECUTE ...`` in one message where not yet, the plain statement where off.
        The cursor is left on the statement's result."""
        statements = dialect.prepared
        if statements is None:
            return await _execute(dialect, conn, getattr(dialect.sql, kind), params)
        prepare, execute = statements[kind]
        done = self._prepared_on.get(conn)
        if done is None:
            done = self._prepared_on[conn] = {}
        before = done.get(kind)
        cur: Cursor = AsyncClientCursor(conn)
        try:
            if before:
                await cur.execute(execute, params)
            else:
                # A PREPARE stays even when the EXECUTE after it fails: remember the attempt.
                done[kind] = False
                await cur.execute(f"{prepare}; {execute}", params)
                done[kind] = True
                cur.nextset()  # past the PREPARE, to the EXECUTE's result
        except _PREPARED_GONE as exc:
            # Nothing ran: the statement failed before it started.
            if before is False and isinstance(exc, psycopg.errors.DuplicatePreparedStatement):
                done[kind] = True  # our own earlier attempt did prepare it
                await cur.execute(execute, params)
                return cur
            # Gone, or there without our asking: the server connection is shared with other
            # clients (PgBouncer in transaction mode, not found by the startup check).
            self._dialect = dataclasses.replace(self._dialect, prepared=None)
            log.info("prepared statements dropped by the server side (PgBouncer?); sending plain statements")
            return await _execute(dialect, conn, getattr(dialect.sql, kind), params)
        return cur

    # -- the request path ------------------------------------------------------------------

    async def execute(self, operation: Operation) -> Any:
        """Run one statement the core asked for (see :mod:`pgsession_wsgi.core`), answer it.

        :param operation: a :class:`Load`, :class:`Insert`, :class:`Write`, :class:`Touch` or
            :class:`Delete`; answered with a :class:`LoadedRow` or None, None,
            a :class:`WriteResult`, and True/False (the row was there) respectively.
        :raises SessionTooLarge: an insert or write over its ``max_size`` (nothing written).
        :raises StoreUnavailable: the database cannot be reached in time.
        """
        if isinstance(operation, Load):
            return await self.load(operation.id_hash, operation.touch_interval)
        if isinstance(operation, Write):
            return await self.write(
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
            return await self.insert(
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
            return await self.touch(operation.id_hash, operation.idle, operation.absolute)
        if isinstance(operation, Delete):
            return await self.delete(operation.id_hash)
        raise TypeError(f"not a session store operation: {operation!r}")

    async def load(self, id_hash: bytes, touch_interval: timedelta) -> LoadedRow | None:
        """The live row for ``id_hash``, or None.

        :param id_hash: the SHA-256 of the session id (the row's key).
        :param touch_interval: how old ``accessed_at`` may be before a touch is due.
        :raises SessionDataError: the stored JSON cannot be decoded (not written by us), or the
            row holds a time or a duration no Python value holds (``infinity``, year 10000...).
        """

        async def select(conn: Connection, dialect: _Dialect) -> LoadedRow | None:
            cur = await self._send(dialect, conn, "load", {"id": id_hash, "touch": touch_interval})
            with reading_row(psycopg.DataError):  # psycopg 3 raises it for a time out of range
                row = checked_row(await cur.fetchone())
            return None if row is None else LoadedRow(*row)

        return await self._run(select, retry=True)

    async def insert(
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

        :param id_hash: the SHA-256 of the new session id.
        :param data_json: the encoded session, a JSON object.
        :param user_id: the user column's text, or None.
        :param idle: how long the session lives unused.
        :param absolute: how long it lives at most, or None.
        :param max_size: the most bytes the stored JSON may take (as the database prints it).
        :param idle_timeout: the session's own idle lifetime, instead of ``idle``; None: ``idle``.
        :param ends_at: the session's fixed end, instead of any idle expiry; None: none.
        """
        params = {
            "id": id_hash,
            "data": data_json,
            "user_id": user_id,
            "idle": idle,
            "absolute": absolute,
            "max_size": max_size,
            "idle_timeout": idle_timeout,
            "ends_at": ends_at,
        }

        async def execute(conn: Connection, dialect: _Dialect) -> None:
            cur = await self._send(dialect, conn, "insert", params)
            if cur.rowcount == 0 and max_size is not None:
                cur = await _execute(dialect, conn, dialect.sql.size_of, params)
                raise SessionTooLarge(int((await _one_row(cur))[0]), max_size)

        await self._run(execute, retry=False)

    async def write(
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

        :param id_hash: the SHA-256 of the session id.
        :param changed_json: the changed keys and their new values, a JSON object.
        :param removed: the keys to delete.
        :param replace: drop every stored key first (the session was cleared).
        :param new_hash: the row's new key (a regenerated id), or None to keep it.
        :param user_id: the user column's new text (None clears it), or :data:`KEEP_USER`.
        :param idle: the idle lifetime, applied when a touch is due.
        :param absolute: the absolute lifetime, or None.
        :param touch_interval: how old ``accessed_at`` may be before the expiry moves.
        :param max_size: the most bytes the merged row may take; over it nothing is written and
            :class:`SessionTooLarge` is raised.
        :param set_expiry: write ``idle_timeout`` and ``ends_at`` and recompute the expiry now.
        :param idle_timeout: as for :meth:`insert`; written only with ``set_expiry``.
        :param ends_at: as for :meth:`insert`; written only with ``set_expiry``.
        """
        params = {
            "id": id_hash,
            "new_id": new_hash,
            "changed": changed_json,
            "removed": list(removed),
            "replace": replace,
            "set_user": user_id is not KEEP_USER,
            "user_id": None if user_id is KEEP_USER else user_id,
            "idle": idle,
            "absolute": absolute,
            "touch": touch_interval,
            "max_size": max_size,
            "set_expiry": set_expiry,
            "idle_timeout": idle_timeout,
            "ends_at": ends_at,
        }

        async def execute(conn: Connection, dialect: _Dialect) -> WriteResult:
            cur = await self._send(dialect, conn, "write", params)
            with reading_row(psycopg.DataError):  # the row's own lifetime, as stored
                row = checked_row(await cur.fetchone())
            if row is None:
                if max_size is not None:
                    # Rare: the row is gone, or the merge would pass the limit. Ask which.
                    cur = await _execute(dialect, conn, dialect.sql.merged_size, params)
                    found = await cur.fetchone()
                    if found is not None and found[0] > max_size:
                        raise SessionTooLarge(int(found[0]), max_size)
                return WriteResult(updated=False, touched=False, permanent=None)
            permanent, touched, own_idle, own_end = row  # permanent: a bool, or NULL if unset
            return WriteResult(True, touched, permanent, own_idle, own_end)

        return await self._run(execute, retry=False)

    async def touch(self, id_hash: bytes, idle: timedelta, absolute: timedelta | None) -> bool:
        """Push a live row's expiry forward (by its own lifetime, if any); True if it was there.

        :param id_hash: the SHA-256 of the session id.
        :param idle: the new idle lifetime, from now.
        :param absolute: the absolute lifetime (from the row's creation), or None.
        """
        params = {"id": id_hash, "idle": idle, "absolute": absolute}

        async def execute(conn: Connection, dialect: _Dialect) -> bool:
            return bool((await self._send(dialect, conn, "touch", params)).rowcount)

        return await self._run(execute, retry=True)

    async def delete(self, id_hash: bytes) -> bool:
        """Remove a session; True if a row was there.

        :param id_hash: the SHA-256 of the session id.
        """

        async def execute(conn: Connection, dialect: _Dialect) -> bool:
            return bool((await self._send(dialect, conn, "delete", {"id": id_hash})).rowcount)

        return await self._run(execute, retry=True)

    # -- maintenance -----------------------------------------------------------------------

    async def purge_expired(
        self,
        batch_size: int = DEFAULT_PURGE_BATCH_SIZE,
        *,
        on_batch: Callable[[int, int], bool | None] | None = None,
    ) -> int:
        """Delete expired rows in batches of ``batch_size``; returns how many went.

        Each batch is one short statement that skips rows other transactions hold, under the
        table's advisory lock: while another process is purging, this stops early (maybe at 0).

        :param batch_size: rows per statement; smaller batches hold fewer row locks at a time.
        :param on_batch: to show progress or stop a long purge, as for
            :meth:`PostgresStore.purge_expired <pgsession_wsgi.store.PostgresStore.purge_expired>`:
            a plain (not async) callable, called as ``on_batch(removed, expected)`` once before the
            first batch (``removed`` 0) and after each committed batch; ``expected`` is how many
            rows were expired at the start (exact up to
            :data:`~pgsession_wsgi.store.EXACT_COUNT_LIMIT`, then estimated from a sample of the
            table's pages). Returning ``False`` stops the purge there; the rows removed so far
            stay removed and are counted. Without it, no count is made.
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

        async def purge(conn: Connection, dialect: _Dialect) -> int:
            nonlocal expected
            if on_batch is not None and expected is None:
                expected = await self._count_expired(conn, dialect)
                if on_batch(0, expected) is False:
                    return 0
            await self._purge_batches(conn, dialect, batch_size, batch_done)
            return removed

        return await self._run(purge, retry=True)

    async def _count_expired(self, conn: Connection, dialect: _Dialect) -> int:
        """About how many rows are expired, as :class:`~pgsession_wsgi.store.PostgresStore` counts
        them: exact up to EXACT_COUNT_LIMIT, else estimated from a sample of the table's pages."""
        limit = store_module.EXACT_COUNT_LIMIT
        (counted,) = await _one_row(await _execute(dialect, conn, dialect.sql.expired_count, {"cap": limit}))
        if counted < limit:
            return int(counted)
        params = {"pages": store_module.SAMPLED_PAGES, "name": self._qualified}
        (estimate,) = await _one_row(await _execute(dialect, conn, dialect.sql.expired_sample, params))
        return max(int(counted), int(estimate or 0))

    async def connect_unpooled(self) -> Connection:
        """A connection outside the pool (the purge task's), set up as the pool's are.

        :raises ConfigurationError: the store borrows an app's pool and opens none of its own.
        """
        await self._ensure_ready()
        assert self._pool is not None
        return await self._pool.connect_unpooled()

    async def purge_batch_by_batch(self, batch_size: int = DEFAULT_PURGE_BATCH_SIZE) -> int:
        """:meth:`purge_expired`, borrowing a connection for each batch alone; how many rows went.

        The background purge of a store on the app's pool: between batches the connection is
        back in the app's pool.

        :param batch_size: rows per statement.
        :raises ConfigurationError: ``batch_size`` is below 1.
        """
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        total, after = 0, "-infinity"
        while True:

            async def batch(conn: Connection, dialect: _Dialect, after: Any = after) -> tuple[int, Any]:
                params = {"lock": self._lock_key, "limit": batch_size, "after": after}
                removed, last = await _one_row(await _execute(dialect, conn, dialect.sql.purge, params))
                return int(removed), last

            removed, after = await self._run(batch, retry=True)
            total += removed
            if removed < batch_size:
                return total

    async def purge_on(self, conn: Connection, batch_size: int) -> int:
        """:meth:`purge_expired` on a given connection; driver errors are left to the caller.

        :param conn: an autocommit connection from :meth:`connect_unpooled` (or the pool).
        :param batch_size: rows per statement.
        """
        return await self._purge_batches(conn, self._dialect, batch_size)

    async def _purge_batches(
        self,
        conn: Connection,
        dialect: _Dialect,
        batch_size: int,
        batch_done: Callable[[int], bool] | None = None,
    ) -> int:
        """Purge batch after batch until one comes back short; ``batch_done(count)`` is told of
        each committed batch and stops the purge by returning False."""
        # Each batch starts where the last one ended in expires_at order, so it never walks
        # over index entries of rows already deleted (and not yet vacuumed).
        total, after = 0, "-infinity"
        while True:
            params = {"lock": self._lock_key, "limit": batch_size, "after": after}
            removed, last = await _one_row(await _execute(dialect, conn, dialect.sql.purge, params))
            total += removed
            if batch_done is not None and not batch_done(int(removed)):
                return int(total)
            if removed < batch_size:
                return int(total)
            after = last

    async def sessions_for_user(self, user_id: Any, *, key_prefix: str = "") -> list[SessionInfo]:
        """The live sessions whose ``user_key`` value is ``user_id``, most recently used first.

        :param user_id: a str, int or UUID, matched by its text form (42 finds "42", and any
            spelling of a UUID finds it), as :func:`~pgsession_wsgi.core.user_id_text` stores it.
        :param key_prefix: the app's ``key_prefix``: only that app's sessions are listed; "" for none.
        :returns: the sessions; one whose row holds a time no ``datetime`` holds (``infinity``,
            year 10000: never written by pgsession-wsgi) is left out, with a warning.
        """
        params = {"user_id": user_id_text(user_id, key_prefix=key_prefix)}

        async def select(conn: Connection, dialect: _Dialect) -> list[SessionInfo]:
            cur = await _execute(dialect, conn, dialect.sql.for_user, params)
            found = []
            for index in range(cur.rowcount):  # by position: a row that cannot be read is skipped
                await cur.scroll(index, mode="absolute")
                with skipping_unreadable_row(psycopg.DataError):
                    found.append(SessionInfo(*checked_row(await cur.fetchone() or ())))
            return found

        return await self._run(select, retry=True)

    async def revoke_user(self, user_id: Any, keep: Any = None, *, key_prefix: str = "") -> int:
        """Delete every session of ``user_id`` ("log out everywhere"), except ``keep``.

        :param user_id: a str, int or UUID, matched by its text form.
        :param keep: a :class:`~pgsession_wsgi.session.Session` or a session id to spare,
            typically the current request's own session; None spares nothing.
        :param key_prefix: the app's ``key_prefix``: only that app's sessions end; "" for none.
        """
        keep_id = keep if isinstance(keep, str) else getattr(keep, "id", None)
        params = {
            "user_id": user_id_text(user_id, key_prefix=key_prefix),
            "keep": hash_session_id(keep_id) if keep_id else None,
        }

        async def execute(conn: Connection, dialect: _Dialect) -> int:
            return int((await _execute(dialect, conn, dialect.sql.revoke, params)).rowcount)

        return await self._run(execute, retry=True)

    async def stats(self) -> dict[str, int]:
        """Counts of live and expired rows, distinct users, and the table's size on disk in bytes."""

        async def select(conn: Connection, dialect: _Dialect) -> dict[str, int]:
            cur = await _execute(dialect, conn, dialect.sql.stats, {"name": self._qualified})
            live, expired, users, size = await _one_row(cur)
            return {"live": live, "expired": expired, "users": users, "total_bytes": size}

        return await self._run(select, retry=True)


def _retrieve_exception(future: asyncio.Future[None]) -> None:
    """Mark a failed setup's error as seen: the requests that waited for it have their own."""
    if not future.cancelled():
        future.exception()


async def _current_role(conn: Connection) -> str | None:
    """The role the connection works as, for a privilege error; None if it cannot be asked."""
    try:
        cur = await conn.execute(CURRENT_ROLE)
        return str((await _one_row(cur))[0])
    except psycopg.Error:
        return None
