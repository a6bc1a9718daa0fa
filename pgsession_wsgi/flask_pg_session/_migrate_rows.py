"""The rows of a flask-pg-session migration: each old row converted, and written a batch at a time.

Internal to :mod:`.migrate`, which imports these names back.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg2
import psycopg2.extras

from .convert import convert_session
from .fallback import _ISSUED_ID, move_statement, refusal_label, row_key, short_reason
from .rows import LegacyRow, read_legacy_rows

# The JSON characters held for one INSERT at most; not Final, so a test can lower it.
_MAX_BATCH_CHARS = 16 * 1024 * 1024

# A client-chosen id would keep serving the attacker's id (see UUID4_PATTERN).
_NOT_ISSUED = "the session id is not a uuid4, the only id flask-pg-session issues; not converted"


class _Report(Protocol):
    """What this module fills in of :class:`~.migrate.MigrationReport` (which imports it)."""

    migrated: int
    refused: list[tuple[str, str]]
    renamed_to: str
    skipped_empty: int
    moved_into: str | None


@dataclass(frozen=True)
class _Converted:
    """One old row's fate: its new key and JSON, or why it stays (``reason``), or that it is empty."""

    digest: bytes
    data_json: str | None = None
    user_id: str | None = None
    reason: str | None = None


# The rows of a batch to write, each with its conversion (which has its JSON).
_Batch = list[tuple[LegacyRow, _Converted]]


@dataclass(frozen=True)
class _RowConverter:
    """Turns the old rows into new ones, by the rules the app's fallback applies too."""

    key_prefix: str
    max_size: int
    user_key: str | None

    def convert(self, row: LegacyRow) -> _Converted:
        digest = row_key(row.session_id, self.key_prefix)
        if not _ISSUED_ID.fullmatch(row.session_id):
            return _Converted(digest, reason=_NOT_ISSUED)
        if row.data is None:
            return _Converted(digest, reason=row.error or "unreadable data")
        return _Converted(digest, *convert_session(row.data, self.max_size, self.user_key, self.key_prefix))


def _copy_rows(
    cur: Any,
    report: _Report,
    old_table: str,
    schema: str,
    rows: _RowConverter,
    lifetime: _dt.timedelta,
    batch_size: int,
    new_qualified: str,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Convert the rows, inserting them a batch at a time."""
    # execute_values reads % in the statement: one in a name is doubled.
    target = new_qualified.replace("%", "%%")
    insert = f"INSERT INTO {target} (id, data, user_id, created_at, accessed_at, expires_at) VALUES %s"
    template = "(%s, %s::jsonb, %s, COALESCE(%s, now()), now(), COALESCE(%s, now() + %s))"

    def flush(batch: _Batch) -> None:
        values = [
            (psycopg2.Binary(new.digest), new.data_json, new.user_id, row.created, row.expiry, lifetime)
            for row, new in batch
        ]
        _insert_batch(cur, insert, template, values)
        report.migrated += len(values)

    _in_batches(cur, report, old_table, schema, rows, batch_size, progress, flush)


def _in_batches(
    cur: Any,
    report: _Report,
    table: str,
    schema: str,
    rows: _RowConverter,
    batch_size: int,
    progress: Callable[[int], None] | None,
    flush: Callable[[_Batch], None],
) -> None:
    """Convert the live rows, counting the refused and empty ones in ``report``, and ``flush`` the
    others every ``batch_size`` rows, sooner once ``_MAX_BATCH_CHARS`` are queued, and at the end;
    ``progress`` hears the rows handled (converted, refused or skipped) after each flush."""
    legacy = read_legacy_rows(
        cur.connection, table, schema, key_prefix=rows.key_prefix, batch_size=batch_size
    )
    pending: _Batch = []
    handled = reported = queued = 0

    def send() -> None:
        if pending:
            flush(pending)
            pending.clear()
        if progress is not None:
            progress(handled)

    for row in legacy:
        converted = rows.convert(row)
        if converted.reason is not None:
            report.refused.append((refusal_label(converted.digest), short_reason(converted.reason)))
        elif converted.data_json is None:
            report.skipped_empty += 1
        else:
            pending.append((row, converted))
            queued += len(converted.data_json)
        handled += 1
        if handled % batch_size == 0 or queued >= _MAX_BATCH_CHARS:
            send()
            reported, queued = handled, 0
    if handled > reported:
        send()


def _insert_batch(cur: Any, insert: str, template: str, rows: list[tuple[Any, ...]]) -> None:
    """The batch in one INSERT (execute_values would send pages of 100); a test makes it fail."""
    psycopg2.extras.execute_values(cur, insert, rows, template=template, page_size=len(rows))


def _move_rows(
    cur: Any,
    report: _Report,
    table: str,
    schema: str,
    rows: _RowConverter,
    lifetime: _dt.timedelta,
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> None:
    """Move the convertible rows with :func:`~.fallback.move_statement`, one statement a batch."""
    assert report.moved_into is not None
    statement = move_statement(report.renamed_to, report.moved_into)

    def flush(batch: _Batch) -> None:
        params = {
            "sids": [rows.key_prefix + row.session_id for row, _ in batch],
            # No payload to compare: the row moves as it is now (if flask-pg-session rewrote
            # it since, rare, the newer data is lost, never the session).
            "payloads": [None] * len(batch),
            "ids": [psycopg2.Binary(new.digest) for _, new in batch],
            "datas": [new.data_json for _, new in batch],
            "users": [new.user_id for _, new in batch],
            "idle": lifetime,
            "absolute": None,
        }
        cur.execute(statement, params)
        report.migrated += cur.rowcount

    _in_batches(cur, report, table, schema, rows, batch_size, progress, flush)
