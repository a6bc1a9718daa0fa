"""Database faults under the ASGI front end, on real frameworks: the server stopped and started
again (under load too), websockets and Quart during an outage, and an exhausted pool. The app
answers 503 with one log line per failed request and recovers by itself."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg2
import pytest
from apps.asgi_apps import quart_app, starlette_app
from apps.asgi_support import http_client, session_records, websocket_call
from db import sql
from psycopg.conninfo import make_conninfo

from pgsession_wsgi.asgi import WEBSOCKET_UNAVAILABLE, AsyncPostgresStore
from pgsession_wsgi.embedded import EmbeddedPostgres
from pgsession_wsgi.quart import EXTENSION_KEY

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

SCHEMA = "faults"
#: Only to stop a hung request from hanging the test run; never what a test checks.
HANG = 60


@pytest.fixture
async def make_store(owned_server: EmbeddedPostgres) -> AsyncIterator[Any]:
    """``make_store(dsn=None, **options)``: an AsyncPostgresStore in the owned server, closed after."""
    stores: list[AsyncPostgresStore] = []

    def make(dsn: str | None = None, **options: Any) -> AsyncPostgresStore:
        options.setdefault("purge_interval", None)
        store = AsyncPostgresStore(dsn or owned_server.dsn, schema=SCHEMA, **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


def stored_n(dsn: str, cookie: str) -> int | None:
    id_hash = hashlib.sha256(cookie.rsplit(".", 1)[0].encode()).digest()
    rows = sql(dsn, f'SELECT data FROM "{SCHEMA}".pgsession WHERE id = %s', (id_hash,))
    return rows[0][0].get("n") if rows else None


async def call(client: httpx.AsyncClient, path: str, cookie: str | None = None) -> httpx.Response:
    headers = {"Cookie": f"session={cookie}"} if cookie else {}
    return await asyncio.wait_for(client.get(path, headers=headers), HANG)


def cookie_of(response: httpx.Response) -> str:
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name == "session":
            return rest.split(";", 1)[0]
    raise AssertionError("no session cookie was set")


# -- the server stops and starts again --------------------------------------------------------


async def test_the_database_stopped_answers_503_with_one_log_line_and_the_app_recovers(
    owned_server: EmbeddedPostgres, make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(connect_timeout=2, pool_timeout=1, statement_timeout=2)
    async with http_client(starlette_app(store)) as client:
        first = await call(client, "/inc")
        cookie = cookie_of(first)
        await asyncio.to_thread(owned_server.stop)
        caplog.set_level(logging.INFO, logger="pgsession_wsgi")
        for path in ("/inc", "/read"):  # the load finds the pooled connection dead, then no server
            caplog.clear()
            response = await call(client, path, cookie)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            [record] = session_records(caplog)
            assert record.levelno == logging.ERROR and "503" in record.getMessage()
        await asyncio.to_thread(owned_server.start)
        again = await call(client, "/inc", cookie)
        assert (again.status_code, again.json()) == (200, 2)  # nothing was lost, nothing half-done
    assert stored_n(owned_server.dsn, cookie) == 2


async def test_an_outage_under_load_answers_only_200_or_503_and_recovers_by_itself(
    owned_server: EmbeddedPostgres, make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Clients keep incrementing their counters while the server stops and starts again."""
    store = make_store(max_connections=3, connect_timeout=2, pool_timeout=1, statement_timeout=2)
    app = starlette_app(store)
    caplog.set_level(logging.INFO, logger="pgsession_wsgi")
    cookies = []
    for _ in range(6):
        async with http_client(app) as setup:
            cookies.append(cookie_of(await call(setup, "/inc")))
    acked = dict.fromkeys(cookies, 1)  # the last counter value a 200 confirmed
    attempted = dict.fromkeys(cookies, 1)  # the highest value a request may have written
    log: list[tuple[float, int]] = []  # (started, status)
    stop = asyncio.Event()

    async def client(cookie: str) -> None:
        async with http_client(app) as http:
            while not stop.is_set():
                attempted[cookie] = acked[cookie] + 1
                started = time.monotonic()
                response = await call(http, "/inc", cookie)
                log.append((started, response.status_code))
                if response.status_code == 200:
                    acked[cookie] = int(response.json())
                await asyncio.sleep(0.005)

    caplog.clear()
    tasks = [asyncio.ensure_future(client(cookie)) for cookie in cookies]
    try:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(owned_server.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(owned_server.start)
        restarted = time.monotonic()
        await asyncio.sleep(0.7)
    finally:
        stop.set()
        await asyncio.gather(*tasks)  # a crash in a client fails the test here

    statuses = [status for _, status in log]
    assert set(statuses) <= {200, 503}
    assert 503 in statuses, "the outage was not noticed"
    after = [status for started, status in log if started >= restarted]
    assert after and set(after) == {200}, "requests after the restart still failed"
    # One log line per 503, none for the 200s.
    assert len(session_records(caplog)) == statuses.count(503)
    for cookie in cookies:
        # A 503 write may or may not have committed; a 200 one must have.
        stored = stored_n(owned_server.dsn, cookie)
        assert stored is not None and acked[cookie] <= stored <= attempted[cookie]


async def test_an_outage_closes_websocket_handshakes_with_1013_until_the_server_is_back(
    owned_server: EmbeddedPostgres, make_store: Any
) -> None:
    store = make_store(connect_timeout=2, pool_timeout=1)
    app = starlette_app(store)
    async with http_client(app) as client:
        cookie = cookie_of(await call(client, "/set?a=1"))
    await asyncio.to_thread(owned_server.stop)
    refused = await asyncio.wait_for(websocket_call(app, "/ws", cookie), HANG)
    assert refused == [
        {"type": "websocket.close", "code": WEBSOCKET_UNAVAILABLE, "reason": "session store unavailable"}
    ]
    await asyncio.to_thread(owned_server.start)
    accepted = await asyncio.wait_for(websocket_call(app, "/ws", cookie), HANG)
    assert accepted[0]["type"] == "websocket.accept"
    assert accepted[1]["type"] == "websocket.send" and accepted[1]["text"] == '{"a":"1"}'


async def test_quart_answers_503_during_an_outage_and_recovers(
    owned_server: EmbeddedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    app = quart_app(owned_server.dsn, SCHEMA)
    store = app.extensions[EXTENSION_KEY].store
    try:
        client = app.test_client()
        assert (await client.get("/inc")).status_code == 200
        await asyncio.to_thread(owned_server.stop)
        caplog.set_level(logging.INFO, logger="pgsession_wsgi")
        response = await asyncio.wait_for(client.get("/inc"), HANG)
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert len(session_records(caplog)) == 1
        await asyncio.to_thread(owned_server.start)
        response = await asyncio.wait_for(client.get("/inc"), HANG)
        assert response.status_code == 200 and (await response.get_json()) == {"answer": 2}
    finally:
        await store.close()


# -- an exhausted pool ------------------------------------------------------------------------


@pytest.fixture
def row_lock(pg_dsn: str, schema: str) -> Iterator[Any]:
    """``lock(cookie)`` holds that session's row FOR UPDATE until the returned ``release()``."""
    conns: list[Any] = []

    def lock(cookie: str) -> Any:
        conn = psycopg2.connect(pg_dsn, application_name="pgsession-test-locker")
        conns.append(conn)
        id_hash = hashlib.sha256(cookie.rsplit(".", 1)[0].encode()).digest()
        with conn.cursor() as cur:
            cur.execute(f'SELECT 1 FROM "{schema}".pgsession WHERE id = %s FOR UPDATE', (id_hash,))
            assert cur.rowcount == 1
        return conn.rollback

    yield lock
    for conn in conns:
        conn.close()


async def test_an_exhausted_pool_answers_503_after_pool_timeout(
    pg_dsn: str, schema: str, row_lock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """max_connections=1, held by a write waiting on a row lock: the next request gets a 503."""
    name = f"pgsession-test-{uuid.uuid4().hex[:12]}"
    store = AsyncPostgresStore(
        make_conninfo(pg_dsn, application_name=name),
        schema=schema,
        max_connections=1,
        pool_timeout=1,
        statement_timeout=60,
        purge_interval=None,
    )
    try:
        async with http_client(starlette_app(store)) as client:
            cookie = cookie_of(await call(client, "/inc"))
            release = row_lock(cookie)
            holder = asyncio.ensure_future(call(client, "/inc", cookie))  # its write waits for the lock
            try:
                waiting = (
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = %s AND wait_event_type = 'Lock'"
                )
                while sql(pg_dsn, waiting, (name,)) != [(1,)]:
                    assert not holder.done(), "the write did not wait for the lock"
                    await asyncio.sleep(0.01)
                caplog.set_level(logging.INFO, logger="pgsession_wsgi")
                response = await call(client, "/read", cookie)
                assert response.status_code == 503
                [record] = session_records(caplog)
                assert "pool_timeout=1" in record.getMessage() and "max_connections=1" in record.getMessage()
            finally:
                release()
            held = await asyncio.wait_for(holder, HANG)
            assert (held.status_code, held.json()) == (200, 2)
            assert (await call(client, "/read", cookie)).json() == {"n": 2}
    finally:
        await store.close()
