"""The ASGI front end in each framework, on a real PostgreSQL: Starlette, FastAPI and Litestar
(their own apps, routing and test clients), one session shared with a Flask app and a plain WSGI
app through one table, and every framework (Quart too) under a real uvicorn server."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from apps.asgi_apps import SECRET, answer_of, fastapi_app, litestar_app, starlette_app
from apps.asgi_support import MakeAsyncStore, dead_dsn, free_port, http_client, session_records, signed_cookie
from db import sql
from flask import Flask, session
from helpers import ClosingClient, wait_for
from litestar.testing import TestClient as LitestarTestClient
from psycopg.conninfo import make_conninfo
from session_app import session_app
from starlette.testclient import TestClient
from webtest import TestApp
from wire import RoundTripCounter

from pgsession_wsgi import PostgresStore
from pgsession_wsgi import SessionMiddleware as WsgiSessionMiddleware
from pgsession_wsgi.asgi import AsyncPostgresStore
from pgsession_wsgi.asgi import SessionMiddleware as AsgiSessionMiddleware
from pgsession_wsgi.flask import EXTENSION_KEY, PgSession

pytestmark = pytest.mark.anyio

TESTS = Path(__file__).resolve().parents[1]
APPS: dict[str, Callable[..., Any]] = {
    "starlette": starlette_app,
    "fastapi": fastapi_app,
    "litestar": litestar_app,
}


def rows(store: AsyncPostgresStore | PostgresStore) -> list[Any]:
    return [data for (data,) in sql(store, "SELECT data FROM {t} ORDER BY created_at")]


def set_cookies(response: Any) -> list[str]:
    return list(response.headers.get_list("set-cookie"))


frameworks = pytest.mark.parametrize("framework", list(APPS))


# -- the same behaviour in every framework ----------------------------------------------------


@frameworks
async def test_round_trip_logout_and_a_streamed_change(
    framework: str, make_async_store: MakeAsyncStore
) -> None:
    store = make_async_store()
    async with http_client(APPS[framework](store)) as client:
        assert (await client.get("/inc")).json() == 1
        assert (await client.get("/inc")).json() == 2
        assert (await client.get("/stream")).text == "first chunk\nsecond chunk\n"
        assert (await client.get("/read")).json() == {"n": 2, "streamed": 1}
        assert rows(store) == [{"n": 2, "streamed": 1}]
        [expired] = set_cookies(await client.get("/logout"))
        assert expired.startswith("session=;") and "Max-Age=0" in expired
        assert rows(store) == []


@frameworks
async def test_statements_on_the_wire(
    framework: str, make_async_store: MakeAsyncStore, wire_counter: RoundTripCounter
) -> None:
    store = make_async_store(dsn=wire_counter.dsn)
    await store.open()

    async def count(client: httpx.AsyncClient, path: str, cookie: str | None = None) -> int:
        wire_counter.reset()
        headers = {"Cookie": f"session={cookie}"} if cookie else {}
        response = await client.get(path, headers=headers)
        assert response.status_code == 200, response.text
        return wire_counter.count

    async with http_client(APPS[framework](store)) as client:
        assert await count(client, "/read") == 0  # no cookie
        assert await count(client, "/set?a=1") == 1  # new
        assert await count(client, "/read") == 1  # read
        assert await count(client, "/inc") == 2  # read + write
        assert await count(client, "/read", signed_cookie("wrong-secret")) == 0  # bad signature
    async with http_client(APPS[framework](store, autoload=False)) as client:
        await client.get("/set?a=1")
        assert await count(client, "/set?b=2") == 1  # blind write
        assert await count(client, "/none") == 0
        assert (await client.get("/load")).json() == {"a": "1", "b": "2"}


@frameworks
async def test_concurrent_requests_changing_different_keys_keep_every_change(
    framework: str, make_async_store: MakeAsyncStore
) -> None:
    store = make_async_store()
    async with http_client(APPS[framework](store)) as client:
        await client.get("/set?base=0")
        answers = await asyncio.gather(*(client.get(f"/set?k{i}={i}") for i in range(30)))
        assert {response.status_code for response in answers} == {200}
        expected = {"base": "0", **{f"k{i}": str(i) for i in range(30)}}
        assert (await client.get("/read")).json() == expected
        assert rows(store) == [expected]


@frameworks
async def test_load_session_with_the_store_down_is_a_503_with_one_log_line(
    framework: str, pg_dsn: str, make_async_store: MakeAsyncStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Starlette and FastAPI pass the exception through the middleware; Litestar answers a 500
    itself, which the middleware turns into the 503."""
    store = make_async_store(dsn=dead_dsn(pg_dsn), connect_timeout=1, pool_timeout=1)
    async with http_client(APPS[framework](store, autoload=False)) as client:
        with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
            response = await client.get("/load", headers={"Cookie": f"session={signed_cookie()}"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert len(session_records(caplog)) == 1


@frameworks
async def test_an_unstorable_value_is_a_500_naming_the_key(
    framework: str, make_async_store: MakeAsyncStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_async_store()
    async with http_client(APPS[framework](store)) as client:
        await client.get("/set?a=1")
        with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
            response = await client.get("/bad")
    assert response.status_code == 500
    [record] = session_records(caplog)
    assert "'sock'" in record.getMessage()
    assert rows(store) == [{"a": "1"}]


# -- Litestar's own session API ---------------------------------------------------------------


def test_litestar_set_session_replaces_everything_and_clear_session_ends_it(pg_dsn: str, schema: str) -> None:
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    with LitestarTestClient(app=litestar_app(store)) as client:
        client.get("/set?a=1&b=2")
        assert client.get("/replace?x=1").status_code == 200
        assert client.get("/read").json() == {"x": "1"}
        assert rows(store) == [{"x": "1"}]
        cleared = client.get("/clear-session")
        [expired] = set_cookies(cleared)
        assert expired.startswith("session=;") and "Max-Age=0" in expired
        assert rows(store) == []
        assert client.get("/read").json() == {}


def test_litestar_websocket_reads_the_session_and_saves_when_asked(pg_dsn: str, schema: str) -> None:
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    with LitestarTestClient(app=litestar_app(store)) as client:
        client.get("/set?a=1")
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_json() == {"a": "1"}
            ws.send_text("b=2")
            assert ws.receive_text() == "saved"
            ws.send_text("bye")
        assert client.get("/read").json() == {"a": "1", "b": "2"}


def test_fastapi_under_its_test_client_with_lifespan_and_websocket(pg_dsn: str, schema: str) -> None:
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    with TestClient(fastapi_app(store)) as client:
        assert sql(store, "SELECT count(*) FROM {t}") == [(0,)]  # the lifespan opened the store
        assert client.get("/inc").json() == 1
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_json() == {"n": 1}
            ws.send_text("seen=yes")
            assert ws.receive_text() == "saved"
            ws.send_text("bye")
        assert client.get("/read").json() == {"n": 1, "seen": "yes"}


# -- one session, a Flask (or plain WSGI) app and a Starlette app ------------------------------


class WsgiSide:
    """The WSGI half of a shared session: the Flask extension or the WSGI middleware."""

    def __init__(self, kind: str, dsn: str, schema: str) -> None:
        self.kind = kind
        if kind == "flask":
            app = Flask("shared")
            app.test_client_class = ClosingClient
            app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=dsn, PGSESSION_SCHEMA=schema)
            PgSession(app)

            @app.route("/set")
            def set_keys() -> str:
                from flask import request

                for key, value in request.args.items():
                    session[key] = value
                return "ok"

            @app.route("/read")
            def read() -> dict[str, Any]:
                return dict(session)

            self.store: PostgresStore = app.extensions[EXTENSION_KEY].store
            self.flask = app.test_client(use_cookies=False)  # each call carries the cookie itself
        else:
            self.store = PostgresStore(dsn, schema=schema, purge_interval=None)
            self.webtest = TestApp(WsgiSessionMiddleware(session_app, self.store, secret_key=SECRET))

    def get(self, path: str, cookie: str | None) -> tuple[Any, str | None]:
        """(JSON answer, the session cookie it set, if any)."""
        if self.kind == "flask":
            headers = {"Cookie": f"session={cookie}"} if cookie else {}
            response = self.flask.get(path, headers=headers)
            body = response.get_json(silent=True)
            cookies = response.headers.getlist("Set-Cookie")
        else:
            self.webtest.reset()
            headers = {"Cookie": f"session={cookie}"} if cookie else {}
            response = self.webtest.get(path, headers=headers)
            body = response.json if response.content_type == "application/json" else None
            cookies = response.headers.getall("Set-Cookie")
        return body, _cookie_value(cookies)

    def close(self) -> None:
        self.store.close()


def _cookie_value(headers: list[str]) -> str | None:
    for header in headers:
        name, _, rest = header.partition("=")
        if name == "session":
            return rest.split(";", 1)[0]
    return None


@pytest.fixture(params=["flask", "wsgi"])
def wsgi_side(request: pytest.FixtureRequest, pg_dsn: str, schema: str) -> Iterator[WsgiSide]:
    side = WsgiSide(request.param, pg_dsn, schema)
    yield side
    side.close()


def test_a_wsgi_app_and_a_starlette_app_share_one_session(
    wsgi_side: WsgiSide, pg_dsn: str, schema: str
) -> None:
    """Same secret, cookie name and table: log in on one, read and write on the other, read back."""
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    asgi = starlette_app(store, permanent=False)  # Flask's default: a browser-session cookie
    with TestClient(asgi) as starlette:
        _, cookie = wsgi_side.get("/set?user=alice", None)  # log in on the WSGI side
        assert cookie
        # The ASGI middleware with the same secret makes and accepts exactly that cookie.
        signer = AsgiSessionMiddleware(asgi, store, secret_key=SECRET).core.signer
        assert signer.sign(cookie.split(".")[0]) == cookie
        starlette.cookies.clear()
        read = starlette.get("/read", headers={"Cookie": f"session={cookie}"})
        assert read.json() == {"user": "alice"}
        assert starlette.get("/set?cart=3", headers={"Cookie": f"session={cookie}"}).status_code == 200
        body, resent = wsgi_side.get("/read", cookie)  # read back on the first
        assert body == {"user": "alice", "cart": "3"}
        assert resent is None  # the same session: no new cookie
        # And the other way round: a session started on the ASGI side, read on the WSGI side.
        starlette.cookies.clear()
        started = starlette.get("/set?from=asgi")
        asgi_cookie = _cookie_value(started.headers.get_list("set-cookie"))
        assert asgi_cookie
        wsgi_side.get("/set?also=wsgi", asgi_cookie)
        assert starlette.get("/read", headers={"Cookie": f"session={asgi_cookie}"}).json() == {
            "from": "asgi",
            "also": "wsgi",
        }
    assert len(rows(wsgi_side.store)) == 2


# -- under a real uvicorn server ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["starlette", "fastapi", "litestar", "quart"])
async def test_under_uvicorn(framework: str, pg_dsn: str, schema: str) -> None:
    """A real server on 127.0.0.1: the pool opens at startup, requests share sessions and keep
    every concurrent change, a cross-origin websocket handshake is refused, and a SIGTERM closes
    every connection the app had."""
    name = f"pgsession-uvicorn-{uuid.uuid4().hex[:12]}"
    port = free_port()
    env = {
        **os.environ,
        "ASGI_APP_FRAMEWORK": framework,
        "ASGI_APP_DSN": make_conninfo(pg_dsn, application_name=name),
        "ASGI_APP_SCHEMA": schema,
    }
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "apps.asgi_apps:from_environment",
        "--app-dir", str(TESTS), "--host", "127.0.0.1", "--port", str(port),
        "--lifespan", "on", "--log-level", "warning",
    ]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=TESTS)

    def connections() -> int:
        [(count,)] = sql(pg_dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,))
        return int(count)

    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _accepts(port) or server.poll() is not None, "uvicorn listens")
        assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
        # Opened at startup, before any request: the table is there.
        assert sql(pg_dsn, f'SELECT count(*) FROM "{schema}".pgsession') == [(0,)]
        async with httpx.AsyncClient(base_url=base) as client:
            assert answer_of(framework, (await client.get("/inc")).json()) == 1
            assert answer_of(framework, (await client.get("/inc")).json()) == 2
            answers = await asyncio.gather(*(client.get(f"/set?k{i}={i}") for i in range(20)))
            assert {response.status_code for response in answers} == {200}
            expected = {"n": 2, **{f"k{i}": str(i) for i in range(20)}}
            assert answer_of(framework, (await client.get("/read")).json()) == expected
        # Another site's page opening the websocket: refused with a 403 by the real server too.
        assert _websocket_handshake(port, "https://evil.example").split()[:2] == ["HTTP/1.1", "403"]
        assert connections() >= 1
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=30)[0].decode()
    # Uvicorn shuts down gracefully, then re-raises the signal: the conventional exit status.
    assert server.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output and "error" not in output.lower(), output
    wait_for(lambda: connections() == 0, "the lifespan shutdown closed every connection")


def _websocket_handshake(port: int, origin: str) -> str:
    """The status line a websocket handshake to /ws from a page of ``origin`` is answered with."""
    import socket

    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {origin}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request.encode())
        answer = conn.makefile("rb")
        status = answer.readline().decode("latin-1").strip()
        # Read to the end: the server is done with this connection before the test stops it (a
        # SIGTERM while it still answers the handshake makes uvicorn's wsproto fail at shutdown).
        answer.read()
        return status


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
