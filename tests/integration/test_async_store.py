"""AsyncPostgresStore (psycopg 3) against a real PostgreSQL: the same answers as the sync store,
the same statements on the wire, and the same failures (503s, not hangs) when the database is down,
busy or slow, directly and through PgBouncer."""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, Union

import psycopg2
import psycopg2.extensions
import pytest
from db import sql
from wire import CuttingProxy, PgBouncer, RoundTripCounter, statement_kind

from pgsession_wsgi._drivers.async_purge import TASK_NAME
from pgsession_wsgi._store.base import StoreMethods
from pgsession_wsgi.async_store import AsyncPostgresStore
from pgsession_wsgi.cookies import hash_session_id, new_session_id
from pgsession_wsgi.core import (
    KEEP_USER,
    Delete,
    Insert,
    Load,
    LoadedRow,
    Operation,
    Touch,
    Write,
    WriteResult,
)
from pgsession_wsgi.embedded import EmbeddedPostgres
from pgsession_wsgi.errors import (
    ConfigurationError,
    LegacyTableError,
    SessionDataError,
    SessionError,
    SessionTooLarge,
    StoreUnavailable,
)
from pgsession_wsgi.store import PostgresStore

pytestmark = pytest.mark.anyio

H, M = timedelta(hours=1), timedelta(minutes=1)
MakeAsync = Callable[..., AsyncPostgresStore]
MakeSync = Callable[..., PostgresStore]


@pytest.fixture
async def make_async(pg_dsn: str, schema: str) -> AsyncIterator[MakeAsync]:
    """``make_async(**kwargs)``: an AsyncPostgresStore in this test's schema, no purge task.

    Any keyword overrides the defaults; every store made is closed after the test.
    """
    stores: list[AsyncPostgresStore] = []

    def make(**kwargs: Any) -> AsyncPostgresStore:
        options: dict[str, Any] = {"dsn": pg_dsn, "schema": schema, "purge_interval": None}
        options.update(kwargs)
        store = AsyncPostgresStore(**options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


def new_hash() -> bytes:
    return hash_session_id(new_session_id())


async def eventually(condition: Callable[[], Any], what: str, limit: float = 30.0) -> None:
    """Poll until ``condition()`` is true, yielding to the loop; ``limit`` only stops a hang."""
    deadline = asyncio.get_running_loop().time() + limit
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


def outcome(call: Callable[[], Any]) -> Any:
    """A sync call's answer, or the SessionTooLarge it raised as comparable data."""
    try:
        return call()
    except SessionTooLarge as exc:
        return ("SessionTooLarge", exc.size, exc.limit)


async def async_outcome(call: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await call()
    except SessionTooLarge as exc:
        return ("SessionTooLarge", exc.size, exc.limit)


def row_lock(dsn: str, table: str, id_hash: bytes) -> Any:
    """Another client holding ``id_hash``'s row lock (until its ``rollback()``)."""
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE", (id_hash,))
    return conn


def waiting_on_a_lock(dsn: str, schema: str) -> bool:
    rows = sql(
        dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
        (f'%"{schema}"%',),
    )
    return bool(rows[0][0])


# -- the same answers as the sync store ----------------------------------------------------------

Step = Union[Operation, str]
AGE = "UPDATE {table} SET accessed_at = accessed_at - interval '2 minutes'"  # a touch is now due
FIRST = {
    "n": 1,
    "name": 'é ☃ 🎉 "q" \\ %s %(x)s',
    "nested": {"l": [1, 2.5, None, True, 2**62]},
    "_permanent": True,
}


def script(a: bytes, b: bytes, c: bytes) -> list[Step]:
    """Every operation and answer the core can meet, on the ids ``a``, ``b``, ``c``."""
    return [
        Load(a, M),
        Insert(a, json.dumps(FIRST), "alice", H, None, 1000),
        Load(a, M),
        Write(a, '{"m": 2}', ["n"], False, None, KEEP_USER, H, None, M, 1000),
        AGE,
        Load(a, M),
        Write(a, '{"t": 1}', [], False, None, KEEP_USER, H, None, M, None),
        AGE,
        Touch(a, H, timedelta(hours=2)),
        Load(a, M),
        Write(a, '{"x": 1}', [], False, b, "bob", H, timedelta(hours=2), M, None),  # regenerate, log in
        Load(a, M),
        Load(b, M),
        Write(b, '{"_permanent": false, "k": "v"}', [], True, None, None, H, None, M, 1000),  # clear
        Load(b, M),
        Write(a, '{"y": 1}', [], False, None, KEEP_USER, H, None, M, 1000),  # a is gone
        Insert(c, json.dumps({"big": "x" * 100}), None, H, None, 50),
        Write(b, json.dumps({"big": "x" * 2000}), [], False, None, KEEP_USER, H, None, M, 1000),
        Load(b, M),
        Touch(a, H, None),
        Delete(b),
        Delete(b),
        Load(c, M),
    ]


def expected_answers() -> list[Any]:
    second = {k: v for k, v in FIRST.items() if k != "n"} | {"m": 2}
    cleared = {"_permanent": False, "k": "v"}
    merged_size = len(json.dumps({**cleared, "big": "x" * 2000}))  # jsonb prints as json.dumps does
    return [
        None,
        None,
        LoadedRow(FIRST, False),
        WriteResult(True, False, True),
        LoadedRow(second, True),
        WriteResult(True, True, True),
        True,
        LoadedRow(second | {"t": 1}, False),
        WriteResult(True, False, True),
        None,
        LoadedRow(second | {"t": 1, "x": 1}, False),
        WriteResult(True, False, False),
        LoadedRow(cleared, False),
        WriteResult(False, False, None),
        ("SessionTooLarge", len(json.dumps({"big": "x" * 100})), 50),
        ("SessionTooLarge", merged_size, 1000),
        LoadedRow(cleared, False),
        False,
        True,
        False,
        None,
    ]


async def test_every_operation_answers_as_the_sync_store(
    make_async: MakeAsync, make_store: MakeSync, pg_dsn: str
) -> None:
    """The same script on two sets of ids in one table, one per store, step by step."""
    astore, sstore = make_async(), make_store()
    await astore.open()
    async_ids, sync_ids = [new_hash() for _ in "abc"], [new_hash() for _ in "abc"]
    async_answers, sync_answers, users = [], [], []
    for async_step, sync_step in zip(script(*async_ids), script(*sync_ids)):
        if isinstance(async_step, str):
            sql(pg_dsn, async_step.format(table=astore.qualified_name))
            continue
        async_answers.append(await async_outcome(lambda step=async_step: astore.execute(step)))
        sync_answers.append(outcome(lambda step=sync_step: sstore.execute(step)))
        # The user column of each store's row b, after each step.
        users.append(
            [
                sql(pg_dsn, f"SELECT user_id FROM {astore.qualified_name} WHERE id = %s", (ids[1],))
                for ids in (async_ids, sync_ids)
            ]
        )
    assert async_answers == sync_answers
    assert async_answers == expected_answers()
    assert [async_users == sync_users for async_users, sync_users in users] == [True] * len(users)
    assert users[8][0] == [("bob",)]  # set by the write that made b
    assert users[11][0] == [(None,)]  # cleared by the write that replaced its data


def test_every_method_of_the_sync_store_is_awaited_with_its_name_signature_and_docs() -> None:
    """What help() and the API docs show of the async store: each method the two stores share
    (every one, so a method added to both cannot be forgotten here) as a coroutine function."""
    shared = [  # (mutmut adds copies of the methods under names that are not ASCII)
        name
        for name, _ in inspect.getmembers(StoreMethods, inspect.isfunction)
        if name[0] != "_" and name.isascii()
    ]
    assert {"load", "touch", "purge_expired", "delete_all", "stats"} <= set(shared)
    for name in shared:
        sync, awaited = getattr(PostgresStore, name), getattr(AsyncPostgresStore, name)
        assert inspect.iscoroutinefunction(awaited), name
        assert awaited.__name__ == name
        assert awaited.__doc__ == sync.__doc__ and awaited.__doc__, name
        assert inspect.signature(awaited) == inspect.signature(sync), name


async def test_each_store_reads_what_the_other_wrote(make_async: MakeAsync, make_store: MakeSync) -> None:
    astore, sstore = make_async(), make_store()
    values = {
        "text": 'é ☃ 🎉 \x01 "quoted" back\\slash %s %(x)s \' ;',
        # Plain floats as the codec writes them (it tags 1.5e-07, which jsonb prints as 0.00000015).
        "numbers": [0, -1, 2**62, 0.1, 0.0015, -2.5],
        "flags": [True, False, None],
        "empty": [{}, [], ""],
        "deep": {"a": {"b": {"c": [1, {"d": "e"}]}}},
    }
    by_sync, by_async = new_hash(), new_hash()
    sstore.execute(Insert(by_sync, json.dumps(values), "42", H, None, None))
    await astore.execute(Insert(by_async, json.dumps(values), "42", H, None, None))
    for id_hash in (by_sync, by_async):
        loaded = await astore.execute(Load(id_hash, M))
        assert loaded == sstore.execute(Load(id_hash, M)) == LoadedRow(values, False)
        assert type(loaded.data) is dict and type(loaded.data["deep"]) is dict
    change = Write(by_sync, '{"more": [1]}', ["empty"], False, None, KEEP_USER, H, None, M, None)
    assert await astore.execute(change) == WriteResult(True, False, None)
    assert sstore.execute(Load(by_sync, M)).data == {k: v for k, v in values.items() if k != "empty"} | {
        "more": [1]
    }


async def test_maintenance_answers_match_the_sync_store(
    make_async: MakeAsync, make_store: MakeSync, pg_dsn: str
) -> None:
    astore, sstore = make_async(), make_store()
    await astore.open()
    mine = [new_session_id() for _ in range(3)]
    for session_id in mine:
        await astore.execute(Insert(hash_session_id(session_id), "{}", "carol", H, None, None))
    await astore.execute(Insert(new_hash(), "{}", "dave", H, None, None))
    sql(
        pg_dsn,
        f"UPDATE {astore.qualified_name} SET expires_at = now() - interval '1 second' WHERE user_id = 'dave'",
    )

    found = await astore.sessions_for_user("carol")
    assert found == sstore.sessions_for_user("carol")
    assert sorted(info.id_hash for info in found) == sorted(hash_session_id(s).hex() for s in mine)
    assert await astore.stats() == sstore.stats()
    assert {k: v for k, v in (await astore.stats()).items() if k != "total_bytes"} == {
        "live": 3,
        "expired": 1,
        "users": 1,
    }
    assert await astore.revoke_user("carol", keep=mine[0]) == 2
    assert [info.id_hash for info in await astore.sessions_for_user("carol")] == [
        hash_session_id(mine[0]).hex()
    ]
    assert await astore.purge_expired(batch_size=1) == 1 == 1 + sstore.purge_expired()


# -- the request path's rules ----------------------------------------------------------------------


async def test_concurrent_writes_to_one_session_merge_per_key(make_async: MakeAsync) -> None:
    store = make_async(max_connections=4)
    id_hash = new_hash()
    await store.execute(Insert(id_hash, '{"keep": 1, "drop": 1}', None, H, None, None))

    def write(changed: dict[str, Any], removed: list[str]) -> Awaitable[Any]:
        return store.execute(
            Write(id_hash, json.dumps(changed), removed, False, None, KEEP_USER, H, None, M, None)
        )

    results = await asyncio.gather(*(write({f"k{i}": i}, ["drop"] if i == 7 else []) for i in range(30)))

    assert all(result.updated for result in results)
    row = await store.execute(Load(id_hash, M))
    assert row.data == {"keep": 1} | {f"k{i}": i for i in range(30)}


async def test_expired_rows_are_never_served(make_async: MakeAsync, pg_dsn: str) -> None:
    """Expiry is decided by the database's clock in every statement, purged or not."""
    store = make_async()
    id_hash = new_hash()
    await store.execute(Insert(id_hash, '{"a": 1}', "erin", H, None, 1000))
    sql(pg_dsn, f"UPDATE {store.qualified_name} SET expires_at = now() - interval '1 millisecond'")

    assert await store.execute(Load(id_hash, M)) is None
    assert await store.execute(Touch(id_hash, H, None)) is False
    write = Write(id_hash, '{"b": 2}', [], False, None, KEEP_USER, H, None, M, 1000)
    assert await store.execute(write) == WriteResult(False, False, None)
    assert await store.sessions_for_user("erin") == []
    assert sql(pg_dsn, f"SELECT data FROM {store.qualified_name}") == [({"a": 1},)]  # not revived

    # An absolute timeout ends a session however recently it was used.
    young = new_hash()
    await store.execute(Insert(young, "{}", None, H, timedelta(hours=2), None))
    sql(pg_dsn, f"UPDATE {store.qualified_name} SET created_at = now() - interval '3 hours'")
    assert await store.execute(Touch(young, H, timedelta(hours=2))) is True
    assert await store.execute(Load(young, M)) is None


async def test_max_size_is_checked_on_the_merged_row(make_async: MakeAsync, pg_dsn: str) -> None:
    store = make_async()
    id_hash = new_hash()
    first = {"a": "x" * 60}
    await store.execute(Insert(id_hash, json.dumps(first), None, H, None, 100))

    def write(changed: dict[str, Any], removed: list[str]) -> Write:
        return Write(id_hash, json.dumps(changed), removed, False, None, KEEP_USER, H, None, M, 100)

    # The change alone is small; the merged row is over the limit: nothing is written.
    with pytest.raises(SessionTooLarge) as refused:
        await store.execute(write({"b": "y" * 30}, []))
    assert refused.value.size == len(json.dumps({"a": "x" * 60, "b": "y" * 30}))
    assert (await store.execute(Load(id_hash, M))).data == first
    # The same change with a key removed fits.
    assert (await store.execute(write({"b": "y" * 30}, ["a"]))).updated
    assert (await store.execute(Load(id_hash, M))).data == {"b": "y" * 30}
    # An insert over the limit stores nothing.
    other = new_hash()
    with pytest.raises(SessionTooLarge):
        await store.execute(Insert(other, json.dumps({"c": "z" * 200}), None, H, None, 100))
    assert sql(pg_dsn, f"SELECT count(*) FROM {store.qualified_name} WHERE id = %s", (other,)) == [(0,)]


async def test_user_ids_of_each_type_are_found_and_revoked(make_async: MakeAsync) -> None:
    store = make_async()
    user_uuid = uuid.uuid4()
    ids = {
        "str": new_session_id(),
        "int": new_session_id(),
        "uuid": new_session_id(),
        "int2": new_session_id(),
    }
    for kind, user in (("str", "frank"), ("int", "7"), ("uuid", str(user_uuid)), ("int2", "7")):
        await store.execute(Insert(hash_session_id(ids[kind]), "{}", user, H, None, None))

    assert [i.id_hash for i in await store.sessions_for_user("frank")] == [hash_session_id(ids["str"]).hex()]
    assert len(await store.sessions_for_user(7)) == 2
    assert await store.sessions_for_user(7) == await store.sessions_for_user("7")
    assert [i.id_hash for i in await store.sessions_for_user(user_uuid)] == [
        hash_session_id(ids["uuid"]).hex()
    ]
    with pytest.raises(SessionError, match="user ids must be str, int or UUID"):
        await store.sessions_for_user(7.0)

    assert await store.revoke_user(7, keep=ids["int"]) == 1
    assert await store.execute(Load(hash_session_id(ids["int"]), M)) is not None
    assert await store.execute(Load(hash_session_id(ids["int2"]), M)) is None
    assert await store.revoke_user(user_uuid) == 1
    assert await store.revoke_user("frank") == 1
    assert (await store.stats())["live"] == 1


async def test_names_with_percent_and_quotes(make_async: MakeAsync, pg_dsn: str, schema: str) -> None:
    """Names are quoted identifiers and never read as placeholders, on either binding."""
    table = "odd %s %(id)s \"quoted\" 'single' %%"
    store = make_async(table=table)
    async with store:
        id_hash = new_hash()
        await store.execute(Insert(id_hash, '{"a": "%s"}', "%(user_id)s", H, None, 1000))
        assert await store.execute(Load(id_hash, M)) == LoadedRow({"a": "%s"}, False)
        write = Write(id_hash, '{"b": "%%"}', ["a"], False, None, KEEP_USER, H, None, M, 1000)
        assert (await store.execute(write)).updated
        assert await store.execute(Touch(id_hash, H, None)) is True
        assert len(await store.sessions_for_user("%(user_id)s")) == 1
        assert (await store.stats())["live"] == 1
        assert await store.purge_expired() == 0
        assert await store.revoke_user("%(user_id)s") == 1
        assert await store.execute(Delete(id_hash)) is False
    rows = sql(pg_dsn, "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
    assert rows == [(table,)]


# -- statements on the wire ----------------------------------------------------------------------


async def test_each_operation_is_one_statement_on_the_wire(
    make_async: MakeAsync, wire_counter: RoundTripCounter
) -> None:
    store = make_async(dsn=wire_counter.dsn)
    await store.open()
    assert any("CREATE TABLE" in s for s in wire_counter.statements)
    await store.open()  # again: nothing more is sent
    wire_counter.reset()
    await store.open()
    assert wire_counter.count == 0

    id_hash = new_hash()

    async def statements(operation: Operation) -> list[str]:
        wire_counter.reset()
        await store.execute(operation)
        return wire_counter.statements

    # Many times over: each is one message, the first on the connection with its PREPARE.
    loads = [(await statements(Load(id_hash, M))) for _ in range(8)]
    assert all(len(sent) == 1 and statement_kind(sent[0]) == "SELECT" for sent in loads), loads
    assert loads[0][0].startswith("PREPARE pgsession_load_") and "; EXECUTE pgsession_load_" in loads[0][0]
    assert all(sent == [loads[0][0].split(" ", 2)[1]] for sent in loads[1:])  # then by name alone
    [insert] = await statements(Insert(id_hash, '{"a": 1}', None, H, None, 1000))
    assert statement_kind(insert) == "INSERT"
    for n in range(8):
        [write] = await statements(
            Write(id_hash, json.dumps({"n": n}), [], False, None, KEEP_USER, H, None, M, 1000)
        )
        assert statement_kind(write) == "UPDATE"
    [touch] = await statements(Touch(id_hash, H, None))
    assert statement_kind(touch) == "UPDATE"
    [delete] = await statements(Delete(id_hash))
    assert statement_kind(delete) == "DELETE"


async def test_prepared_statements_off_sends_each_statement_as_text(
    make_async: MakeAsync, wire_counter: RoundTripCounter
) -> None:
    store = make_async(dsn=wire_counter.dsn, prepared_statements=False)
    id_hash = new_hash()
    await store.execute(Insert(id_hash, '{"a": 1}', None, H, None, 1000))
    for _ in range(8):  # past psycopg 3's own threshold: never prepared either
        wire_counter.reset()
        assert await store.execute(Load(id_hash, M)) is not None
        [load] = wire_counter.statements
        assert load.startswith("SELECT data")


async def test_a_prepared_statement_gone_missing_falls_back_to_text(
    make_async: MakeAsync, wire_counter: RoundTripCounter, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_async(dsn=wire_counter.dsn, max_connections=1)
    id_hash = new_hash()
    await store.execute(Insert(id_hash, '{"a": 1}', None, H, None, 1000))
    await store.execute(Load(id_hash, M))
    assert store._pool is not None
    async with store._pool.connection() as conn:  # type: ignore[union-attr]
        await conn.execute("DEALLOCATE ALL")  # as a pooler's reset would
    wire_counter.reset()
    with caplog.at_level("INFO", logger="pgsession_wsgi"):
        row = await store.execute(Load(id_hash, M))
    assert row is not None and row.data == {"a": 1}
    assert [statement_kind(s) for s in wire_counter.statements] == ["SELECT", "SELECT"]
    assert wire_counter.statements[0].startswith("pgsession_load_")  # by name, missing: nothing ran ...
    assert wire_counter.statements[1].startswith("SELECT")  # ... then as text, from now on
    assert "sending plain statements" in caplog.text
    wire_counter.reset()
    write = Write(id_hash, '{"n": 1}', [], False, None, KEEP_USER, H, None, M, 1000)
    assert (await store.execute(write)).updated
    [plain] = wire_counter.statements
    assert plain.startswith("UPDATE")


async def test_behind_a_pgbouncer_the_startup_check_misses_every_request_is_answered_right(
    make_pgbouncer: Callable[[str], PgBouncer], make_async: MakeAsync, pg_dsn: str
) -> None:
    """With statement_timeout=None and synchronous_commit=True no setting is sent, so the startup
    check cannot see PgBouncer: statements start out prepared and meet server connections shared
    with other clients. A name always means one statement, so each request is still right."""
    bouncer = make_pgbouncer(pg_dsn)
    stores = [make_async(dsn=bouncer.dsn, statement_timeout=None, max_connections=2) for _ in range(3)]
    ids = [new_hash() for _ in range(6)]
    for k, id_hash in enumerate(ids):
        await stores[0].execute(Insert(id_hash, json.dumps({"k": k}), None, H, None, None))

    async def work(store: AsyncPostgresStore, offset: int) -> None:
        for i in range(40):
            k = (i + offset) % len(ids)
            row = await store.execute(Load(ids[k], M))
            assert row is not None and row.data["k"] == k
            write = Write(ids[k], json.dumps({f"w{offset}": i}), [], False, None, KEEP_USER, H, None, M, None)
            assert (await store.execute(write)).updated

    await asyncio.gather(*(work(store, n) for n, store in enumerate(stores)))
    for k, id_hash in enumerate(ids):
        row = await stores[0].execute(Load(id_hash, M))
        assert row is not None and row.data["k"] == k


async def test_prepared_statements_by_name_are_right_where_psycopgs_own_names_meet_another_clients(
    make_pgbouncer: Callable[..., PgBouncer], make_async: MakeAsync, pg_dsn: str
) -> None:
    """What made psycopg 3's own prepared statements unsafe: behind a PgBouncer (transaction
    mode) the startup check misses, clients share server connections, and psycopg's names
    (``_pg3_0``...) are the same on every connection, so one client's name runs another's
    statement. Ours, executed by name as psycopg's are, name their text's hash."""
    import psycopg

    bouncer = make_pgbouncer(pg_dsn, pool_size=1)  # one server connection: every client meets
    # The control: two plain psycopg 3 clients preparing their own statements through it.
    first = await psycopg.AsyncConnection.connect(bouncer.dsn, autocommit=True, prepare_threshold=0)
    second = await psycopg.AsyncConnection.connect(bouncer.dsn, autocommit=True, prepare_threshold=0)
    try:
        await first.execute("SELECT %s::int + %s::int", (1, 2))  # _pg3_0: two parameters
        with pytest.raises(psycopg.Error):  # its own _pg3_0 is taken: another client's statement
            await second.execute("SELECT %s::text", ("x",))
        # Ours, with psycopg's _pg3_0 still there on the one server connection.
        store = make_async(dsn=bouncer.dsn, statement_timeout=None, max_connections=2)
        ids = [new_hash() for _ in range(4)]
        for k, id_hash in enumerate(ids):
            await store.execute(Insert(id_hash, json.dumps({"k": k}), None, H, None, None))
        for i in range(20):
            k = i % len(ids)
            row = await store.execute(Load(ids[k], M))
            assert row is not None and row.data["k"] == k
            write = Write(ids[k], json.dumps({"i": i}), [], False, None, KEEP_USER, H, None, M, None)
            assert (await store.execute(write)).updated
        names = await (await first.execute("SELECT name FROM pg_prepared_statements")).fetchall()
        assert {"_pg3_0"} < {name for (name,) in names}  # ours are there beside psycopg's
        assert any(name.startswith("pgsession_load_") for (name,) in names)
        assert store._steps.prepared.templates is not None  # never met one gone or not ours
    finally:
        await first.close()
        await second.close()


async def test_execute_opens_the_store_at_first_use(make_async: MakeAsync, pg_dsn: str, schema: str) -> None:
    store = make_async()
    id_hash = new_hash()
    # Many requests at once before anything is open: one setup, every request served.
    answers = await asyncio.gather(*(store.execute(Load(id_hash, M)) for _ in range(20)))
    assert answers == [None] * 20
    assert sql(pg_dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)) == [(1,)]
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.execute(Load(id_hash, M))  # a use is no open: closed until open() is called
    await store.open()  # as an app's lifespan starting again does
    assert await store.execute(Load(id_hash, M)) is None


# -- tables that are missing, foreign or old -------------------------------------------------------


async def test_a_missing_table_names_the_command_that_creates_it(make_async: MakeAsync) -> None:
    store = make_async(create_table=False)
    with pytest.raises(SessionError, match="pgsession-wsgi init"):
        await store.open()  # at start-up, not at the first request (issue 21)
    with pytest.raises(SessionError, match="pgsession-wsgi init"):
        await store.execute(Load(new_hash(), M))
    await store.create_table()
    assert await store.execute(Load(new_hash(), M)) is None
    assert "CREATE TABLE IF NOT EXISTS" in store.ddl()


async def test_tables_of_another_layout_are_refused(make_async: MakeAsync, pg_dsn: str, schema: str) -> None:
    sql(pg_dsn, f'CREATE TABLE "{schema}".pgsession (session_id text, data bytea, expiry timestamp)')
    with pytest.raises(LegacyTableError, match="migrate-flask-pg-session"):
        await make_async().open()
    sql(pg_dsn, f'CREATE TABLE "{schema}".other (a int)')
    with pytest.raises(ConfigurationError, match="not a pgsession-wsgi table"):
        await make_async(table="other", create_table=False).create_table()


async def test_a_row_the_driver_cannot_decode_is_a_session_data_error(
    make_async: MakeAsync, pg_dsn: str
) -> None:
    store = make_async()
    await store.open()
    id_hash = new_hash()
    sql(
        pg_dsn,
        f"INSERT INTO {store.qualified_name} (id, data, expires_at)"
        " VALUES (%s, (repeat('[', 5000) || repeat(']', 5000))::jsonb, now() + interval '1 hour')",
        (id_hash,),
    )
    with pytest.raises(SessionDataError, match="delete the row or fix the writer"):
        await store.execute(Load(id_hash, M))
    assert await store.execute(Load(new_hash(), M)) is None  # the connection is still fine


# -- the DSN, timeouts, a busy pool ---------------------------------------------------------------


async def test_dsn_parameters_win(make_async: MakeAsync, pg_dsn: str) -> None:
    name = f"async-dsn-{uuid.uuid4().hex[:8]}"
    dsn = psycopg2.extensions.make_dsn(pg_dsn, application_name=name, options="-c statement_timeout=150")
    store = make_async(dsn=dsn, statement_timeout=60)
    id_hash = new_hash()
    await store.execute(Insert(id_hash, "{}", None, H, None, None))
    rows = sql(pg_dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,))
    assert rows == [(1,)]

    # The DSN's statement_timeout (150 ms), not the store's (60 s), ends a statement that waits.
    locker = row_lock(pg_dsn, store.qualified_name, id_hash)
    try:
        write = Write(id_hash, '{"a": 1}', [], False, None, KEEP_USER, H, None, M, None)
        with pytest.raises(StoreUnavailable, match="the statement_timeout your DSN or server sets"):
            await store.execute(write)
    finally:
        locker.rollback()
        locker.close()
    assert (await store.execute(write)).updated


async def test_a_slow_statement_is_store_unavailable_after_statement_timeout(
    make_async: MakeAsync, pg_dsn: str
) -> None:
    store = make_async(statement_timeout=0.2)
    id_hash = new_hash()
    await store.execute(Insert(id_hash, "{}", None, H, None, None))
    locker = row_lock(pg_dsn, store.qualified_name, id_hash)
    try:
        with pytest.raises(StoreUnavailable, match=r"statement_timeout=0\.2s"):
            await store.execute(Delete(id_hash))
    finally:
        locker.rollback()
        locker.close()
    assert await store.execute(Delete(id_hash)) is True


async def test_an_exhausted_pool_is_store_unavailable_after_pool_timeout(
    make_async: MakeAsync, pg_dsn: str, schema: str
) -> None:
    store = make_async(max_connections=1, pool_timeout=0.3, statement_timeout=60)
    id_hash = new_hash()
    await store.execute(Insert(id_hash, "{}", None, H, None, None))
    locker = row_lock(pg_dsn, store.qualified_name, id_hash)
    try:
        # The pool's one connection waits on the row lock...
        write = Write(id_hash, '{"a": 1}', [], False, None, KEEP_USER, H, None, M, None)
        blocked = asyncio.ensure_future(store.execute(write))
        await eventually(lambda: waiting_on_a_lock(pg_dsn, schema), "the write waits on the row lock")
        # ...so the next request gets none, and says so.
        with pytest.raises(StoreUnavailable, match=r"pool_timeout=0\.3s \(max_connections=1\)"):
            await store.execute(Load(id_hash, M))
    finally:
        locker.rollback()
        locker.close()
    assert (await blocked).updated
    assert await store.execute(Load(id_hash, M)) == LoadedRow({"a": 1}, False)


# -- the purge ---------------------------------------------------------------------------------


def expired_rows(pg_dsn: str, table: str, count: int) -> None:
    sql(
        pg_dsn,
        f"INSERT INTO {table} (id, data, expires_at) SELECT sha256(i::text::bytea), '{{}}',"
        f" now() - interval '1 minute' FROM generate_series(1, {count}) i",
    )


def purge_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == TASK_NAME and not t.done()]


async def test_the_purge_task_deletes_expired_rows_on_its_own_connection_and_stops_at_close(
    make_async: MakeAsync, pg_dsn: str, schema: str
) -> None:
    name = f"async-purge-{uuid.uuid4().hex[:8]}"
    dsn = psycopg2.extensions.make_dsn(pg_dsn, application_name=name)
    store = make_async(dsn=dsn, purge_interval=0.05, max_connections=1, statement_timeout=60)
    await store.open()
    assert len(purge_tasks()) == 1
    live = new_hash()
    await store.execute(Insert(live, '{"live": true}', None, H, None, None))
    table = store.qualified_name

    # The pool's only connection is busy (waiting on a row lock): the purge runs anyway.
    locker = row_lock(pg_dsn, table, live)
    try:
        blocked = asyncio.ensure_future(
            store.execute(Write(live, '{"a": 1}', [], False, None, KEEP_USER, H, None, M, None))
        )
        await eventually(lambda: waiting_on_a_lock(pg_dsn, schema), "the write waits on the row lock")
        expired_rows(pg_dsn, table, 2500)  # more than one batch
        await eventually(
            lambda: sql(pg_dsn, f"SELECT count(*) FROM {table} WHERE expires_at <= now()") == [(0,)],
            "the purge task deletes the expired rows",
        )
    finally:
        locker.rollback()
        locker.close()
    assert (await blocked).updated
    assert sql(pg_dsn, f"SELECT data FROM {table}") == [({"live": True, "a": 1},)]

    await store.close()
    assert purge_tasks() == []
    await eventually(
        lambda: (
            sql(pg_dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,))
            == [(0,)]
        ),
        "the pool's and the purge's connections are closed",
    )


async def test_purge_expired_deletes_in_batches(make_async: MakeAsync, pg_dsn: str) -> None:
    name = f"async-batches-{uuid.uuid4().hex[:8]}"
    store = make_async(dsn=psycopg2.extensions.make_dsn(pg_dsn, application_name=name))
    await store.open()
    live = new_hash()
    await store.execute(Insert(live, "{}", None, H, None, None))
    expired_rows(pg_dsn, store.qualified_name, 2500)
    with pytest.raises(ConfigurationError):
        await store.purge_expired(batch_size=0)
    assert await store.purge_expired(batch_size=1000) == 2500
    assert await store.execute(Load(live, M)) is not None
    # The lock is transaction-scoped: nothing stays held on the store's connections.
    held = sql(
        pg_dsn,
        "SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid)"
        " WHERE locktype = 'advisory' AND application_name = %s",
        (name,),
    )
    assert held == [(0,)]


# -- through PgBouncer ---------------------------------------------------------------------------


async def test_through_pgbouncer_every_statement_carries_its_settings_in_one_message(
    make_pgbouncer: Callable[[str], PgBouncer], make_async: MakeAsync, pg_dsn: str
) -> None:
    """PgBouncer drops the startup options: each statement then starts with ``SET LOCAL``, bound
    on the client into one simple-protocol message (one round trip), and nothing is prepared."""
    bouncer = make_pgbouncer(pg_dsn)
    with RoundTripCounter(bouncer.dsn) as counter:  # the store -> counter -> PgBouncer -> server
        store = make_async(dsn=counter.dsn, max_connections=4, statement_timeout=7)
        await store.open()
        id_hash = new_hash()

        async def answer(operation: Operation) -> Any:
            counter.reset()
            result = await store.execute(operation)
            [statement] = counter.statements
            assert statement.startswith("SET LOCAL statement_timeout = 7000; "), statement
            return result

        assert await answer(Insert(id_hash, '{"a": "%s"}', "gina", H, None, 1000)) is None
        for n in range(8):  # past psycopg's prepare threshold
            write = Write(id_hash, json.dumps({"n": n}), ["a"], False, None, KEEP_USER, H, None, M, 1000)
            assert await answer(write) == WriteResult(True, False, None)
            assert await answer(Load(id_hash, M)) == LoadedRow({"n": n}, False)
        assert await answer(Touch(id_hash, H, None)) is True

        writes = [
            store.execute(
                Write(id_hash, json.dumps({f"k{i}": i}), [], False, None, KEEP_USER, H, None, M, None)
            )
            for i in range(20)
        ]
        assert all(result.updated for result in await asyncio.gather(*writes))
        assert (await store.execute(Load(id_hash, M))).data == {"n": 7} | {f"k{i}": i for i in range(20)}

        with pytest.raises(SessionTooLarge):
            await store.execute(Insert(new_hash(), json.dumps({"b": "x" * 2000}), None, H, None, 1000))
        assert len(await store.sessions_for_user("gina")) == 1
        expired_rows(pg_dsn, store.qualified_name, 1500)
        assert await store.purge_expired(batch_size=1000) == 1500
        assert await answer(Delete(id_hash)) is True


# -- the database going away -----------------------------------------------------------------------


async def test_a_connection_cut_under_a_statement_is_retried_only_for_statements_safe_to_repeat(
    make_async: MakeAsync, pg_dsn: str
) -> None:
    """Reads and idempotent writes get one more try on a new connection; an insert or a merge
    (which may have been applied before the cut) is a 503 instead, and the next one works."""
    proxy = CuttingProxy(pg_dsn)
    try:
        store = make_async(dsn=proxy.dsn, max_connections=1)
        id_hash = new_hash()
        await store.execute(Insert(id_hash, '{"a": 1}', None, H, None, None))
        safe: list[Operation] = [Load(id_hash, M), Touch(id_hash, H, None), Delete(new_hash())]
        for operation, answer in zip(safe, [LoadedRow({"a": 1}, False), True, False]):
            assert proxy.doom() == 1
            assert await store.execute(operation) == answer
        for operation in (
            Write(id_hash, '{"b": 2}', [], False, None, KEEP_USER, H, None, M, None),
            Insert(new_hash(), "{}", None, H, None, None),
        ):
            assert proxy.doom() == 1
            with pytest.raises(StoreUnavailable, match="lost the connection to PostgreSQL"):
                await store.execute(operation)
            assert await store.execute(operation) in (None, WriteResult(True, False, None))
        assert (await store.execute(Load(id_hash, M))).data == {"a": 1, "b": 2}
        assert await store.sessions_for_user("nobody") == []
    finally:
        proxy.close()


@pytest.mark.slow
async def test_store_unavailable_while_the_server_is_down_and_served_again_once_it_is_back(
    owned_server: EmbeddedPostgres,
) -> None:
    """A stopped server fails each call at once with the reason, not with the pool_timeout message
    after waiting for it, and the store recovers by itself once the server is back."""
    store = AsyncPostgresStore(owned_server.dsn, schema="outage", purge_interval=None, pool_timeout=30)
    try:
        id_hash = new_hash()
        await store.execute(Insert(id_hash, '{"a": 1}', None, H, None, None))
        owned_server.stop()
        for operation in (
            Load(id_hash, M),
            Write(id_hash, '{"b": 2}', [], False, None, KEEP_USER, H, None, M, None),
            Insert(new_hash(), "{}", None, H, None, None),
        ):
            with pytest.raises(StoreUnavailable, match="cannot connect to PostgreSQL"):
                await store.execute(operation)
        owned_server.start()
        assert await store.execute(Load(id_hash, M)) == LoadedRow({"a": 1}, False)
    finally:
        await store.close()


@pytest.mark.slow
async def test_connections_the_server_dropped_are_replaced_before_a_write_uses_them(
    owned_server: EmbeddedPostgres,
) -> None:
    """A restart or a killed backend leaves dead idle connections: even a write, which is never
    retried, gets a live one."""
    name = f"async-drop-{uuid.uuid4().hex[:8]}"
    dsn = psycopg2.extensions.make_dsn(owned_server.dsn, application_name=name)
    store = AsyncPostgresStore(dsn, schema="drops", purge_interval=None, max_connections=3)
    try:
        id_hash = new_hash()
        await store.execute(Insert(id_hash, "{}", None, H, None, None))
        # Three idle connections in the pool.
        await asyncio.gather(*(store.execute(Load(id_hash, M)) for _ in range(6)))
        owned_server.restart()
        for n in range(3):
            write = Write(id_hash, json.dumps({"n": n}), [], False, None, KEEP_USER, H, None, M, None)
            assert (await store.execute(write)).updated
        assert owned_server.terminate_backends(name) >= 1
        write = Write(id_hash, '{"after": "kill"}', [], False, None, KEEP_USER, H, None, M, None)
        assert (await store.execute(write)).updated
        assert (await store.execute(Load(id_hash, M))).data == {"n": 2, "after": "kill"}
    finally:
        await store.close()


async def test_options_are_checked(pg_dsn: str) -> None:
    for bad in ({"max_connections": 0}, {"pool_timeout": 0}, {"purge_interval": -1}):
        with pytest.raises(ConfigurationError):
            AsyncPostgresStore(pg_dsn, **bad)
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        AsyncPostgresStore("mysql://nope@host/db")
    store = AsyncPostgresStore(pg_dsn, table='t"x', schema="s")
    assert store.qualified_name == '"s"."t""x"'
    assert (store.table, store.schema, store.dsn) == ('t"x', "s", pg_dsn)


# -- a long purge's progress (on_batch), as the sync store reports it ---------------------------------


def fill_expired(pg_dsn: str, table: str, *, expired: int, live: int = 0) -> None:
    """``expired`` rows an hour past their expiry and ``live`` rows good for an hour (new ids)."""
    for count, offset in ((expired, "- interval '1 hour'"), (live, "+ interval '1 hour'")):
        prefix = uuid.uuid4().hex
        if count:
            sql(
                pg_dsn,
                f"INSERT INTO {table} (id, data, expires_at) SELECT sha256(('{prefix}' || i)::bytea),"
                f" '{{}}', now() {offset} FROM generate_series(1, %s) i",
                (count,),
            )


def expired_left(pg_dsn: str, table: str) -> int:
    return int(sql(pg_dsn, f"SELECT count(*) FROM {table} WHERE expires_at <= now()")[0][0])


@pytest.fixture(params=["own", "lent"])
async def purgeable(
    request: pytest.FixtureRequest, make_async: MakeAsync, pg_dsn: str, schema: str
) -> AsyncIterator[AsyncPostgresStore]:
    """An opened store on its own pool, or on the app's psycopg_pool (SET LOCAL, client-side binding)."""
    if request.param == "own":
        store = make_async()
        await store.open()
        yield store
        return
    from psycopg_pool import AsyncConnectionPool

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(pg_dsn, min_size=1, max_size=2, open=False)
    await pool.open()
    store = AsyncPostgresStore.from_pool(pool, schema=schema, purge_interval=None)
    try:
        await store.open()
        yield store
    finally:
        await store.close()
        await pool.close()


async def test_purge_reports_each_batch_and_stops_when_told(
    purgeable: AsyncPostgresStore, pg_dsn: str
) -> None:
    table = purgeable.qualified_name
    fill_expired(pg_dsn, table, expired=25, live=2)
    calls: list[tuple[int, int]] = []

    def on_batch(removed: int, expected: int) -> bool:
        calls.append((removed, expected))
        return removed < 20

    assert await purgeable.purge_expired(batch_size=10, on_batch=on_batch) == 20
    assert calls == [(0, 25), (10, 25), (20, 25)]
    assert expired_left(pg_dsn, table) == 5
    calls.clear()
    assert await purgeable.purge_expired(batch_size=10, on_batch=lambda r, e: calls.append((r, e))) == 5
    assert calls == [(0, 5), (5, 5)]  # None (no return) means go on
    assert expired_left(pg_dsn, table) == 0
    assert sql(pg_dsn, f"SELECT count(*) FROM {table}") == [(2,)]  # the live rows stay


async def test_purge_stopped_before_the_first_batch_removes_nothing(
    purgeable: AsyncPostgresStore, pg_dsn: str
) -> None:
    fill_expired(pg_dsn, purgeable.qualified_name, expired=3)
    assert await purgeable.purge_expired(on_batch=lambda removed, expected: False) == 0
    assert expired_left(pg_dsn, purgeable.qualified_name) == 3


async def test_many_expired_rows_are_estimated_from_a_sample_and_no_callback_counts_nothing(
    make_async: MakeAsync, wire_counter: RoundTripCounter, monkeypatch: pytest.MonkeyPatch, pg_dsn: str
) -> None:
    """Past EXACT_COUNT_LIMIT the count is a page sample (on a table this small, every page: the
    estimate is exact); without a callback no count is sent at all."""
    from pgsession_wsgi import store_steps as store_module  # where the purge reads EXACT_COUNT_LIMIT

    store = make_async(dsn=wire_counter.dsn)
    await store.open()

    async def purge_and_see(**options: Any) -> tuple[list[int], list[str]]:
        fill_expired(pg_dsn, store.qualified_name, expired=300, live=10)
        seen: list[int] = []
        wire_counter.reset()
        if options:
            await store.purge_expired(batch_size=1000, on_batch=lambda removed, total: seen.append(total))
        else:
            assert await store.purge_expired(batch_size=1000) == 300
        return seen, wire_counter.statements

    _, quiet = await purge_and_see()
    assert not any("count(*) FROM (SELECT 1" in text for text in quiet)
    seen, exact = await purge_and_see(on_batch=True)
    assert set(seen) == {300} and not any("TABLESAMPLE" in text for text in exact)
    monkeypatch.setattr(store_module, "EXACT_COUNT_LIMIT", 50)
    seen, sampled = await purge_and_see(on_batch=True)
    assert set(seen) == {300} and any("TABLESAMPLE" in text for text in sampled)


async def test_the_idle_count_read_per_request_is_the_pools_own(pg_dsn: str) -> None:
    """The store asks how many idle connections its pool holds on every request, more cheaply
    than ``get_stats()``; its answer must be the pool's own through checkouts and returns."""
    from psycopg_pool import AsyncConnectionPool

    from pgsession_wsgi._drivers.async_pool import _idle_counter

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(pg_dsn, min_size=0, max_size=3, open=False)
    await pool.open()
    try:
        idle = _idle_counter(pool)
        taken = [await pool.getconn() for _ in range(3)]
        assert idle() == pool.get_stats()["pool_available"] == 0
        for number, conn in enumerate(taken, 1):
            await pool.putconn(conn)
            assert idle() == pool.get_stats()["pool_available"] == number
        await pool.getconn()
        assert idle() == pool.get_stats()["pool_available"] == 2
    finally:
        await pool.close()


async def test_closing_while_the_first_use_is_still_connecting_ends_it_and_returns() -> None:
    """A server that takes the connection and never answers: the store's first use waits for it.
    Closing the store ends that wait (the pool gives its connecting worker 5 s) and returns
    normally, with no CancelledError of the setup it cancelled (async_store close 7, 9)."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel takes the connection
        port = silent.getsockname()[1]
        store = AsyncPostgresStore(
            f"postgresql://nobody@127.0.0.1:{port}/db", connect_timeout=60, pool_timeout=60
        )
        opening = asyncio.ensure_future(store.open())
        await asyncio.sleep(0.3)
        assert not opening.done()
        await asyncio.wait_for(store.close(), 30)
        with pytest.raises((StoreUnavailable, asyncio.CancelledError)):
            await asyncio.wait_for(opening, 30)
