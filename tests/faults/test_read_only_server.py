"""A DSN that lands on a read-only server (a streaming standby of the test's own, no
``target_session_attrs``): both stores say so, naming ``target_session_attrs=read-write``, at
start-up where they set the table up and at the first write otherwise, as a ``ReadOnlyServer``
(a ``StoreUnavailable``: 503 with Retry-After, as a just-demoted server is read-only only for a
while), never PostgreSQL's bare "cannot execute INSERT in a read-only transaction" as a 500.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg2
import pytest
from apps.support import wsgi_call
from cluster import ReplicatedPair, sql, start_pair, wait_until
from psycopg.conninfo import make_conninfo

from pgsession_wsgi import PostgresStore, SessionMiddleware, get_session
from pgsession_wsgi.async_store import AsyncPostgresStore
from pgsession_wsgi.cookies import hash_session_id, new_session_id
from pgsession_wsgi.errors import ReadOnlyServer, StoreUnavailable

pytestmark = pytest.mark.slow

#: Given in the DSN (trust auth ignores it): no message may show it.
PASSWORD = "pw-never-shown-7f3a"
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicatedPair]:
    """A primary and its (asynchronous) standby, with a session table made on the primary."""
    servers = start_pair(synchronous=False)
    try:
        PostgresStore(servers.primary.dsn, schema="ours", purge_interval=None).create_table()
        made = "SELECT to_regclass('ours.pgsession') IS NOT NULL"
        wait_until(lambda: sql(servers.standby, made)[0][0], "the standby has the table")
        yield servers
    finally:
        servers.close()


def standby_dsn(pair: ReplicatedPair) -> str:
    return make_conninfo(pair.standby.dsn, password=PASSWORD)


def assert_names_the_way_out(exc: BaseException) -> None:
    message = str(exc)
    assert isinstance(exc, ReadOnlyServer) and isinstance(exc, StoreUnavailable), repr(exc)
    assert "read-only" in message and "target_session_attrs=read-write" in message, message
    assert PASSWORD not in message


@pytest.fixture
def make_store(pair: ReplicatedPair) -> Iterator[Callable[..., PostgresStore]]:
    stores: list[PostgresStore] = []

    def make(**options: Any) -> PostgresStore:
        options.setdefault("schema", "ours")
        store = PostgresStore(standby_dsn(pair), purge_interval=None, **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def insert_one(store: Any) -> Any:
    return store.insert(hash_session_id(new_session_id()), "{}", None, HOUR, None)


# -- the sync store ---------------------------------------------------------------------------


def test_the_sync_store_setting_its_table_up_on_a_standby_names_target_session_attrs(
    make_store: Callable[..., PostgresStore],
) -> None:
    """create_table=True (the default, what every front end opens at start-up): refused there."""
    with pytest.raises(ReadOnlyServer) as caught:
        make_store().create_table()
    assert_names_the_way_out(caught.value)


def test_the_sync_store_creating_a_missing_table_on_a_standby_names_it_too(
    make_store: Callable[..., PostgresStore],
) -> None:
    with pytest.raises(ReadOnlyServer) as caught:
        insert_one(make_store(schema=f"missing_{uuid.uuid4().hex[:8]}"))
    assert_names_the_way_out(caught.value)


def test_the_sync_store_without_create_table_reads_but_its_first_write_names_it(
    make_store: Callable[..., PostgresStore],
) -> None:
    """create_table=False checks the table only (a standby can answer that): a read works, the
    first write is refused with the message, and so is every one after it."""
    store = make_store(create_table=False)
    assert store.load(hash_session_id(new_session_id()), HOUR) is None
    for _ in range(2):
        with pytest.raises(ReadOnlyServer) as caught:
            insert_one(store)
        assert_names_the_way_out(caught.value)


def test_the_wsgi_middleware_answers_503_with_retry_after_and_one_log_line(
    make_store: Callable[..., PostgresStore], caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        get_session(environ)["n"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = SessionMiddleware(
        app, make_store(create_table=False), secret_key="read-only-secret-long-enough-not-to-be-warned"
    )
    caplog.set_level(logging.WARNING, logger="pgsession_wsgi")
    answer = wsgi_call(middleware, "/")
    assert answer.status == 503
    assert answer.header_all("Retry-After") == ["5"]
    lines = [r.getMessage() for r in caplog.records if r.name == "pgsession_wsgi"]
    assert len(lines) == 1 and "target_session_attrs=read-write" in lines[0], lines
    assert PASSWORD not in lines[0]


def test_listing_the_standby_first_with_target_session_attrs_lands_on_the_primary(
    pair: ReplicatedPair,
) -> None:
    """The way out the message names, working: libpq skips the standby."""
    hosts = f"{pair.standby.socket_dir},{pair.primary.socket_dir}"
    dsn = f"host={hosts} port=5432,5432 user=postgres dbname=postgres target_session_attrs=read-write"
    store = PostgresStore(dsn, schema="ours", purge_interval=None)
    try:
        insert_one(store)
    finally:
        store.close()
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery()")
            assert cur.fetchone() == (False,)
    finally:
        conn.close()


# -- the async store --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_async_store_opening_on_a_standby_names_target_session_attrs(pair: ReplicatedPair) -> None:
    store = AsyncPostgresStore(standby_dsn(pair), schema="ours", purge_interval=None)
    try:
        with pytest.raises(ReadOnlyServer) as caught:
            await store.open()
        assert_names_the_way_out(caught.value)
    finally:
        await store.close()


@pytest.mark.anyio
async def test_the_async_store_without_create_table_reads_but_its_first_write_names_it(
    pair: ReplicatedPair,
) -> None:
    store = AsyncPostgresStore(standby_dsn(pair), schema="ours", purge_interval=None, create_table=False)
    try:
        await store.open()
        assert await store.load(hash_session_id(new_session_id()), HOUR) is None
        with pytest.raises(ReadOnlyServer) as caught:
            await insert_one(store)
        assert_names_the_way_out(caught.value)
    finally:
        await store.close()


@pytest.mark.anyio
async def test_the_async_store_creating_a_missing_table_on_a_standby_names_it_too(
    pair: ReplicatedPair,
) -> None:
    store = AsyncPostgresStore(
        standby_dsn(pair), schema=f"missing_{uuid.uuid4().hex[:8]}", purge_interval=None
    )
    try:
        with pytest.raises(ReadOnlyServer) as caught:
            await store.open()
        assert_names_the_way_out(caught.value)
    finally:
        await store.close()
