"""The ASGI SessionMiddleware on a real PostgreSQL, through Starlette (httpx's ASGI transport and
Starlette's TestClient): loading, saving, cookies, statements on the wire, lifetimes, websockets,
the lifespan and the errors. The other frameworks are in test_asgi_frameworks.py."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from apps.asgi_apps import SECRET, starlette_app
from apps.asgi_support import (
    MakeAsyncStore,
    dead_dsn,
    http_client,
    lifespan,
    session_records,
    signed_cookie,
    websocket_call,
)
from db import sql
from helpers import wait_for
from psycopg.conninfo import make_conninfo
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from wire import RoundTripCounter, statement_kind

import pgsession_wsgi.asgi
import pgsession_wsgi.async_store
from pgsession_wsgi import ConfigurationError, OutsideRequestError, PostgresStore, Session
from pgsession_wsgi._drivers.async_purge import TASK_NAME
from pgsession_wsgi.asgi import (
    WEBSOCKET_UNAVAILABLE,
    AsyncPostgresStore,
    SessionMiddleware,
    SessionNotLoaded,
    load_session,
    save_session,
)
from pgsession_wsgi.cookies import HmacIdSigner
from pgsession_wsgi.errors import SessionError, StoreUnavailable

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(make_async_store: MakeAsyncStore) -> AsyncPostgresStore:
    store = make_async_store()
    await store.open()
    return store


@pytest.fixture
async def client(store: AsyncPostgresStore) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(starlette_app(store)) as client:
        yield client


def rows(store: AsyncPostgresStore) -> list[tuple[Any, ...]]:
    return sql(store, "SELECT id, data, user_id FROM {t} ORDER BY created_at")


def id_of(client: httpx.AsyncClient, name: str = "session") -> str:
    return str(client.cookies[name]).split(".")[0]


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


# -- the API ----------------------------------------------------------------------------------


def test_the_public_names_import_from_pgsession_wsgi_asgi() -> None:
    """asgi.__getattr__ mutants 1-4 (the store looked up by another name)."""
    assert AsyncPostgresStore is pgsession_wsgi.async_store.AsyncPostgresStore
    assert callable(load_session) and callable(save_session)
    # Read now, not at this file's import: the store is looked up (and psycopg 3 imported) on use.
    assert pgsession_wsgi.asgi.AsyncPostgresStore is pgsession_wsgi.async_store.AsyncPostgresStore


def test_a_name_the_module_lacks_is_an_attribute_error_naming_it() -> None:
    """As for any module: ``hasattr()`` finds nothing, and the error names what was asked.
    asgi.__getattr__ mutant 5."""
    with pytest.raises(AttributeError) as missing:
        pgsession_wsgi.asgi.AsyncStoreX  # noqa: B018
    assert str(missing.value) == "module 'pgsession_wsgi.asgi' has no attribute 'AsyncStoreX'"
    assert not hasattr(pgsession_wsgi.asgi, "asyncpostgresstore")


def test_a_sync_store_is_a_configuration_error(make_store: Any) -> None:
    sync_store: PostgresStore = make_store()
    with pytest.raises(ConfigurationError, match="AsyncPostgresStore"):
        SessionMiddleware(starlette_app, sync_store, secret_key=SECRET)  # type: ignore[arg-type]


async def test_a_missing_secret_is_a_configuration_error(make_async_store: MakeAsyncStore) -> None:
    with pytest.raises(ConfigurationError, match="secret_key"):
        SessionMiddleware(starlette_app, make_async_store())  # type: ignore[arg-type]


async def test_request_session_is_the_scope_session_and_is_stored(store: AsyncPostgresStore) -> None:
    async def identity(request: Request) -> JSONResponse:
        request.session["k"] = "v"
        same = request.session is request.scope["session"]
        return JSONResponse({"same": same, "ours": isinstance(request.session, Session)})

    app = Starlette(routes=[Route("/", identity)])
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET)
    async with http_client(app) as client:
        assert (await client.get("/")).json() == {"same": True, "ours": True}
        [(id_hash, data, _)] = rows(store)
        assert data == {"k": "v"}
        assert bytes(id_hash) == hashlib.sha256(id_of(client).encode()).digest()  # the hash, never the id


async def test_round_trip_vary_and_no_cookie_for_an_untouched_session(
    client: httpx.AsyncClient, store: AsyncPostgresStore
) -> None:
    untouched = await client.get("/none")
    assert set_cookies(untouched) == [] and "vary" not in untouched.headers
    assert rows(store) == []
    first = await client.get("/inc")
    assert first.json() == 1 and first.headers["vary"] == "Cookie"
    # A browser-session cookie by default, as in Flask.
    assert "Max-Age=" not in set_cookies(first)[0] and "HttpOnly" in set_cookies(first)[0]
    second = await client.get("/inc")
    assert second.json() == 2 and set_cookies(second) == []
    assert (await client.get("/read")).json() == {"n": 2}


async def test_a_cookie_signed_with_another_key_gets_a_fresh_session(
    client: httpx.AsyncClient, store: AsyncPostgresStore
) -> None:
    await client.get("/set?a=1")
    forged = HmacIdSigner("another-secret").sign(id_of(client))
    response = await client.get("/read", headers={"Cookie": f"session={forged}"})
    assert response.json() == {}


# -- statements on the wire -------------------------------------------------------------------


@pytest.fixture
async def counted(
    make_async_store: MakeAsyncStore, wire_counter: RoundTripCounter
) -> AsyncIterator[tuple[Any, RoundTripCounter]]:
    """``(make_client(**options), counter)``: clients whose store talks through the counting proxy."""
    store = make_async_store(dsn=wire_counter.dsn)
    await store.open()  # the settings check and the DDL are not a request's statements
    clients: list[httpx.AsyncClient] = []

    def make(**options: Any) -> httpx.AsyncClient:
        client = http_client(starlette_app(store, **options))
        clients.append(client)
        return client

    yield make, wire_counter
    for client in clients:
        await client.aclose()


async def statements(client: httpx.AsyncClient, counter: RoundTripCounter, path: str, **kwargs: Any) -> int:
    counter.reset()
    response = await client.get(path, **kwargs)
    assert response.status_code == 200, response.text
    return counter.count


async def test_statements_per_request_with_autoload(counted: tuple[Any, RoundTripCounter]) -> None:
    make, counter = counted
    client = make()
    assert await statements(client, counter, "/read") == 0  # no cookie: nothing to load or store
    assert await statements(client, counter, "/set?a=1") == 1  # new: one insert
    assert await statements(client, counter, "/read") == 1, counter.statements  # read: one load
    assert await statements(client, counter, "/none") == 1  # a valid cookie is loaded up front
    assert await statements(client, counter, "/inc") == 2, counter.statements  # load + write
    bad = {"Cookie": "session=" + signed_cookie("not-the-secret")}
    assert await statements(client, counter, "/read", headers=bad) == 0  # bad signature: nothing


async def test_statements_per_request_without_autoload(counted: tuple[Any, RoundTripCounter]) -> None:
    make, counter = counted
    client = make(autoload=False)
    assert await statements(client, counter, "/set?a=1") == 1  # new
    assert await statements(client, counter, "/none") == 0  # a cookie, but nothing asked
    assert await statements(client, counter, "/set?b=2") == 1, counter.statements  # blind write
    assert statement_kind(counter.statements[0]) == "UPDATE"
    assert await statements(client, counter, "/load") == 1  # explicit load
    assert (await client.get("/load")).json() == {"a": "1", "b": "2"}  # merged into the row


async def test_without_autoload_reading_an_unloaded_session_names_load_session(
    make_async_store: MakeAsyncStore,
) -> None:
    async with http_client(starlette_app(make_async_store(), autoload=False)) as client:
        assert (await client.get("/read")).json() == {}  # no cookie: a new session, readable
        await client.get("/set?a=1")
        # What to do about it, whole (asgi.xǁSessionMiddlewareǁ_not_loaded message mutants).
        with pytest.raises(SessionNotLoaded) as not_loaded:
            await client.get("/read")
        assert str(not_loaded.value) == (
            "this session has a cookie but was not loaded: call `await load_session(request)` "
            "before reading it, or create the middleware with autoload=True"
        )
        assert (await client.get("/load")).json() == {"a": "1"}


WRAP_THE_APP = (
    "this connection has no session: wrap the app with "
    "pgsession_wsgi.asgi.SessionMiddleware(app, store=..., secret_key=...)"
)


@pytest.mark.parametrize("connection", [{"type": "http", "headers": []}, None, "a string"])
async def test_load_session_outside_the_middleware_says_what_to_wrap(connection: Any) -> None:
    """A scope the middleware never saw, or anything that is no connection at all.
    asgi._connection_of mutants 12, 17 (no Mapping) and 22-24 (the message)."""
    with pytest.raises(OutsideRequestError) as outside:
        await load_session(connection)
    assert str(outside.value) == WRAP_THE_APP
    with pytest.raises(OutsideRequestError, match="^this connection has no session"):
        await save_session(connection)


async def test_the_helpers_take_the_raw_asgi_scope(store: AsyncPostgresStore) -> None:
    """A plain ASGI app (no framework, no request object) passes its scope to the helpers.
    asgi._connection_of mutant 4."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        session = await load_session(scope)
        session["n"] = session.get("n", 0) + 1
        await save_session(scope)
        body = json.dumps(dict(session)).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async with http_client(SessionMiddleware(app, store=store, secret_key=SECRET, autoload=False)) as client:
        assert (await client.get("/")).json() == {"n": 1}
        assert (await client.get("/")).json() == {"n": 2}
    assert [data for _, data, _ in rows(store)] == [{"n": 2}]


# -- concurrency ------------------------------------------------------------------------------


async def test_concurrent_requests_changing_different_keys_keep_every_change(
    client: httpx.AsyncClient, store: AsyncPostgresStore
) -> None:
    await client.get("/set?base=0")
    answers = await asyncio.gather(*(client.get(f"/set?k{i}={i}") for i in range(40)))
    assert {response.status_code for response in answers} == {200}
    expected = {"base": "0", **{f"k{i}": str(i) for i in range(40)}}
    assert (await client.get("/read")).json() == expected
    assert [data for _, data, _ in rows(store)] == [expected]


async def test_concurrent_counters_in_separate_sessions_do_not_mix(store: AsyncPostgresStore) -> None:
    app = starlette_app(store)
    clients = [http_client(app) for _ in range(8)]
    try:
        for _ in range(3):
            await asyncio.gather(*(client.get("/inc") for client in clients))
        assert [(await client.get("/read")).json() for client in clients] == [{"n": 3}] * 8
    finally:
        for client in clients:
            await client.aclose()


# -- saving before the headers, and after them ------------------------------------------------


async def test_an_unstorable_value_is_a_500_naming_the_key_in_one_log_line(
    client: httpx.AsyncClient, store: AsyncPostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    await client.get("/set?a=1")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        response = await client.get("/bad")
    assert response.status_code == 500
    assert set_cookies(response) == []
    [record] = session_records(caplog)
    assert "'sock'" in record.getMessage()
    # What failed and the status (asgi._log_failure mutants 9, 14; now _core.failure.log_failure).
    assert record.getMessage().startswith("session error while saving, answering 500: ")
    assert [data for _, data, _ in rows(store)] == [{"a": "1"}]


async def test_a_session_over_max_size_is_a_500_and_nothing_is_written(
    make_async_store: MakeAsyncStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_async_store()
    async with http_client(starlette_app(store, max_size=200)) as client:
        await client.get("/set?a=1")
        with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
            response = await client.get("/set?big=" + "x" * 300)
        assert response.status_code == 500
        assert "limit of 200 bytes" in caplog.text
        assert [data for _, data, _ in rows(store)] == [{"a": "1"}]


async def test_the_store_down_is_a_503_with_one_log_line(
    pg_dsn: str, make_async_store: MakeAsyncStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_async_store(dsn=dead_dsn(pg_dsn), connect_timeout=1, pool_timeout=1)
    async with http_client(starlette_app(store)) as client:
        for path, cookie in (("/read", signed_cookie()), ("/set?a=1", None)):  # at the load, at the save
            caplog.clear()
            headers = {"Cookie": f"session={cookie}"} if cookie else {}
            with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
                response = await client.get(path, headers=headers)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            assert response.headers["content-type"] == "text/plain; charset=utf-8"
            assert "session store cannot be reached" in response.text
            assert set_cookies(response) == []
            [record] = session_records(caplog)
            # The status and why, in the store's own words (asgi._log_failure mutants 2, 4, 5;
            # now _core.failure.log_failure); the body says what happened (_error_response 30, 31).
            assert record.getMessage().startswith(
                "session store unavailable, answering 503: cannot connect to PostgreSQL"
            )
        assert (await client.get("/none")).status_code == 200  # no cookie, untouched: no store needed


async def test_the_store_down_in_load_session_is_a_503(
    pg_dsn: str, make_async_store: MakeAsyncStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_async_store(dsn=dead_dsn(pg_dsn), connect_timeout=1, pool_timeout=1)
    async with http_client(starlette_app(store, autoload=False)) as client:
        with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
            response = await client.get("/load", headers={"Cookie": f"session={signed_cookie()}"})
    assert response.status_code == 503
    assert len(session_records(caplog)) == 1


async def test_an_apps_own_error_page_after_load_session_found_the_store_down_becomes_a_503(
    pg_dsn: str, make_async_store: MakeAsyncStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The app catches the error and answers a 500 of its own (as Litestar does): still a 503.
    asgi.load_session mutant 9."""

    async def catching(request: Request) -> PlainTextResponse:
        try:
            await load_session(request)
        except StoreUnavailable:
            return PlainTextResponse("the app's own error page", status_code=500)
        return PlainTextResponse("loaded")

    store = make_async_store(dsn=dead_dsn(pg_dsn), connect_timeout=1, pool_timeout=1)
    app = Starlette(routes=[Route("/", catching)])
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET, autoload=False)
    async with http_client(app) as client:
        with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
            response = await client.get("/", headers={"Cookie": f"session={signed_cookie()}"})
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert "the app's own error page" not in response.text
    [record] = session_records(caplog)
    assert "503" in record.getMessage()


async def test_save_session_in_an_http_handler_writes_before_the_response(store: AsyncPostgresStore) -> None:
    """Saving early is saving now: the row holds the change while the handler still runs.
    asgi.save_session mutant 11."""
    seen: list[Any] = []

    async def early(request: Request) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        await save_session(request)
        seen.append([data for _, data, _ in rows(store)])
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/early", early)])
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET)
    async with http_client(app) as client:
        await client.get("/early")  # a new session: inserted by save_session itself
        await client.get("/early")  # a stored one: written by it
    assert seen == [[{"n": 1}], [{"n": 2}]]


async def test_changes_made_while_streaming_are_saved_after_the_body(client: httpx.AsyncClient) -> None:
    await client.get("/set?a=1")
    assert (await client.get("/stream")).text == "first chunk\nsecond chunk\n"
    await client.get("/stream")
    assert (await client.get("/read")).json() == {"a": "1", "streamed": 2}


async def test_a_new_session_started_while_streaming_is_not_saved(
    client: httpx.AsyncClient, store: AsyncPostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        response = await client.get("/stream")  # no cookie: the session would need one
    assert response.status_code == 200 and set_cookies(response) == []
    assert "can no longer be set" in caplog.text
    assert rows(store) == []


async def test_a_response_setting_the_cookie_is_made_private(store: AsyncPostgresStore) -> None:
    async def public(request: Request) -> PlainTextResponse:
        request.session["k"] = "v"
        return PlainTextResponse("ok", headers={"Cache-Control": "public, max-age=60"})

    async def public_read(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(dict(request.session)), headers={"Cache-Control": "public"})

    app = Starlette(routes=[Route("/write", public), Route("/read", public_read)])
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET)
    async with http_client(app) as client:
        written = await client.get("/write")
        assert written.headers.get_list("cache-control") == ["private, max-age=60"]
        assert written.headers["vary"] == "Cookie"
        read = await client.get("/read")  # no cookie goes out: the app's caching stands
        assert read.headers["cache-control"] == "public" and read.headers["vary"] == "Cookie"


async def test_save_session_in_an_http_handler_keeps_the_responses_cookie(store: AsyncPostgresStore) -> None:
    async def early(request: Request) -> PlainTextResponse:
        request.session["a"] = "1"
        await save_session(request)  # a new session: its cookie must still go out
        request.session["b"] = "2"
        return PlainTextResponse("ok")

    async def read(request: Request) -> JSONResponse:
        return JSONResponse(dict(request.session))

    app = Starlette(routes=[Route("/early", early), Route("/read", read)])
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET)
    async with http_client(app) as client:
        response = await client.get("/early")
        assert len(set_cookies(response)) == 1
        assert (await client.get("/read")).json() == {"a": "1", "b": "2"}


# -- lifecycle: regenerate, invalidate, timeouts, users -----------------------------------------


async def test_regenerate_moves_the_data_to_a_new_id_and_kills_the_old_one(
    client: httpx.AsyncClient, store: AsyncPostgresStore
) -> None:
    await client.get("/set?a=1")
    old = str(client.cookies["session"])
    response = await client.get("/regen")
    assert len(set_cookies(response)) == 1
    assert str(client.cookies["session"]) != old
    assert (await client.get("/read")).json() == {"a": "1"}
    stale = await client.get("/read", headers={"Cookie": f"session={old}"})
    assert stale.json() == {}
    assert len(rows(store)) == 1


async def test_invalidate_deletes_the_row_and_expires_the_cookie(
    client: httpx.AsyncClient, store: AsyncPostgresStore
) -> None:
    await client.get("/set?a=1")
    old = str(client.cookies["session"])
    response = await client.get("/logout")
    [header] = set_cookies(response)
    assert header.startswith("session=;") and "Max-Age=0" in header
    assert rows(store) == []
    assert (await client.get("/read", headers={"Cookie": f"session={old}"})).json() == {}


def age(store: AsyncPostgresStore, minutes: int) -> None:
    """Move every row ``minutes`` into the past: as if that much time went by, without waiting."""
    shift = f"interval '{minutes} minutes'"
    sql(
        store,
        f"UPDATE {{t}} SET created_at = created_at - {shift}, accessed_at = accessed_at - {shift},"
        f" expires_at = expires_at - {shift}",
    )


async def test_idle_timeout_ends_a_session_by_the_database_clock(make_async_store: MakeAsyncStore) -> None:
    store = make_async_store()
    async with http_client(starlette_app(store, idle_timeout=timedelta(minutes=30))) as client:
        await client.get("/set?a=1")
        age(store, 20)
        assert (await client.get("/read")).json() == {"a": "1"}
        age(store, 40)  # past the idle timeout (the read above was within the touch interval)
        assert (await client.get("/read")).json() == {}


async def test_absolute_timeout_ends_even_an_active_session(make_async_store: MakeAsyncStore) -> None:
    store = make_async_store()
    app = starlette_app(
        store, idle_timeout=timedelta(minutes=30), absolute_timeout=timedelta(hours=1), touch_interval=1
    )
    async with http_client(app) as client:
        await client.get("/set?a=1")
        for _ in range(2):  # used every 20 minutes: the idle timeout alone would never end it
            age(store, 20)
            assert (await client.get("/read")).json() == {"a": "1"}
        age(store, 20)
        assert (await client.get("/read")).json() == {}


async def test_a_touch_moves_the_expiry_at_most_once_per_touch_interval(
    make_async_store: MakeAsyncStore, wire_counter: RoundTripCounter
) -> None:
    store = make_async_store(dsn=wire_counter.dsn)
    app = starlette_app(
        store, idle_timeout=timedelta(hours=1), touch_interval=timedelta(minutes=1), permanent=True
    )
    async with http_client(app) as client:
        await client.get("/set?a=1")
        wire_counter.reset()
        fresh = await client.get("/read")
        assert wire_counter.count == 1 and set_cookies(fresh) == []  # not due: no touch, no cookie
        sql(store, "UPDATE {t} SET accessed_at = now() - interval '2 minutes'")
        wire_counter.reset()
        due = await client.get("/read")
        assert wire_counter.count == 2, wire_counter.statements  # the load, then the touch
        assert len(set_cookies(due)) == 1  # a permanent cookie follows its expiry
        [(moved,)] = sql(store, "SELECT accessed_at > now() - interval '1 minute' FROM {t}")
        assert moved


async def test_user_key_lists_and_revokes_a_users_sessions(make_async_store: MakeAsyncStore) -> None:
    store = make_async_store()
    app = starlette_app(store, user_key="user_id")
    async with http_client(app) as laptop, http_client(app) as phone:
        for device in (laptop, phone):
            await device.get("/set?a=1")
            before = str(device.cookies["session"])
            await device.get("/login?user=alice")
            assert str(device.cookies["session"]) != before  # a login moves the session to a new id
        sessions = await store.sessions_for_user("alice")
        assert len(sessions) == 2
        assert {user for _, _, user in rows(store)} == {"alice"}
        assert await store.revoke_user("alice") == 2
        assert (await laptop.get("/read")).json() == {}
        assert await store.sessions_for_user("alice") == []


async def test_a_fallback_key_cookie_is_accepted_and_signed_anew(make_async_store: MakeAsyncStore) -> None:
    store = make_async_store()
    async with http_client(starlette_app(store, secret_key="old-key")) as old:
        await old.get("/set?a=1")
        cookie = str(old.cookies["session"])
    rotated = starlette_app(store, secret_key="new-key", fallback_secret_keys=["old-key"])
    async with http_client(rotated) as client:
        response = await client.get("/read", headers={"Cookie": f"session={cookie}"})
        assert response.json() == {"a": "1"}
        [header] = set_cookies(response)
        value = header.split(";", 1)[0].split("=", 1)[1]
        assert value == HmacIdSigner("new-key").sign(cookie.split(".")[0])


async def test_a_host_prefixed_cookie_works_end_to_end(make_async_store: MakeAsyncStore) -> None:
    store = make_async_store()
    async with http_client(starlette_app(store, cookie_name="__Host-session"), https=True) as client:
        response = await client.get("/set?a=1")
        [header] = set_cookies(response)
        assert header.startswith("__Host-session=")
        assert "Secure" in header and "Path=/" in header and "Domain" not in header
        assert (await client.get("/read")).json() == {"a": "1"}


async def test_the_cookie_is_secure_when_the_request_came_over_https(
    make_async_store: MakeAsyncStore,
) -> None:
    store = make_async_store()
    async with http_client(starlette_app(store), https=True) as client:
        [header] = set_cookies(await client.get("/set?a=1"))
        assert "Secure" in header
    async with http_client(starlette_app(store)) as client:
        [header] = set_cookies(await client.get("/set?a=1"))
        assert "Secure" not in header


async def test_a_host_prefix_with_a_domain_fails_at_construction(make_async_store: MakeAsyncStore) -> None:
    with pytest.raises(ConfigurationError):
        SessionMiddleware(
            starlette_app,  # type: ignore[arg-type]
            make_async_store(),
            secret_key=SECRET,
            cookie_name="__Host-session",
            cookie_domain="example.com",
        )


# -- websockets -------------------------------------------------------------------------------


def test_a_websocket_reads_the_session_and_saves_only_when_asked(pg_dsn: str, schema: str) -> None:
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    with TestClient(starlette_app(store)) as client:
        client.get("/set?a=1")
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_json() == {"a": "1"}  # loaded at connect
            ws.send_text("b=2")
            assert ws.receive_text() == "saved"
            ws.send_text("bye")
        assert client.get("/read").json() == {"a": "1", "b": "2"}


NEEDS_A_COOKIE = (
    "SessionError: this session change needs a new cookie, which cannot be set any more (a websocket, "
    "or a response already started): make it in an HTTP request before its response starts (a new "
    "session, regenerate(), invalidate() or a login)"
)


def test_a_websocket_cannot_save_a_change_that_needs_a_new_cookie(pg_dsn: str, schema: str) -> None:
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    with TestClient(starlette_app(store, user_key="user_id")) as client:
        with client.websocket_connect("/ws") as ws:  # no cookie yet: a new session
            assert ws.receive_json() == {}
            ws.send_text("a=1")
            # What to do instead, whole (websocket.save_without_cookie mutants 5-9).
            assert ws.receive_text() == NEEDS_A_COOKIE
            ws.send_text("bye")
        client.get("/set?a=1")
        with client.websocket_connect("/ws") as ws:
            ws.receive_json()
            ws.send_text("login=alice")  # a login would move the session to a new id
            assert ws.receive_text() == NEEDS_A_COOKIE
            ws.send_text("bye")
        assert client.get("/read").json() == {"a": "1"}
        assert sql(store, "SELECT user_id FROM {t}") == [(None,)]


async def _ws_save_before_accepting(ws: WebSocket) -> None:
    ws.session["a"] = "1"
    try:
        await save_session(ws)
    except SessionError as exc:
        answer = f"SessionError: {exc}"
    else:
        answer = "saved"
    await ws.accept()
    await ws.send_text(answer)
    await ws.close()


def test_a_websocket_saving_before_it_accepts_still_gets_no_cookie(pg_dsn: str, schema: str) -> None:
    """Before ``websocket.accept`` no response has started, yet no cookie can reach the browser
    either: a new session is refused there too, and no row is written for it.
    asgi.save_session mutant 10."""
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    app = starlette_app(store)
    app.router.routes.append(WebSocketRoute("/ws-early", _ws_save_before_accepting))
    with TestClient(app) as client:
        with client.websocket_connect("/ws-early") as ws:
            assert ws.receive_text() == NEEDS_A_COOKIE
        assert rows(store) == []
        client.get("/set?b=2")
        with client.websocket_connect("/ws-early") as ws:  # a stored session: saved as usual
            assert ws.receive_text() == "saved"
        assert client.get("/read").json() == {"a": "1", "b": "2"}


def test_a_websocket_loads_explicitly_without_autoload(pg_dsn: str, schema: str) -> None:
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    with TestClient(starlette_app(store, autoload=False)) as client:
        client.get("/set?a=1")
        with client.websocket_connect("/ws?load=1") as ws:
            assert ws.receive_json() == {"a": "1"}
            ws.send_text("bye")


def test_a_store_outage_closes_the_websocket_handshake_with_1013(
    pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = AsyncPostgresStore(dead_dsn(pg_dsn), schema=schema, connect_timeout=1, pool_timeout=1)
    with TestClient(starlette_app(store)) as client:
        client.cookies.set("session", signed_cookie())
        caplog.set_level(logging.INFO, logger="pgsession_wsgi")
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/ws"):
            pass
        assert closed.value.code == WEBSOCKET_UNAVAILABLE == 1013
        assert closed.value.reason == "session store unavailable"
        assert [r.levelno for r in session_records(caplog, logging.ERROR)] == [logging.ERROR]


async def test_a_websocket_without_a_cookie_needs_no_store(
    pg_dsn: str, make_async_store: MakeAsyncStore
) -> None:
    store = make_async_store(dsn=dead_dsn(pg_dsn), connect_timeout=1, pool_timeout=1)
    sent = await websocket_call(starlette_app(store), "/ws", cookie=None)
    assert sent[0]["type"] == "websocket.accept"


def test_a_session_data_error_at_connect_closes_the_handshake_with_1011(
    pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Not an outage (a row something else wrote, which cannot be decoded): 1011, not 1013."""
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    with TestClient(starlette_app(store)) as client:
        client.get("/set?a=1")
        sql(store, """UPDATE {t} SET data = '{"v": {" u": "not-a-uuid"}}'::jsonb""")
        caplog.set_level(logging.INFO, logger="pgsession_wsgi")
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/ws"):
            pass
        assert closed.value.code == 1011
        assert closed.value.reason == "session error"
        [record] = session_records(caplog, logging.ERROR)
        assert "could not be decoded" in record.getMessage()
        # What failed (asgi.xǁSessionMiddlewareǁ_websocket mutants 15, 18, 19).
        assert record.getMessage().startswith("session error while loading, answering 500: ")


async def _ws_load_then_accept(ws: WebSocket) -> None:
    await load_session(ws)
    await ws.accept()
    await ws.send_json(dict(ws.session))
    await ws.close()


def test_load_session_before_accepting_with_the_store_down_closes_the_handshake_with_1013(
    pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As autoload does; after the accept it is too late, and the error goes to the server.
    asgi.xǁSessionMiddlewareǁ_websocket mutants 38-40, 55-58, 60, 61."""
    store = AsyncPostgresStore(dead_dsn(pg_dsn), schema=schema, connect_timeout=1, pool_timeout=1)
    app = starlette_app(store, autoload=False)
    app.router.routes.append(WebSocketRoute("/ws-load", _ws_load_then_accept))
    with TestClient(app) as client:
        client.cookies.set("session", signed_cookie())
        caplog.set_level(logging.INFO, logger="pgsession_wsgi")
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/ws-load"):
            pass
        assert (closed.value.code, closed.value.reason) == (1013, "session store unavailable")
        [record] = session_records(caplog, logging.ERROR)
        assert record.getMessage().startswith("session store unavailable, answering 503: ")
        with pytest.raises(StoreUnavailable), client.websocket_connect("/ws?load=1") as ws:  # accepted first
            ws.receive_json()


async def _ws_save_one_key(ws: WebSocket) -> None:
    """Accept, then set the key ``k=v`` the client sends and save it; answer "saved" or the error."""
    await ws.accept()
    if ws.query_params.get("load"):
        await load_session(ws)
    key, value = (await ws.receive_text()).split("=", 1)
    ws.session[key] = value
    try:
        await save_session(ws)
    except Exception as exc:
        await ws.send_text(f"{type(exc).__name__}: {exc}")
    else:
        await ws.send_text("saved")
    await ws.close()


@pytest.mark.parametrize("autoload", [True, False], ids=["loaded", "blind"])
def test_save_session_after_a_logout_elsewhere_raises_and_writes_no_row(
    pg_dsn: str, schema: str, autoload: bool
) -> None:
    """The row went (a logout in another request) while the websocket was open: its save must
    not start a session under a new id the browser never hears of. It raises; no row is left."""
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    app = starlette_app(store, autoload=autoload)
    app.router.routes.append(WebSocketRoute("/ws-save", _ws_save_one_key))
    with TestClient(app) as client:
        client.get("/set?a=1")
        cookie = str(client.cookies["session"])
        with client.websocket_connect("/ws-save?load=1" if autoload else "/ws-save") as ws:
            client.get("/logout")  # another request ends the session meanwhile
            assert rows(store) == []
            ws.send_text("b=2")
            answer = ws.receive_text()
        assert answer == (  # websocket.save_without_cookie mutants 25-29
            "SessionError: the session had ended (logged out, revoked or expired elsewhere) before "
            "this save, so the change was not saved: a new session needs a cookie, so start it with "
            "an HTTP request (e.g. log in again), then open the websocket again"
        )
        assert rows(store) == []
        client.cookies.set("session", cookie)
        assert client.get("/load").json() == {}  # the old cookie opens nothing


async def raw_get(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """One HTTP GET as a server hands it to ``app``, with exactly these headers (repeats kept)."""
    status, _, body = await raw_response(app, path, headers)
    return status, body


async def raw_response(
    app: Any, path: str, headers: list[tuple[bytes, bytes]]
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """:func:`raw_get`, with the response's headers exactly as the app sent them to the server."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "2",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "state": {},
        "extensions": {},
    }
    sent: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect before the response is done
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], [tuple(header) for header in start.get("headers", [])], body


async def test_the_503_and_the_500_as_the_server_gets_them(
    pg_dsn: str, make_async_store: MakeAsyncStore, store: AsyncPostgresStore
) -> None:
    """Plain text with its length, header names in lower case as ASGI requires; the 503 says
    when to try again. asgi._error_response mutants 3-9, 14, 30, 31 (now
    _asgi_plumbing.error_response)."""
    dead = make_async_store(dsn=dead_dsn(pg_dsn), connect_timeout=1, pool_timeout=1)
    cookie = f"session={signed_cookie()}".encode()
    status, headers, body = await raw_response(starlette_app(dead), "/read", [(b"cookie", cookie)])
    assert status == 503
    assert body == b"Service Unavailable: the session store cannot be reached. Please try again shortly.\n"
    assert headers == [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"5"),
    ]
    status, headers, body = await raw_response(starlette_app(store), "/bad", [])  # a value not storable
    assert (status, body) == (500, b"Internal Server Error\n")
    assert headers == [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"22")]


async def test_cookies_split_over_several_cookie_headers_are_all_read(
    client: httpx.AsyncClient, store: AsyncPostgresStore
) -> None:
    """HTTP/2 clients may send one ``cookie`` header per cookie: ours in the second still counts."""
    await client.get("/set?a=1")
    ours = f"session={client.cookies['session']}".encode()
    app = starlette_app(store)
    status, body = await raw_get(app, "/read", [(b"cookie", b"theme=dark"), (b"cookie", ours)])
    assert (status, json.loads(body)) == (200, {"a": "1"})
    status, body = await raw_get(app, "/read", [(b"cookie", ours), (b"cookie", b"theme=dark")])
    assert (status, json.loads(body)) == (200, {"a": "1"})


def header_echo_app(store: AsyncPostgresStore) -> Any:
    """The middleware around a bare ASGI app that answers the ``Cookie`` header its session holds
    (``Session.state.cookie_header``, what the core parses)."""

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        body = scope["session"].state.cookie_header.encode("latin-1")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return SessionMiddleware(echo, store=store, secret_key=SECRET)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], b""),
        ([(b"cookie", b"theme=dark")], b"theme=dark"),
        (
            [(b"cookie", b"theme=dark"), (b"Cookie", b"lang=fr"), (b"cookie", b"x=1")],
            b"theme=dark; lang=fr; x=1",
        ),
    ],
    ids=["none", "one", "three split, any case"],
)
async def test_the_session_holds_the_cookie_headers_as_sent_joined_once(
    store: AsyncPostgresStore, headers: list[tuple[bytes, bytes]], expected: bytes
) -> None:
    """_asgi_plumbing.cookie_header mutants 2 and 15 (a stray prefix the cookie parser forgave)."""
    assert await raw_get(header_echo_app(store), "/", headers) == (200, expected)


async def test_a_scope_without_headers_gets_a_new_session(store: AsyncPostgresStore) -> None:
    """ASGI requires ``headers``; a hand-made scope without them is a new, empty session, no
    crash. _asgi_plumbing.cookie_header mutants 4 and 6."""
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "scheme": "http"}
    await header_echo_app(store)(scope, receive, send)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b""


# -- websockets: the Origin check (cross-site websocket hijacking) ------------------------------


def connect_from(client: TestClient, origin: str | None, url: str = "/ws") -> Any:
    """``client.websocket_connect(url)`` with this ``Origin`` header (None: no Origin at all)."""
    return client.websocket_connect(url, headers={} if origin is None else {"Origin": origin})


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("/ws", None),  # not a browser: no Origin header
        ("/ws", "http://testserver"),  # the app's own page (ws -> http)
        ("/ws", "HTTP://TestServer:80"),  # the same origin, spelled otherwise
        ("wss://testserver/ws", "https://testserver"),  # wss -> https
    ],
)
def test_a_websocket_from_the_apps_own_origin_or_none_gets_its_session(
    pg_dsn: str, schema: str, url: str, origin: str | None
) -> None:
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    with TestClient(starlette_app(store)) as client:
        client.get("/set?a=1")
        with connect_from(client, origin, url) as ws:
            assert ws.receive_json() == {"a": "1"}
            ws.send_text("bye")


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("/ws", "https://evil.example"),  # another site
        ("/ws", "http://testserver.evil.example"),
        ("/ws", "https://testserver"),  # another scheme: another origin
        ("/ws", "http://testserver:8080"),  # another port: another origin
        ("wss://testserver/ws", "http://testserver"),
        ("/ws", "null"),  # an opaque origin (a sandboxed frame, a file)
        ("/ws", "not a url"),
    ],
)
def test_a_cross_origin_websocket_handshake_is_refused_with_403_before_any_statement(
    pg_dsn: str,
    schema: str,
    url: str,
    origin: str,
    wire_counter: RoundTripCounter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = AsyncPostgresStore(wire_counter.dsn, schema=schema, purge_interval=None)
    with TestClient(starlette_app(store)) as client:
        client.get("/set?a=1")
        wire_counter.reset()
        caplog.set_level(logging.INFO, logger="pgsession_wsgi")
        with pytest.raises(WebSocketDenialResponse) as denied, connect_from(client, origin, url):
            pass
        assert denied.value.status_code == 403
        assert "Origin" in denied.value.text
        assert wire_counter.count == 0  # refused before the session was loaded
        [record] = session_records(caplog)
        assert "websocket_origins" in record.getMessage()


def test_a_second_origin_header_is_refused(pg_dsn: str, schema: str) -> None:
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    with TestClient(starlette_app(store)) as client:
        headers = httpx.Headers([("origin", "http://testserver"), ("origin", "https://evil.example")])
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            client.websocket_connect("/ws", headers=headers),
        ):
            pass
        assert denied.value.status_code == 403


def test_websocket_origins_widens_the_check_to_the_origins_listed(pg_dsn: str, schema: str) -> None:
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    app = starlette_app(store, websocket_origins=["https://app.example.com", "http://localhost:3000"])
    with TestClient(app) as client:
        client.get("/set?a=1")
        for origin in ("https://app.example.com", "http://LOCALHOST:3000", "http://testserver"):
            with connect_from(client, origin) as ws:
                assert ws.receive_json() == {"a": "1"}
                ws.send_text("bye")
        with pytest.raises(WebSocketDenialResponse), connect_from(client, "https://evil.example"):
            pass


@pytest.mark.parametrize(
    "origin",
    [
        "app.example.com",
        "https://app.example.com/",
        "https://app.example.com/path",
        "ws://app.example.com",
        "*",
    ],
)
async def test_a_websocket_origin_that_is_not_an_origin_is_a_configuration_error(
    make_async_store: MakeAsyncStore, origin: str
) -> None:
    with pytest.raises(ConfigurationError, match=r"websocket_origins .*scheme://host\[:port\]"):
        SessionMiddleware(
            starlette_app,  # type: ignore[arg-type]
            make_async_store(),
            secret_key=SECRET,
            websocket_origins=[origin],
        )


async def test_without_the_http_response_extension_a_cross_origin_handshake_is_closed_with_1008(
    pg_dsn: str, make_async_store: MakeAsyncStore
) -> None:
    """A server that cannot answer a handshake with an HTTP response: websocket.close, 1008."""
    store = make_async_store(dsn=dead_dsn(pg_dsn), connect_timeout=1, pool_timeout=1)
    sent = await raw_websocket(starlette_app(store), [(b"origin", b"https://evil.example")])
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "websocket Origin not allowed"}]
    sent = await raw_websocket(starlette_app(store), [(b"origin", b"http://testserver")])
    assert sent[0]["type"] == "websocket.accept"  # no cookie: the dead store is never asked


async def test_the_403_to_a_cross_origin_handshake_as_the_server_gets_it(
    pg_dsn: str, make_async_store: MakeAsyncStore
) -> None:
    """With the websocket.http.response extension: plain text with its length, in lower case.
    asgi._refuse_cross_origin mutants 18-25."""
    store = make_async_store(dsn=dead_dsn(pg_dsn), connect_timeout=1, pool_timeout=1)
    sent = await raw_websocket(
        starlette_app(store), [(b"origin", b"https://evil.example")], {"websocket.http.response": {}}
    )
    [start, body] = sent
    assert body["type"] == "websocket.http.response.body"
    assert body["body"].startswith(b"Forbidden: this page's Origin may not open a websocket")
    assert start == {
        "type": "websocket.http.response.start",
        "status": 403,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body["body"])).encode()),
        ],
    }


async def test_the_apps_own_origin_is_its_host_header_else_the_servers_address(
    pg_dsn: str, make_async_store: MakeAsyncStore
) -> None:
    """Behind a proxy the Host header names the site, not the address the server listens on;
    without a Host header (HTTP/1.0) the server's address stands in. asgi._origin_allowed
    mutants 16, 19 (now _asgi_plumbing.origin_allowed)."""
    store = make_async_store(dsn=dead_dsn(pg_dsn), connect_timeout=1, pool_timeout=1)
    app = starlette_app(store)
    origin = [(b"origin", b"http://app.example.com")]
    sent = await raw_websocket(app, origin, host=b"app.example.com")
    assert sent[0]["type"] == "websocket.accept"
    sent = await raw_websocket(app, origin)  # Host: testserver
    assert sent[0]["type"] == "websocket.close"
    sent = await raw_websocket(app, [(b"origin", b"http://testserver")], host=None)
    assert sent[0]["type"] == "websocket.accept"  # server ("testserver", 80)


async def raw_websocket(
    app: Any,
    headers: list[tuple[bytes, bytes]],
    extensions: dict[str, Any] | None = None,
    host: bytes | None = b"testserver",
) -> list[dict[str, Any]]:
    """A websocket to ``app`` from a server with these extensions (by default none, so not the
    websocket.http.response one): what the app sent up to its ``websocket.accept`` or
    ``websocket.close``, or all it sent if it did neither."""
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [*([(b"host", host)] if host is not None else []), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "subprotocols": [],
        "state": {},
        "extensions": extensions or {},
    }
    connected = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal connected
        if not connected:
            connected = True
            return {"type": "websocket.connect"}
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    with contextlib.suppress(WebSocketDisconnect):  # how Starlette's handler ends when the client goes
        await app(scope, receive, send)
    return sent[:1] if sent and sent[0]["type"] in ("websocket.accept", "websocket.close") else sent


# -- the lifespan: the pool and the purge task ---------------------------------------------------


async def test_the_lifespan_opens_the_store_runs_the_purge_task_and_closes_after_the_apps_shutdown(
    make_async_store: MakeAsyncStore,
) -> None:
    store = make_async_store(purge_interval=0.05)
    seen_at_shutdown: list[dict[str, int]] = []

    async def app_lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        seen_at_shutdown.append(await store.stats())  # the app's own shutdown still has the store

    app = Starlette(routes=[], lifespan=asynccontextmanager(app_lifespan))
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET)
    async with lifespan(app) as sent:
        assert sent == [{"type": "lifespan.startup.complete"}]
        assert sql(store, "SELECT count(*) FROM {t}") == [(0,)]  # the table was made at startup
        assert any(task.get_name() == TASK_NAME for task in asyncio.all_tasks())
        sql(
            store,
            "INSERT INTO {t} (id, data, expires_at)"
            " VALUES (sha256('x'::bytea), '{}', now() - interval '1 second')",
        )
        while sql(store, "SELECT count(*) FROM {t}") != [(0,)]:  # the purge task removes it
            await asyncio.sleep(0.02)
    assert sent[-1] == {"type": "lifespan.shutdown.complete"}
    assert len(seen_at_shutdown) == 1
    assert not any(task.get_name() == TASK_NAME for task in asyncio.all_tasks())
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.stats()


async def test_open_after_close_opens_the_store_again_with_its_purge(
    make_async_store: MakeAsyncStore,
) -> None:
    # What an app's second lifespan does (each `with TestClient(app):` runs one).
    store = make_async_store(purge_interval=0.05)
    await store.open()
    await store.close()
    with pytest.raises(StoreUnavailable) as error:
        await store.stats()
    assert str(error.value) == (
        "the session store was closed: `await store.open()` opens it again (as an app's lifespan "
        "startup does)"
    )
    await store.open()
    assert (await store.stats())["live"] == 0
    assert any(task.get_name() == TASK_NAME for task in asyncio.all_tasks())
    await store.close()
    assert not any(task.get_name() == TASK_NAME for task in asyncio.all_tasks())


async def test_a_store_unreachable_at_startup_does_not_stop_the_app(
    pg_dsn: str, make_async_store: MakeAsyncStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_async_store(dsn=dead_dsn(pg_dsn), connect_timeout=1, pool_timeout=1)
    app = starlette_app(store)
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        async with lifespan(app) as sent:
            assert sent == [{"type": "lifespan.startup.complete"}]
            async with http_client(app) as client:
                assert (await client.get("/none")).status_code == 200
                assert (await client.get("/set?a=1")).status_code == 503
    # Why, in the store's own words (asgi.xǁSessionMiddlewareǁ_lifespan_send mutants 7, 9, 10).
    first = session_records(caplog)[0].getMessage()
    assert first.startswith("session store not reachable at startup, will retry on use: cannot connect to")


async def test_a_failed_shutdown_of_the_app_still_closes_the_store(make_async_store: MakeAsyncStore) -> None:
    """asgi.xǁSessionMiddlewareǁ_lifespan_send mutants 17, 18 (lifespan.shutdown.failed)."""
    store = make_async_store()

    async def app_lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        raise RuntimeError("the app's own shutdown failed")

    app = Starlette(routes=[], lifespan=asynccontextmanager(app_lifespan))
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET)
    with pytest.raises(RuntimeError, match="own shutdown failed"):
        async with lifespan(app) as sent:
            assert await store.stats() is not None  # open
    assert sent[-1]["type"] == "lifespan.shutdown.failed"
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.stats()


def test_starlettes_test_client_runs_the_lifespan_and_closes_every_connection(
    pg_dsn: str, schema: str
) -> None:
    name = f"pgsession-test-{uuid.uuid4().hex[:12]}"
    store = AsyncPostgresStore(
        make_conninfo(pg_dsn, application_name=name), schema=schema, purge_interval=None
    )

    def connections() -> int:
        return int(
            sql(pg_dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,))[0][0]
        )

    with TestClient(starlette_app(store)) as client:
        assert sql(store, "SELECT count(*) FROM {t}") == [(0,)]  # opened (and created) at startup
        assert client.get("/inc").json() == 1
        assert client.get("/inc").json() == 2
        assert connections() >= 1
    wait_for(lambda: connections() == 0, "the shutdown closed the pool's connections")
    with pytest.raises(StoreUnavailable, match="closed"):
        asyncio.run(store.stats())


# -- construction errors, word for word (they say what to pass instead) -------------------------


async def test_a_starlette_secret_where_the_store_goes_says_the_store_comes_second(
    make_async_store: MakeAsyncStore,
) -> None:
    """asgi SessionMiddleware.__init__ mutants 6, 8, 9, 11-15: Starlette's own ``Secret`` (not
    only a str) in the store's place, and the whole message."""
    from starlette.datastructures import Secret

    expected = (
        "SessionMiddleware(app, store, secret_key=...): the second argument is the store, "
        "not the secret key as in Starlette's: pass store=AsyncPostgresStore(dsn), secret_key=..."
    )
    for secret in (Secret(SECRET), SECRET):
        with pytest.raises(ConfigurationError) as refused:
            SessionMiddleware(starlette_app, secret)  # type: ignore[arg-type]
        assert str(refused.value) == expected


@pytest.mark.parametrize("kind", ["sync", "no store at all"])
def test_a_store_that_is_not_async_is_named_in_the_error(make_store: Any, kind: str) -> None:
    """SessionMiddleware.__init__ mutants 22, 26-29: an object without ``execute`` is refused the
    same way (not an AttributeError), and the message names what was passed."""
    given: Any = make_store() if kind == "sync" else object()
    with pytest.raises(ConfigurationError) as refused:
        SessionMiddleware(starlette_app, given, secret_key=SECRET)
    assert str(refused.value) == (
        "the ASGI SessionMiddleware needs an async store (a sync one would block the event loop), "
        f"not {type(given).__name__}: pass pgsession_wsgi.asgi.AsyncPostgresStore(dsn)"
    )


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (
            ["/static", 3],
            "exclude_paths holds 3: each entry is a path prefix, a str such as '/static' "
            "(which leaves out /static and everything under it)",
        ),
        (
            "static",
            "exclude_paths entry 'static' must start with '/': e.g. '/static', which leaves out "
            "/static and everything under it",
        ),
        (
            ["/static", "/"],
            "exclude_paths entry '/' would leave every route without a session: list the ones "
            "that use none ('/static', '/health'), or leave the middleware out",
        ),
    ],
)
async def test_bad_exclude_paths_are_refused_in_full(
    make_async_store: MakeAsyncStore, paths: Any, message: str
) -> None:
    """asgi._path_prefixes mutants 6, 7, 12, 13, 20, 22, 23 (each message whole)."""
    with pytest.raises(ConfigurationError) as refused:
        SessionMiddleware(Starlette(), make_async_store(), secret_key=SECRET, exclude_paths=paths)
    assert str(refused.value) == message


async def test_an_excluded_prefix_is_matched_as_written_but_for_a_trailing_slash(
    store: AsyncPostgresStore,
) -> None:
    """asgi._path_prefixes mutant 17 (only '/' is stripped from the end: '/XBOX/' is '/XBOX') and
    SessionMiddleware.__init__ 40 (exclude_paths applied at all)."""

    async def endpoint(request: Request) -> PlainTextResponse:
        try:
            request.session["seen"] = True
        except OutsideRequestError:
            return PlainTextResponse("no session")
        return PlainTextResponse("session")

    app = Starlette(routes=[Route("/XBOX", endpoint), Route("/XBO", endpoint)])
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET, exclude_paths=["/XBOX/"])
    async with http_client(app) as client:
        assert (await client.get("/XBOX")).text == "no session"
        assert (await client.get("/XBO")).text == "session"


# -- the app's own statuses, and changes made while streaming -----------------------------------


async def test_an_apps_own_statuses_pass_through_when_the_store_is_up_or_not_needed(
    pg_dsn: str, store: AsyncPostgresStore, make_async_store: MakeAsyncStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a 5xx the app answers after load_session found the store down becomes our 503: the
    app's own 500 with the store up, and a 200 or a 499 of an app that did without the session,
    are the app's. asgi._Connection.__init__ mutant 7 and _answer_instead 1."""

    async def answer(request: Request) -> PlainTextResponse:
        try:
            await load_session(request)
        except StoreUnavailable:
            status = int(request.query_params["down"])
            return PlainTextResponse("did without the session", status_code=status)
        return PlainTextResponse("the app's own failure", status_code=500)

    dead = make_async_store(dsn=dead_dsn(pg_dsn), connect_timeout=1, pool_timeout=1)
    cookie = {"Cookie": f"session={signed_cookie()}"}
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        for used, status in ((store, 500), (dead, 200), (dead, 499)):
            app = Starlette(routes=[Route("/", answer)])
            app.add_middleware(SessionMiddleware, store=used, secret_key=SECRET, autoload=False)
            async with http_client(app) as client:
                response = await client.get(f"/?down={status}", headers=cookie)
            assert response.status_code == status
            assert response.text == ("the app's own failure" if used is store else "did without the session")
    assert session_records(caplog) == []


async def test_a_new_session_started_while_streaming_is_one_warning_saying_it_was_not_saved(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """asgi SessionMiddleware._save_late mutants 12-14: the line is the only trace of the lost change."""
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        await client.get("/stream")
    [record] = session_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "session changed after the response headers were sent and needs a new cookie, which can "
        "no longer be set; the change was not saved"
    )


async def test_a_change_too_big_to_store_made_while_streaming_is_one_error_saying_why(
    store: AsyncPostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The headers are gone, so no 500: the change is dropped and one error line says so and why.
    asgi SessionMiddleware._save_late mutants 17-22."""

    async def chunks(session: Any) -> AsyncIterator[bytes]:
        yield b"first\n"
        session["big"] = "x" * 5000  # over max_size: refused when saved
        yield b"second\n"

    async def streaming(request: Request) -> Any:
        from starlette.responses import StreamingResponse

        if request.query_params.get("start"):
            request.session["a"] = 1
            return PlainTextResponse("started")
        return StreamingResponse(chunks(request.session), media_type="text/plain")

    app = Starlette(routes=[Route("/", streaming)])
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET, max_size=1000)
    async with http_client(app) as client:
        await client.get("/?start=1")
        with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
            response = await client.get("/")
    assert response.status_code == 200 and response.text == "first\nsecond\n"
    [record] = session_records(caplog)
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert message.startswith("session change made while streaming was not saved: ")
    assert "1000" in message
    assert [data for _, data, _ in rows(store)] == [{"a": 1}]


# -- keys, signers and headers as given ---------------------------------------------------------

OTHER_SECRET = "another-secret-key-for-a-custom-signer-0123456789"


async def apps_reading_each_others_cookie(writer: Any, reader: Any) -> Any:
    """The data ``reader`` finds in the cookie ``writer`` set (same store)."""
    async with http_client(writer) as client:
        await client.get("/set?a=1")
        cookie = client.cookies["session"]
    async with http_client(reader) as client:
        return (await client.get("/read", headers={"Cookie": f"session={cookie}"})).json()


async def test_a_starlette_secret_as_secret_key_signs_with_its_value(store: AsyncPostgresStore) -> None:
    """asgi SessionMiddleware.__init__ mutant 79 (Starlette's Secret is read for its value)."""
    from starlette.datastructures import Secret

    writer = starlette_app(store, secret_key=Secret(SECRET))
    assert await apps_reading_each_others_cookie(writer, starlette_app(store)) == {"a": "1"}


async def test_a_signer_given_signs_the_cookie_instead_of_secret_key(store: AsyncPostgresStore) -> None:
    """asgi SessionMiddleware.__init__ mutant 90 (the signer passed on)."""
    writer = starlette_app(store, signer=HmacIdSigner(OTHER_SECRET))
    assert await apps_reading_each_others_cookie(writer, starlette_app(store, secret_key=OTHER_SECRET)) == {
        "a": "1"
    }
    assert await apps_reading_each_others_cookie(writer, starlette_app(store)) == {}


async def test_the_saved_sessions_headers_reach_the_server_in_lower_case(store: AsyncPostgresStore) -> None:
    """ASGI wants lower-case header names, the app's and ours: asgi._with_session_headers
    mutant 14 (now _asgi_plumbing.add_session_headers)."""
    status, headers, _ = await raw_response(starlette_app(store), "/inc", [])
    names = [name for name, _ in headers]
    assert status == 200 and b"set-cookie" in names and b"content-type" in names
    assert names == [name.lower() for name in names]


# -- what the log line says failed, and responses as the app sends them ------------------------


async def test_a_row_that_cannot_be_decoded_is_a_500_whose_line_says_loading(
    client: httpx.AsyncClient, store: AsyncPostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    """asgi SessionMiddleware._http mutants 9, 12, 13 (what failed, in the one line)."""
    await client.get("/set?a=1")
    sql(store, """UPDATE {t} SET data = '{"v": {" u": "not-a-uuid"}}'::jsonb""")
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        response = await client.get("/read")
    assert response.status_code == 500
    [record] = session_records(caplog)
    assert record.getMessage().startswith("session error while loading, answering 500: ")
    assert "could not be decoded" in record.getMessage()


async def test_a_session_error_out_of_the_app_is_a_500_whose_line_says_handling_the_request(
    store: AsyncPostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    """save_session in the handler refuses a session over max_size: the app lets it through, and
    the server gets our 500, not a traceback. asgi SessionMiddleware._http mutants 90, 93, 94."""

    async def too_big(request: Request) -> PlainTextResponse:
        request.session["big"] = "x" * 5000
        await save_session(request)
        return PlainTextResponse("saved")

    app = Starlette(routes=[Route("/", too_big)])
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET, max_size=1000)
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        status, _, body = await raw_response(app, "/", [])
    assert status == 500 and b"saved" not in body
    [record] = session_records(caplog)
    assert record.getMessage().startswith("session error while handling the request, answering 500: ")
    assert rows(store) == []


async def test_a_response_start_without_headers_still_gets_the_cookie(store: AsyncPostgresStore) -> None:
    """``headers`` may be left out of http.response.start (ASGI: default empty).
    asgi SessionMiddleware._http mutants 54, 56."""

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        scope["session"]["a"] = 1
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"bare"})

    app = SessionMiddleware(bare, store, secret_key=SECRET)
    status, headers, body = await raw_response(app, "/", [])
    assert (status, body) == (200, b"bare")
    assert [name for name, _ in headers if name == b"set-cookie"] == [b"set-cookie"]
    assert [data for _, data, _ in rows(store)] == [{"a": 1}]


async def test_a_scope_of_another_type_reaches_the_app_as_it_came(store: AsyncPostgresStore) -> None:
    """Neither http, websocket nor lifespan: passed on untouched, with the server's own receive
    and send. asgi SessionMiddleware.__call__ mutants 46-51."""
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> Any:
        return {}

    async def send(message: Any) -> None:
        pass

    scope = {"type": "custom.protocol", "path": "/static"}
    await SessionMiddleware(app, store, secret_key=SECRET, exclude_paths=["/static"])(scope, receive, send)
    assert seen == [(scope, receive, send)]
    assert scope == {"type": "custom.protocol", "path": "/static"}


def test_a_websocket_on_an_excluded_path_gets_no_session(pg_dsn: str, schema: str) -> None:
    """asgi SessionMiddleware.__call__ mutants 9, 10 (websockets are excluded too)."""

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        try:
            ws.session["a"] = 1
        except OutsideRequestError:
            await ws.send_text("no session")
        else:
            await ws.send_text("session")
        await ws.close()

    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    app = Starlette(routes=[WebSocketRoute("/ws", endpoint), WebSocketRoute("/live", endpoint)])
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET, exclude_paths=["/ws"])
    with TestClient(app) as client:
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_text() == "no session"
        with client.websocket_connect("/live") as ws:
            assert ws.receive_text() == "session"


# -- an app that puts its own data in scope["session"] (as Litestar's set_session does) ----------


async def test_data_an_app_puts_in_scope_session_becomes_the_session(store: AsyncPostgresStore) -> None:
    """A mapping in scope["session"] is the session's new data, under our session; None ends it.
    asgi._adopt mutants 1, 8-14."""
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["session"] = {"user": "ann"} if scope["path"] == "/in" else None
        await send({"type": "http.response.start", "status": 200, "headers": []})
        seen.append(scope["session"])
        await send({"type": "http.response.body", "body": b"done"})

    middleware = SessionMiddleware(app, store, secret_key=SECRET)
    status, headers, _ = await raw_response(middleware, "/in", [])
    assert status == 200
    assert [data for _, data, _ in rows(store)] == [{"user": "ann"}]
    assert isinstance(seen[0], Session) and dict(seen[0]) == {"user": "ann"}
    cookie = next(value for name, value in headers if name == b"set-cookie").split(b";")[0]

    status, headers, _ = await raw_response(middleware, "/out", [(b"cookie", cookie)])
    assert status == 200 and rows(store) == []
    assert isinstance(seen[1], Session) and dict(seen[1]) == {}


async def test_load_session_loads_only_what_is_not_loaded_yet(counted: tuple[Any, RoundTripCounter]) -> None:
    """After autoload, load_session costs nothing more; without a cookie there is nothing to load.
    asgi SessionMiddleware.load mutant 1."""
    make, counter = counted
    client = make()
    assert await statements(client, counter, "/load") == 0  # no cookie
    await client.get("/set?a=1")
    assert await statements(client, counter, "/load") == 1, counter.statements  # autoload's only
    assert (await client.get("/load")).json() == {"a": "1"}
