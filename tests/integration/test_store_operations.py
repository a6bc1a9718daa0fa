"""The store's own operations on a real PostgreSQL, each called directly: the statements it builds
(with their settings guard, index names and size checks), its stats, a user's sessions and
revoking them, what ``execute`` hands on and what a write answers, the DDL, the wait for another
request's table setup, and the one retry of a statement that is safe to repeat when the
connection drops. Purging is tests/integration/test_purge.py; a store on the app's own
connections is tests/integration/test_app_connections.py.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import psycopg2
import pytest

from pgsession_wsgi.core import WriteResult
from pgsession_wsgi.errors import SessionTooLarge
from pgsession_wsgi.sql import Statements, guard

# -- the statements, run for real -------------------------------------------------------------


def test_the_guard_sets_each_setting_locally_and_prefixes_every_request_statement(
    pg_dsn: str, schema: str, make_store: Any
) -> None:
    """sql.x_guard__mutmut_1, _2 (the PgBouncer path: startup options dropped), run for real."""
    settings = {"statement_timeout": "1234", "synchronous_commit": "off"}
    prefix = guard(settings)
    assert prefix == "SET LOCAL statement_timeout = 1234; SET LOCAL synchronous_commit = off; "
    make_store().create_table()
    statements = Statements(schema, "pgsession", prefix)
    conn = psycopg2.connect(pg_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statements.stats, {"name": f'"{schema}"."pgsession"'})
            row = cur.fetchone()
            assert row is not None and row[:3] == (0, 0, 0)
            cur.execute("SELECT current_setting('statement_timeout'), current_setting('synchronous_commit')")
            assert cur.fetchone() == ("1234ms", "off")
    finally:
        conn.close()


def test_index_names_are_the_table_s_first_30_bytes_and_its_hash(
    pg_dsn: str, schema: str, make_store: Any
) -> None:
    """sql.xǁStatementsǁ__init____mutmut_17, _21, _22, _25, _26, _29, _36, _37, _46, _47: the 30-byte
    cut falls inside the "é", which is dropped."""
    table = "a" * 29 + "\u00e9b"
    make_store(table=table).create_table()
    base = "a" * 29 + "_" + hashlib.sha256(table.encode()).hexdigest()[:8]
    conn = psycopg2.connect(pg_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s"
                " AND indexname LIKE %s ORDER BY indexname",
                (schema, table, "%idx"),
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    assert [name for name, _ in rows] == [base + "_expires_at_idx", base + "_user_id_idx"]
    assert rows[0][1].endswith("USING btree (expires_at)")
    assert rows[1][1].endswith("USING btree (user_id) WHERE (user_id IS NOT NULL)")


def test_a_refused_insert_is_measured_and_a_write_reads_the_stored_permanent_flag(make_store: Any) -> None:
    """sql.xǁStatementsǁ__init____mutmut_83, _85 (the size of an insert over max_size) and _93
    (the ``_permanent`` flag a write returns), run for real."""
    store = make_store()
    store.create_table()
    hour = timedelta(hours=1)
    with pytest.raises(SessionTooLarge) as refused:
        store.insert(hashlib.sha256(b"big").digest(), '{"k": "v"}', None, hour, None, max_size=9)
    assert (refused.value.size, refused.value.limit) == (10, 9)
    for flag in (True, False):
        id_hash = hashlib.sha256(str(flag).encode()).digest()
        store.insert(id_hash, json.dumps({"_permanent": flag}), None, hour, None)
        result = store.write(
            id_hash,
            '{"a": 1}',
            [],
            replace=False,
            new_hash=None,
            idle=hour,
            absolute=None,
            touch_interval=hour,
        )
        assert result == WriteResult(updated=True, touched=False, permanent=flag)
