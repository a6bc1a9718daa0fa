"""Server-side prepared statements on the store's own connections, on a real PostgreSQL.

The first use of a statement on a connection sends ``PREPARE ...; EXECUTE ...`` in one message
(still one round trip), later uses ``EXECUTE`` alone; they stay off behind PgBouncer and on an
app's connections, and a prepared statement that goes missing, or one left behind by a failed
statement, never fails a request. What is prepared is read on the wire, by a proxy counting what
the store sends (tests/wire.py).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg2
import pytest
from db import sql
from helpers import insert_session
from session_app import session_app
from webtest import TestApp
from wire import RoundTripCounter, statement_kind

from pgsession_wsgi import PostgresStore, SessionMiddleware
from pgsession_wsgi.cookies import hash_session_id
from pgsession_wsgi.errors import SessionError, SessionTooLarge, StoreUnavailable

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
SECRET = "prepared"


def add_row(store: PostgresStore, data: dict[str, Any] | None = None) -> bytes:
    id_hash = os.urandom(32)
    store.insert(id_hash, json.dumps(data or {"n": 1}), user_id=None, idle=HOUR, absolute=None)
    return id_hash


def prepared_names(statements: list[str]) -> list[str]:
    """The names these statements (as the wire counter saw them) prepared, in order."""
    return [s.split(None, 2)[1] for s in statements if s.startswith("PREPARE ")]


def test_first_use_prepares_in_the_same_message_then_executes(
    make_store: Callable[..., PostgresStore], wire_counter: RoundTripCounter
) -> None:
    store = make_store(dsn=wire_counter.dsn, max_connections=1)
    store.create_table()
    wire_counter.reset()
    id_hash = add_row(store)
    sent = wire_counter.statements
    wire_counter.reset()
    assert store.load(id_hash, MINUTE) is not None
    [first] = wire_counter.statements
    assert first.startswith("PREPARE pgsession_load_") and "; EXECUTE pgsession_load_" in first
    sent += wire_counter.statements
    wire_counter.reset()
    row = store.load(id_hash, MINUTE)
    assert row is not None and row.data == {"n": 1}
    [second] = wire_counter.statements
    assert second.startswith("EXECUTE pgsession_load_") and statement_kind(second) == "SELECT"
    sent += wire_counter.statements
    assert [name.split("_")[1] for name in prepared_names(sent)] == ["insert", "load"]  # once each


def test_a_request_costs_the_same_round_trips_and_sends_less(
    make_store: Callable[..., PostgresStore], wire_counter: RoundTripCounter
) -> None:
    plain_store = make_store(dsn=wire_counter.dsn, prepared_statements=False, table="plain")
    store = make_store(dsn=wire_counter.dsn)
    sizes: dict[bool, int] = {}
    for prepared, each in ((False, plain_store), (True, store)):
        client = TestApp(SessionMiddleware(session_app, each, secret_key=SECRET))
        client.get("/set?a=1")
        client.get("/inc")  # prepares load and write on this connection
        wire_counter.reset()
        client.get("/inc")
        assert wire_counter.count == 2, wire_counter.statements  # load, write: as without
        assert [statement_kind(s) for s in wire_counter.statements] == ["SELECT", "UPDATE"]
        assert all(s.startswith("EXECUTE") == prepared for s in wire_counter.statements)
        sizes[prepared] = len(wire_counter.statements[1])
        assert client.get("/read").json == {"a": "1", "n": 2}
    assert sizes[True] * 3 < sizes[False]  # the values only, not 1.2 KB of SQL


def test_off_sends_the_statements_as_text(
    make_store: Callable[..., PostgresStore], wire_counter: RoundTripCounter
) -> None:
    store = make_store(dsn=wire_counter.dsn, prepared_statements=False)
    store.create_table()
    id_hash = add_row(store)
    wire_counter.reset()
    store.load(id_hash, MINUTE)
    store.load(id_hash, MINUTE)
    assert [s.split(None, 1)[0] for s in wire_counter.statements] == ["SELECT", "SELECT"]


def test_behind_pgbouncer_nothing_is_prepared(
    make_pgbouncer: Callable[[str], Any], make_store: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    bouncer = make_pgbouncer(pg_dsn)
    with RoundTripCounter(bouncer.dsn) as counter:
        store = make_store(dsn=counter.dsn)
        store.create_table()
        client = TestApp(SessionMiddleware(session_app, store, secret_key=SECRET))
        client.get("/set?a=1")
        client.get("/inc")
        client.get("/inc")
        assert client.get("/read").json == {"a": "1", "n": 2}
        assert not any("PREPARE" in s or "EXECUTE" in s for s in counter.statements)


def test_pgbouncer_the_startup_check_misses_still_serves_every_request(
    make_pgbouncer: Callable[..., Any], make_store: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    """With statement_timeout=None and synchronous_commit=True the store sends no setting, so the
    startup check cannot see PgBouncer: prepared statements start on, and meet server connections
    shared with other clients. Each request is still answered, and right. One server connection
    behind PgBouncer makes every store meet the others' prepared statements, whatever the timing."""
    bouncer = make_pgbouncer(pg_dsn, pool_size=1)
    counters = [RoundTripCounter(bouncer.dsn) for _ in range(3)]  # one per store, closed below
    stores = [make_store(dsn=c.dsn, statement_timeout=None, max_connections=2) for c in counters]
    stores[0].create_table()
    ids = [add_row(stores[0], {"k": k}) for k in range(6)]
    errors: list[BaseException] = []

    def work(store: PostgresStore, offset: int) -> None:
        try:
            for i in range(60):
                k = (i + offset) % len(ids)
                row = store.load(ids[k], MINUTE)
                assert row is not None and row.data["k"] == k
                result = store.write(
                    ids[k],
                    json.dumps({f"w{offset}": i}),
                    [],
                    replace=False,
                    new_hash=None,
                    idle=HOUR,
                    absolute=None,
                    touch_interval=MINUTE,
                )
                assert result.updated
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, n)) for n, s in enumerate(stores)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        # Shared server connections were met (a name there already, or gone): the fallback ran,
        # and a store that met one sends its statements as text from then on.
        sent_as_text = []
        for store, counter in zip(stores, counters):
            counter.reset()
            assert store.load(ids[0], MINUTE) is not None
            sent_as_text.append(counter.statements[0].startswith("SELECT"))
        assert any(sent_as_text), sent_as_text
    finally:
        for counter in counters:
            counter.close()


def test_a_prepared_statement_gone_missing_falls_back_to_text(
    make_store: Callable[..., PostgresStore], wire_counter: RoundTripCounter
) -> None:
    store = make_store(dsn=wire_counter.dsn, max_connections=1)
    store.create_table()
    id_hash = add_row(store)
    store.load(id_hash, MINUTE)
    # Seam: only SQL run on the store's own connection can make its server session forget them.
    with store._pool.connection() as conn, conn.cursor() as cur:  # type: ignore[union-attr]
        cur.execute("DEALLOCATE ALL")  # as a pooler's reset would
    wire_counter.reset()
    row = store.load(id_hash, MINUTE)
    assert row is not None and row.data == {"n": 1}
    assert [statement_kind(s) for s in wire_counter.statements] == ["SELECT", "SELECT"]
    assert wire_counter.statements[0].startswith("EXECUTE")  # missing: nothing ran ...
    assert wire_counter.statements[1].startswith("SELECT")  # ... then as text, from now on
    wire_counter.reset()
    store.load(id_hash, MINUTE)
    assert wire_counter.statements[0].startswith("SELECT")


def test_a_prepare_left_by_a_failed_statement_is_used(
    make_store: Callable[..., PostgresStore], wire_counter: RoundTripCounter, pg_dsn: str
) -> None:
    """The PREPARE stays when the EXECUTE sent with it fails (here: a statement timeout while a
    row lock is held); the next write on that connection uses it instead of failing."""
    store = make_store(dsn=wire_counter.dsn, max_connections=1, statement_timeout=0.3)
    store.create_table()
    id_hash = add_row(store)
    locker = psycopg2.connect(pg_dsn)
    try:
        with locker.cursor() as cur:
            cur.execute(f"SELECT 1 FROM {store.qualified_name} WHERE id = %s FOR UPDATE", (id_hash,))
            with pytest.raises(StoreUnavailable):
                store.write(
                    id_hash,
                    '{"b": 2}',
                    [],
                    replace=False,
                    new_hash=None,
                    idle=HOUR,
                    absolute=None,
                    touch_interval=MINUTE,
                )
    finally:
        locker.rollback()
        locker.close()
    wire_counter.reset()
    result = store.write(
        id_hash, '{"b": 2}', [], replace=False, new_hash=None, idle=HOUR, absolute=None, touch_interval=MINUTE
    )
    assert result.updated
    assert [s.split(None, 1)[0] for s in wire_counter.statements] == ["PREPARE", "EXECUTE"]
    wire_counter.reset()
    row = store.load(id_hash, MINUTE)
    assert row is not None and row.data == {"n": 1, "b": 2}
    [load] = wire_counter.statements
    assert load.startswith("PREPARE pgsession_load_")  # prepared statements are still on


def test_an_apps_engine_connections_get_no_prepared_statements(
    make_store: Callable[..., PostgresStore], pg_dsn: str, schema: str
) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(pg_dsn.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        store = PostgresStore.from_engine(engine, schema=schema, purge_interval=None)
        try:
            id_hash = add_row(store)
            assert store.load(id_hash, MINUTE) is not None
            with engine.connect() as conn:
                names = conn.exec_driver_sql("SELECT name FROM pg_prepared_statements").all()
            assert names == []
        finally:
            store.close()
    finally:
        engine.dispose()


def test_the_same_table_in_another_schema_gets_its_own_names(
    make_store: Callable[..., PostgresStore], pg_dsn: str, schema: str, wire_counter: RoundTripCounter
) -> None:
    other = f"{schema}_b"
    sql(pg_dsn, f'CREATE SCHEMA "{other}"')
    try:
        first = make_store(dsn=wire_counter.dsn, max_connections=1)
        second = make_store(dsn=wire_counter.dsn, schema=other, max_connections=1)
        names: list[list[str]] = []
        for store, where in ((first, "first"), (second, "second")):
            wire_counter.reset()
            row = store.load(add_row(store, {"in": where}), MINUTE)
            assert row is not None and row.data == {"in": where}
            names.append(prepared_names(wire_counter.statements))
        assert [[name.split("_")[1] for name in each] for each in names] == [["insert", "load"]] * 2
        assert set(names[0]).isdisjoint(names[1])
        a, b = add_row(first, {"in": "first"}), add_row(second, {"in": "second"})
        assert first.load(b, MINUTE) is None and second.load(a, MINUTE) is None
    finally:
        first.close()
        second.close()
        sql(pg_dsn, f'DROP SCHEMA "{other}" CASCADE')


def test_prepared_text_numbers_each_value_once_and_keeps_quoted_percent_signs() -> None:
    from pgsession_wsgi.sql import Statements, prepared

    statements = Statements("s%(id)s", "t%%x", "")
    prepare, execute = prepared("write", statements.write)
    assert execute.startswith("EXECUTE pgsession_write_")
    arguments = execute.split("(", 1)[1]
    assert arguments.count("%(id)s") == 1 and arguments.count("%(changed)s") == 1
    assert '"s%%(id)s"."t%%%%x"' in prepare  # still a template: the driver halves them
    assert "%(" not in prepare.replace("%%(", "")
    assert prepared("load", statements.load)[0] != prepared("load", Statements("s", "t", "").load)[0]


def test_a_data_only_write_uses_the_smaller_merge_statement(
    make_store: Callable[..., PostgresStore], wire_counter: RoundTripCounter, pg_dsn: str
) -> None:
    store = make_store(dsn=wire_counter.dsn)
    client = TestApp(SessionMiddleware(session_app, store, secret_key=SECRET, user_key="user"))
    client.get("/set?user=alice")
    client.get("/inc")
    wire_counter.reset()
    client.get("/inc")  # read, then a data-only write
    assert wire_counter.statements[1].startswith("EXECUTE pgsession_merge_")
    # A due touch still moves the expiry through it.
    sql(pg_dsn, f"UPDATE {store.qualified_name} SET accessed_at = accessed_at - interval '2 hours'")
    before = sql(pg_dsn, f"SELECT expires_at FROM {store.qualified_name}")
    client.get("/inc")
    assert sql(pg_dsn, f"SELECT expires_at FROM {store.qualified_name}") > before
    wire_counter.reset()
    client.get("/regen")  # a new id: the full statement
    assert "pgsession_write_" in wire_counter.statements[0]
    wire_counter.reset()
    client.get("/set?user=bob")  # a new user (and so a new id): the full statement
    assert "pgsession_write_" in wire_counter.statements[0]
    assert client.get("/read").json == {"user": "bob", "n": 3}


def test_prepared_text_takes_fixed_literals_for_some_values_only() -> None:
    from pgsession_wsgi.sql import Statements, prepared, with_literals

    _, execute = prepared("merge", Statements("s", "t", "").merge)
    bound = with_literals(execute, {"touch": "'60 seconds'::interval", "max_size": "NULL", "unused": "1"})
    assert "%(touch)s" not in bound and "'60 seconds'::interval" in bound
    assert "%(max_size)s" not in bound and "NULL" in bound
    assert "%(id)s" in bound and "%(changed)s" in bound  # the request's own values stay bound
    # A literal's percent sign stays literal text once the driver reads the template.
    assert "'5%%'" in with_literals("SELECT %(a)s, %(b)s, %%", {"a": "'5%'"})
    assert with_literals("SELECT %(a)s, %%(b)s", {"b": "2"}) == "SELECT %(a)s, %%(b)s"


def test_apps_with_other_settings_on_one_store_each_keep_their_own(
    make_store: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    # Each app's lifetimes and size limit are written into the statement text once; two apps
    # sharing a store, taking turns, must never get each other's.
    store = make_store()
    strict = TestApp(SessionMiddleware(session_app, store, secret_key=SECRET, max_size=60))
    roomy = TestApp(SessionMiddleware(session_app, store, secret_key=SECRET, max_size=4096, touch_interval=1))
    for client in (strict, roomy):
        client.get("/set?a=1")
        client.get("/inc")
    big = "x" * 100
    for _ in range(2):
        assert strict.get(f"/set?b={big}", expect_errors=True).status_int == 500
        assert roomy.get(f"/set?b={big}").status_int == 200
    assert strict.get("/read").json == {"a": "1", "n": 1}
    assert roomy.get("/read").json == {"a": "1", "n": 1, "b": big}
    # roomy touches after a second, strict after its default interval (a minute).
    sql(pg_dsn, f"UPDATE {store.qualified_name} SET accessed_at = accessed_at - interval '5 seconds'")
    expiries = f"SELECT (data ? 'b')::text, expires_at FROM {store.qualified_name}"
    before = dict(sql(pg_dsn, expiries))
    strict.get("/inc")
    roomy.get("/inc")
    after = dict(sql(pg_dsn, expiries))
    assert after["false"] == before["false"]  # strict's write did not touch
    assert after["true"] > before["true"]  # roomy's did


def test_many_distinct_settings_are_all_honoured(make_store: Callable[..., PostgresStore]) -> None:
    from pgsession_wsgi.store import MAX_BOUND_STATEMENTS

    store = make_store()
    id_hash = add_row(store, {"n": 1})
    # More distinct limits than the store keeps texts for: each is still the one applied.
    for limit in range(20, 20 + MAX_BOUND_STATEMENTS + 10):
        fits = len('{"n": 1, "v": ""}') + (limit - 20) <= limit
        result = None
        try:
            result = store.write(
                id_hash,
                json.dumps({"v": "y" * (limit - 20)}),
                [],
                replace=False,
                new_hash=None,
                idle=HOUR,
                absolute=None,
                touch_interval=MINUTE,
                max_size=limit,
            )
        except SessionTooLarge:
            assert not fits, limit
        else:
            assert fits and result.updated, limit


@pytest.mark.parametrize("prepared", [True, False])
def test_settings_of_the_wrong_kind_are_refused_not_written_into_sql(
    prepared: bool, make_store: Callable[..., PostgresStore]
) -> None:
    store = make_store(prepared_statements=prepared)
    id_hash = add_row(store, {"n": 1})

    def write(**settings: Any) -> Any:
        options: dict[str, Any] = {"idle": HOUR, "absolute": None, "touch_interval": MINUTE, "max_size": 4096}
        options.update(settings)
        return store.write(id_hash, '{"n": 2}', [], replace=False, new_hash=None, **options)

    # A number where psycopg2 would send a number works either way, as it always did.
    assert write(max_size=4096.0).updated
    if prepared:
        with pytest.raises(TypeError, match="max_size must be a timedelta, a number or None, not str"):
            write(max_size="4096'); DROP TABLE x; --")
        with pytest.raises(TypeError, match="touch_interval must be .* not list"):
            store.load(id_hash, ["60 seconds"])  # type: ignore[arg-type]
    row = store.load(id_hash, MINUTE)
    assert row is not None and row.data == {"n": 2}


# -- what the server is sent when a prepared statement goes missing or fails --------------------


def first_words(statements: list[str]) -> list[str]:
    """Each statement's first word, as the wire counter saw it: PREPARE, EXECUTE, or plain SQL."""
    return [s.split(None, 1)[0] for s in statements]


def test_request_statements_are_prepared_and_recover_when_the_server_loses_them(
    make_store: Callable[..., PostgresStore], wire_counter: RoundTripCounter, caplog: pytest.LogCaptureFixture
) -> None:
    """store.xǁPostgresStoreǁ_send__mutmut_1, _2, _40 to _52.

    Prepared on the store's own connection; when they are gone (DEALLOCATE, as PgBouncer's
    server switch does), the store says so once and sends plain statements from then on.
    """
    store = make_store(dsn=wire_counter.dsn, max_connections=1)
    insert_session(store, "one")
    assert store.load(hash_session_id("one"), DAY) is not None
    assert [name.split("_")[1] for name in prepared_names(wire_counter.statements)] == ["insert", "load"]
    # Seam: only SQL run on the store's own connection can make its server session forget them.
    store._run(lambda cur: cur.execute("DEALLOCATE ALL"), retry=True)
    wire_counter.reset()
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        row = store.load(hash_session_id("one"), DAY)
        insert_session(store, "two")
        other = store.load(hash_session_id("two"), DAY)
    assert row is not None and other is not None
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "prepared statements dropped by the server side (PgBouncer?); sending plain statements"
    ]
    # The load the server no longer knew, sent again as text; nothing prepared from then on.
    assert first_words(wire_counter.statements) == ["EXECUTE", "SELECT", "INSERT", "SELECT"]


def test_without_prepared_statements_the_plain_text_is_sent(
    make_store: Callable[..., PostgresStore], wire_counter: RoundTripCounter
) -> None:
    """store.xǁPostgresStoreǁ_send__mutmut_2 to _10."""
    store = make_store(dsn=wire_counter.dsn, prepared_statements=False)
    insert_session(store, "one")
    row = store.load(hash_session_id("one"), DAY)
    assert row is not None
    assert first_words(wire_counter.statements)[-2:] == ["INSERT", "SELECT"]
    assert not any("PREPARE" in s or "EXECUTE" in s for s in wire_counter.statements)


def test_a_prepare_whose_execute_failed_is_not_prepared_twice(
    make_store: Callable[..., PostgresStore], wire_counter: RoundTripCounter, caplog: pytest.LogCaptureFixture
) -> None:
    """store.xǁPostgresStoreǁ_send__mutmut_23, _32 to _34, _36 to _39.

    ``PREPARE ...; EXECUTE ...`` where the EXECUTE fails (bad JSON) leaves the statement
    prepared: the next insert uses it, without turning prepared statements off.
    """
    store = make_store(dsn=wire_counter.dsn, max_connections=1)
    store.stats()
    wire_counter.reset()
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        with pytest.raises(SessionError):
            insert_session(store, "bad", "{not json")
        insert_session(store, "good")
        insert_session(store, "better")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []
    assert store.load(hash_session_id("good"), DAY) is not None
    assert store.load(hash_session_id("better"), DAY) is not None
    # The insert's PREPARE went once more, to learn from the server that the failed EXECUTE left it
    # there (a duplicate), then EXECUTE alone from then on; the load is prepared after it: still on.
    sent = wire_counter.statements
    assert [name.split("_")[1] for name in prepared_names(sent)] == ["insert", "insert", "load"]
    assert first_words(sent) == ["PREPARE", "PREPARE", "EXECUTE", "EXECUTE", "PREPARE", "EXECUTE"]


def test_a_prepare_that_failed_is_sent_again(
    make_store: Callable[..., PostgresStore],
    wire_counter: RoundTripCounter,
    pg_dsn: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """store.xǁPostgresStoreǁ_send__mutmut_24: the table was missing, so the PREPARE failed too."""
    store = make_store(dsn=wire_counter.dsn, max_connections=1)
    store.stats()
    schema_name, name = store.qualified_name.split(".")
    sql(pg_dsn, f"ALTER TABLE {store.qualified_name} RENAME TO gone")
    wire_counter.reset()
    with pytest.raises(SessionError):
        store.load(hash_session_id("one"), DAY)
    sql(pg_dsn, f"ALTER TABLE {schema_name}.gone RENAME TO {name}")
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        assert store.load(hash_session_id("one"), DAY) is None
        assert store.load(hash_session_id("one"), DAY) is None
    assert caplog.records == []
    # Sent again, and prepared this time: the next load executes it.
    assert [name.split("_")[1] for name in prepared_names(wire_counter.statements)] == ["load", "load"]
    assert first_words(wire_counter.statements) == ["PREPARE", "PREPARE", "EXECUTE"]
