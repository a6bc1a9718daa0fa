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
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg2
import pytest
from db import sql
from helpers import add_rows, dropped_mid_statement, insert_session, wait_for

from pgsession_wsgi import SessionMiddleware
from pgsession_wsgi.cookies import hash_session_id, new_session_id
from pgsession_wsgi.core import Insert, LoadedRow, Write, WriteResult
from pgsession_wsgi.errors import SessionDataError, SessionTooLarge, StoreUnavailable
from pgsession_wsgi.sql import Statements, guard, lock_key

DAY = timedelta(days=1)


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


# -- stats, a user's sessions, revoking ---------------------------------------------------------


def test_stats_names_live_expired_users_and_bytes(make_store: Any) -> None:
    """store.xǁPostgresStoreǁstats__mutmut_11 to _14: the keys `pgsession-wsgi stats` prints."""
    store = make_store()
    store.create_table()
    add_rows(store, [("a", "1", "1 hour"), ("b", "1", "1 hour"), ("c", "2", "1 hour"), ("d", "3", "-1 hour")])
    stats = store.stats()
    assert sorted(stats) == ["expired", "live", "total_bytes", "users"]
    assert (stats["live"], stats["expired"], stats["users"]) == (3, 1, 2)
    assert stats["total_bytes"] > 0


def test_revoke_user_spares_the_session_named_by_keep(make_store: Any) -> None:
    """store.xǁPostgresStoreǁrevoke_user__mutmut_3, _6, _12, _17.

    ``keep`` is a session id, a Session (here one a request opened from its cookie), or anything
    else (spares nothing); an empty id spares nothing either.
    """
    store = make_store()
    store.create_table()

    def users_rows() -> int:
        return len(store.sessions_for_user("u"))

    add_rows(store, [("one", "u", "1 hour"), ("two", "u", "1 hour"), ("three", "u", "1 hour")])
    assert store.revoke_user("u", keep="two") == 2
    assert [s.id_hash for s in store.sessions_for_user("u")] == [hash_session_id("two").hex()]

    # A Session: the one a request opened from its cookie, as a view passes current_session.
    middleware = SessionMiddleware(lambda environ, start_response: [], store, secret_key="k" * 32)
    four = new_session_id()
    add_rows(store, [(four, "u", "1 hour"), ("five", "u", "1 hour")])
    kept = middleware.open_session({"HTTP_COOKIE": "session=" + middleware.signer.sign(four)})
    assert store.revoke_user("u", keep=kept) == 2  # two and five
    assert [s.id_hash for s in store.sessions_for_user("u")] == [hash_session_id(four).hex()]

    assert store.revoke_user("u", keep=object()) == 1  # no id: nothing spared
    add_rows(store, [("six", "u", "1 hour")])
    assert store.revoke_user("u", keep="") == 1
    add_rows(store, [("seven", "u", "1 hour")])
    assert store.revoke_user("u") == 1
    assert users_rows() == 0


# -- what execute hands on, what a write answers, a row that cannot be read --------------------


def test_an_unknown_operation_is_refused_by_name(make_store: Any) -> None:
    """store.xǁPostgresStoreǁexecute__mutmut_55."""
    with pytest.raises(TypeError) as error:
        make_store().execute("load it")
    assert str(error.value) == "not a session store operation: 'load it'"


def test_execute_hands_every_field_of_an_insert_and_a_write_to_the_store(make_store: Any) -> None:
    """store.xǁPostgresStoreǁexecute__mutmut_10, _12, _15 to _17, _28 to _30, _37 to _39, _45 to _47."""
    store = make_store()
    store.create_table()
    one, two = hash_session_id("one"), hash_session_id("two")
    end = datetime(2100, 1, 1, tzinfo=timezone.utc)

    def row(id_hash: bytes) -> tuple[Any, ...]:
        ((found,),) = [
            sql(
                store,
                "SELECT (user_id, idle_timeout, ends_at, CASE WHEN ends_at IS NULL"
                " THEN round(extract(epoch FROM expires_at - now()) / 3600)::text"
                " ELSE (expires_at = ends_at)::text END)::text"
                f" FROM {store.qualified_name} WHERE id = %s",
                (id_hash,),
            )
        ]
        return found[0]

    with pytest.raises(SessionTooLarge):
        store.execute(Insert(one, '{"a": 1}', "u", DAY, None, 5))
    store.execute(Insert(one, '{"a": 1}', "u", DAY, None, None, idle_timeout=timedelta(hours=2)))
    assert row(one) == "(u,02:00:00,,2)"  # expires in its own idle timeout
    store.execute(Insert(two, '{"a": 1}', None, DAY, None, None, ends_at=end))
    assert row(two) == '(,,"2100-01-01 00:00:00+00",true)'

    def write(**changes: Any) -> WriteResult:
        fields: dict[str, Any] = dict(
            id_hash=one,
            changed_json='{"b": 2}',
            removed=[],
            replace=False,
            new_hash=None,
            user_id="v",
            idle=DAY,
            absolute=None,
            touch_interval=timedelta(0),
            max_size=None,
        )
        fields.update(changes)
        return store.execute(Write(**fields))

    write(set_expiry=True, idle_timeout=timedelta(hours=3), absolute=timedelta(hours=1))
    assert row(one) == "(v,03:00:00,,1)"  # the absolute limit, one hour after creation, comes first
    write(set_expiry=True, ends_at=end)
    assert row(one) == '(v,,"2100-01-01 00:00:00+00",true)'


def test_a_write_answers_the_row_s_permanent_flag_and_its_own_lifetime(make_store: Any) -> None:
    """store.xǁPostgresStoreǁwrite__mutmut_20, _83, _87, _88, _92, _93."""
    store = make_store()
    store.create_table()
    one = hash_session_id("one")
    insert_session(store, "one", '{"_permanent": "yes"}')
    end = datetime(2100, 1, 1, tzinfo=timezone.utc)
    common: dict[str, Any] = dict(
        removed=[], replace=False, new_hash=None, idle=DAY, absolute=None, touch_interval=timedelta(0)
    )
    result = store.write(one, '{"a": 1}', **common)
    assert result == WriteResult(True, True, None)  # a stored flag that is no bool counts as none
    result = store.write(one, '{"_permanent": false}', user_id="v", set_expiry=True, ends_at=end, **common)
    assert result == WriteResult(True, True, False, None, end)
    result = store.write(one, "{}", set_expiry=True, idle_timeout=timedelta(hours=3), **common)
    assert result == WriteResult(True, True, False, timedelta(hours=3), None)
    assert sql(store, f"SELECT user_id FROM {store.qualified_name}", None) == [("v",)]


def test_a_row_holding_json_the_codec_never_writes_is_named_by_its_error(make_store: Any) -> None:
    """store.xǁPostgresStoreǁload__mutmut_14, _15."""
    store = make_store()
    store.create_table()
    sql(
        store,
        f"INSERT INTO {store.qualified_name} (id, data, expires_at)"
        " VALUES (%s, jsonb_build_object('n', repeat('9', 5000)::numeric), now() + interval '1 hour')",
        (hash_session_id("huge"),),
    )
    with pytest.raises(SessionDataError) as error:
        store.load(hash_session_id("huge"), DAY)
    assert "ValueError" in str(error.value)


# -- the table: its DDL, and waiting for another request's setup of it ---------------------------


def test_the_ddl_is_one_statement_a_line_ending_with_a_semicolon(make_store: Any) -> None:
    """store.xǁPostgresStoreǁddl__mutmut_1 to _7."""
    logged = make_store().ddl()
    unlogged = make_store(unlogged=True).ddl()
    for ddl in (logged, unlogged):
        assert ddl.endswith(";\n")
        assert ddl.startswith("CREATE SCHEMA IF NOT EXISTS ")
        assert "XX" not in ddl
        assert ";\nCREATE " in ddl
    assert "UNLOGGED" not in logged
    assert "CREATE UNLOGGED TABLE" in unlogged


def test_a_request_waiting_on_another_s_table_setup_gives_up_after_pool_timeout(
    make_store: Any, pg_dsn: str
) -> None:
    """store.xǁPostgresStoreǁ_ensure_ready__mutmut_5 to _8.

    The first request of a process sets the table up; the others wait for it at most
    pool_timeout, then say what to check. (The first request's setup is kept in progress by
    another process holding the table's advisory lock, as its own table creation would.)
    """
    store = make_store(pool_timeout=0.2, statement_timeout=60)
    first_request: list[Any] = []

    def first() -> None:
        try:
            first_request.append(store.stats()["live"])
        except Exception as exc:  # handed to the test's thread
            first_request.append(exc)

    setting_up = threading.Thread(target=first)
    other = psycopg2.connect(pg_dsn)
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(store.schema, store.table),))
        setting_up.start()
        blocked = "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
        wait_for(
            lambda: sql(pg_dsn, blocked, (other.get_backend_pid(),)) == [(1,)] or first_request,
            "the first request's table setup waits for the lock",
        )
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as error:
            store.stats()
        waited = time.monotonic() - started
    finally:
        other.rollback()
        other.close()
    assert str(error.value) == (
        "the session table setup did not finish within pool_timeout=0.2s; check that PostgreSQL is reachable"
    )
    assert waited >= 0.2  # it waited the whole pool_timeout: a lower bound no busy machine breaks
    setting_up.join(30)
    assert first_request == [0]  # the setup went on once the lock was free
    assert store.stats()["live"] == 0


# -- a connection dropped in the middle of a statement -------------------------------------------


def test_reads_and_idempotent_writes_retry_once_on_a_dropped_connection(make_store: Any) -> None:
    """store.xǁPostgresStoreǁstats__mutmut_18, _21, sessions_for_user__mutmut_9, _12,
    revoke_user__mutmut_29, _32, purge_expired__mutmut_41, _44.

    The server ended the connection in the middle of the statement (a restart, a failover): each
    of these calls is safe to repeat, so it succeeds on a fresh connection instead of failing.
    """
    store = make_store(statement_timeout=None)
    store.create_table()
    add_rows(store, [("a", "7", "1 hour"), ("b", "7", "1 hour"), ("x", None, "-1 hour")])
    assert dropped_mid_statement(store, store.stats)["live"] == 2
    assert len(dropped_mid_statement(store, lambda: store.sessions_for_user(7))) == 2
    assert dropped_mid_statement(store, store.purge_expired) == 1
    assert dropped_mid_statement(store, lambda: store.revoke_user(7)) == 2


def test_loads_touches_and_deletes_retry_but_inserts_and_writes_do_not(make_store: Any) -> None:
    """store.xǁPostgresStoreǁload__mutmut_20, _23, touch__mutmut_15, _17, _20, delete__mutmut_13,
    _16, insert__mutmut_45, write__mutmut_100.

    A load, a touch and a delete can be repeated; an insert or a write cannot be known not to
    have happened, so a dropped connection is a StoreUnavailable that says it is retried on the
    next request.
    """
    store = make_store(statement_timeout=None)
    insert_session(store, "one")
    insert_session(store, "two")
    assert isinstance(
        dropped_mid_statement(store, lambda: store.load(hash_session_id("one"), DAY)), LoadedRow
    )
    assert dropped_mid_statement(store, lambda: store.touch(hash_session_id("one"), DAY, None)) is True
    assert store.touch(hash_session_id("nobody"), DAY, None) is False
    assert dropped_mid_statement(store, lambda: store.delete(hash_session_id("two"))) is True
    error = dropped_mid_statement(store, lambda: insert_session(store, "three"))
    assert isinstance(error, StoreUnavailable)
    assert str(error).startswith("lost the connection to PostgreSQL (")
    assert str(error).endswith("); it is retried on the next request")
    error = dropped_mid_statement(
        store,
        lambda: store.write(
            hash_session_id("one"),
            '{"b": 2}',
            [],
            replace=False,
            new_hash=None,
            idle=DAY,
            absolute=None,
            touch_interval=timedelta(0),
        ),
    )
    assert isinstance(error, StoreUnavailable)
