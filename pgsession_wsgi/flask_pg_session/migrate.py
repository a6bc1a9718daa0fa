"""Moving every session out of a flask-pg-session table at once: in place, or ``into`` a running
app's table. The rows are written by :mod:`._migrate_rows`; here are the statements around them.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Final

from .._store.ddl import suffixed_name
from ..appconfig import FLASK_LOGIN_USER_KEY
from ..defaults import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_SIZE, DEFAULT_SCHEMA
from ..errors import ConfigurationError, SessionError
from ..sql import LOCK, lock_key, quote_identifier
from ..store import PostgresStore
from ._migrate_rows import _copy_rows, _move_rows, _RowConverter
from .conventions import FLASK_PG_SESSION_TABLE, new_table_name
from .fallback import _ours, own_connection
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
    :param moved_into: with ``into``, the table the sessions moved so far stay in; None in place.
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
        the session would have had (never the id, a usable cookie), as the app's log names it.
    :param renamed_to: the quoted, qualified name the old table is kept under (with ``into``,
        its own name).
    :param skipped_empty: live rows holding nothing but Flask's ``_permanent`` flag.
    :param other_prefix: live rows under another ``SESSION_KEY_PREFIX``, left in the old table.
    :param moved_into: with ``into``, the quoted, qualified table the sessions were moved into.
    """

    migrated: int
    refused: list[tuple[str, str]]
    renamed_to: str
    skipped_empty: int = 0
    other_prefix: int = 0
    moved_into: str | None = None


#: Suffix of the name the old table is kept under.
RENAMED_SUFFIX: Final = "_flask_pg_session_old"


def _columns(cur: Any, qualified: str) -> dict[str, str]:
    cur.execute(
        "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute"
        " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
        (qualified,),
    )
    return dict(cur.fetchall())


def _check_legacy_table(cur: Any, table: str, schema: str, qualified: str, nothing: str) -> None:
    """Refuse ``qualified`` unless it is flask-pg-session's; ``nothing`` is the verb for the messages."""
    columns = _columns(cur, qualified)
    if not columns:
        raise NothingToMigrate(f"there is no table {qualified}: nothing to {nothing}")
    if _ours(columns):
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

    Without ``into``, for a stopped app: in one transaction, under the advisory lock the app
    takes to create its table, the old table is renamed to ``<table>_flask_pg_session_old``,
    the new one is created under the old name, and every live row is copied. With ``into``,
    while the app runs: each batch is moved with the statement the app's fallback uses, and the
    old table stays. Each row is converted or refused on its own, the reason in the report.

    :param dsn: the database, as for :class:`PostgresStore`; its parameters win over ours.
    :param table: the flask-pg-session table (``SESSION_PG_TABLE``).
    :param schema: its schema (``SESSION_PG_SCHEMA``); ``into`` is in the same schema.
    :param key_prefix: ``SESSION_KEY_PREFIX``: only rows under it are converted.
    :param lifetime: the expiry of rows stored without one: the app's
        ``PERMANENT_SESSION_LIFETIME``.
    :param batch_size: rows read and written per statement.
    :param max_size: refuse a row whose JSON would be larger: the app's ``max_size``.
    :param on_batch: ``on_batch(done, total)``, before the first row and after each batch, with
        the rows handled so far and the live rows under ``key_prefix`` (counted first, one scan);
        return ``False`` to stop: in place, everything is rolled back; with ``into``, the batches
        moved stay moved.
    :param user_key: the session key holding the user's id, copied into the user column so
        ``revoke_user`` finds converted sessions; None leaves it empty.
    :param into: move the sessions into this pgsession-wsgi table (created if missing); None
        converts the table in place.
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
    renamed = suffixed_name(table, RENAMED_SUFFIX)
    schema_part = quote_identifier(schema, "schema")
    qualified = f"{schema_part}.{quote_identifier(table, 'table')}"
    old_qualified = f"{schema_part}.{quote_identifier(renamed, 'table')}"
    next_qualified = f"{schema_part}.{quote_identifier(new_table_name(table), 'table')}"
    conn = own_connection(dsn, "pgsession-wsgi migrate")
    report = MigrationReport(migrated=0, refused=[], renamed_to=old_qualified)
    # One transaction (``with conn``): committed at the end, or rolled back.
    with closing(conn), conn, conn.cursor() as cur:
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
        _rename(cur, schema_part, qualified, renamed)
        cur.execute(target.ddl())
        progress = None
        if on_batch is not None:
            progress = _reporter(on_batch, _count_live(cur, old_qualified, key_prefix), qualified)
            progress(0)
        _copy_rows(cur, report, renamed, schema, rows, lifetime, batch_size, target.qualified_name, progress)
        report.other_prefix = _count_other_prefix(cur, old_qualified, key_prefix)
    return report


def _reporter(
    on_batch: Callable[[int, int], bool | None], total: int, qualified: str, moved_into: str | None = None
) -> Callable[[int], None]:
    """``on_batch`` with the total bound; a stop raises (in place, the transaction rolls back)."""

    def progress(done: int) -> None:
        if on_batch(done, total) is False:
            raise MigrationStopped(done, total, qualified, moved_into)

    return progress


def _count_live(cur: Any, old_qualified: str, key_prefix: str, match: str = "=") -> int:
    """The rows :func:`read_legacy_rows` will yield (the same filter); ``match`` "<>": the others."""
    cur.execute(
        f"SELECT count(*) FROM {old_qualified.replace('%', '%%')}"
        f" WHERE left(session_id, char_length(%(p)s)) {match} %(p)s"
        " AND (expiry IS NULL OR expiry > now() AT TIME ZONE 'UTC')",
        {"p": key_prefix},
    )
    (count,) = cur.fetchone() or (0,)
    return int(count)


def _count_other_prefix(cur: Any, old_qualified: str, key_prefix: str) -> int:
    """The live rows under another prefix, which stay in the old table; 0 without a prefix."""
    return _count_live(cur, old_qualified, key_prefix, "<>") if key_prefix else 0


def _rename(cur: Any, schema_part: str, qualified: str, renamed: str) -> None:
    """Rename the old table and its primary key, so the new table's key gets the plain name."""
    cur.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p'",
        (qualified,),
    )
    primary = cur.fetchone()
    cur.execute(f"ALTER TABLE {qualified} RENAME TO {quote_identifier(renamed, 'table')}")
    if primary is not None:
        new_key = suffixed_name(renamed, "_pkey")
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
    with closing(target), closing(own_connection(dsn, "pgsession-wsgi migrate")) as conn:
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
            _move_rows(cur, report, table, schema, rows, lifetime, batch_size, progress)
            report.other_prefix = _count_other_prefix(cur, qualified, rows.key_prefix)
    return report
