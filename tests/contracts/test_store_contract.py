"""The store contract: every store operation, tested once against both stores (issue 22, point 2).

Each test takes ``make``, a fixture parametrised over :class:`PostgresStore` (psycopg2) and
:class:`AsyncPostgresStore` (psycopg 3), both on a table of the same name in the test's schema.
It hands out a :class:`Store`, whose awaitable methods call the async store and run the sync one in
a thread (``asyncio.to_thread``): one test body drives both, with one set of expected answers, so
any difference between the two stores fails a test. A message that names the store names
``store.kind``.

Seams (private attributes reached on purpose) are named where a test needs one: only SQL run on the
store's own connection can make its server session forget its prepared statements.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from functools import partial
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.pool
import pytest
from db import sql
from psycopg_pool import AsyncConnectionPool
from wire import CuttingProxy, RoundTripCounter, statement_kind

from pgsession_wsgi import PostgresStore
from pgsession_wsgi.async_store import AsyncPostgresStore
from pgsession_wsgi.cookies import hash_session_id, new_session_id
from pgsession_wsgi.core import (
    KEEP_USER,
    Delete,
    Insert,
    Load,
    LoadedRow,
    Touch,
    Write,
    WriteResult,
    user_id_text,
)
from pgsession_wsgi.errors import (
    ConfigurationError,
    PrivilegeError,
    ReadOnlyServer,
    SessionDataError,
    SessionError,
    SessionTooLarge,
    StoreUnavailable,
)
from pgsession_wsgi.sql import Statements, grant_statements

H, M = timedelta(hours=1), timedelta(minutes=1)
TABLE = "pgsession"


class Store:
    """Either store, behind awaitable calls: ``await store.execute(op)``, ``await store.stats()``."""

    def __init__(self, store: PostgresStore | AsyncPostgresStore) -> None:
        self.store = store
        self.kind = type(store).__name__

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        function = getattr(self.store, method)
        if inspect.iscoroutinefunction(function):
            return await function(*args, **kwargs)
        return await asyncio.to_thread(function, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return partial(self.call, name)

    @property
    def qualified_name(self) -> str:
        return self.store.qualified_name

    async def own_connection(self, statement: str) -> None:
        """Seam: run ``statement`` on the store's own (only) pooled connection."""
        if isinstance(self.store, PostgresStore):
            self.store._run(lambda cur: cur.execute(statement), retry=False)
            return
        assert self.store._pool is not None
        async with self.store._pool.connection() as conn:
            await conn.execute(statement)

    async def close_unpooled(self, conn: Any) -> None:
        result = conn.close()
        if inspect.isawaitable(result):
            await result


@pytest.fixture(params=[PostgresStore, AsyncPostgresStore], ids=lambda kind: kind.__name__)
def kind(request: pytest.FixtureRequest) -> type[PostgresStore | AsyncPostgresStore]:
    """The store this run of the test drives: each test runs once with each."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def make(kind: type[Any], pg_dsn: str, schema: str) -> AsyncIterator[Callable[..., Store]]:
    """``make(**options)``: a store of this run's kind on this test's table (no purge task)."""
    made: list[Store] = []

    def make(**options: Any) -> Store:
        store = Store(kind(**{"dsn": pg_dsn, "schema": schema, "purge_interval": None, **options}))
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
async def make_lent(kind: type[Any], pg_dsn: str, schema: str) -> AsyncIterator[Callable[..., Any]]:
    """``await make_lent(dsn, **options)``: a store of this run's kind on an app's pool (psycopg2's
    ThreadedConnectionPool, psycopg_pool's AsyncConnectionPool); store and pool closed after."""
    made: list[tuple[Store, Any]] = []

    async def close_pool(pool: Any) -> None:
        if isinstance(pool, psycopg2.pool.AbstractConnectionPool):
            pool.closeall()
        else:
            await pool.close()

    async def make_lent(dsn: str = pg_dsn, **options: Any) -> Store:
        options = {"schema": schema, "purge_interval": None, **options}
        if kind is PostgresStore:
            pool: Any = psycopg2.pool.ThreadedConnectionPool(1, 2, dsn)
        else:
            pool = AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False)
            await pool.open()
        try:
            store = Store(kind.from_pool(pool, **options))
        except BaseException:  # refused: the pool is closed at once
            await close_pool(pool)
            raise
        made.append((store, pool))
        return store

    yield make_lent
    for store, pool in made:
        await store.close()
        await close_pool(pool)


def new_hash() -> bytes:
    return hash_session_id(new_session_id())


async def outcome(call: Any) -> Any:
    """A call's answer, or the SessionTooLarge it raised as comparable data."""
    try:
        return await call
    except SessionTooLarge as exc:
        return ("SessionTooLarge", exc.size, exc.limit)


def expired_rows(pg_dsn: str, table: str, count: int, *, live: int = 0) -> None:
    sql(
        pg_dsn,
        f"INSERT INTO {table} (id, data, expires_at) SELECT sha256(('e' || i)::bytea), '{{}}',"
        f" now() - interval '1 minute' FROM generate_series(1, {count}) i",
    )
    sql(
        pg_dsn,
        f"INSERT INTO {table} (id, data, expires_at) SELECT sha256(('l' || i)::bytea), '{{}}',"
        f" now() + interval '1 hour' FROM generate_series(1, {live}) i",
    )


# -- the request statements --------------------------------------------------------------------

FIRST = {
    "n": 1,
    "name": 'é ☃ "q" \\ %s %(x)s',
    "nested": {"l": [1, 2.5, None, True, 2**62]},
    "_permanent": True,
}
AGE = "UPDATE {t} SET accessed_at = accessed_at - interval '2 minutes'"  # a touch is now due


async def test_every_operation_gets_its_answer(make: Callable[..., Store], pg_dsn: str) -> None:
    store = make()
    a, b, c = new_hash(), new_hash(), new_hash()
    second = {k: v for k, v in FIRST.items() if k != "n"} | {"m": 2}
    cleared = {"_permanent": False, "k": "v"}
    script: list[tuple[Any, Any]] = [
        (Load(a, M), None),
        (Insert(a, json.dumps(FIRST), "alice", H, None, 1000), None),
        (Load(a, M), LoadedRow(FIRST, False)),
        (
            Write(a, '{"m": 2}', ["n"], False, None, KEEP_USER, H, None, M, 1000),
            WriteResult(True, False, True),
        ),
        (AGE, None),
        (Load(a, M), LoadedRow(second, True)),
        (Write(a, '{"t": 1}', [], False, None, KEEP_USER, H, None, M, None), WriteResult(True, True, True)),
        (AGE, None),
        (Touch(a, H, timedelta(hours=2)), True),
        (Load(a, M), LoadedRow(second | {"t": 1}, False)),
        (
            Write(a, '{"x": 1}', [], False, b, "bob", H, timedelta(hours=2), M, None),
            WriteResult(True, False, True),
        ),
        (Load(a, M), None),  # moved to b (a regenerated id)
        (Load(b, M), LoadedRow(second | {"t": 1, "x": 1}, False)),
        (
            Write(b, '{"_permanent": false, "k": "v"}', [], True, None, None, H, None, M, 1000),
            WriteResult(True, False, False),
        ),
        (Load(b, M), LoadedRow(cleared, False)),
        (Write(a, '{"y": 1}', [], False, None, KEEP_USER, H, None, M, 1000), WriteResult(False, False, None)),
        (
            Insert(c, json.dumps({"big": "x" * 100}), None, H, None, 50),
            ("SessionTooLarge", len(json.dumps({"big": "x" * 100})), 50),
        ),
        (
            Write(b, json.dumps({"big": "x" * 2000}), [], False, None, KEEP_USER, H, None, M, 1000),
            ("SessionTooLarge", len(json.dumps({**cleared, "big": "x" * 2000})), 1000),
        ),
        (Load(b, M), LoadedRow(cleared, False)),
        (Touch(a, H, None), False),
        (Delete(b), True),
        (Delete(b), False),
        (Load(c, M), None),
    ]
    for step, expected in script:
        if isinstance(step, str):
            sql(pg_dsn, step.replace("{t}", store.qualified_name))
            continue
        assert await outcome(store.execute(step)) == expected, step


async def test_the_methods_answer_as_execute_does(make: Callable[..., Store]) -> None:
    store = make()
    a, b = new_hash(), new_hash()
    assert await store.insert(a, '{"a": 1}', "u1", H, None, 100, idle_timeout=timedelta(minutes=5)) is None
    assert await store.load(a, M) == LoadedRow({"a": 1}, False, timedelta(minutes=5), None)
    written = await store.write(
        a,
        '{"b": 2}',
        ["a"],
        replace=False,
        new_hash=b,
        user_id=KEEP_USER,
        idle=H,
        absolute=None,
        touch_interval=M,
        max_size=100,
    )
    assert written == WriteResult(True, False, None, timedelta(minutes=5), None)
    assert (await store.load(b, M)).data == {"b": 2}
    assert await store.touch(b, H, None) is True
    assert await store.delete(b) is True
    assert await store.delete(b) is False
    with pytest.raises(SessionTooLarge):
        await store.insert(new_hash(), json.dumps({"x": "y" * 200}), None, H, None, 100)
    with pytest.raises(TypeError, match="not a session store operation"):
        await store.execute("SELECT 1")


async def test_an_operation_of_a_subclass_of_the_cores_is_answered_as_the_cores(
    make: Callable[..., Store],
) -> None:
    # A front end may hand the store its own kind of operation, made from the core's.
    class TracedLoad(Load):
        pass

    class TracedInsert(Insert):
        pass

    store = make()
    id_hash = new_hash()
    assert await store.execute(TracedLoad(id_hash, M)) is None
    assert await store.execute(TracedInsert(id_hash, '{"a": 1}', None, H, None, None)) is None
    assert await store.execute(TracedLoad(id_hash, M)) == LoadedRow({"a": 1}, False)


async def test_a_touch_keeps_the_absolute_timeout(make: Callable[..., Store]) -> None:
    store = make()
    id_hash = new_hash()
    await store.insert(id_hash, "{}", "erin", H, None)
    assert await store.touch(id_hash, H, timedelta(minutes=30)) is True
    [info] = await store.sessions_for_user("erin")
    # created_at + absolute comes before now() + idle: the session ends then, not an hour on.
    assert info.expires_at == info.created_at + timedelta(minutes=30)


async def test_a_write_asked_to_replace_replaces_and_keeps_the_absolute_timeout(
    make: Callable[..., Store],
) -> None:
    """The store's write method hands replace and absolute on (store_base StoreMethods.write
    mutants 6, 10)."""
    store = make()
    id_hash = new_hash()
    await store.insert(id_hash, '{"a": 1, "b": 2}', "erin", H, None)
    written = await store.write(
        id_hash, '{"c": 3}', [], replace=True, new_hash=None, user_id=KEEP_USER, idle=H,
        absolute=timedelta(minutes=30), touch_interval=timedelta(0),
    )
    assert (written.updated, written.touched) == (True, True)
    assert (await store.load(id_hash, M)).data == {"c": 3}
    [info] = await store.sessions_for_user("erin")
    assert info.expires_at == info.created_at + timedelta(minutes=30)


async def test_a_row_no_python_value_holds_is_a_session_data_error(
    make: Callable[..., Store], pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = make()
    id_hash = new_hash()
    await store.insert(id_hash, '{"a": 1}', "carol", H, None)
    # psycopg2 reads infinity as the last datetime, psycopg 3 refuses it: either way, refused.
    infinity = "ends_at = 'infinity', expires_at = 'infinity'"
    sql(pg_dsn, f"UPDATE {store.qualified_name} SET {infinity} WHERE id = %s", (id_hash,))
    with pytest.raises(SessionDataError, match="a stored session could not be decoded"):
        await store.load(id_hash, M)
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        assert await store.sessions_for_user("carol") == []  # left out, not an error
    # Its one trace names what the driver made of the row (never the row's data).
    [left_out] = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert re.fullmatch(
        r"a session was left out of sessions_for_user: a stored session could not be decoded "
        r"\((ValueError|DataError)\); .*",
        left_out,
    ), left_out


# -- the table: DDL, creation, checks ------------------------------------------------------------


@pytest.mark.parametrize("unlogged", [False, True])
async def test_ddl_is_what_create_table_runs(make: Callable[..., Store], schema: str, unlogged: bool) -> None:
    store = make(unlogged=unlogged)
    sql_text = Statements(schema, TABLE, "")
    schema_sql, table_sql, *index_sql = sql_text.create_unlogged if unlogged else sql_text.create
    assert store.store.ddl() == ";\n".join([schema_sql, table_sql, sql_text.upgrade, *index_sql]) + ";\n"
    await store.create_table()
    await store.create_table()  # again: nothing to do
    persistence = sql(
        store.store.dsn,
        "SELECT relpersistence FROM pg_class WHERE oid = to_regclass(%s)",
        (store.qualified_name,),
    )
    assert persistence == [("u" if unlogged else "p",)]
    other = make(unlogged=not unlogged)
    with pytest.raises(ConfigurationError, match="UNLOGGED" if unlogged else "logged table"):
        await other.create_table()
    await other.create_table(convert=True)  # as asked for: converted
    assert sql(
        store.store.dsn,
        "SELECT relpersistence FROM pg_class WHERE oid = to_regclass(%s)",
        (store.qualified_name,),
    ) == [("p" if unlogged else "u",)]


async def test_a_missing_or_foreign_table_is_named_with_its_fix(
    make: Callable[..., Store], pg_dsn: str
) -> None:
    store = make(create_table=False)
    with pytest.raises(SessionError) as missing:
        await store.execute(Load(new_hash(), M))
    assert re.search(rf"`pgsession-wsgi init --dsn .*{store.kind}\(create_table=True\)", str(missing.value))
    # The key a Flask or Quart app sets, as its config spells it.
    assert str(missing.value).endswith("; Flask and Quart: PGSESSION_CREATE_TABLE = True)")
    sql(pg_dsn, f"CREATE TABLE {store.qualified_name} (id int, other text)")
    again = make(create_table=False)
    with pytest.raises(ConfigurationError, match="exists but is not a pgsession-wsgi table"):
        await again.execute(Load(new_hash(), M))
    legacy = make(table="legacy")
    sql(pg_dsn, f"CREATE TABLE {legacy.qualified_name} (session_id text, data bytea, expiry timestamp)")
    with pytest.raises(ConfigurationError, match="flask-pg-session layout"):
        await legacy.create_table()


async def test_a_table_dropped_under_a_running_store_is_named(
    make: Callable[..., Store], pg_dsn: str
) -> None:
    store = make()
    assert await store.execute(Load(new_hash(), M)) is None
    sql(pg_dsn, f"DROP TABLE {store.qualified_name}")
    message = (
        rf"the session table {re.escape(store.qualified_name)} does not exist: .*{store.kind}\(create_table"
    )
    with pytest.raises(SessionError, match=message):
        await store.execute(Load(new_hash(), M))


# -- a user's sessions -------------------------------------------------------------------------


async def test_a_users_sessions_are_listed_and_revoked_within_a_key_prefix(
    make: Callable[..., Store],
) -> None:
    store = make()
    ids = {name: new_session_id() for name in ("forum-1", "forum-2", "shop", "none")}
    users = {"forum-1": "forum:", "forum-2": "forum:", "shop": "shop:", "none": ""}
    for name, session_id in ids.items():
        user = user_id_text(7, key_prefix=users[name])
        await store.insert(hash_session_id(session_id), '{"a": 1}', user, H, None)
    listed = await store.sessions_for_user("7", key_prefix="forum:")
    assert sorted(info.id_hash for info in listed) == sorted(
        hash_session_id(ids[name]).hex() for name in ("forum-1", "forum-2")
    )
    assert all(info.created_at <= info.accessed_at < info.expires_at for info in listed)
    assert len(await store.sessions_for_user(7)) == 1  # no prefix: the app without one
    with pytest.raises(SessionError, match="user ids must be str, int or UUID"):
        await store.sessions_for_user(7.5)
    assert await store.revoke_user(7, keep=ids["forum-1"], key_prefix="forum:") == 1
    assert await store.revoke_user("7", key_prefix="forum:") == 1
    assert len(await store.sessions_for_user(7, key_prefix="shop:")) == 1


async def test_stats_count_live_and_expired_rows_and_users(make: Callable[..., Store], pg_dsn: str) -> None:
    store = make()
    await store.create_table()
    expired_rows(pg_dsn, store.qualified_name, 3, live=2)
    await store.insert(new_hash(), "{}", "u1", H, None)
    await store.insert(new_hash(), "{}", "u1", H, None)
    stats = await store.stats()
    assert {key: stats[key] for key in ("live", "expired", "users")} == {"live": 4, "expired": 3, "users": 1}
    assert stats["total_bytes"] > 0


# -- every session at once ---------------------------------------------------------------------


async def test_delete_all_ends_every_session_in_the_table_and_counts_the_live_ones(
    make: Callable[..., Store], pg_dsn: str
) -> None:
    store = make()
    await store.create_table()
    expired_rows(pg_dsn, store.qualified_name, 3, live=4)  # anonymous sessions
    ids = [new_session_id() for _ in range(3)]
    for session_id, prefix in zip(ids, ("", "forum:", "shop:")):
        user = user_id_text(7, key_prefix=prefix)
        await store.insert(hash_session_id(session_id), '{"a": 1}', user, H, None)
    assert await store.delete_all() == 7  # the expired rows go too, uncounted: no session ended
    assert await store.load(hash_session_id(ids[0]), M) is None
    stats = await store.stats()
    assert (stats["live"], stats["expired"], stats["users"]) == (0, 0, 0)
    assert await store.delete_all() == 0


async def test_delete_all_ends_the_sessions_of_every_key_prefix(make: Callable[..., Store]) -> None:
    # A row's id is hashed with its app's key_prefix and an anonymous row has no user column:
    # nothing in the table says which app made it, so delete_all() is the whole table's.
    store = make()
    for prefix in ("", "forum:", "shop:"):
        await store.insert(new_hash(), "{}", None, H, None)
        await store.insert(new_hash(), "{}", user_id_text(7, key_prefix=prefix), H, None)
    assert await store.delete_all() == 6
    for prefix in ("", "forum:", "shop:"):
        assert await store.sessions_for_user(7, key_prefix=prefix) == []


async def test_delete_all_goes_batch_by_batch(make: Callable[..., Store], pg_dsn: str) -> None:
    store = make()
    await store.create_table()
    expired_rows(pg_dsn, store.qualified_name, 4, live=10)
    assert await store.delete_all(batch_size=3) == 10  # counted over every batch
    assert (await store.stats())["expired"] == 0
    expired_rows(pg_dsn, store.qualified_name, 1, live=2)
    assert await store.delete_all(batch_size=1) == 2  # the smallest batch there is
    assert (await store.stats())["live"] == 0
    with pytest.raises(ConfigurationError, match="batch_size must be at least 1"):
        await store.delete_all(batch_size=0)


async def test_delete_all_sends_one_statement_of_at_most_batch_size_rows_per_batch(
    make: Callable[..., Store], pg_dsn: str, wire_counter: RoundTripCounter
) -> None:
    """Seven rows in batches of three are four statements (3, 3, 1, then one that finds none), and
    a batch below one is refused with exactly its message (store_steps.DeleteAll.__init__ mutants
    4, 7)."""
    store = make(dsn=wire_counter.dsn)
    await store.create_table()
    expired_rows(pg_dsn, store.qualified_name, 1, live=6)
    wire_counter.reset()
    assert await store.delete_all(batch_size=3) == 6
    batches = [s for s in wire_counter.statements if "WITH deleted AS (DELETE FROM" in s]
    assert len(batches) == 4, wire_counter.statements
    with pytest.raises(ConfigurationError) as refused:
        await store.delete_all(batch_size=0)
    assert str(refused.value) == "batch_size must be at least 1"


async def test_a_store_on_an_app_pool_deletes_all_on_the_apps_connections(
    make_lent: Callable[..., Any], pg_dsn: str
) -> None:
    store = await make_lent()
    await store.create_table()
    expired_rows(pg_dsn, store.qualified_name, 2, live=5)
    assert await store.delete_all(batch_size=2) == 5
    assert (await store.stats())["live"] == 0


# -- purging -------------------------------------------------------------------------------------


async def test_purge_reports_each_batch_and_stops_when_told(make: Callable[..., Store], pg_dsn: str) -> None:
    store = make()
    await store.create_table()
    expired_rows(pg_dsn, store.qualified_name, 2500, live=10)
    seen: list[tuple[int, int]] = []
    assert (
        await store.purge_expired(batch_size=1000, on_batch=lambda *progress: seen.append(progress)) == 2500
    )
    assert seen == [(0, 2500), (1000, 2500), (2000, 2500), (2500, 2500)]
    expired_rows(pg_dsn, store.qualified_name, 1500)
    assert await store.purge_expired(batch_size=1000, on_batch=lambda removed, _: removed == 0) == 1000
    assert await store.purge_expired(batch_size=100, on_batch=lambda *_: False) == 0
    assert await store.purge_batch_by_batch(batch_size=200) == 500
    expired_rows(pg_dsn, store.qualified_name, 30)
    conn = await store.connect_unpooled()
    try:
        assert await store.purge_on(conn, 7) == 30
    finally:
        await store.close_unpooled(conn)
    assert (await store.stats())["live"] == 10
    for purge in (store.purge_expired, store.purge_batch_by_batch):
        with pytest.raises(ConfigurationError, match="batch_size must be at least 1"):
            await purge(batch_size=0)


async def test_a_store_on_an_app_pool_purges_batch_by_batch_and_opens_no_connection(
    make_lent: Callable[..., Any], pg_dsn: str
) -> None:
    store = await make_lent()
    assert store.store.borrows_connections
    await store.create_table()
    expired_rows(pg_dsn, store.qualified_name, 250)
    assert await store.purge_batch_by_batch(batch_size=100) == 250
    with pytest.raises(ConfigurationError, match="opens none of its own"):
        await store.connect_unpooled()


# -- prepared statements -------------------------------------------------------------------------


async def test_request_statements_are_prepared_once_per_connection_with_the_settings_written_in(
    make: Callable[..., Store], wire_counter: RoundTripCounter
) -> None:
    store = make(dsn=wire_counter.dsn, max_connections=1)
    id_hash = new_hash()
    await store.insert(id_hash, '{"a": 1}', None, H, None, 4096)

    async def sent(operation: Any) -> str:
        wire_counter.reset()
        await store.execute(operation)
        [statement] = wire_counter.statements
        return statement

    first, second = await sent(Load(id_hash, M)), await sent(Load(id_hash, M))
    assert first.startswith("PREPARE pgsession_load_") and "; EXECUTE pgsession_load_" in first
    name = first.split(" ", 2)[1]
    merge = Write(id_hash, '{"b": 2}', [], False, None, KEEP_USER, H, None, M, 4096)
    moving = Write(id_hash, "{}", [], False, new_hash(), KEEP_USER, H, None, M, 4096)
    if store.kind == "AsyncPostgresStore":
        # psycopg 3 executes the statement by its name: no text at all for the server to parse.
        assert second == name
        await sent(merge)  # its first use on this connection: prepared
        assert (await sent(merge)).startswith("pgsession_merge_")  # data only: the smaller statement
        await sent(moving)
        moved = dataclasses.replace(moving, id_hash=moving.new_hash, new_hash=new_hash())  # from there
        assert (await sent(moved)).startswith("pgsession_write_")
    else:
        assert second.startswith(f"EXECUTE {name}") and "'0 days 60.000000 seconds'::interval" in second
        assert "EXECUTE pgsession_merge_" in await sent(merge)  # data only: the smaller statement
        assert "EXECUTE pgsession_write_" in await sent(moving)


async def test_prepared_statements_off_send_text(
    make: Callable[..., Store], wire_counter: RoundTripCounter
) -> None:
    store = make(dsn=wire_counter.dsn, prepared_statements=False)
    id_hash = new_hash()
    await store.insert(id_hash, '{"a": 1}', None, H, None, 4096)
    for _ in range(6):  # past psycopg 3's own threshold: nothing prepared either
        wire_counter.reset()
        assert await store.load(id_hash, M) is not None
        [load] = wire_counter.statements
        assert load.startswith("SELECT data")


async def test_a_prepared_statement_gone_missing_falls_back_to_text(
    make: Callable[..., Store], wire_counter: RoundTripCounter, caplog: pytest.LogCaptureFixture
) -> None:
    store = make(dsn=wire_counter.dsn, max_connections=1)
    id_hash = new_hash()
    await store.insert(id_hash, '{"a": 1}', None, H, None)
    await store.load(id_hash, M)
    await store.own_connection("DEALLOCATE ALL")  # as a pooler's reset would
    wire_counter.reset()
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        assert (await store.load(id_hash, M)).data == {"a": 1}
    assert [statement_kind(s) for s in wire_counter.statements] == ["SELECT", "SELECT"]
    # The prepared one (as text, or by name), then the text.
    assert wire_counter.statements[0].startswith(("EXECUTE pgsession_load_", "pgsession_load_"))
    assert wire_counter.statements[1].startswith("SELECT")
    assert (
        "prepared statements dropped by the server side (PgBouncer?); sending plain statements" in caplog.text
    )
    wire_counter.reset()
    assert (
        await store.write(
            id_hash, '{"n": 1}', [], replace=False, new_hash=None, idle=H, absolute=None, touch_interval=M
        )
    ).updated
    [plain] = wire_counter.statements
    assert plain.startswith("UPDATE")


async def test_settings_of_the_wrong_kind_are_refused_not_written_into_sql(
    make: Callable[..., Store],
) -> None:
    store = make()
    id_hash = new_hash()
    with pytest.raises(TypeError, match="max_size must be a timedelta, a number or None, not str"):
        await store.insert(id_hash, "{}", None, H, None, "4096'); DROP TABLE x; --")
    with pytest.raises(TypeError, match="touch_interval must be .* not list"):
        await store.load(id_hash, ["60 seconds"])


async def test_a_store_on_an_app_pool_has_the_defaults_of_every_store_on_an_apps_connections(
    make_lent: Callable[..., Any], wire_counter: RoundTripCounter, pg_dsn: str
) -> None:
    with pytest.raises(ConfigurationError, match="purge_interval must be a positive number of seconds"):
        await make_lent(purge_interval=0)
    store = await make_lent(wire_counter.dsn)
    await store.create_table()
    wire_counter.reset()
    await store.load(new_hash(), M)
    [statement] = wire_counter.statements
    # A 5-second statement_timeout, the server's synchronous_commit (nothing sent for it).
    assert statement.startswith("SET LOCAL statement_timeout = 5000; SELECT"), statement
    assert "synchronous_commit" not in statement
    persistence = "SELECT relpersistence FROM pg_class WHERE oid = to_regclass(%s)"
    assert sql(pg_dsn, persistence, (store.qualified_name,)) == [("p",)]  # a logged table


async def test_an_app_pool_gets_its_settings_with_each_statement_and_nothing_prepared(
    make_lent: Callable[..., Any], wire_counter: RoundTripCounter
) -> None:
    store = await make_lent(wire_counter.dsn, statement_timeout=7)
    id_hash = new_hash()
    await store.create_table()
    for operation in (Insert(id_hash, '{"a": 1}', None, H, None, 100), Load(id_hash, M), Load(id_hash, M)):
        wire_counter.reset()
        await store.execute(operation)
        [statement] = wire_counter.statements
        assert statement.startswith("SET LOCAL statement_timeout = 7000; "), statement
        assert "PREPARE" not in statement and "EXECUTE" not in statement
    assert (await store.load(id_hash, M)).data == {"a": 1}


async def test_behind_pgbouncer_each_statement_carries_its_settings_and_nothing_is_prepared(
    make: Callable[..., Store], make_pgbouncer: Callable[[str], Any], pg_dsn: str
) -> None:
    """PgBouncer drops the startup options: the first connection finds out, and every statement
    then starts with SET LOCAL, in one message (one round trip)."""
    bouncer = make_pgbouncer(pg_dsn)
    with RoundTripCounter(bouncer.dsn) as counter:
        store = make(dsn=counter.dsn, statement_timeout=7)
        id_hash = new_hash()
        await store.create_table()
        for operation in (
            Insert(id_hash, '{"a": 1}', "dora", H, None, 1000),
            Write(id_hash, '{"b": 2}', [], False, None, KEEP_USER, H, None, M, 1000),
            Load(id_hash, M),
        ):
            counter.reset()
            await store.execute(operation)
            [statement] = counter.statements
            assert statement.startswith("SET LOCAL statement_timeout = 7000; "), statement
        assert (await store.load(id_hash, M)).data == {"a": 1, "b": 2}
        assert len(await store.sessions_for_user("dora")) == 1


# -- failures ----------------------------------------------------------------------------------


async def test_a_broken_connection_is_retried_only_for_statements_safe_to_repeat(
    make: Callable[..., Store], pg_dsn: str
) -> None:
    proxy = CuttingProxy(pg_dsn)
    try:
        store = make(dsn=proxy.dsn, max_connections=1)
        id_hash = new_hash()
        await store.insert(id_hash, '{"a": 1}', None, H, None)
        for operation, answer in [
            (Load(id_hash, M), LoadedRow({"a": 1}, False)),
            (Touch(id_hash, H, None), True),
            (Delete(new_hash()), False),
        ]:
            assert proxy.doom() == 1
            assert await store.execute(operation) == answer
        for operation in (
            Write(id_hash, '{"b": 2}', [], False, None, KEEP_USER, H, None, M, None),
            Insert(new_hash(), "{}", None, H, None, None),
        ):
            assert proxy.doom() == 1
            with pytest.raises(
                StoreUnavailable,
                # The driver's own words for what happened, the one trace of it.
                match=r"lost the connection to PostgreSQL \(.*server closed the connection unexpectedly\); "
                "it is retried on the next request",
            ):
                await store.execute(operation)
            assert await store.execute(operation) in (None, WriteResult(True, False, None))
        assert (await store.load(id_hash, M)).data == {"a": 1, "b": 2}
        assert proxy.doom() == 1
        assert await store.sessions_for_user("nobody") == []  # maintenance: safe to repeat too
    finally:
        proxy.close()


async def test_any_other_database_error_is_named_in_a_session_error(
    make: Callable[..., Store], pg_dsn: str, schema: str
) -> None:
    store = make()
    await store.create_table()
    sql(pg_dsn, f"""
        CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'refused by a trigger of the app'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON {store.qualified_name}
            FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse();
    """)  # fmt: skip
    with pytest.raises(SessionError) as refused:
        await store.insert(new_hash(), "{}", None, H, None)
    assert type(refused.value) is SessionError
    assert str(refused.value) == "the session store failed: refused by a trigger of the app"


async def test_a_read_only_server_is_unavailable_naming_target_session_attrs(
    make: Callable[..., Store], pg_dsn: str
) -> None:
    """A server in read-only mode, as a standby is (tests/faults/test_read_only_server.py has a
    real one): the first write is a ReadOnlyServer (503, retried), not a bare 500; a store that
    sets its table up there is refused at once."""
    await make().create_table()
    read_only = psycopg2.extensions.make_dsn(pg_dsn, options="-c default_transaction_read_only=on")
    store = make(dsn=read_only, create_table=False)
    assert await store.load(new_hash(), M) is None  # reads still work
    with pytest.raises(ReadOnlyServer) as refused:
        await store.insert(new_hash(), "{}", None, H, None)
    assert str(refused.value) == (
        "the database server is read-only (cannot execute INSERT in a read-only transaction): the DSN "
        "reached a standby, or a primary being demoted in a failover. List every server in the DSN "
        "and add target_session_attrs=read-write (e.g. host=db1,db2 target_session_attrs=read-write), "
        "so libpq connects only to the one that takes writes; retried on the next request"
    )
    with pytest.raises(ReadOnlyServer, match=r"\(transaction_read_only is on\).*target_session_attrs"):
        await make(dsn=read_only).create_table()


@pytest.mark.parametrize("whose", ["store", "dsn"])
async def test_a_statement_past_statement_timeout_is_store_unavailable(
    make: Callable[..., Store], pg_dsn: str, whose: str
) -> None:
    if whose == "store":
        store, limit = make(statement_timeout=0.3), "statement_timeout=0.3s"
    else:  # the store sets none: the DSN's (or the server's) applies, and the message says so
        dsn = psycopg2.extensions.make_dsn(pg_dsn, options="-c statement_timeout=300")
        store, limit = make(dsn=dsn, statement_timeout=None), "the statement_timeout your DSN or server sets"
    id_hash = new_hash()
    await store.insert(id_hash, '{"a": 1}', None, H, None)
    locker = psycopg2.connect(pg_dsn)
    try:
        with locker.cursor() as cur:
            cur.execute(f"SELECT 1 FROM {store.qualified_name} WHERE id = %s FOR UPDATE", (id_hash,))
        with pytest.raises(StoreUnavailable) as timed_out:
            await store.write(
                id_hash, '{"b": 2}', [], replace=False, new_hash=None, idle=H, absolute=None, touch_interval=M
            )
        assert str(timed_out.value) == (
            f"a session statement ran longer than {limit}; check the database load, "
            "or raise statement_timeout"
        )
        assert (await store.load(id_hash, M)).data == {"a": 1}  # a read waits for no row lock
    finally:
        locker.rollback()
        locker.close()
    assert (
        await store.write(
            id_hash, '{"b": 2}', [], replace=False, new_hash=None, idle=H, absolute=None, touch_interval=M
        )
    ).updated


@pytest.fixture
def role(pg_dsn: str) -> Iterator[str]:
    """A login role with no privileges; dropped, with what was granted to it, after the test."""
    name = f"contract_{uuid.uuid4().hex[:12]}"
    sql(pg_dsn, f'CREATE ROLE "{name}" LOGIN')
    yield name
    sql(pg_dsn, f'DROP OWNED BY "{name}"')
    sql(pg_dsn, f'DROP ROLE "{name}"')


def as_role(dsn: str, role: str) -> str:
    params = psycopg2.extensions.parse_dsn(dsn)
    params["user"] = role
    params.pop("password", None)
    return psycopg2.extensions.make_dsn(**params)


async def test_a_role_without_privileges_is_told_the_grants_it_needs(
    make: Callable[..., Store], pg_dsn: str, schema: str, role: str
) -> None:
    await make().create_table()  # by the owner
    store = make(dsn=as_role(pg_dsn, role), create_table=False)
    with pytest.raises(PrivilegeError) as refused:
        await store.execute(Load(new_hash(), M))
    assert refused.value.role == role
    assert f"--grant {role}" in str(refused.value) and "GRANT SELECT, INSERT, UPDATE, DELETE ON" in str(
        refused.value
    )
    # The statements to run, ready to paste into psql.
    assert str(refused.value).endswith("run yourself: " + "; ".join(grant_statements(schema, TABLE, role)))
    creating = make(dsn=as_role(pg_dsn, role), table="other")
    with pytest.raises(PrivilegeError, match="permission denied"):
        await creating.create_table()
    for statement in grant_statements(schema, TABLE, role):
        sql(pg_dsn, statement)
    id_hash = new_hash()
    assert await store.insert(id_hash, '{"a": 1}', None, H, None) is None
    assert (await store.load(id_hash, M)).data == {"a": 1}
