"""The rows of a flask-pg-session migration: each old row converted, and written a batch at a time.

Internal to :mod:`.migrate`, which imports these names back.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg2
import psycopg2.extras

from ..session import META_KEYS
from .convert import encode_row, user_column
from .fallback import _ISSUED_ID, move_statement, refusal_label, row_key, short_reason
from .rows import LegacyRow, read_legacy_rows

# The JSON characters held for one INSERT at most; not Final, so a test can lower it.
_MAX_BATCH_CHARS = 16 * 1024 * 1024

# A client-chosen id would keep serving the attacker's id (see UUID4_PATTERN).
_NOT_ISSUED = "the session id is not a uuid4, the only id flask-pg-session issues; not converted"


@dataclass(frozen=True)
class _Converted:
    """One old row's fate: its new key and JSON, or why it stays (``reason``), or that it is empty."""

    digest: bytes
    data_json: str | None = None
    user_id: str | None = None
    reason: str | None = None


class _Report(Protocol):
    """The fields of :class:`~.migrate.MigrationReport` used here (not imported: it imports us)."""

    migrated: int
    refused: list[tuple[str, str]]
    renamed_to: str
    skipped_empty: int
    moved_into: str | None


def _json_to_write(report: _Report, converted: _Converted) -> str | None:
    """A converted row's JSON to write; None for a refused or an empty one, counted in ``report``."""
    if converted.reason is not None:
        report.refused.append((refusal_label(converted.digest), short_reason(converted.reason)))
        return None
    if converted.data_json is None:
        report.skipped_empty += 1
    return converted.data_json


class _RowConverter:
    """Turns the old rows into new ones, by the rules the app's fallback applies too."""

    def __init__(self, key_prefix: str, max_size: int, user_key: str | None) -> None:
        self.key_prefix = key_prefix
        self.max_size = max_size
        self.user_key = user_key

    def convert(self, row: LegacyRow) -> _Converted:
        digest = row_key(row.session_id, self.key_prefix)
        if not _ISSUED_ID.fullmatch(row.session_id):
            return _Converted(digest, reason=_NOT_ISSUED)
        if row.data is None:
            return _Converted(digest, reason=row.error or "unreadable data")
        if all(key in META_KEYS for key in row.data):
            return _Converted(digest)  # empty: skipped
        data_json, reason = encode_row(row.data, self.max_size)
        if data_json is None:
            return _Converted(digest, reason=reason or "cannot be stored")
        user_id, reason = user_column(row.data, self.user_key, self.key_prefix)
        if reason is not None:
            return _Converted(digest, reason=reason)
        return _Converted(digest, data_json, user_id)


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
    pending: list[tuple[Any, ...]] = []

    def flush() -> None:
        if pending:
            _insert_batch(cur, insert, template, pending)
            report.migrated += len(pending)
            pending.clear()

    def take(row: LegacyRow) -> int:
        converted = rows.convert(row)
        data_json = _json_to_write(report, converted)
        if data_json is None:
            return 0
        digest = psycopg2.Binary(converted.digest)
        pending.append((digest, data_json, converted.user_id, row.created, row.expiry, lifetime))
        return len(data_json)

    legacy = read_legacy_rows(
        cur.connection, old_table, schema, key_prefix=rows.key_prefix, batch_size=batch_size
    )
    _in_batches(legacy, batch_size, take, flush, progress)


def _in_batches(
    legacy: Iterable[LegacyRow],
    batch_size: int,
    take: Callable[[LegacyRow], int],
    flush: Callable[[], None],
    progress: Callable[[int], None] | None,
) -> None:
    """Hand each row to ``take`` (which answers the JSON characters it queued), and ``flush``
    every ``batch_size`` rows, sooner once ``_MAX_BATCH_CHARS`` are queued, and at the end;
    ``progress`` hears the rows handled (converted, refused or skipped) after each flush."""
    handled = reported = queued = 0
    for row in legacy:
        queued += take(row)
        handled += 1
        if handled % batch_size == 0 or queued >= _MAX_BATCH_CHARS:
            flush()
            reported, queued = handled, 0
            if progress is not None:
                progress(handled)
    if handled > reported:
        flush()
        if progress is not None:
            progress(handled)


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
    batch: list[tuple[str, bytes, str, str | None]] = []

    def flush() -> None:
        if batch:
            sids, digests, datas, users = zip(*batch)
            params = {
                "sids": list(sids),
                # No payload to compare: the row moves as it is now (if flask-pg-session rewrote
                # it since, rare, the newer data is lost, never the session).
                "payloads": [None] * len(batch),
                "ids": [psycopg2.Binary(digest) for digest in digests],
                "datas": list(datas),
                "users": list(users),
                "idle": lifetime,
                "absolute": None,
            }
            cur.execute(statement, params)
            report.migrated += cur.rowcount
            batch.clear()

    def take(row: LegacyRow) -> int:
        converted = rows.convert(row)
        data_json = _json_to_write(report, converted)
        if data_json is None:
            return 0
        batch.append((rows.key_prefix + row.session_id, converted.digest, data_json, converted.user_id))
        return len(data_json)

    legacy = read_legacy_rows(
        cur.connection, table, schema, key_prefix=rows.key_prefix, batch_size=batch_size
    )
    _in_batches(legacy, batch_size, take, flush, progress)
