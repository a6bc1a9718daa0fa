"""Converting a flask-pg-session table, in place, into a pgsession-wsgi table of the same name.

Reading the old rows is :mod:`.rows`' job and converting one row :mod:`.convert`'s; this module
holds the transaction around them: the lock, the rename, the new table, the batched inserts and
the report.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import psycopg2
import psycopg2.extras

from ..cookies import hash_session_id
from ..defaults import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_SIZE, DEFAULT_SCHEMA
from ..dsn import connect_arguments
from ..errors import ConfigurationError, SessionError, StoreUnavailable
from ..pool import _first_line
from ..session import META_KEYS
from ..sql import LOCK, lock_key, quote_identifier
from ..store import PostgresStore
from .conventions import FLASK_PG_SESSION_TABLE, UUID4_PATTERN
from .convert import encode_row
from .rows import DEFAULT_BATCH_SIZE, LegacyRow, is_legacy_table, read_legacy_rows

__all__ = [
    "RENAMED_SUFFIX",
    "MigrationReport",
    "MigrationStopped",
    "NothingToMigrate",
    "migrate_flask_pg_session",
]


class NothingToMigrate(ConfigurationError):
    """The table is missing or already a pgsession-wsgi table: there is nothing to convert."""


class MigrationStopped(SessionError):
    """The ``on_batch`` callback stopped the migration; it was rolled back, nothing changed.

    :param done: rows handled (converted, refused or skipped) before the stop.
    :param total: the live rows there were to handle.
    :param table: the quoted, qualified name of the table, still flask-pg-session's.
    """

    def __init__(self, done: int, total: int, table: str) -> None:
        super().__init__(
            f"the migration was stopped after {done} of {total} row(s) and rolled back: nothing "
            f"changed, {table} is still the flask-pg-session table; run it again to start over"
        )
        self.done = done
        self.total = total
        self.table = table


@dataclass
class MigrationReport:
    """What :func:`migrate_flask_pg_session` did, to check before deleting the old table.

    :param migrated: rows converted.
    :param refused: ``(id_hash_prefix, reason)`` pairs: the first 12 hex digits of the SHA-256
        of the session id (never the id itself, which would be a usable cookie).
    :param renamed_to: the quoted, qualified name the old table is kept under.
    :param skipped_empty: live rows holding nothing but Flask's ``_permanent`` flag (never
        stored by pgsession-wsgi).
    :param other_prefix: live rows under another ``SESSION_KEY_PREFIX``, left behind in the
        renamed table.
    """

    migrated: int
    refused: list[tuple[str, str]]
    renamed_to: str
    skipped_empty: int = 0
    other_prefix: int = 0


#: Suffix of the name the old table is kept under.
RENAMED_SUFFIX: Final = "_flask_pg_session_old"
# Only ids flask-pg-session issued are converted: a client-chosen one would keep serving the
# attacker's id (see UUID4_PATTERN).
_ISSUED_ID = re.compile(UUID4_PATTERN)
# The longest reason put in the report.
_MAX_REASON: Final = 200
# Encoded rows held for one INSERT at most (a batch of large rows is sent early); not Final, so
# a test can lower it.
_MAX_BATCH_CHARS = 16 * 1024 * 1024


def _renamed(table: str) -> str:
    suffix = RENAMED_SUFFIX.encode()
    head = table.encode("utf-8")[: 63 - len(suffix)].decode("utf-8", "ignore")
    return head + RENAMED_SUFFIX


def _short(text: str) -> str:
    """One printable line of at most ``_MAX_REASON`` characters, safe to print to a terminal.

    Reasons quote pickled names and session keys, which are attacker-controlled text.
    """
    line = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text[: _MAX_REASON * 2])
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."


def _columns(cur: Any, qualified: str) -> dict[str, str]:
    cur.execute(
        "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute"
        " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
        (qualified,),
    )
    return dict(cur.fetchall())


def migrate_flask_pg_session(
    dsn: str,
    table: str = FLASK_PG_SESSION_TABLE,
    schema: str = DEFAULT_SCHEMA,
    *,
    key_prefix: str = "",
    lifetime: _dt.timedelta = DEFAULT_IDLE_TIMEOUT,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
    on_batch: Callable[[int, int], bool | None] | None = None,
) -> MigrationReport:
    """Convert a flask-pg-session table into a pgsession-wsgi table of the same name.

    In one transaction, under the advisory lock ``PostgresStore.create_table`` takes (so an app
    starting meanwhile waits and then finds the new table): the old table is renamed to
    ``<table>_flask_pg_session_old`` and kept, the new one is created, and every live row is
    copied, keyed by the SHA-256 of its session id so existing cookies keep working. Pickles
    are read with :func:`~.unpickle.restricted_loads`; a row it refuses is reported, never executed.
    Rows with NULL expiry (non-permanent sessions) get ``now() + lifetime``. Each row is
    converted or refused on its own, with the reason in the report: an id flask-pg-session did
    not issue (not a uuid4), data that cannot be stored, or data whose JSON would exceed
    ``max_size`` bytes (judged before building it: a tiny pickle can expand enormously through
    shared references). Any other failure rolls everything back. Raises
    :class:`NothingToMigrate` when the table is missing or already ours.

    :param dsn: the database, as for :class:`PostgresStore`; its parameters win over ours.
    :param table: the flask-pg-session table (``SESSION_PG_TABLE``); the new table takes its name,
        so the app's config does not change.
    :param schema: its schema (``SESSION_PG_SCHEMA``).
    :param key_prefix: flask-pg-session's ``SESSION_KEY_PREFIX``: only rows under it are
        converted, the others are counted in ``other_prefix`` and stay in the old table.
    :param lifetime: the expiry given to rows stored without one; pass the app's
        ``PERMANENT_SESSION_LIFETIME`` so those users keep the lifetime they had.
    :param batch_size: rows read and inserted per statement.
    :param max_size: refuse a row whose JSON would be larger; pass the app's ``max_size`` so
        every converted session can be saved again.
    :param on_batch: for a long migration, to show progress or stop it: called as
        ``on_batch(done, total)`` once before the first row (``done`` 0) and after each batch,
        ``done`` counting the rows handled so far (converted, refused or skipped) and ``total``
        the live rows under ``key_prefix``, counted exactly at the start (it costs one scan of
        the old table, made only when ``on_batch`` is given). Return ``False`` to stop: the
        whole migration is rolled back and :class:`MigrationStopped` is raised.
    :raises NothingToMigrate: the table is missing or already a pgsession-wsgi table.
    :raises MigrationStopped: ``on_batch`` returned ``False``; nothing was changed.
    :raises ConfigurationError: a bad argument, a table of another layout, or a name clash with
        the renamed table.
    :raises StoreUnavailable: the database cannot be reached.
    """
    if lifetime.total_seconds() <= 0:
        raise ConfigurationError(f"lifetime must be positive, not {lifetime!r}")
    if batch_size < 1:
        raise ConfigurationError("batch_size must be at least 1")
    if max_size < 1:
        raise ConfigurationError(f"max_size must be a positive number of bytes, not {max_size!r}")
    # Validates the names and gives the exact DDL and advisory lock the app itself uses.
    target = PostgresStore(dsn, table, schema, create_table=False, purge_interval=None)
    target.close()
    renamed = _renamed(table)
    qualified = f"{quote_identifier(schema, 'schema')}.{quote_identifier(table, 'table')}"
    old_qualified = f"{quote_identifier(schema, 'schema')}.{quote_identifier(renamed, 'table')}"
    try:
        # The DSN (and PGAPPNAME, PGCONNECT_TIMEOUT) win over these, as for the store.
        defaults = {"connect_timeout": 10, "application_name": "pgsession-wsgi migrate"}
        conn = psycopg2.connect(**connect_arguments(dsn, defaults=defaults, settings={})[0])
    except psycopg2.OperationalError as exc:
        raise StoreUnavailable(f"cannot connect to PostgreSQL ({_first_line(exc)})") from None
    report = MigrationReport(migrated=0, refused=[], renamed_to=old_qualified)
    try:
        with conn, conn.cursor() as cur:  # one transaction: commit at the end, or roll back
            cur.execute(LOCK, (lock_key(schema, table),))
            columns = _columns(cur, qualified)
            if not columns:
                raise NothingToMigrate(f"there is no table {qualified}: nothing to migrate")
            if columns.get("id") == "bytea" and columns.get("data") == "jsonb":
                raise NothingToMigrate(f"{qualified} is already a pgsession-wsgi table: nothing to migrate")
            if not is_legacy_table(conn, table, schema):
                raise ConfigurationError(
                    f"{qualified} is not a flask-pg-session table (columns: "
                    f"{', '.join(sorted(columns))}); check --table and --schema"
                )
            if _columns(cur, old_qualified):
                raise ConfigurationError(
                    f"cannot keep the old table as {old_qualified}: a table of that name already "
                    "exists; rename or drop it first"
                )
            _rename(cur, schema, table, renamed)
            cur.execute(target.ddl())
            progress = None
            if on_batch is not None:
                progress = _reporter(on_batch, _count_live(cur, old_qualified, key_prefix), qualified)
                progress(0)
            _copy_rows(
                conn,
                cur,
                report,
                renamed,
                schema,
                key_prefix,
                lifetime,
                batch_size,
                target.qualified_name,
                META_KEYS,
                max_size,
                progress,
            )
            if key_prefix:
                cur.execute(
                    f"SELECT count(*) FROM {old_qualified}"
                    " WHERE left(session_id, char_length(%(p)s)) <> %(p)s"
                    " AND (expiry IS NULL OR expiry > now() AT TIME ZONE 'UTC')",
                    {"p": key_prefix},
                )
                (count,) = cur.fetchone() or (0,)
                report.other_prefix = int(count)
    finally:
        conn.close()
    return report


def _reporter(
    on_batch: Callable[[int, int], bool | None], total: int, qualified: str
) -> Callable[[int], None]:
    """``on_batch`` with the total bound; a stop raises, so the transaction rolls back."""

    def progress(done: int) -> None:
        if on_batch(done, total) is False:
            raise MigrationStopped(done, total, qualified)

    return progress


def _count_live(cur: Any, old_qualified: str, key_prefix: str) -> int:
    """The rows :func:`read_legacy_rows` will yield (the same filter, the same transaction)."""
    cur.execute(
        f"SELECT count(*) FROM {old_qualified}"
        " WHERE left(session_id, char_length(%(p)s)) = %(p)s"
        " AND (expiry IS NULL OR expiry > now() AT TIME ZONE 'UTC')",
        {"p": key_prefix},
    )
    (count,) = cur.fetchone() or (0,)
    return int(count)


def _rename(cur: Any, schema: str, table: str, renamed: str) -> None:
    """Rename the old table and its primary key, so the new table's key gets the plain name."""
    schema_part = quote_identifier(schema, "schema")
    qualified = f"{schema_part}.{quote_identifier(table, 'table')}"
    cur.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p'",
        (qualified,),
    )
    primary = cur.fetchone()
    cur.execute(f"ALTER TABLE {qualified} RENAME TO {quote_identifier(renamed, 'table')}")
    if primary is not None:
        new_key = renamed.encode("utf-8")[:58].decode("utf-8", "ignore") + "_pkey"
        cur.execute(
            f"ALTER TABLE {schema_part}.{quote_identifier(renamed, 'table')}"
            f" RENAME CONSTRAINT {quote_identifier(primary[0], 'constraint')}"
            f" TO {quote_identifier(new_key, 'constraint')}"
        )


def _copy_rows(
    conn: Any,
    cur: Any,
    report: MigrationReport,
    old_table: str,
    schema: str,
    key_prefix: str,
    lifetime: _dt.timedelta,
    batch_size: int,
    new_qualified: str,
    meta_keys: frozenset[str],
    max_size: int,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Convert the rows, inserting them a batch at a time and reporting each batch to
    ``progress`` with the rows handled so far (converted, refused or skipped)."""
    insert = f"INSERT INTO {new_qualified} (id, data, created_at, accessed_at, expires_at) VALUES %s"
    template = "(%s, %s::jsonb, COALESCE(%s, now()), now(), COALESCE(%s, now() + %s))"
    pending: list[tuple[Any, ...]] = []
    pending_size = 0
    handled = 0

    def flush() -> None:
        nonlocal pending_size
        if pending:
            _insert_batch(cur, insert, template, pending)
            report.migrated += len(pending)
            pending.clear()
            pending_size = 0

    def refuse(label: str, reason: str) -> None:
        report.refused.append((label, _short(reason)))

    def take(row: LegacyRow) -> None:
        nonlocal pending_size
        digest = hash_session_id(row.session_id)  # the key the store looks the cookie's id up by
        label = digest.hex()[:12]
        if not _ISSUED_ID.fullmatch(row.session_id):
            refuse(label, "the session id is not a uuid4, the only id flask-pg-session issues; not converted")
        elif row.data is None:
            refuse(label, row.error or "unreadable data")
        elif all(key in meta_keys for key in row.data):
            report.skipped_empty += 1
        else:
            data_json, reason = encode_row(row.data, max_size)
            if data_json is None:
                refuse(label, reason or "cannot be stored")
            else:
                pending.append((psycopg2.Binary(digest), data_json, row.created, row.expiry, lifetime))
                pending_size += len(data_json)

    for row in read_legacy_rows(conn, old_table, schema, key_prefix=key_prefix, batch_size=batch_size):
        take(row)
        handled += 1
        # A batch is batch_size rows handled, or less when their JSON is large: rows may be up to
        # max_size each, so the batch's memory is bounded too, not only its count.
        if handled % batch_size == 0 or pending_size >= _MAX_BATCH_CHARS:
            flush()
            if progress is not None:
                progress(handled)
    if pending or handled % batch_size:
        flush()
        if progress is not None:
            progress(handled)


def _insert_batch(cur: Any, insert: str, template: str, rows: list[tuple[Any, ...]]) -> None:
    psycopg2.extras.execute_values(cur, insert, rows, template=template, page_size=len(rows))
