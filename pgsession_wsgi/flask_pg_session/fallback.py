"""Switching from flask-pg-session with no step: sessions move out of its table one by one.

``FlaskPgSession`` stores its sessions in a table next to flask-pg-session's
(:func:`choose_tables`); its :class:`LegacyFallbackStore` moves a session over, in one statement,
when its cookie comes back. A miss in both tables costs one more statement.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any, Final

import psycopg2
import psycopg2.extensions

from .._drivers.connections import first_line
from ..cookies import hash_session_id, prefixed_id
from ..core import Load, LoadedRow, Operation
from ..defaults import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_SIZE, DEFAULT_SCHEMA
from ..dsn import connect_arguments
from ..errors import ConfigurationError, SessionDataError, SessionError, StoreUnavailable
from ..sql import quote_identifier
from ..store import PostgresStore
from .conventions import UUID4_PATTERN, new_table_name
from .convert import convert_session
from .rows import decode_payload, looks_legacy

__all__ = [
    "MAX_PICKLE_FACTOR",
    "LegacyFallbackStore",
    "choose_tables",
    "move_statement",
    "refusal_label",
    "row_key",
    "short_reason",
]

log = logging.getLogger("pgsession_wsgi")

Cursor = psycopg2.extensions.cursor

#: A pickle over this many times ``max_size`` is refused unread: its session could not be
#: stored anyway, and reading it would cost the request its time.
MAX_PICKLE_FACTOR: Final = 4
# Only ids flask-pg-session issued are looked up (see UUID4_PATTERN): never a client's choice.
_ISSUED_ID = re.compile(UUID4_PATTERN)
_MAX_REASON: Final = 200
# The old row ``o`` is live: expiry is naive UTC, NULL for a browser session.
_LIVE = "(o.expiry IS NULL OR o.expiry > now() AT TIME ZONE 'UTC')"


def refusal_label(id_hash: bytes) -> str:
    """How logs and reports name a refused session: 12 hex digits of its row key, never the id."""
    return id_hash.hex()[:12]


def short_reason(text: str) -> str:
    """One printable line of at most 200 characters: reasons quote attacker-controlled text."""
    line = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text[: _MAX_REASON * 2])
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."


def _template(qualified: str) -> str:
    """A quoted name made safe in a statement run with parameters (the drivers read ``%``)."""
    return qualified.replace("%", "%%")


def move_statement(old_qualified: str, new_qualified: str) -> str:
    """One statement that moves converted sessions: it deletes their old rows and inserts them.

    Run with arrays of equal length: ``sids`` (the old ``session_id``: prefix and id),
    ``payloads`` (the pickle as read, so a row rewritten meanwhile stays; or NULL: moved as it
    is), ``ids``, ``datas`` (the JSON), ``users``; ``idle`` and ``absolute`` as for the store.
    A row moves only if still there and live, so of two requests only one inserts it. Creation
    and expiry carry over (NULL expiry: ``now() + idle``), capped by ``created + absolute``; an
    expired row of ours under the same key is replaced, a live one kept. Returns each ``data``.
    The names are quoted and qualified.
    """
    old, new = _template(old_qualified), _template(new_qualified)
    created = "COALESCE(m.created AT TIME ZONE 'UTC', now())"
    expires = f"LEAST(COALESCE(m.expiry AT TIME ZONE 'UTC', now() + %(idle)s), {created} + %(absolute)s)"
    return (
        "WITH src AS (SELECT * FROM unnest(%(sids)s::text[], %(payloads)s::bytea[], %(ids)s::bytea[],"
        " %(datas)s::text[], %(users)s::text[]) AS s(session_id, payload, id, data, user_id)),"
        f" m AS (DELETE FROM {old} o USING src WHERE o.session_id = src.session_id"
        f" AND (src.payload IS NULL OR o.data = src.payload) AND {_LIVE}"
        " RETURNING src.id, src.data, src.user_id, o.created, o.expiry)"
        f" INSERT INTO {new} AS t (id, data, user_id, created_at, accessed_at, expires_at)"
        f" SELECT m.id, m.data::jsonb, m.user_id, {created}, now(), {expires} FROM m"
        f" WHERE {expires} > now()"
        " ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, user_id = EXCLUDED.user_id,"
        " created_at = EXCLUDED.created_at, accessed_at = EXCLUDED.accessed_at,"
        " expires_at = EXCLUDED.expires_at, idle_timeout = NULL, ends_at = NULL"
        " WHERE t.expires_at <= now()"
        " RETURNING t.data"
    )


def _probe_statement(old_qualified: str, new_qualified: str) -> str:
    """The old row (found, its pickle) and whether the new table has the session, in one snapshot:
    a concurrent move commits both sides at once, so one side shows it."""
    old, new = _template(old_qualified), _template(new_qualified)
    return (
        f"SELECT o.session_id IS NOT NULL, o.data,"
        f" EXISTS (SELECT 1 FROM {new} WHERE id = %(id)s AND expires_at > now())"
        f" FROM (SELECT 1) AS one LEFT JOIN {old} o ON o.session_id = %(sid)s AND {_LIVE}"
    )


def own_connection(dsn: str, application_name: str) -> Any:
    """A psycopg2 connection of its own; the DSN (and PGAPPNAME, ...) win over our defaults."""
    defaults = {"connect_timeout": 10, "application_name": application_name}
    try:
        return psycopg2.connect(**connect_arguments(dsn, defaults=defaults, settings={})[0])
    except psycopg2.OperationalError as exc:
        raise StoreUnavailable(f"cannot connect to PostgreSQL ({first_line(exc)})") from None


def _layouts(dsn: str, schema: str, names: list[str]) -> dict[str, dict[str, str]]:
    """The columns of each of ``names`` that exists in ``schema``, on a connection of its own."""
    conn = own_connection(dsn, "pgsession-wsgi")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT c.relname, a.attname, format_type(a.atttypid, NULL)"
                " FROM pg_catalog.pg_attribute a"
                " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
                " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')"
                " AND a.attnum > 0 AND NOT a.attisdropped",
                (schema, names),
            )
            layouts: dict[str, dict[str, str]] = {}
            for table, column, kind in cur.fetchall():
                layouts.setdefault(table, {})[column] = kind
            return layouts
    except psycopg2.OperationalError as exc:
        raise StoreUnavailable(f"lost the connection to PostgreSQL ({first_line(exc)})") from None
    except psycopg2.Error as exc:
        raise SessionError(f"could not read the session tables' layout: {first_line(exc)}") from None
    finally:
        conn.close()


def _ours(columns: dict[str, str]) -> bool:
    return columns.get("id") == "bytea" and columns.get("data") == "jsonb"


def choose_tables(
    dsn: str, table: str, schema: str = DEFAULT_SCHEMA, configured: str | None = None
) -> tuple[str, str | None]:
    """Where ``FlaskPgSession`` keeps its sessions, and the flask-pg-session table to move them from.

    - ``configured`` (``PGSESSION_TABLE``) given: that table; ``table`` is the old one if it
      has flask-pg-session's layout.
    - ``table`` is a pgsession-wsgi table: ``table``, with nothing to move.
    - ``table`` has flask-pg-session's layout, or it is gone and ``<table>_v2`` exists:
      ``<table>_v2``.
    - neither exists: ``table``, created as a pgsession-wsgi table.

    :param table: ``SESSION_PG_TABLE``, unquoted.
    :param schema: ``SESSION_PG_SCHEMA``, unquoted.
    :returns: ``(table to store sessions in, flask-pg-session table or None)``.
    :raises ConfigurationError: ``table`` is a pgsession-wsgi table and ``<table>_v2`` exists too,
        so which one holds the sessions cannot be told.
    :raises StoreUnavailable: the database cannot be reached.
    """
    quote_identifier(table, "table")  # refuse an unusable name before connecting
    quote_identifier(schema, "schema")
    target = configured or new_table_name(table)
    layouts = _layouts(dsn, schema, sorted({table, target}))
    old = table if table != target and looks_legacy(layouts.get(table, {})) else None
    if configured or old is not None:  # configured: it is the target
        return target, old
    if table in layouts:
        if _ours(layouts[table]) and target in layouts:
            raise ConfigurationError(
                f"both {table!r} and {target!r} are pgsession-wsgi tables in the schema {schema!r}; "
                f"set PGSESSION_TABLE to the one that holds your sessions (FlaskPgSession moves "
                f"flask-pg-session's sessions into {target!r}; `migrate-flask-pg-session` converts "
                f"{table!r} in place)"
            )
        return table, None  # ours (or a stranger's table, which the store refuses by name)
    return (target if target in layouts else table), None


class LegacyFallbackStore(PostgresStore):
    """A :class:`PostgresStore` that moves flask-pg-session's sessions in as their cookies return.

    A ``Load`` that misses, for a uuid4 id, moves the old table's live row under ``key_prefix`` +
    id, keeping its creation and expiry. A row that cannot be read safely is never served: one
    warning names it by :func:`refusal_label` and the reason, the request gets a fresh session,
    and the row stays in the old table.

    :param table: the pgsession-wsgi table sessions are stored in.
    :param schema: the schema of both tables.
    :param legacy_table: flask-pg-session's table (``SESSION_PG_TABLE``), left where it is.
    :param key_prefix: ``SESSION_KEY_PREFIX``: only old rows under it are read; pass the
        middleware the same prefix.
    :param user_key: the session key holding the user's id; None leaves the user column empty.
    :param lifetime: a moved browser session (NULL expiry) expires ``now() + lifetime``: the
        middleware's ``idle_timeout``.
    :param absolute: the middleware's ``absolute_timeout``, capping a moved session; None for none.
    :param max_size: a session whose JSON would be larger is refused; the middleware's ``max_size``.
    :param options: the other keyword arguments of :class:`PostgresStore`.
    :raises ConfigurationError: as :class:`PostgresStore`, or a bad name, prefix or limit here.
    """

    def __init__(
        self,
        dsn: str,
        table: str,
        schema: str = DEFAULT_SCHEMA,
        *,
        legacy_table: str,
        key_prefix: str = "",
        user_key: str | None = None,
        lifetime: timedelta = DEFAULT_IDLE_TIMEOUT,
        absolute: timedelta | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
        **options: Any,
    ) -> None:
        if lifetime.total_seconds() <= 0:
            raise ConfigurationError(f"lifetime must be positive, not {lifetime!r}")
        if max_size < 1:
            raise ConfigurationError(f"max_size must be a positive number of bytes, not {max_size!r}")
        if "\x00" in key_prefix:
            raise ConfigurationError("key_prefix cannot hold a NUL character: choose another prefix")
        if legacy_table == table:
            raise ConfigurationError(
                f"the pgsession-wsgi table and flask-pg-session's table are both {table!r}: "
                "give the new table another name"
            )
        super().__init__(dsn, table, schema, **options)
        #: flask-pg-session's table, as given (unquoted).
        self.legacy_table = legacy_table
        #: flask-pg-session's ``SESSION_KEY_PREFIX``.
        self.key_prefix = key_prefix
        self._user_key = user_key
        self._lifetime = lifetime
        self._absolute = absolute
        self._max_size = max_size
        old = f"{quote_identifier(schema, 'schema')}.{quote_identifier(legacy_table, 'table')}"
        self.legacy_qualified_name = old
        self._probe_sql = _probe_statement(old, self.qualified_name)
        self._move_sql = move_statement(old, self.qualified_name)

    def __repr__(self) -> str:
        return f"<LegacyFallbackStore {self.qualified_name} <- {self.legacy_qualified_name}>"

    def execute(self, operation: Operation) -> Any:
        """As :meth:`PostgresStore.execute`; a ``Load`` that misses looks in the old table."""
        answer = super().execute(operation)
        if answer is not None or not isinstance(operation, Load):
            return answer
        session_id = operation.session_id
        if session_id is None or not _ISSUED_ID.fullmatch(session_id):
            return None
        return self._move_in(operation, self.key_prefix + session_id)

    def _move_in(self, load: Load, old_id: str) -> LoadedRow | None:
        """Move the session from the old table; None if it is not there (or refused)."""
        for _ in range(2):  # a second look only if the row changed between the two statements
            found_old, payload, found_new = self._look(load.id_hash, old_id)
            if found_new:  # a concurrent request moved it after this one's first look
                return super().execute(load)  # type: ignore[no-any-return]
            if not found_old:
                return None
            converted = self._convert(load.id_hash, payload)
            if converted is None:
                return None
            data = self._move(old_id, bytes(payload), load.id_hash, *converted)
            if data is not None:
                return LoadedRow(data, touch_due=False)
            # Another request moved it first (this one's delete found nothing): read its row.
            row: LoadedRow | None = super().execute(load)
            if row is not None:
                return row
        return None

    def _look(self, id_hash: bytes, old_id: str) -> tuple[bool, Any, bool]:
        """(an old live row exists, its pickle, the new table has the session now)."""
        statement = self._steps.guard + self._probe_sql  # the store's SET LOCAL prefix, if any

        def look(cur: Cursor) -> tuple[bool, Any, bool]:
            cur.execute(statement, {"id": id_hash, "sid": old_id})
            found_old, payload, found_new = cur.fetchone() or (False, None, False)
            return bool(found_old), payload, bool(found_new)

        return self._run(look, retry=True)

    def _convert(self, id_hash: bytes, payload: Any) -> tuple[str, str | None] | None:
        """The session's JSON and user column, or None (refused with one log line, or empty)."""
        limit = self._max_size * MAX_PICKLE_FACTOR
        if payload is not None and len(payload) > limit:
            self._refuse(id_hash, f"the pickled data is {len(payload)} bytes, over {limit}; not read")
            return None
        data, error = decode_payload(None if payload is None else bytes(payload))
        if data is None:
            self._refuse(id_hash, error or "unreadable data")
            return None
        data_json, user_id, reason = convert_session(data, self._max_size, self._user_key, self.key_prefix)
        if reason is not None:
            self._refuse(id_hash, reason)
            return None
        return None if data_json is None else (data_json, user_id)

    def _refuse(self, id_hash: bytes, reason: str) -> None:
        """Log the one line a session that is not moved gets (never its id)."""
        log.warning(
            "flask-pg-session session %s not moved (%s); the request gets a new session and the "
            "old row is left in %s",
            refusal_label(id_hash),
            short_reason(reason),
            self.legacy_qualified_name,
        )

    def _move(
        self, old_id: str, payload: bytes, id_hash: bytes, data_json: str, user_id: str | None
    ) -> dict[str, Any] | None:
        """Run the move; the stored data if this request moved the row, else None."""
        statement = self._steps.guard + self._move_sql
        params = {
            "sids": [old_id],
            "payloads": [psycopg2.Binary(payload)],
            "ids": [psycopg2.Binary(id_hash)],
            "datas": [data_json],
            "users": [user_id],
            "idle": self._lifetime,
            "absolute": self._absolute,
        }

        def move(cur: Cursor) -> dict[str, Any] | None:
            cur.execute(statement, params)
            try:
                row = cur.fetchone()
            except (ValueError, RecursionError) as exc:  # as the store's own load
                raise SessionDataError(type(exc).__name__) from None
            return None if row is None else dict(row[0])

        return self._run(move, retry=False)


def row_key(session_id: str, key_prefix: str) -> bytes:
    """The key the cookie's id (without ``key_prefix``) is stored under in the new table."""
    return hash_session_id(prefixed_id(session_id, key_prefix))
