"""The app's own database setup (issue 12, point 3): a store on the app's SQLAlchemy engine, its
psycopg2 pool or its connection factory, and the session table as SQLAlchemy metadata for Alembic.

Everything runs on the real test database; the engines use ``postgresql+psycopg2``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import select
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import psycopg2
import psycopg2.extensions
import psycopg2.extras
import psycopg2.pool
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from db import engine_url, sql
from helpers import insert_session, wait_for
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool
from session_app import session_app
from webtest import TestApp
from wire import RoundTripCounter, statement_kind

from pgsession_wsgi import (
    ConfigurationError,
    PostgresStore,
    SessionMiddleware,
    StoreUnavailable,
)
from pgsession_wsgi.async_store import AsyncPostgresStore
from pgsession_wsgi.cookies import hash_session_id
from pgsession_wsgi.sql import EXPECTED_COLUMNS, Statements, index_names
from pgsession_wsgi.sqlalchemy import session_table

SECRET = "app-connections"
DAY = timedelta(days=1)
KINDS = ["engine", "pool", "factory"]
ID = hashlib.sha256(b"an id").digest()
#: A write's arguments after the row's key, data and removed keys: same id, five minutes idle.
PLAIN_WRITE: dict[str, Any] = {
    "replace": False,
    "new_hash": None,
    "idle": timedelta(minutes=5),
    "absolute": None,
    "touch_interval": timedelta(seconds=60),
}


class RecordingPool(psycopg2.pool.ThreadedConnectionPool):
    """The app's psycopg2 pool, noting which connections came back to be closed and how many
    times it refused a connection because all were out."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.closed_on_return: list[psycopg2.extensions.connection] = []
        self.refusals = 0

    def getconn(self, key: Any = None) -> Any:
        try:
            return super().getconn(key)
        except psycopg2.pool.PoolError:
            self.refusals += 1
            raise

    def putconn(self, conn: Any = None, key: Any = None, close: bool = False) -> None:
        if close:
            self.closed_on_return.append(conn)
        super().putconn(conn, key, close)


def invalidated(engine: sa.Engine) -> list[Any]:
    """The DBAPI connections ``engine``'s pool invalidates from now on."""
    seen: list[Any] = []
    sa.event.listen(engine.pool, "invalidate", lambda dbapi_conn, record, exc: seen.append(dbapi_conn))
    return seen


@pytest.fixture
def make_psycopg2_pool() -> Iterator[Callable[..., RecordingPool]]:
    """``make_psycopg2_pool(dsn, minconn, maxconn)``: the app's pool, closed after the test."""
    pools: list[RecordingPool] = []

    def make(dsn: str, minconn: int = 2, maxconn: int = 2) -> RecordingPool:
        pool = RecordingPool(minconn, maxconn, dsn)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        if not pool.closed:
            pool.closeall()


#: What each store ``make_lent`` made borrows from, kept by the test: the engine, the psycopg2
#: pool, or the list of connections the factory made. Nothing of it is read off the store.
LENT_FROM: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


@pytest.fixture
def make_lent(
    schema: str,
    make_engine: Callable[..., sa.Engine],
    make_psycopg2_pool: Callable[..., RecordingPool],
) -> Iterator[Callable[..., PostgresStore]]:
    """``make_lent(kind, dsn, **store_options)``: a store in this test's schema on an engine, a
    psycopg2 pool or a factory pointed at ``dsn``; no purge thread unless asked; closed after."""
    stores: list[PostgresStore] = []

    def make(kind: str, dsn: str, **options: Any) -> PostgresStore:
        options = {"schema": schema, "purge_interval": None, **options}
        source: Any
        if kind == "engine":
            source = make_engine(dsn)
            store = PostgresStore.from_engine(source, **options)
        elif kind == "pool":
            source = make_psycopg2_pool(dsn)
            store = PostgresStore.from_pool(source, **options)
        else:
            source = []

            def factory() -> psycopg2.extensions.connection:
                source.append(psycopg2.connect(dsn))
                return source[-1]

            store = PostgresStore.from_factory(factory, **options)
        LENT_FROM[store] = source
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def client_for(store: PostgresStore) -> TestApp:
    return TestApp(SessionMiddleware(session_app, store, secret_key=SECRET))


def statements_for(client: TestApp, counter: RoundTripCounter, path: str) -> int:
    counter.reset()
    client.get(path)
    return counter.count


def last_statement(pg_dsn: str, conn: psycopg2.extensions.connection) -> str:
    """What the server last ran on ``conn``'s backend (pg_stat_activity), to see on which of
    the app's connections a store's statement went."""
    [(query,)] = sql(pg_dsn, "SELECT query FROM pg_stat_activity WHERE pid = %s", (conn.get_backend_pid(),))
    return str(query)


def engine_of(store: PostgresStore) -> sa.Engine:
    """The engine a store made by ``make_lent("engine", ...)`` borrows from."""
    engine: sa.Engine = LENT_FROM[store]
    return engine


def apps_pool(store: PostgresStore) -> RecordingPool:
    """The app's psycopg2 pool a store made by ``make_lent("pool", ...)`` borrows from."""
    pool: RecordingPool = LENT_FROM[store]
    return pool


def next_lent(store: PostgresStore) -> psycopg2.extensions.connection:
    """The connection the store borrows next, seen the app's way: borrowed from the app's engine
    or pool and given straight back (the next borrower gets it again); for a factory, the last
    connection it made (once the store has used one)."""
    source = LENT_FROM[store]
    if isinstance(source, sa.Engine):
        raw = source.raw_connection()
        conn = raw.dbapi_connection
        raw.close()
    elif isinstance(source, RecordingPool):
        conn = source.getconn()
        source.putconn(conn)
    else:
        conn = source[-1]
    assert isinstance(conn, psycopg2.extensions.connection)
    return conn


# -- the same statements, the same round trips ----------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_round_trips_are_the_same_on_the_apps_connections(
    kind: str, make_lent: Callable[..., PostgresStore], wire_counter: RoundTripCounter
) -> None:
    store = make_lent(kind, wire_counter.dsn)
    store.create_table()
    client = client_for(store)
    client.get("/none")  # connects (SQLAlchemy's first-connect queries) before counting
    assert statements_for(client, wire_counter, "/none") == 0
    assert statements_for(client, wire_counter, "/set?a=1") == 1, wire_counter.statements
    assert statements_for(client, wire_counter, "/read") == 1, wire_counter.statements
    assert statements_for(client, wire_counter, "/set?b=2") == 1, wire_counter.statements
    assert statements_for(client, wire_counter, "/inc") == 2, wire_counter.statements
    assert statements_for(client, wire_counter, "/regen") == 1, wire_counter.statements
    assert client.get("/read").json == {"a": "1", "b": "2", "n": 1}
    assert statements_for(client, wire_counter, "/logout") == 1, wire_counter.statements
    assert not any(s.strip().upper() in ("BEGIN", "COMMIT", "ROLLBACK") for s in wire_counter.statements)
    # The store's settings travel with each statement, in the same message.
    assert all(s.startswith("SET LOCAL statement_timeout = 5000; ") for s in wire_counter.statements)


def test_an_engine_store_serves_requests_and_returns_every_connection(
    make_lent: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    store = make_lent("engine", pg_dsn)
    client = client_for(store)  # the table is created at the first request
    client.get("/set?a=1")
    assert client.get("/read").json == {"a": "1"}
    assert engine_of(store).pool.checkedout() == 0
    assert sql(store, "SELECT count(*) FROM {t}") == [(1,)]


def test_a_factory_whose_connections_have_the_settings_needs_no_set_local(
    make_lent: Callable[..., PostgresStore], wire_counter: RoundTripCounter
) -> None:
    dsn = wire_counter.dsn + " options='-c statement_timeout=5000'"
    store = make_lent("factory", dsn)
    store.create_table()  # the first connection is checked once: its settings are ours
    client = client_for(store)
    assert statements_for(client, wire_counter, "/set?a=1") == 1
    [insert] = wire_counter.statements
    assert statement_kind(insert) == "INSERT" and "SET LOCAL" not in insert
    assert statements_for(client, wire_counter, "/read") == 1
    [load] = wire_counter.statements
    assert statement_kind(load) == "SELECT" and "SET LOCAL" not in load
    assert "EXECUTE pgsession_load_" in load  # prepared, as on the store's own connections


# -- the app's connection comes back as it was lent -----------------------------------------


def test_an_engine_connection_comes_back_with_its_autocommit_and_settings(
    make_lent: Callable[..., PostgresStore], pg_dsn: str, wire_counter: RoundTripCounter
) -> None:
    store = make_lent("engine", wire_counter.dsn, synchronous_commit=False)
    store.create_table()
    wire_counter.reset()
    client_for(store).get("/set?a=1")
    [insert] = wire_counter.statements  # the settings travel with the statement
    assert insert.startswith("SET LOCAL statement_timeout = 5000; SET LOCAL synchronous_commit = off; ")
    assert statement_kind(insert) == "INSERT"
    raw = engine_of(store).raw_connection()  # the pool's one idle connection: the one the store used
    try:
        conn = raw.dbapi_connection
        assert conn is not None
        assert conn.autocommit is False
        assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        with conn.cursor() as cur:  # SET LOCAL ended with the store's statement
            cur.execute("SELECT current_setting('statement_timeout'), current_setting('synchronous_commit')")
            assert cur.fetchone() == sql(pg_dsn, "SELECT '0', current_setting('synchronous_commit')")[0]
        conn.rollback()
    finally:
        raw.close()


def test_a_connection_lent_inside_a_transaction_is_rolled_back_and_returned_as_it_was(
    make_lent: Callable[..., PostgresStore], make_engine: Callable[..., sa.Engine], pg_dsn: str, schema: str
) -> None:
    # No reset on return: the pool hands the next borrower whatever the last one left.
    engine = make_engine(pg_dsn, pool_size=1, max_overflow=0, pool_reset_on_return=None)
    store = PostgresStore.from_engine(engine, schema=schema, purge_interval=None)
    try:
        store.create_table()
        raw = engine.raw_connection()
        lent = raw.dbapi_connection
        with raw.cursor() as cur:
            cur.execute("SELECT 1")  # opens a transaction, left open
        raw.close()
        assert store.load(ID, timedelta(seconds=60)) is None
        raw = engine.raw_connection()
        conn = raw.dbapi_connection
        assert conn is lent  # rolled back and used, not thrown away
        assert conn.autocommit is False
        assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        raw.close()
    finally:
        store.close()


def test_a_pool_connection_in_autocommit_stays_in_autocommit(
    make_lent: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    store = make_lent("pool", pg_dsn)
    store.create_table()
    pool = apps_pool(store)
    in_autocommit, other = pool.getconn(), pool.getconn()
    in_autocommit.autocommit = True
    pool.putconn(other)
    pool.putconn(in_autocommit)  # the last in is the first out: the store borrows this one
    assert store.load(ID, timedelta(seconds=60)) is None
    assert store.qualified_name in last_statement(pg_dsn, in_autocommit)  # it ran there
    assert in_autocommit.autocommit is True
    assert other.autocommit is False
    assert not in_autocommit.closed


def test_the_apps_typecasters_do_not_change_what_the_store_reads(
    make_lent: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    store = make_lent("pool", pg_dsn)
    store.create_table()
    pool = apps_pool(store)
    conns = [pool.getconn(), pool.getconn()]
    for conn in conns:  # the app decodes jsonb and timestamptz its own way on its connections
        psycopg2.extras.register_default_jsonb(conn, loads=lambda text: "the app's decoding")
        psycopg2.extensions.register_type(
            psycopg2.extensions.new_type((1184,), "APP_TIMESTAMPTZ", lambda value, cur: value), conn
        )
        pool.putconn(conn)
    client = client_for(store)
    client.get("/set?user=alice")
    assert client.get("/read").json == {"user": "alice"}
    store.insert(ID, '{"user_id": "1"}', "1", timedelta(minutes=5), None)
    [info] = store.sessions_for_user(1)
    assert isinstance(info.expires_at, datetime)


def test_work_that_leaves_a_transaction_open_gives_the_connection_back_rolled_back(
    make_lent: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    store = make_lent("pool", pg_dsn)
    store.create_table()
    lent = next_lent(store)
    # Seam: no public statement of the store leaves a transaction open; _run runs such work.
    store._run(lambda cur: cur.execute("BEGIN; SELECT 1"), retry=False)
    assert not lent.closed  # rolled back and returned, not dropped
    assert lent.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    assert lent.autocommit is False
    assert store.load(ID, timedelta(seconds=60)) is None
    assert store.qualified_name in last_statement(pg_dsn, lent)  # lent again, and used


def test_a_listening_connection_with_a_notification_is_not_taken_for_dead(
    make_lent: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    store = make_lent("pool", pg_dsn)
    store.create_table()
    pool = apps_pool(store)
    listener = pool.getconn()
    other = pool.getconn()
    listener.autocommit = True
    with listener.cursor() as cur:
        cur.execute("LISTEN pgsession_test")
    pid = listener.get_backend_pid()
    pool.putconn(other)
    pool.putconn(listener)  # the last in is the first out
    sql(pg_dsn, "NOTIFY pgsession_test")
    wait_for(lambda: _has_input(listener), "the notification reaches the listener's socket")
    assert store.load(ID, timedelta(seconds=60)) is None
    assert not listener.closed  # not taken for dead and dropped...
    assert listener.get_backend_pid() == pid
    assert store.qualified_name in last_statement(pg_dsn, listener)  # ...but lent, and used
    assert [n.channel for n in listener.notifies] == ["pgsession_test"]


# -- broken connections are dropped, not returned ---------------------------------------------


@pytest.mark.parametrize("kind", ["engine", "pool"])
def test_a_killed_idle_connection_is_dropped_and_replaced(
    kind: str, make_lent: Callable[..., PostgresStore], pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_lent(kind, pg_dsn)
    store.create_table()
    dropped = invalidated(engine_of(store)) if kind == "engine" else apps_pool(store).closed_on_return
    first = next_lent(store)
    pid = first.get_backend_pid()
    assert sql(pg_dsn, "SELECT pg_terminate_backend(%s, 10000)", (pid,)) == [(True,)]
    wait_for(lambda: first.closed or _has_input(first), "the server's goodbye reaches the client")
    # An insert is never retried: it succeeds only if the dead connection was found before use.
    store.insert(ID, "{}", None, timedelta(minutes=5), None)
    assert dropped == [first]  # invalidated / returned with close=True, never lent again
    assert first.closed
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no failed reset in the pool


def _has_input(conn: Any) -> bool:
    """Whether the connection's socket has something to read (a notification, a goodbye)."""
    return bool(select.select([conn.fileno()], [], [], 0)[0])


@pytest.mark.parametrize("kind", ["engine", "pool"])
def test_a_connection_that_breaks_mid_statement_is_dropped(
    kind: str, make_lent: Callable[..., PostgresStore], pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_lent(kind, pg_dsn, statement_timeout=None)
    store.create_table()
    dropped = invalidated(engine_of(store)) if kind == "engine" else apps_pool(store).closed_on_return
    store.insert(ID, '{"a": 1}', None, timedelta(minutes=5), None)
    locker = psycopg2.connect(pg_dsn)
    try:
        with locker.cursor() as cur:  # the write below waits for this lock
            cur.execute(f"SELECT 1 FROM {store.qualified_name} FOR UPDATE")
        victim: list[int] = []
        errors: list[BaseException] = []

        def write() -> None:
            try:
                store.write(ID, '{"b": 2}', [], **PLAIN_WRITE)
            except BaseException as exc:  # handed to the test's thread
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()

        def waiting() -> bool:
            rows = sql(
                pg_dsn,
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%UPDATE%'",
            )
            victim[:] = [row[0] for row in rows]
            return bool(victim)

        wait_for(waiting, "the store's write waits for the lock")
        sql(pg_dsn, "SELECT pg_terminate_backend(%s, 10000)", (victim[0],))
        writer.join(30)
        assert len(errors) == 1 and isinstance(errors[0], StoreUnavailable)
    finally:
        locker.rollback()
        locker.close()
    row = store.load(ID, timedelta(seconds=60))  # the next statement works (on another connection)
    assert row is not None and row.data == {"a": 1}
    assert [conn.closed for conn in dropped] == [True]
    if kind == "engine":
        assert engine_of(store).pool.checkedout() == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no failed reset in the pool


# -- 503s: an exhausted pool, a database that is down ------------------------------------------


def test_an_exhausted_engine_pool_is_store_unavailable(
    make_engine: Callable[..., sa.Engine], pg_dsn: str, schema: str
) -> None:
    engine = make_engine(pg_dsn, pool_size=1, max_overflow=0, pool_timeout=0.3)
    store = PostgresStore.from_engine(engine, schema=schema, purge_interval=None)
    try:
        store.create_table()
        # The app holds its only connection.
        with engine.connect(), pytest.raises(StoreUnavailable, match="pool_timeout"):
            store.load(ID, timedelta(seconds=60))
        assert store.load(ID, timedelta(seconds=60)) is None
    finally:
        store.close()


def test_an_exhausted_psycopg2_pool_waits_pool_timeout_then_is_store_unavailable(
    make_lent: Callable[..., PostgresStore], pg_dsn: str, schema: str
) -> None:
    store = make_lent("pool", pg_dsn, pool_timeout=0.3)
    store.create_table()
    pool = apps_pool(store)
    held = [pool.getconn(), pool.getconn()]
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="maxconn"):
        store.load(ID, timedelta(seconds=60))
    assert time.monotonic() - started >= 0.3
    # A request waiting gets a connection as soon as the app returns one.
    patient = PostgresStore.from_pool(pool, schema=schema, pool_timeout=60, purge_interval=None)
    answers: list[object] = []

    def load() -> None:
        try:
            answers.append(patient.load(ID, timedelta(seconds=60)))
        except Exception as exc:  # handed to the test's thread
            answers.append(exc)

    waiter = threading.Thread(target=load)
    try:
        refused = pool.refusals
        waiter.start()
        # Refused at least twice: it asked again after a refusal, so it is waiting, not failed.
        wait_for(lambda: pool.refusals >= refused + 2 or answers, "the store asks the pool again")
        assert answers == []
        pool.putconn(held.pop())
        waiter.join(60)
        assert answers == [None]
    finally:
        patient.close()
        for conn in held:
            pool.putconn(conn)


def test_a_store_on_an_apps_psycopg2_pool_waits_five_seconds_by_default(
    make_lent: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    """The documented default pool_timeout, named in the message (psycopg2_driver
    Psycopg2Connections.from_pool mutant 1: 6.0). It waits the 5 s out; only the message is checked."""
    store = make_lent("pool", pg_dsn)
    store.create_table()
    pool = apps_pool(store)
    held = [pool.getconn(), pool.getconn()]
    try:
        with pytest.raises(StoreUnavailable, match=r"within pool_timeout=5\.0s \(its maxconn=2 "):
            store.load(ID, timedelta(seconds=60))
    finally:
        for conn in held:
            pool.putconn(conn)


@pytest.mark.parametrize("kind", KINDS)
def test_a_database_that_is_down_is_store_unavailable(
    kind: str, make_lent: Callable[..., PostgresStore], schema: str
) -> None:
    nowhere = "host=127.0.0.1 port=1 dbname=none user=postgres connect_timeout=2"  # no server there
    if kind == "pool":  # a pool that opens nothing up front, as an app's may while the database is down
        pool = psycopg2.pool.ThreadedConnectionPool(0, 2, nowhere)
        store = PostgresStore.from_pool(pool, schema=schema, create_table=False, purge_interval=None)
    else:
        store = make_lent(kind, nowhere, create_table=False)
    try:
        with pytest.raises(StoreUnavailable, match="connect"):
            store.load(ID, timedelta(seconds=60))
    finally:
        store.close()


# -- the app's pool stays the app's ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["engine", "pool"])
def test_close_leaves_the_apps_pool_open(
    kind: str, make_lent: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    store = make_lent(kind, pg_dsn)
    store.create_table()
    conn = next_lent(store)
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.load(ID, timedelta(seconds=60))
    assert not conn.closed
    if kind == "engine":
        with engine_of(store).connect() as app_conn:
            assert app_conn.execute(sa.text("SELECT 1")).scalar() == 1
    else:
        assert not apps_pool(store).closed


def test_close_closes_a_factorys_connections_which_are_the_stores(
    make_lent: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    store = make_lent("factory", pg_dsn)
    store.create_table()
    conn = next_lent(store)
    store.close()
    assert conn.closed


def test_the_purge_borrows_one_connection_per_batch(
    make_lent: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    store = make_lent("engine", pg_dsn)
    store.create_table()
    sql(
        store,
        "INSERT INTO {t} (id, data, expires_at)"
        " SELECT sha256(i::text::bytea), '{}', now() - interval '1 minute' FROM generate_series(1, 5) i",
    )
    engine = engine_of(store)
    checkouts: list[int] = []
    sa.event.listen(engine.pool, "checkout", lambda *args: checkouts.append(engine.pool.checkedout()))
    assert store.purge_batch_by_batch(batch_size=2) == 5
    assert len(checkouts) == 3  # 2 + 2 + 1: each batch on a connection of its own loan
    assert max(checkouts) == 1 and engine.pool.checkedout() == 0
    with pytest.raises(ConfigurationError, match="opens none"):
        store.connect_unpooled()


@pytest.mark.parametrize("kind", KINDS)
def test_the_background_purge_runs_on_the_apps_connections(
    kind: str, make_lent: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    store = make_lent(kind, pg_dsn, purge_interval=0.1)
    client = client_for(store)
    client.get("/set?a=1")
    sql(pg_dsn, f"UPDATE {store.qualified_name} SET expires_at = now() - interval '1 second'")
    wait_for(lambda: sql(pg_dsn, f"SELECT count(*) FROM {store.qualified_name}") == [(0,)], "the purge")
    assert store.borrows_connections is (kind != "factory")


def test_the_purge_on_an_apps_pool_borrows_and_purges(
    pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """purge.xǁPurgeWorkerǁrun__mutmut_9, _10: the per-batch purge on borrowed connections."""
    pool = psycopg2.pool.ThreadedConnectionPool(1, 2, pg_dsn)
    store = PostgresStore.from_pool(pool, schema=schema, purge_interval=0.05)
    try:
        with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
            store.stats()  # creates the table and starts the worker
            sql(
                pg_dsn,
                f"INSERT INTO {store.qualified_name} (id, data, expires_at)"
                " SELECT sha256(g::text::bytea), '{}'::jsonb, now() - interval '1 hour'"
                " FROM generate_series(1, 4) g",
                None,
            )
            wait_for(lambda: any("purged" in r.getMessage() for r in caplog.records), "a purge")
        assert [r.getMessage() for r in caplog.records if "purged" in r.getMessage()][0] == (
            f"purged 4 expired sessions from {store.qualified_name}"
        )
    finally:
        store.close()
        pool.closeall()


def test_a_store_on_an_apps_pool_opens_no_connection_and_says_how_to_purge(pg_dsn: str, schema: str) -> None:
    """store.xǁPostgresStoreǁconnect_unpooled__mutmut_1 to _3 and _lent__mutmut_35."""
    pool = psycopg2.pool.ThreadedConnectionPool(1, 2, pg_dsn)
    store = PostgresStore.from_pool(pool, schema=schema)
    try:
        with pytest.raises(ConfigurationError) as error:
            store.connect_unpooled()
        assert str(error.value) == (
            "this store borrows every connection from your psycopg2 pool and opens none of its "
            "own; purge with purge_expired() or purge_batch_by_batch()"
        )
    finally:
        store.close()
        pool.closeall()


# -- what the store refuses, and what it knows ---------------------------------------------------


def test_an_engine_on_another_driver_or_database_is_refused(pg_dsn: str) -> None:
    psycopg3 = sa.create_engine(engine_url(pg_dsn).set(drivername="postgresql+psycopg"))
    with pytest.raises(ConfigurationError, match=r"postgresql\+psycopg.*postgresql\+psycopg2://"):
        PostgresStore.from_engine(psycopg3)
    with pytest.raises(ConfigurationError, match="sqlite"):
        PostgresStore.from_engine(sa.create_engine("sqlite://"))
    engine = sa.create_engine(engine_url(pg_dsn))
    try:
        with engine.connect() as conn, pytest.raises(ConfigurationError, match="not Connection"):
            PostgresStore.from_engine(conn)  # type: ignore[arg-type]
    finally:
        engine.dispose()
    with pytest.raises(ConfigurationError, match="psycopg2 pool"):
        PostgresStore.from_pool(engine)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="callable"):
        PostgresStore.from_factory("postgresql://")  # type: ignore[arg-type]


def test_a_factory_returning_something_else_is_a_configuration_error(schema: str) -> None:
    store = PostgresStore.from_factory(lambda: "a connection?", schema=schema, purge_interval=None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigurationError, match="not a psycopg2 connection"):
        store.load(ID, timedelta(seconds=60))


def test_the_dsn_is_the_engines_url_and_unknown_for_a_pool_or_factory(
    make_lent: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    dsn = make_lent("engine", pg_dsn).dsn
    assert psycopg2.extensions.parse_dsn(dsn) == psycopg2.extensions.parse_dsn(pg_dsn)
    assert sql(dsn, "SELECT 1") == [(1,)]
    nameless = PostgresStore.from_engine(sa.create_engine("postgresql+psycopg2://", creator=lambda: None))
    with pytest.raises(ConfigurationError, match="creator"):
        _ = nameless.dsn
    for kind in ("pool", "factory"):
        with pytest.raises(ConfigurationError, match="knows no DSN"):
            _ = make_lent(kind, pg_dsn).dsn


def test_statement_timeout_applies_to_the_stores_statements_and_none_leaves_the_apps(
    make_engine: Callable[..., sa.Engine], pg_dsn: str, schema: str
) -> None:
    # The app's connections run with a 1 s limit of their own.
    engine = make_engine(pg_dsn, connect_args={"options": "-c statement_timeout=1000"})
    ours = PostgresStore.from_engine(engine, schema=schema, purge_interval=None, statement_timeout=2)
    theirs = PostgresStore.from_engine(engine, schema=schema, purge_interval=None, statement_timeout=None)
    try:
        ours.create_table()
        ours.insert(ID, '{"a": 1}', None, timedelta(minutes=5), None)
        locker = psycopg2.connect(pg_dsn)
        try:
            with locker.cursor() as cur:
                cur.execute(f"SELECT 1 FROM {ours.qualified_name} FOR UPDATE")
            for store, limit, seconds in (
                (ours, "statement_timeout=2s", 2),
                (theirs, "your DSN or server", 1),
            ):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match=limit):
                    store.delete(ID)
                assert time.monotonic() - started >= seconds
        finally:
            locker.rollback()
            locker.close()
    finally:
        ours.close()
        theirs.close()


def blocked_statement(
    dsn: str, store: PostgresStore, call: Any, *, until_it_gives_up: bool = False
) -> tuple[str, Any]:
    """The text PostgreSQL shows for ``call()``'s statement while a lock holds it, and its answer.

    ``dsn`` is the database's (a store on an app's pool knows none). The lock is released once
    the text is seen, or, with ``until_it_gives_up``, once the call has ended by itself (a
    statement timeout).
    """
    locker = psycopg2.connect(dsn)
    outcome: list[Any] = []
    texts: list[str] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # the answer under test may be an error
            outcome.append(exc)

    def seen() -> bool:
        waiting = (
            "SELECT a.query FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.relation = to_regclass(%s) AND NOT l.granted"
        )
        if not texts:
            texts.extend(row[0] for row in sql(dsn, waiting, (store.qualified_name,)))
        return bool(texts) and (bool(outcome) or not until_it_gives_up)

    try:
        with locker.cursor() as cur:
            cur.execute(f"LOCK TABLE {store.qualified_name} IN ACCESS EXCLUSIVE MODE")
            thread = threading.Thread(target=run)
            thread.start()
            wait_for(seen, "the statement to wait on the lock")
    finally:
        locker.rollback()
        locker.close()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return texts[0], outcome[0]


def persistence(dsn: str, store: PostgresStore) -> list[tuple[Any, ...]]:
    """The table's persistence: ``p`` logged, ``u`` unlogged."""
    return sql(
        dsn, "SELECT relpersistence FROM pg_class WHERE oid = to_regclass(%s)", (store.qualified_name,)
    )


def test_a_store_on_an_apps_pool_sets_its_settings_on_each_statement(pg_dsn: str, schema: str) -> None:
    """store.xǁPostgresStoreǁfrom_pool__mutmut_2, _3, _5, _9, _19, _20, _23, _27, _28, _29, _30,
    _31 and _lent__mutmut_5, _6, _12, _13, _16, _20 to _24, _28.

    No startup option reaches a connection the app made: the statement timeout and
    synchronous_commit are set with SET LOCAL before each statement, and the timeout's error
    names the value to raise.
    """
    pool = psycopg2.pool.ThreadedConnectionPool(1, 4, pg_dsn)
    stores: list[PostgresStore] = []
    try:
        with pytest.raises(ConfigurationError) as error:
            PostgresStore.from_pool(pool, schema=schema, purge_interval=0)
        assert str(error.value) == "purge_interval must be a positive number of seconds, or None"

        default = PostgresStore.from_pool(pool, schema=schema, purge_interval=None)
        stores.append(default)
        assert (default.statement_timeout, default.unlogged, default.purge_interval) == (5.0, False, None)
        assert default.borrows_connections
        default.stats()  # creates the table
        assert persistence(pg_dsn, default) == [("p",)]
        text, answer = blocked_statement(pg_dsn, default, default.stats)
        assert text.startswith("SET LOCAL statement_timeout = 5000; SELECT")
        assert "synchronous_commit" not in text
        assert answer["live"] == 0

        quick = PostgresStore.from_pool(
            pool, "other", schema=schema, statement_timeout=0.2, synchronous_commit=False, unlogged=True
        )
        stores.append(quick)
        quick.stats()
        assert persistence(pg_dsn, quick) == [("u",)]
        text, answer = blocked_statement(pg_dsn, quick, quick.stats, until_it_gives_up=True)
        assert text.startswith("SET LOCAL statement_timeout = 200; SET LOCAL synchronous_commit = off; ")
        assert isinstance(answer, StoreUnavailable)
        assert str(answer) == (
            "a session statement ran longer than statement_timeout=0.2s; check the database load, "
            "or raise statement_timeout"
        )
    finally:
        for store in stores:
            store.close()
        pool.closeall()


def test_a_store_on_a_connection_factory_checks_its_options_and_sets_its_settings(
    pg_dsn: str, schema: str
) -> None:
    """store.xǁPostgresStoreǁfrom_factory__mutmut_2, _4, _5, _7 to _21, _23 to _37, _39 to _46, _48 to _56,
    _58 to _60: the refusals, the defaults, the settings
    reaching each statement (the factory's connections lack them), the table's persistence."""
    with pytest.raises(ConfigurationError) as error:
        PostgresStore.from_factory("not callable")  # type: ignore[arg-type]
    assert str(error.value) == (
        "from_factory() takes a callable returning a new psycopg2 connection, "
        "e.g. lambda: psycopg2.connect(dsn)"
    )
    with pytest.raises(ConfigurationError) as error:
        PostgresStore.from_factory(lambda: psycopg2.connect(pg_dsn), schema=schema, purge_interval=0)
    assert str(error.value) == "purge_interval must be a positive number of seconds, or None"
    with pytest.raises(ConfigurationError) as error:
        PostgresStore.from_factory(lambda: psycopg2.connect(pg_dsn), schema=schema, max_connections=0)
    assert str(error.value) == "max_connections must be at least 1"

    stores: list[PostgresStore] = []
    try:
        default = PostgresStore.from_factory(
            lambda: psycopg2.connect(pg_dsn), schema=schema, purge_interval=None
        )
        stores.append(default)
        assert (default.statement_timeout, default.unlogged, default.purge_interval) == (5.0, False, None)
        assert not default.borrows_connections
        with pytest.raises(ConfigurationError) as error:
            default.dsn  # noqa: B018
        assert str(error.value) == (
            "this store takes its connections from your connection factory and knows no DSN; use the DSN "
            "your app opens them with (e.g. pgsession-wsgi --dsn ...)"
        )
        insert_session(default, "one")
        assert default.load(hash_session_id("one"), DAY) is not None
        assert persistence(pg_dsn, default) == [("p",)]

        quick = PostgresStore.from_factory(
            lambda: psycopg2.connect(pg_dsn),
            "other",
            schema=schema,
            statement_timeout=0.2,
            synchronous_commit=False,
            unlogged=True,
            purge_interval=None,
        )
        stores.append(quick)
        quick.stats()
        assert persistence(pg_dsn, quick) == [("u",)]
        _, answer = blocked_statement(pg_dsn, quick, quick.stats, until_it_gives_up=True)
        assert isinstance(answer, StoreUnavailable)
        assert str(answer) == (
            "a session statement ran longer than statement_timeout=0.2s; check the database load, "
            "or raise statement_timeout"
        )
    finally:
        for store in stores:
            store.close()


def test_a_store_on_an_engine_checks_its_options_and_sets_its_settings(
    pg_dsn: str, schema: str, make_engine: Any
) -> None:
    """store.xǁPostgresStoreǁfrom_engine__mutmut_1 to _12, _16 to _21, _23 to _32: the refusal,
    the defaults, the settings on each statement (SET LOCAL), the table's persistence."""
    engine = make_engine(pg_dsn)
    with pytest.raises(ConfigurationError) as error:
        PostgresStore.from_engine(engine, schema=schema, purge_interval=0)
    assert str(error.value) == "purge_interval must be a positive number of seconds, or None"
    stores: list[PostgresStore] = []
    try:
        default = PostgresStore.from_engine(engine, schema=schema, purge_interval=None)
        stores.append(default)
        assert (default.statement_timeout, default.unlogged, default.purge_interval) == (5.0, False, None)
        assert default.borrows_connections
        default.stats()
        assert persistence(pg_dsn, default) == [("p",)]
        text, answer = blocked_statement(pg_dsn, default, default.stats)
        assert text.startswith("SET LOCAL statement_timeout = 5000; SELECT")
        assert answer["live"] == 0

        quick = PostgresStore.from_engine(
            engine,
            "other",
            schema=schema,
            statement_timeout=0.2,
            synchronous_commit=False,
            unlogged=True,
            purge_interval=None,
        )
        stores.append(quick)
        quick.stats()
        assert persistence(pg_dsn, quick) == [("u",)]
        text, answer = blocked_statement(pg_dsn, quick, quick.stats, until_it_gives_up=True)
        assert text.startswith("SET LOCAL statement_timeout = 200; SET LOCAL synchronous_commit = off; ")
        assert isinstance(answer, StoreUnavailable)
        assert "statement_timeout=0.2s" in str(answer)
    finally:
        for store in stores:
            store.close()


# -- the table as SQLAlchemy metadata ---------------------------------------------------------


def catalog(dsn: str, schema: str, table: str) -> dict[str, Any]:
    """What PostgreSQL holds about a table: columns (type, not null, default), indexes (their
    definitions), constraints and storage parameters; the schema name left out."""
    qualified = f'"{schema}"."{table}"'
    columns = sql(
        dsn,
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull, pg_get_expr(d.adbin, d.adrelid)"
        " FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (qualified,),
    )
    indexes = sql(
        dsn, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1", (schema,)
    )
    constraints = sql(
        dsn,
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass(%s)",
        (qualified,),
    )
    options = sql(dsn, "SELECT reloptions FROM pg_class WHERE oid = to_regclass(%s)", (qualified,))
    return {
        "columns": columns,
        "indexes": [
            (name, text.replace(f'"{schema}"', "S").replace(f"{schema}.", "S.")) for name, text in indexes
        ],
        "constraints": constraints,
        "options": options,
    }


def test_the_metadata_table_is_the_table_the_store_creates(
    make_store: Callable[..., PostgresStore], make_engine: Callable[..., sa.Engine], pg_dsn: str, schema: str
) -> None:
    make_store().create_table()
    other = f"{schema}_sa"
    sql(pg_dsn, f'CREATE SCHEMA "{other}"')
    try:
        # A naming convention on the app's metadata must not rename the store's indexes.
        metadata = sa.MetaData(naming_convention={"ix": "ix_%(column_0_label)s", "pk": "pk_%(table_name)s"})
        table = session_table(metadata, schema=other)
        metadata.create_all(make_engine(pg_dsn))
        assert catalog(pg_dsn, other, "pgsession") == catalog(pg_dsn, schema, "pgsession")
        assert {column.name for column in table.columns} == set(EXPECTED_COLUMNS)
        assert {index.name for index in table.indexes} == set(index_names("pgsession"))
    finally:
        sql(pg_dsn, f'DROP SCHEMA "{other}" CASCADE')


def test_a_table_created_from_the_metadata_serves_a_store_that_does_not_create_it(
    make_engine: Callable[..., sa.Engine], pg_dsn: str, schema: str
) -> None:
    engine = make_engine(pg_dsn)
    metadata = sa.MetaData()
    session_table(metadata, "sessions", schema=schema)
    metadata.create_all(engine)
    store = PostgresStore.from_engine(engine, "sessions", schema, create_table=False, purge_interval=None)
    try:
        client = client_for(store)
        client.get("/set?a=1")
        assert client.get("/read").json == {"a": "1"}
        assert store.stats()["live"] == 1
    finally:
        store.close()


@pytest.mark.parametrize("unlogged", [True, False])
def test_the_metadata_table_is_unlogged_when_asked_and_only_the_matching_store_takes_it(
    unlogged: bool, make_engine: Callable[..., sa.Engine], pg_dsn: str, schema: str
) -> None:
    engine = make_engine(pg_dsn)
    metadata = sa.MetaData()
    session_table(metadata, "sessions", schema=schema, unlogged=unlogged)
    metadata.create_all(engine)
    persistence = sql(
        pg_dsn, "SELECT relpersistence FROM pg_class WHERE oid = to_regclass(%s)", (f'"{schema}"."sessions"',)
    )
    assert persistence == [("u" if unlogged else "p",)]
    store = PostgresStore.from_engine(
        engine, "sessions", schema, create_table=False, purge_interval=None, unlogged=unlogged
    )
    try:
        client = client_for(store)
        client.get("/set?a=1")
        assert client.get("/read").json == {"a": "1"}
    finally:
        store.close()
    other = PostgresStore.from_engine(
        engine, "sessions", schema, create_table=False, purge_interval=None, unlogged=not unlogged
    )
    try:
        with pytest.raises(ConfigurationError, match="init --unlogged" if not unlogged else "init --logged"):
            other.stats()
    finally:
        other.close()


def _alembic_diff(engine: sa.Engine, metadata: sa.MetaData, schema: str) -> list[Any]:
    def in_this_schema(name: str | None, kind: str, parents: Any) -> bool:
        return kind != "schema" or name == schema

    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_schemas": True,
                "include_name": in_this_schema,
                "compare_type": True,
                "compare_server_default": True,
            },
        )
        return list(compare_metadata(context, metadata))


@pytest.mark.parametrize("table", ["pgsession", "a much longer table name for sessions, quoted!"])
def test_alembic_finds_no_difference_with_a_table_the_store_created(
    table: str,
    make_store: Callable[..., PostgresStore],
    make_engine: Callable[..., sa.Engine],
    pg_dsn: str,
    schema: str,
) -> None:
    make_store(table=table).create_table()
    metadata = sa.MetaData()
    session_table(metadata, table, schema=schema)
    assert _alembic_diff(make_engine(pg_dsn), metadata, schema) == []


def test_alembic_adds_what_a_table_from_an_older_version_lacks(
    make_engine: Callable[..., sa.Engine], pg_dsn: str, schema: str
) -> None:
    # 0.1.0's table: the DDL without the per-session lifetime columns.
    _, table_sql, *index_sql = Statements(schema, "pgsession", "").create
    for column in ("idle_timeout", "ends_at"):
        table_sql = "\n".join(line for line in table_sql.splitlines() if not line.strip().startswith(column))
    table_sql = table_sql.replace("NOT NULL,\n)", "NOT NULL\n)")
    for statement in (table_sql, *index_sql):
        sql(pg_dsn, statement)
    metadata = sa.MetaData()
    session_table(metadata, schema=schema)
    diff = _alembic_diff(make_engine(pg_dsn), metadata, schema)
    assert sorted((kind, column.name) for kind, _, _, column in diff) == [
        ("add_column", "ends_at"),
        ("add_column", "idle_timeout"),
    ]


def test_the_metadata_refuses_names_postgresql_cannot_hold() -> None:
    with pytest.raises(ConfigurationError, match="63-byte"):
        session_table(sa.MetaData(), "x" * 64)
    with pytest.raises(ConfigurationError, match="schema"):
        session_table(sa.MetaData(), schema="")


# -- the async store on the app's psycopg_pool ----------------------------------------------------


@pytest.fixture
async def make_async_lent(schema: str) -> AsyncIterator[Callable[..., Awaitable[AsyncPostgresStore]]]:
    """``await make_async_lent(dsn, pool_options={}, **store_options)``: the app's open
    ``AsyncConnectionPool`` and an AsyncPostgresStore on it; both closed after the test."""
    made: list[tuple[AsyncPostgresStore, AsyncConnectionPool[Any]]] = []

    async def make(
        dsn: str, pool_options: dict[str, Any] | None = None, **options: Any
    ) -> AsyncPostgresStore:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn, **{"min_size": 1, "max_size": 2, "open": False, **(pool_options or {})}
        )
        await pool.open(wait=True)
        store = AsyncPostgresStore.from_pool(pool, **{"schema": schema, "purge_interval": None, **options})
        LENT_FROM[store] = pool
        made.append((store, pool))
        return store

    yield make
    for store, pool in made:
        await store.close()
        await pool.close()


def lent_pool(store: AsyncPostgresStore) -> AsyncConnectionPool[Any]:
    """The app's pool a store made by ``make_async_lent`` borrows from."""
    pool: AsyncConnectionPool[Any] = LENT_FROM[store]
    return pool


async def test_the_async_store_on_the_apps_pool_costs_the_same_round_trips(
    make_async_lent: Callable[..., Awaitable[AsyncPostgresStore]], wire_counter: RoundTripCounter
) -> None:
    store = await make_async_lent(wire_counter.dsn)
    await store.create_table()
    wire_counter.reset()
    await store.insert(ID, '{"a": 1}', None, timedelta(minutes=5), None)
    assert (await store.load(ID, timedelta(seconds=60))).data == {"a": 1}  # type: ignore[union-attr]
    result = await store.write(ID, '{"b": 2}', [], **PLAIN_WRITE)
    assert result.updated
    assert await store.delete(ID)
    assert wire_counter.count == 4, wire_counter.statements
    assert all(s.startswith("SET LOCAL statement_timeout = 5000; ") for s in wire_counter.statements)
    # Each connection went back as it was lent: idle, not in autocommit.
    pool = lent_pool(store)
    async with pool.connection() as conn:
        assert conn.autocommit is False
        assert (await (await conn.execute("SHOW statement_timeout")).fetchone()) == ("0",)


async def test_the_apps_json_loader_does_not_change_what_the_async_store_reads(
    make_async_lent: Callable[..., Awaitable[AsyncPostgresStore]], pg_dsn: str
) -> None:
    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        set_json_loads(lambda data: "the app's decoding", conn)

    store = await make_async_lent(pg_dsn, {"configure": configure})
    await store.create_table()
    await store.insert(ID, '{"user_id": "1"}', "1", timedelta(minutes=5), None)
    assert (await store.load(ID, timedelta(seconds=60))).data == {"user_id": "1"}  # type: ignore[union-attr]
    [info] = await store.sessions_for_user(1)
    assert isinstance(info.expires_at, datetime)


async def test_a_killed_idle_connection_of_the_apps_async_pool_is_dropped(
    make_async_lent: Callable[..., Awaitable[AsyncPostgresStore]], pg_dsn: str
) -> None:
    store = await make_async_lent(pg_dsn, {"min_size": 1, "max_size": 1})
    await store.create_table()
    pool = lent_pool(store)
    async with pool.connection() as conn:
        pid = conn.info.backend_pid
    assert sql(pg_dsn, "SELECT pg_terminate_backend(%s, 10000)", (pid,)) == [(True,)]
    deadline = time.monotonic() + 30  # only stops a hang
    while not (conn.closed or _has_input(conn)):  # until the server's goodbye reaches the socket
        assert time.monotonic() < deadline, "the server's goodbye never reached the client"
        await asyncio.sleep(0.01)
    await store.insert(ID, "{}", None, timedelta(minutes=5), None)  # never retried: must not fail
    async with pool.connection() as conn:
        assert conn.info.backend_pid != pid


async def test_an_exhausted_async_pool_is_store_unavailable_and_close_leaves_it_open(
    make_async_lent: Callable[..., Awaitable[AsyncPostgresStore]], pg_dsn: str
) -> None:
    pool_options = {"min_size": 1, "max_size": 1, "timeout": 2.0}
    store = await make_async_lent(pg_dsn, pool_options, pool_timeout=0.3)
    await store.create_table()
    # The pool's size, and the store's wait: its own pool_timeout, else the pool's timeout.
    assert (store.max_connections, store.pool_timeout) == (1, 0.3)
    assert (await make_async_lent(pg_dsn, pool_options)).pool_timeout == 2.0
    pool = lent_pool(store)
    async with pool.connection():
        with pytest.raises(StoreUnavailable) as error:
            await store.load(ID, timedelta(seconds=60))
    assert str(error.value) == (
        "no connection of your psycopg_pool pool became free within 0.3s; raise its max_size, "
        "look for slow queries, or check that PostgreSQL is running"
    )
    assert await store.load(ID, timedelta(seconds=60)) is None
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.load(ID, timedelta(seconds=60))
    async with pool.connection() as conn:  # the app's pool still serves the app
        assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)
    await store.open()  # an app's next lifespan: the store borrows from the same pool again
    assert await store.load(ID, timedelta(seconds=60)) is None


async def test_the_async_purge_borrows_the_apps_pool_per_batch(
    make_async_lent: Callable[..., Awaitable[AsyncPostgresStore]], pg_dsn: str
) -> None:
    store = await make_async_lent(pg_dsn, purge_interval=0.1)
    await store.open()
    assert store.borrows_connections
    with pytest.raises(ConfigurationError, match="opens none"):
        await store.connect_unpooled()
    with pytest.raises(ConfigurationError, match="knows no DSN"):
        _ = store.dsn
    sql(
        pg_dsn,
        f"INSERT INTO {store.qualified_name} (id, data, expires_at)"
        " SELECT sha256(i::text::bytea), '{}', now() - interval '1 minute' FROM generate_series(1, 5) i",
    )
    for _ in range(300):  # the background purge, on the app's pool
        if sql(pg_dsn, f"SELECT count(*) FROM {store.qualified_name}") == [(0,)]:
            break
        await asyncio.sleep(0.05)
    assert sql(pg_dsn, f"SELECT count(*) FROM {store.qualified_name}") == [(0,)]
    sql(
        pg_dsn,
        f"INSERT INTO {store.qualified_name} (id, data, expires_at)"
        " SELECT sha256(i::text::bytea), '{}', now() - interval '1 minute' FROM generate_series(1, 5) i",
    )
    await store.close()  # its background purge would take some of these rows first
    quiet = await make_async_lent(pg_dsn)  # no background purge
    assert await quiet.purge_batch_by_batch(2) == 5


def test_the_async_store_refuses_what_is_not_a_psycopg_pool() -> None:
    with pytest.raises(ConfigurationError, match="AsyncConnectionPool"):
        AsyncPostgresStore.from_pool(psycopg2.pool.ThreadedConnectionPool(0, 1, ""))  # type: ignore[arg-type]
