"""``PostgresStore``: every SQL statement pgsession-wsgi sends, and the pool they go through.

Each request-path statement is a single autocommit statement that touches one row by its primary
key and filters ``expires_at > now()``, so an expired row is never served whether or not it has
been purged yet, and the store works unchanged behind PgBouncer in transaction mode.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import math
import os
import shlex
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from .dsn import connect_arguments
from .dsn import normalize_dsn as normalize_dsn  # re-exported: cli and legacy import it from here
from .errors import (
    ConfigurationError,
    LegacyTableError,
    SessionDataError,
    SessionError,
    SessionTooLarge,
    StoreUnavailable,
)
from .pool import ConnectionPool, _first_line

__all__ = ["KEEP_USER", "PostgresStore", "SessionInfo", "LoadedRow", "WriteResult", "user_id_text"]

log = logging.getLogger("pgsession_wsgi")

T = TypeVar("T")
Cursor = psycopg2.extensions.cursor


def quote_identifier(name: str, what: str) -> str:
    """Quote a table or schema name the way PostgreSQL does, so any name is data, never SQL.

    The result is exact SQL text: fit for DDL run without parameters and for binding as a value.
    A statement run *with* parameters needs :func:`_in_template` too (psycopg2 reads ``%``).
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ConfigurationError(f"the {what} name must be a non-empty string without NUL characters")
    if len(name.encode("utf-8")) > 63:
        raise ConfigurationError(
            f"the {what} name {name!r} is longer than PostgreSQL's 63-byte limit: choose a shorter one"
        )
    return '"' + name.replace('"', '""') + '"'


def _in_template(sql_text: str) -> str:
    """SQL text made safe inside a statement that is run with parameters: ``%`` becomes ``%%``."""
    return sql_text.replace("%", "%%")


#: Passed as ``user_id`` to :meth:`PostgresStore.write`: leave the stored user id as it is.
KEEP_USER: Any = object()


def user_id_text(value: Any, key: str | None = None) -> str:
    """The one text form a user id is stored and looked up under: str as is, int and UUID as str.

    Anything else is refused, so "log out everywhere" can never miss a session because the
    app stored the id in one type and looks it up in another.
    """
    kind = type(value)
    if kind is str:
        return str(value)
    if kind is int or kind is UUID:
        return str(value)
    where = f"the session value under user_key {key!r}" if key is not None else "a user id"
    raise SessionError(
        f"{where} is a {kind.__module__}.{kind.__qualname__}; user ids must be str, int or UUID: "
        "store the user's id in one of those types"
    )


@dataclass(frozen=True)
class SessionInfo:
    """One live session of a user, for a "your devices" page; never carries the session id."""

    id_hash: str
    created_at: datetime
    accessed_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class LoadedRow:
    data: dict[str, Any]
    touch_due: bool


@dataclass(frozen=True)
class WriteResult:
    updated: bool
    touched: bool
    permanent: bool | None


class PostgresStore:
    """Sessions in one PostgreSQL table, keyed by the SHA-256 of their id.

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
    """

    def __init__(
        self,
        dsn: str,
        table: str = "pgsession",
        schema: str = "public",
        *,
        max_connections: int = 10,
        pool_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        statement_timeout: float | None = 5.0,
        synchronous_commit: bool = True,
        create_table: bool = True,
        purge_interval: float | None = 300,
    ) -> None:
        dsn = normalize_dsn(dsn)
        if max_connections < 1:
            raise ConfigurationError("max_connections must be at least 1")
        if pool_timeout <= 0 or connect_timeout <= 0:
            raise ConfigurationError("pool_timeout and connect_timeout must be positive numbers of seconds")
        if purge_interval is not None and purge_interval <= 0:
            raise ConfigurationError("purge_interval must be a positive number of seconds, or None")
        self.table = table
        self.schema = schema
        self.statement_timeout = statement_timeout
        self.purge_interval = purge_interval
        self._create_table = create_table
        self._qualified = f"{quote_identifier(schema, 'schema')}.{quote_identifier(table, 'table')}"
        self._lock_key = int.from_bytes(
            hashlib.sha256(f"pgsession-wsgi:{schema}.{table}".encode()).digest()[:8], "big", signed=True
        )
        # Per-connection settings travel as startup options: free on every statement after.
        settings = {"statement_timeout": str(int((statement_timeout or 0) * 1000))}
        if not synchronous_commit:
            settings["synchronous_commit"] = "off"
        # What the DSN or libpq's PG* variables name wins; these fill in only where they are silent.
        # self._settings keeps only the settings we send, so a user's own is never "re-applied".
        connect_kwargs, self._settings = connect_arguments(
            dsn,
            defaults={
                # libpq takes whole seconds and treats 1 as 2.
                "connect_timeout": max(2, math.ceil(connect_timeout)),
                "application_name": "pgsession-wsgi",
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
            },
            settings=settings,
        )
        self._pool = ConnectionPool(
            connect_kwargs, max_connections, pool_timeout, on_connect=self._check_first_connection
        )
        self._sql = _Statements(schema, table, "")
        self._settings_checked = False
        self._ready_pid: int | None = None
        self._table_created = False
        self._ready_lock = threading.Lock()
        self._purger: _Purger | None = None

    def __repr__(self) -> str:
        return f"<PostgresStore {self._qualified}>"

    # -- setup -----------------------------------------------------------------------------

    def ddl(self) -> str:
        """The statements that create the table and its indexes, for a DBA to run by hand."""
        return ";\n".join(self._sql.create) + ";\n"

    def create_table(self) -> None:
        """Create schema, table and indexes if missing; safe when many processes start at once.

        ``CREATE ... IF NOT EXISTS`` alone races in PostgreSQL (a concurrent create fails on a
        catalog unique index), so the statements run under a transaction-scoped advisory lock.
        """

        def create(cur: Cursor) -> None:
            cur.execute("BEGIN")
            try:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                cur.execute("SELECT to_regnamespace(%s) IS NULL", (quote_identifier(self.schema, "schema"),))
                missing_schema = _one_row(cur)[0]
                schema_sql, table_sql, *index_sql = self._sql.create
                if missing_schema:
                    cur.execute(schema_sql)
                cur.execute(table_sql)
                self._check_layout(cur)  # before the indexes, which need our columns
                for statement in index_sql:
                    cur.execute(statement)
                cur.execute("COMMIT")
            except BaseException:
                if not cur.connection.closed:
                    cur.execute("ROLLBACK")
                raise

        self._run(create, retry=True, setup=True)
        self._table_created = True

    def _check_layout(self, cur: Cursor) -> None:
        cur.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
            (self._qualified,),
        )
        columns = dict(cur.fetchall())
        if all(columns.get(name) == kind for name, kind in _EXPECTED_COLUMNS.items()):
            return
        if {"session_id", "data", "expiry"} <= columns.keys():
            raise LegacyTableError(
                self._qualified,
                "pgsession-wsgi migrate-flask-pg-session --dsn ... "
                f"--table {shlex.quote(self.table)} --schema {shlex.quote(self.schema)}",
            )
        raise ConfigurationError(
            f"the table {self._qualified} exists but is not a pgsession-wsgi table (columns: "
            f"{', '.join(sorted(columns))}); choose another table name or schema"
        )

    def _check_first_connection(self, conn: psycopg2.extensions.connection) -> None:
        """Find out once whether the server kept our startup options.

        PgBouncer in transaction mode drops them; then every statement carries its own
        ``SET LOCAL`` (still one round trip, a little more server work).
        """
        if self._settings_checked:
            return
        with conn.cursor() as cur:
            cur.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(self._settings),))
            kept = dict(cur.fetchall())
        if kept != self._settings:
            guard = "".join(f"SET LOCAL {name} = {value}; " for name, value in self._settings.items())
            self._sql = _Statements(self.schema, self.table, guard)
            log.info("startup options not kept (PgBouncer?); setting them per statement")
        self._settings_checked = True

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
            if self.purge_interval is not None:
                self._purger = _Purger(self, self.purge_interval)
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
                    return work(cur)
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

    def load(self, id_hash: bytes, touch_interval: timedelta) -> LoadedRow | None:
        """The live row for ``id_hash``, or None."""

        def select(cur: Cursor) -> LoadedRow | None:
            cur.execute(self._sql.load, {"id": id_hash, "touch": touch_interval})
            try:
                row = cur.fetchone()
            except (ValueError, RecursionError) as exc:  # JSON our codec never writes
                raise SessionDataError(type(exc).__name__) from None
            return None if row is None else LoadedRow(row[0], row[1])

        return self._run(select, retry=True)

    def insert(
        self,
        id_hash: bytes,
        data_json: str,
        user_id: str | None,
        idle: timedelta,
        absolute: timedelta | None,
        max_size: int | None = None,
    ) -> None:
        """Store a new session; :class:`SessionTooLarge` (nothing stored) if it is over ``max_size``.

        The size is what the database stores (``octet_length(data::text)``), checked in the
        same statement.
        """
        params = {
            "id": id_hash,
            "data": data_json,
            "user_id": user_id,
            "idle": idle,
            "absolute": absolute,
            "max_size": max_size,
        }

        def execute(cur: Cursor) -> None:
            cur.execute(self._sql.insert, params)
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
    ) -> WriteResult:
        """Merge changed keys into a live row, moving it to ``new_hash`` if given.

        ``user_id`` is the new text of the user column (None clears it), or :data:`KEEP_USER`.
        The merged row is measured in the same statement: over ``max_size`` nothing is written
        and :class:`SessionTooLarge` is raised. The expiry columns change only when a touch is
        due, so most writes leave every indexed column as it was and PostgreSQL can update the
        row in place (a HOT update).
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
        }

        def execute(cur: Cursor) -> WriteResult:
            cur.execute(self._sql.write, params)
            row = cur.fetchone()
            if row is None:
                if max_size is not None:
                    # Rare: the row is gone, or the merge would pass the limit. Ask which.
                    cur.execute(self._sql.merged_size, params)
                    found = cur.fetchone()
                    if found is not None and found[0] > max_size:
                        raise SessionTooLarge(int(found[0]), max_size)
                return WriteResult(updated=False, touched=False, permanent=None)
            permanent, touched = row
            return WriteResult(True, bool(touched), permanent if isinstance(permanent, bool) else None)

        return self._run(execute, retry=False)

    def touch(self, id_hash: bytes, idle: timedelta, absolute: timedelta | None) -> bool:
        """Push a live row's expiry forward without rewriting its data."""

        def execute(cur: Cursor) -> bool:
            cur.execute(self._sql.touch, {"id": id_hash, "idle": idle, "absolute": absolute})
            return bool(cur.rowcount)

        return self._run(execute, retry=True)

    def delete(self, id_hash: bytes) -> bool:
        """Remove a session; true if a row was there."""

        def execute(cur: Cursor) -> bool:
            cur.execute(self._sql.delete, {"id": id_hash})
            return bool(cur.rowcount)

        return self._run(execute, retry=True)

    # -- maintenance -----------------------------------------------------------------------

    def purge_expired(self, batch_size: int = 1000) -> int:
        """Delete expired rows in batches of ``batch_size``; returns how many went.

        Each batch is one short statement that skips rows other transactions hold, so requests
        never wait on it. Batches take a transaction-scoped advisory lock: while another process
        is purging, this call stops early (and may return 0).
        """
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        return self._run(lambda cur: self._purge_batches(cur, batch_size), retry=True)

    def _purge_batches(self, cur: Cursor, batch_size: int) -> int:
        # Each batch starts where the last one ended in expires_at order, so it never walks
        # over index entries of rows already deleted (and not yet vacuumed).
        total, after = 0, "-infinity"
        while True:
            cur.execute(self._sql.purge, {"lock": self._lock_key, "limit": batch_size, "after": after})
            removed, last = _one_row(cur)
            total += removed
            if removed < batch_size:
                return int(total)
            after = last

    def sessions_for_user(self, user_id: Any) -> list[SessionInfo]:
        """The live sessions whose ``user_key`` value is ``user_id``, most recently used first."""

        def select(cur: Cursor) -> list[SessionInfo]:
            cur.execute(self._sql.for_user, {"user_id": user_id_text(user_id)})
            return [SessionInfo(*row) for row in cur.fetchall()]

        return self._run(select, retry=True)

    def revoke_user(self, user_id: Any, keep: Any = None) -> int:
        """Delete every session of ``user_id`` ("log out everywhere"), except ``keep``.

        ``keep`` is a :class:`Session` or a session id, typically the current request's session.
        """
        user_text = user_id_text(user_id)
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
        """Counts of live and expired rows and the table's size on disk, in bytes."""

        def select(cur: Cursor) -> dict[str, int]:
            cur.execute(self._sql.stats, {"name": self._qualified})
            live, expired, users, size = _one_row(cur)
            return {"live": live, "expired": expired, "users": users, "total_bytes": size}

        return self._run(select, retry=True)

    def close(self) -> None:
        """Stop the purge thread and close pooled connections."""
        if self._purger is not None:
            self._purger.stop()
        self._pool.close()


_EXPECTED_COLUMNS = {
    "id": "bytea",
    "data": "jsonb",
    "user_id": "text",
    "created_at": "timestamp with time zone",
    "accessed_at": "timestamp with time zone",
    "expires_at": "timestamp with time zone",
}

# Expiry is the earlier of the idle and the absolute limit; LEAST ignores a NULL absolute limit.
_EXPIRY = "LEAST(now() + %(idle)s, created_at + %(absolute)s)"
_TOUCH_DUE = "accessed_at < now() - %(touch)s"
_MERGED = "(CASE WHEN %(replace)s THEN '{}'::jsonb ELSE data - %(removed)s::text[] END || %(changed)s::jsonb)"
# max_size bounds what the database stores, measured as it prints the jsonb value.
_FITS = "(%(max_size)s::bigint IS NULL OR octet_length({data}::text) <= %(max_size)s::bigint)"


class _Statements:
    """The SQL text, built once per store with the quoted table name."""

    def __init__(self, schema: str, table: str, guard: str) -> None:
        schema_part = quote_identifier(schema, "schema")
        exact = f"{schema_part}.{quote_identifier(table, 'table')}"
        # DDL runs without parameters and takes the exact name; every other statement runs
        # with parameters and takes the template form.
        t = _in_template(exact)
        # Distinct per table even when long names share a prefix (PostgreSQL cuts names at 63).
        short = table.encode()[:30].decode("utf-8", "ignore")  # bytes: PostgreSQL's limit is 63
        index_base = f"{short}_{hashlib.sha256(table.encode()).hexdigest()[:8]}"
        self.create = [
            f"CREATE SCHEMA IF NOT EXISTS {schema_part}",
            f"CREATE TABLE IF NOT EXISTS {exact} (\n"
            "    id          bytea        PRIMARY KEY,\n"
            "    data        jsonb        NOT NULL,\n"
            "    user_id     text,\n"
            "    created_at  timestamptz  NOT NULL DEFAULT now(),\n"
            "    accessed_at timestamptz  NOT NULL DEFAULT now(),\n"
            "    expires_at  timestamptz  NOT NULL\n"
            ") WITH (fillfactor = 90)",
            f"CREATE INDEX IF NOT EXISTS {_quote(index_base + '_expires_at_idx')} ON {exact} (expires_at)",
            f"CREATE INDEX IF NOT EXISTS {_quote(index_base + '_user_id_idx')} ON {exact} (user_id)"
            " WHERE user_id IS NOT NULL",
        ]
        self.load = (
            f"SELECT data, accessed_at < now() - %(touch)s FROM {t} WHERE id = %(id)s AND expires_at > now()"
        )
        self.insert = (
            f"INSERT INTO {t} (id, data, user_id, expires_at)"
            " SELECT %(id)s, s.data, %(user_id)s, now() + LEAST(%(idle)s, %(absolute)s)"
            " FROM (SELECT %(data)s::jsonb AS data) s"
            f" WHERE {_FITS.format(data='s.data')}"
        )
        self.size_of = "SELECT octet_length(%(data)s::jsonb::text)"
        # Setting user_id to its own value keeps the update HOT-eligible (PostgreSQL compares).
        self.write = (
            f"UPDATE {t} SET id = COALESCE(%(new_id)s, id), data = {_MERGED},"
            " user_id = CASE WHEN %(set_user)s THEN %(user_id)s ELSE user_id END,"
            f" accessed_at = CASE WHEN {_TOUCH_DUE} THEN now() ELSE accessed_at END,"
            f" expires_at = CASE WHEN {_TOUCH_DUE} THEN {_EXPIRY} ELSE expires_at END"
            f" WHERE id = %(id)s AND expires_at > now() AND {_FITS.format(data=_MERGED)}"
            " RETURNING data -> '_permanent', accessed_at = now()"
        )
        self.merged_size = (
            f"SELECT octet_length({_MERGED}::text) FROM {t} WHERE id = %(id)s AND expires_at > now()"
        )
        self.touch = (
            f"UPDATE {t} SET accessed_at = now(), expires_at = {_EXPIRY}"
            " WHERE id = %(id)s AND expires_at > now()"
        )
        self.delete = f"DELETE FROM {t} WHERE id = %(id)s"
        self.purge = (
            "WITH lock AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(%(lock)s) AS acquired),"
            f" deleted AS (DELETE FROM {t} WHERE id IN (SELECT s.id FROM {t} s, lock"
            " WHERE lock.acquired AND s.expires_at <= now() AND s.expires_at >= %(after)s::timestamptz"
            " ORDER BY s.expires_at LIMIT %(limit)s FOR UPDATE OF s SKIP LOCKED) RETURNING expires_at)"
            " SELECT count(*), max(expires_at) FROM deleted"
        )
        self.for_user = (
            f"SELECT encode(id, 'hex'), created_at, accessed_at, expires_at FROM {t}"
            " WHERE user_id = %(user_id)s AND expires_at > now() ORDER BY accessed_at DESC"
        )
        self.revoke = f"DELETE FROM {t} WHERE user_id = %(user_id)s AND id IS DISTINCT FROM %(keep)s"
        self.stats = (
            "SELECT count(*) FILTER (WHERE expires_at > now()),"
            " count(*) FILTER (WHERE expires_at <= now()),"
            " count(DISTINCT user_id) FILTER (WHERE expires_at > now()),"
            f" pg_total_relation_size(to_regclass(%(name)s)) FROM {t}"
        )
        if guard:
            # Sent in the same query string: one round trip, one implicit transaction.
            for name in (
                "load",
                "insert",
                "size_of",
                "write",
                "merged_size",
                "touch",
                "delete",
                "purge",
                "for_user",
                "revoke",
                "stats",
            ):
                setattr(self, name, guard + getattr(self, name))


def _one_row(cur: Cursor) -> tuple[Any, ...]:
    row = cur.fetchone()
    if row is None:
        raise SessionError("the database returned no row where one was expected")
    return row


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Purger(threading.Thread):
    """Background purge loop; one per process, restarted in forked children by the store."""

    def __init__(self, store: PostgresStore, interval: float) -> None:
        super().__init__(name="pgsession-purge", daemon=True)
        self._store = weakref.ref(store)
        self._interval = interval
        self._stopped = threading.Event()
        atexit.register(self.stop)

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)

    def run(self) -> None:
        # A connection of its own, outside the pool, so a purge never makes a request wait.
        conn: psycopg2.extensions.connection | None = None
        failing = False
        while not self._stopped.wait(self._interval):
            store = self._store()
            if store is None:
                break
            try:
                if conn is None or conn.closed:
                    conn = store._pool.connect_unpooled()
                with conn.cursor() as cur:
                    removed = store._purge_batches(cur, 1000)
                if removed:
                    log.info("purged %d expired sessions from %s", removed, store._qualified)
                failing = False
            except (SessionError, psycopg2.Error) as exc:
                if conn is not None and not conn.closed and isinstance(exc, psycopg2.Error):
                    conn.close()
                if not failing:
                    log.warning("purging expired sessions failed, will retry: %s", _first_line(exc))
                failing = True
            del store
        if conn is not None and not conn.closed:
            conn.close()
