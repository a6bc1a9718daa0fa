"""Moving every session out of a flask-pg-session table at once.

Two ways: converting the table in place into a pgsession-wsgi table of the same name (the app
is stopped meanwhile), or, with ``into``, moving its sessions into the table a running
``FlaskPgSession`` stores them in, as the fallback (:mod:`.fallback`) does one cookie at a time.
Reading the old rows is :mod:`.rows`' job, converting one row :mod:`.convert`'s, and writing the
rows kept a batch at a time (inserts, or moves) :mod:`._migrate_rows`'; this module holds the
statements around them: the lock, the checks, the rename, the new table, and the report.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import psycopg2

from .._drivers.connections import first_line
from ..appconfig import FLASK_LOGIN_USER_KEY
from ..defaults import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_SIZE, DEFAULT_SCHEMA
from ..dsn import connect_arguments
from ..errors import ConfigurationError, SessionError, StoreUnavailable
from ..sql import LOCK, lock_key, quote_identifier
from ..store import PostgresStore

# The rows (conversion, batches) are apart (issue 22); every name they defined stays importable here.
from ._migrate_rows import _copy_rows as _copy_rows
from ._migrate_rows import _move_rows as _move_rows
from ._migrate_rows import _RowConverter as _RowConverter
from .conventions import FLASK_PG_SESSION_TABLE, new_table_name
from .rows import DEFAULT_BATCH_SIZE, is_legacy_table

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
    """The ``on_batch`` callback stopped the migration: rolled back, or (``into``) half done.

    :param done: rows handled (converted, refused or skipped) before the stop.
    :param total: the live rows there were to handle.
    :param table: the quoted, qualified name of the table, still flask-pg-session's.
    :param moved_into: with ``into``, the table the sessions moved so far stay in (each batch
        is its own statement, so nothing is rolled back); None for a conversion in place.
    """

    def __init__(self, done: int, total: int, table: str, moved_into: str | None = None) -> None:
        if moved_into is None:
            message = (
                f"the migration was stopped after {done} of {total} row(s) and rolled back: nothing "
                f"changed, {table} is still the flask-pg-session table; run it again to start over"
            )
        else:
            message = (
                f"the move was stopped after {done} of {total} row(s): the sessions moved so far "
                f"are in {moved_into}, where the app finds them; the others are still in {table}, "
                "run it again to move them"
            )
        super().__init__(message)
        self.done = done
        self.total = total
        self.table = table


@dataclass
class MigrationReport:
    """What :func:`migrate_flask_pg_session` did, to check before deleting the old table.

    :param migrated: rows converted.
    :param refused: ``(id_hash_prefix, reason)`` pairs: the first 12 hex digits of the row key
        the session would have had (never the id itself, which would be a usable cookie); the
        app's log names a refused session the same way.
    :param renamed_to: the quoted, qualified name the old table is kept under (with ``into``,
        its own name: it is not renamed).
    :param skipped_empty: live rows holding nothing but Flask's ``_permanent`` flag (never
        stored by pgsession-wsgi).
    :param other_prefix: live rows under another ``SESSION_KEY_PREFIX``, left behind in the
        old table.
    :param moved_into: with ``into``, the quoted, qualified table the sessions were moved into;
        None for a conversion in place.
    """

    migrated: int
    refused: list[tuple[str, str]]
    renamed_to: str
    skipped_empty: int = 0
    other_prefix: int = 0
    moved_into: str | None = None


#: Suffix of the name the old table is kept under.
RENAMED_SUFFIX: Final = "_flask_pg_session_old"


def _renamed(table: str) -> str:
    suffix = RENAMED_SUFFIX.encode()
    head = table.encode("utf-8")[: 63 - len(suffix)].decode("utf-8", "ignore")
    return head + RENAMED_SUFFIX


def _columns(cur: Any, qualified: str) -> dict[str, str]:
    cur.execute(
        "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute"
        " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
        (qualified,),
    )
    return dict(cur.fetchall())


def _check_legacy_table(cur: Any, table: str, schema: str, qualified: str, nothing: str) -> None:
    """Refuse ``qualified`` unless it is flask-pg-session's table ``table``.

    :param nothing: what there would be nothing to do ("migrate", "move"), for the messages.
    :raises NothingToMigrate: there is no such table, or it is a pgsession-wsgi table already.
    :raises ConfigurationError: it is some other table.
    """
    columns = _columns(cur, qualified)
    if not columns:
        raise NothingToMigrate(f"there is no table {qualified}: nothing to {nothing}")
    if columns.get("id") == "bytea" and columns.get("data") == "jsonb":
        raise NothingToMigrate(f"{qualified} is already a pgsession-wsgi table: nothing to {nothing}")
    if not is_legacy_table(cur.connection, table, schema):
        raise ConfigurationError(
            f"{qualified} is not a flask-pg-session table (columns: "
            f"{', '.join(sorted(columns))}); check --table and --schema"
        )


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
    user_key: str | None = FLASK_LOGIN_USER_KEY,
    into: str | None = None,
) -> MigrationReport:
    """Move every live session out of a flask-pg-session table, converted, in one run.

    Without ``into`` the table is converted in place, for an app that is stopped meanwhile: in
    one transaction, under the advisory lock ``PostgresStore.create_table`` takes (so an app
    starting meanwhile waits and then finds the new table), the old table is renamed to
    ``<table>_flask_pg_session_old`` and kept, the new one is created under the old name, and
    every live row is copied. Any failure rolls everything back.

    With ``into`` (a running ``FlaskPgSession``'s table, ``<table>_v2`` unless ``PGSESSION_TABLE``
    names another) the old table stays where it is and each batch of sessions is moved, its
    old rows deleted and the new ones inserted in one statement, exactly as the app moves one
    session when its cookie comes back; the app can serve requests throughout. What is not
    moved (refused rows, rows under another prefix, empty ones) stays in the old table.

    Either way each row is keyed as the app looks its cookie up (the SHA-256 of the id, with
    ``key_prefix`` before it when there is one: :func:`~pgsession_wsgi.cookies.prefixed_id`), so
    existing cookies keep working; its user column is filled from ``user_key``. Pickles are read
    with :func:`~.unpickle.restricted_loads`; a row it refuses is reported, never executed.
    Rows with NULL expiry (non-permanent sessions) get ``now() + lifetime``. Each row is
    converted or refused on its own, with the reason in the report: an id flask-pg-session did
    not issue (not a uuid4), data that cannot be stored, a user id that is not a str, int or
    UUID, or data whose JSON would exceed ``max_size`` bytes (judged before building it: a tiny
    pickle can expand enormously through shared references).

    :param dsn: the database, as for :class:`PostgresStore`; its parameters win over ours.
    :param table: the flask-pg-session table (``SESSION_PG_TABLE``); converted in place, the new
        table takes its name, so the app's config does not change.
    :param schema: its schema (``SESSION_PG_SCHEMA``); ``into`` is in the same schema.
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
        the old table, made only when ``on_batch`` is given). Return ``False`` to stop and have
        :class:`MigrationStopped` raised: in place, the whole migration is rolled back; with
        ``into``, the batches moved so far stay moved.
    :param user_key: the session key holding the user's id (``PGSESSION_USER_KEY``, Flask-Login's
        ``"_user_id"`` by default), copied into the user column so ``revoke_user`` and
        ``sessions_for_user`` find converted sessions; None leaves it empty.
    :param into: move the sessions into this pgsession-wsgi table (created if missing) and leave
        the old table in place; None converts the table in place.
    :raises NothingToMigrate: the table is missing or already a pgsession-wsgi table.
    :raises MigrationStopped: ``on_batch`` returned ``False``.
    :raises ConfigurationError: a bad argument, a table of another layout, a name clash with
        the renamed table, or (in place) a ``<table>_v2`` table a running ``FlaskPgSession``
        moves sessions into: use ``into`` then.
    :raises StoreUnavailable: the database cannot be reached.
    """
    if lifetime.total_seconds() <= 0:
        raise ConfigurationError(f"lifetime must be positive, not {lifetime!r}")
    if batch_size < 1:
        raise ConfigurationError("batch_size must be at least 1")
    if max_size < 1:
        raise ConfigurationError(f"max_size must be a positive number of bytes, not {max_size!r}")
    if "\x00" in key_prefix:
        raise ConfigurationError("key_prefix cannot hold a NUL character")
    rows = _RowConverter(key_prefix, max_size, user_key)
    if into is not None:
        return _move_into(dsn, table, schema, into, rows, lifetime, batch_size, on_batch)
    # Validates the names and gives the exact DDL and advisory lock the app itself uses.
    target = PostgresStore(dsn, table, schema, create_table=False, purge_interval=None, unlogged=None)
    target.close()
    renamed = _renamed(table)
    schema_part = quote_identifier(schema, "schema")
    qualified = f"{schema_part}.{quote_identifier(table, 'table')}"
    old_qualified = f"{schema_part}.{quote_identifier(renamed, 'table')}"
    next_qualified = f"{schema_part}.{quote_identifier(new_table_name(table), 'table')}"
    conn = _connect(dsn)
    report = MigrationReport(migrated=0, refused=[], renamed_to=old_qualified)
    try:
        with conn, conn.cursor() as cur:  # one transaction: commit at the end, or roll back
            cur.execute(LOCK, (lock_key(schema, table),))
            _check_legacy_table(cur, table, schema, qualified, "migrate")
            if _columns(cur, old_qualified):
                raise ConfigurationError(
                    f"cannot keep the old table as {old_qualified}: a table of that name already "
                    "exists; rename or drop it first"
                )
            if _columns(cur, next_qualified):
                # A running FlaskPgSession moves sessions there: renaming its old table under it
                # would break it, and the sessions it moved would be left behind.
                raise ConfigurationError(
                    f"{next_qualified} exists: FlaskPgSession already moves this table's sessions "
                    f"into it; move the rest there with `--into {new_table_name(table)}` (into=...) "
                    "instead of converting the table in place"
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
                rows,
                lifetime,
                batch_size,
                target.qualified_name,
                progress,
            )
            report.other_prefix = _count_other_prefix(cur, old_qualified, key_prefix)
    finally:
        conn.close()
    return report


def _connect(dsn: str) -> Any:
    """A connection of the migration's own; the DSN (and PGAPPNAME, ...) win over our defaults."""
    try:
        defaults = {"connect_timeout": 10, "application_name": "pgsession-wsgi migrate"}
        return psycopg2.connect(**connect_arguments(dsn, defaults=defaults, settings={})[0])
    except psycopg2.OperationalError as exc:
        raise StoreUnavailable(f"cannot connect to PostgreSQL ({first_line(exc)})") from None


def _reporter(
    on_batch: Callable[[int, int], bool | None], total: int, qualified: str, moved_into: str | None = None
) -> Callable[[int], None]:
    """``on_batch`` with the total bound; a stop raises (in place, the transaction rolls back)."""

    def progress(done: int) -> None:
        if on_batch(done, total) is False:
            raise MigrationStopped(done, total, qualified, moved_into)

    return progress


def _count_live(cur: Any, old_qualified: str, key_prefix: str) -> int:
    """The rows :func:`read_legacy_rows` will yield (the same filter, the same transaction)."""
    cur.execute(
        f"SELECT count(*) FROM {old_qualified.replace('%', '%%')}"
        " WHERE left(session_id, char_length(%(p)s)) = %(p)s"
        " AND (expiry IS NULL OR expiry > now() AT TIME ZONE 'UTC')",
        {"p": key_prefix},
    )
    (count,) = cur.fetchone() or (0,)
    return int(count)


def _count_other_prefix(cur: Any, old_qualified: str, key_prefix: str) -> int:
    """The live rows under another prefix, which stay in the old table; 0 without a prefix."""
    if not key_prefix:
        return 0
    cur.execute(
        f"SELECT count(*) FROM {old_qualified.replace('%', '%%')}"
        " WHERE left(session_id, char_length(%(p)s)) <> %(p)s"
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


def _move_into(
    dsn: str,
    table: str,
    schema: str,
    into: str,
    rows: _RowConverter,
    lifetime: _dt.timedelta,
    batch_size: int,
    on_batch: Callable[[int, int], bool | None] | None,
) -> MigrationReport:
    """Move the sessions into ``into`` a batch at a time, the old table left in place."""
    if into == table:
        raise ConfigurationError(
            f"into={into!r} is the flask-pg-session table itself; to convert it in place leave "
            "into out (no --into)"
        )
    schema_part = quote_identifier(schema, "schema")
    qualified = f"{schema_part}.{quote_identifier(table, 'table')}"
    # Creates the table (or checks and upgrades it) exactly as the app does.
    target = PostgresStore(dsn, into, schema, create_table=False, purge_interval=None, unlogged=None)
    try:
        conn = _connect(dsn)
        try:
            conn.autocommit = True  # each batch is one statement: moved, or not at all
            with conn.cursor() as cur:
                _check_legacy_table(cur, table, schema, qualified, "move")
                target.create_table()
                report = MigrationReport(
                    migrated=0, refused=[], renamed_to=qualified, moved_into=target.qualified_name
                )
                progress = None
                if on_batch is not None:
                    total = _count_live(cur, qualified, rows.key_prefix)
                    progress = _reporter(on_batch, total, qualified, target.qualified_name)
                    progress(0)
                _move_rows(conn, cur, report, table, schema, rows, lifetime, batch_size, progress)
                report.other_prefix = _count_other_prefix(cur, qualified, rows.key_prefix)
        finally:
            conn.close()
    finally:
        target.close()
    return report
