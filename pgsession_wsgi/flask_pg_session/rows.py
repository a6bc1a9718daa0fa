"""Reading a flask-pg-session table: which tables are one, and their live rows, decoded safely.

A row that cannot be read comes back with the reason instead of its data, so the others go on.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from typing import Any, Final, NamedTuple

from psycopg2 import sql

from ..defaults import DEFAULT_SCHEMA
from ..errors import SessionError
from .unpickle import restricted_loads, type_name

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "LegacyRow",
    "decode_payload",
    "is_legacy_table",
    "looks_legacy",
    "read_legacy_rows",
]

#: Rows read (and, in the migration, inserted) per query.
DEFAULT_BATCH_SIZE: Final = 500


class LegacyRow(NamedTuple):
    """One live flask-pg-session row, decoded (``data``) or with the reason it was not.

    :param session_id: the id the cookie carries (the stored column minus ``key_prefix``).
    :param data: the session dict; None if it could not be read.
    :param expiry: aware UTC, or None for a non-permanent (browser) session.
    :param error: why ``data`` is None; None when it was read.
    :param created: the row's ``created`` column as aware UTC, when present.
    """

    session_id: str
    data: dict[str, Any] | None
    expiry: _dt.datetime | None
    error: str | None
    created: _dt.datetime | None = None


def _as_utc(value: _dt.datetime | None) -> _dt.datetime | None:
    """flask-pg-session writes naive UTC ``timestamp``: make it aware (or normalise to UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=_dt.timezone.utc)
    return value.astimezone(_dt.timezone.utc)


def decode_payload(payload: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
    """One ``data`` cell as ``(dict, None)``, or ``(None, reason)``; never raises, never runs code."""
    if payload is None:
        return None, "the row has no data (NULL)"
    try:
        value = restricted_loads(bytes(payload))
    except SessionError as exc:
        return None, str(exc)
    except Exception as exc:  # MemoryError and the like: this row is lost, not the others
        return None, f"the pickled data cannot be read ({type(exc).__name__}); not converted"
    if type(value) is not dict:
        return None, f"the pickled data is a {type_name(value)}, not a dict; not converted"
    return value, None


def read_legacy_rows(
    conn: Any,
    table: str,
    schema: str = DEFAULT_SCHEMA,
    *,
    key_prefix: str = "",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[LegacyRow]:
    """Yield the live rows of a flask-pg-session table, ``batch_size`` rows per query.

    Live means ``expiry`` is NULL or ahead of the database's UTC time, taken once at the start.
    Batches are keyset-paginated, so no transaction or server-side cursor stays open between
    them (autocommit and PgBouncer work) and the caller may write on the connection meanwhile.

    :param conn: an open psycopg2 connection; only read from, so the caller owns its transaction.
    :param table: the flask-pg-session table (``SESSION_PG_TABLE``), not quoted.
    :param schema: its schema (``SESSION_PG_SCHEMA``), not quoted.
    :param key_prefix: ``SESSION_KEY_PREFIX``; rows under another prefix are skipped, and the
        prefix is cut from the ids yielded (the cookie carries the id without it).
    :param batch_size: rows per query: memory held at once against round trips.
    :raises ValueError: when ``batch_size`` is below 1.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    # The statement runs with parameters, so a % in a name is doubled (sql.Identifier leaves it).
    quoted = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table)).as_string(conn)
    target = sql.SQL(quoted.replace("%", "%%"))
    query = sql.SQL(
        "SELECT session_id, data, expiry, created FROM {target}"
        " WHERE session_id > %(after)s"
        " AND left(session_id, char_length(%(prefix)s)) = %(prefix)s"
        " AND (expiry IS NULL OR expiry > %(cutoff)s)"
        " ORDER BY session_id LIMIT %(limit)s"
    ).format(target=target)
    with conn.cursor() as cur:
        # The column is "timestamp without time zone" holding UTC: compare in UTC, not in
        # the server's TimeZone (flask-pg-session's own `expiry < NOW()` gets that wrong).
        cur.execute("SELECT now() AT TIME ZONE 'UTC'")
        cutoff = cur.fetchone()[0]
    after = ""
    while True:
        with conn.cursor() as cur:
            params = {"after": after, "prefix": key_prefix, "cutoff": cutoff, "limit": batch_size}
            cur.execute(query, params)
            batch = cur.fetchall()
        for stored_id, payload, expiry, created in batch:
            data, error = decode_payload(payload)
            yield LegacyRow(stored_id[len(key_prefix) :], data, _as_utc(expiry), error, _as_utc(created))
        if len(batch) < batch_size:
            return
        after = batch[-1][0]


def is_legacy_table(conn: Any, table: str, schema: str = DEFAULT_SCHEMA) -> bool:
    """True if ``schema.table`` (not quoted) looks like flask-pg-session's table and not like ours.

    :param conn: an open psycopg2 connection; the catalog is read, nothing is written.
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname, format_type(a.atttypid, NULL)"
            " FROM pg_catalog.pg_attribute a"
            " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')"
            " AND a.attnum > 0 AND NOT a.attisdropped",
            (schema, table),
        )
        columns = dict(cur.fetchall())
    return looks_legacy(columns)


def looks_legacy(columns: dict[str, str]) -> bool:
    """Whether a table of these columns (name to ``format_type``) is flask-pg-session's, not ours."""
    has_columns = "session_id" in columns and "expiry" in columns
    return has_columns and columns.get("data") == "bytea" and columns.get("id") != "bytea"
