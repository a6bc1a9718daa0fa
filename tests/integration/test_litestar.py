"""Litestar's own session contract on a real PostgreSQL (issue 23, point 3): ``PgSessionConfig``
and its backend under Litestar's ``SessionMiddleware``, the plugin, the backend's operations by
session id, ``SessionAuth``, one session shared with a Flask app, and the session table on an
async SQLAlchemy engine. Every request goes through Litestar's own test clients."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from apps.asgi_support import dead_dsn, session_records
from db import engine_url, sql
from flask import Flask
from flask import request as flask_request
from flask import session as flask_session
from litestar import Litestar, Request, WebSocket, get, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.response import Stream
from litestar.security.session_auth import SessionAuth
from litestar.testing import AsyncTestClient, TestClient
from psycopg_pool import AsyncConnectionPool
from wire import RoundTripCounter

from pgsession_wsgi import ConfigurationError, PostgresStore, SessionError, StoreUnavailable
from pgsession_wsgi.async_store import AsyncPostgresStore
from pgsession_wsgi.cookies import HmacIdSigner, hash_session_id, new_session_id
from pgsession_wsgi.flask import PgSession
from pgsession_wsgi.litestar import PgSessionBackend, PgSessionConfig, PgSessionPlugin, save_session
from pgsession_wsgi.sqlalchemy import session_table, store_dsn

T = TypeVar("T")
SECRET = "litestar-tests-secret-long-enough-not-to-be-warned-about"

AnyRequest = Request[Any, Any, Any]


# -- the routes ---------------------------------------------------------------------------------


@get("/read")
async def read(request: AnyRequest) -> dict[str, Any]:
    return dict(request.session)


@get("/set")
async def set_keys(request: AnyRequest) -> str:
    for key, value in request.query_params.items():
        request.session[key] = value
    return "ok"


@get("/inc")
async def inc(request: AnyRequest) -> int:
    request.session["n"] = request.session.get("n", 0) + 1
    return int(request.session["n"])


@get("/id")
async def session_id(request: AnyRequest) -> dict[str, Any]:
    return {"id": request.get_session_id()}


@get("/replace")
async def replace(request: AnyRequest) -> str:
    request.set_session(dict(request.query_params))
    return "ok"


@get("/clear")
async def clear(request: AnyRequest) -> str:
    request.clear_session()
    return "ok"


@get("/regenerate")
async def regenerate(request: AnyRequest) -> str:
    request.session.regenerate()  # type: ignore[attr-defined]
    return "ok"


@get("/big")
async def big(request: AnyRequest) -> str:
    request.session["big"] = "x" * 1000
    return "ok"


@get("/stream")
async def stream(request: AnyRequest) -> Stream:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"first\n"
        request.session["streamed"] = request.session.get("streamed", 0) + 1
        yield b"second\n"

    return Stream(chunks(), media_type="text/plain")


async def has_session(request: AnyRequest) -> dict[str, bool]:
    return {"session": "session" in request.scope}


skipped = get("/skipped", skip_session=True, name="skipped")(has_session)
static = get("/static/file", name="static")(has_session)
quiet = get("/quiet", no_session=True, name="quiet")(has_session)


@websocket("/ws")
async def ws(socket: WebSocket[Any, Any, Any]) -> None:
    """Sends the session at connect; each ``k=v`` received is set and saved."""
    await socket.accept()
    await socket.send_json(dict(socket.session))
    key, _, value = (await socket.receive_text()).partition("=")
    socket.session[key] = value
    try:
        await save_session(socket)
    except SessionError as exc:
        await socket.send_text(f"refused: {exc}")
    else:
        await socket.send_text("saved")
    await socket.close()


ROUTES = [
    read,
    set_keys,
    inc,
    session_id,
    replace,
    clear,
    regenerate,
    big,
    stream,
    skipped,
    static,
    quiet,
    ws,
]


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
async def store(pg_dsn: str, schema: str) -> AsyncIterator[AsyncPostgresStore]:
    made = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    yield made
    await made.close()


def config_for(store: AsyncPostgresStore, **options: Any) -> PgSessionConfig:
    return PgSessionConfig(store=store, secret_key=SECRET, **options)


def app_for(config: PgSessionConfig, **options: Any) -> Litestar:
    # No logging_config: Litestar's own would take the root logger's handlers, caplog's too.
    return Litestar(route_handlers=ROUTES, plugins=[PgSessionPlugin(config)], logging_config=None, **options)


def in_app(client: AsyncTestClient[Any], function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``await function(*args)`` in the app's event loop, where the plugin opened the store: the
    test clients run the app in a thread of its own."""
    return client.blocking_portal.call(function, *args)


def rows(store: AsyncPostgresStore) -> list[Any]:
    return [data for (data,) in sql(store, "SELECT data FROM {t} ORDER BY created_at")]


def set_cookies(response: Any) -> list[str]:
    headers = response.headers  # httpx's, or werkzeug's for the Flask app
    return list(
        headers.get_list("set-cookie") if hasattr(headers, "get_list") else headers.getlist("Set-Cookie")
    )


def cookie_value(response: Any, name: str = "session") -> str:
    [header] = set_cookies(response)
    assert header.startswith(f"{name}="), header
    return header.split(";")[0].split("=", 1)[1]


# -- the round trip -----------------------------------------------------------------------------


async def test_round_trip_replace_and_clear_as_litestar_documents_them(store: AsyncPostgresStore) -> None:
    async with AsyncTestClient(app=app_for(config_for(store))) as client:
        assert (await client.get("/read")).json() == {}
        first = await client.get("/inc")
        assert first.json() == 1
        [cookie] = set_cookies(first)
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert "Max-Age" not in cookie  # a browser-session cookie, as every front end's by default
        second = await client.get("/inc")
        assert second.json() == 2
        assert set_cookies(second) == []  # the same session: no cookie sent again
        assert rows(store) == [{"n": 2}]
        # set_session() replaces the whole session, keeping its id.
        before = (await client.get("/id")).json()["id"]
        await client.get("/replace?colour=blue")
        assert (await client.get("/read")).json() == {"colour": "blue"}
        assert (await client.get("/id")).json()["id"] == before
        # clear_session() ends it: the row is deleted and the cookie expired.
        cleared = await client.get("/clear")
        [expired] = set_cookies(cleared)
        assert expired.startswith("session=") and "Max-Age=0" in expired
        assert rows(store) == []
        assert (await client.get("/read")).json() == {}


async def test_get_session_id_is_the_id_the_store_keys_the_row_by(store: AsyncPostgresStore) -> None:
    config = config_for(store, user_key="user")
    async with AsyncTestClient(app=app_for(config)) as client:
        assert (await client.get("/id")).json() == {"id": None}  # nothing stored yet
        await client.get("/set?user=ann")
        current = (await client.get("/id")).json()["id"]
        assert current is not None
        [listed] = in_app(client, store.sessions_for_user, "ann")
        assert listed.id_hash == hash_session_id(current).hex()
        assert in_app(client, config.backend.get, current) == {"user": "ann"}
        # A new id after regenerate(): the old one opens nothing any more.
        await client.get("/regenerate")
        moved = (await client.get("/id")).json()["id"]
        assert moved not in (None, current)
        assert in_app(client, config.backend.get, current) is None
        assert in_app(client, config.backend.get, moved) == {"user": "ann"}


async def test_a_change_made_while_the_body_streams_is_saved(store: AsyncPostgresStore) -> None:
    async with AsyncTestClient(app=app_for(config_for(store))) as client:
        await client.get("/set?a=1")
        assert (await client.get("/stream")).text == "first\nsecond\n"
        assert (await client.get("/read")).json() == {"a": "1", "streamed": 1}


# -- routes that get no session ------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, path",
    [
        ({}, "/skipped"),
        ({"exclude": ["^/static/"]}, "/static/file"),
        ({"exclude_opt_key": "no_session"}, "/quiet"),
    ],
    ids=["skip_session", "exclude", "exclude_opt_key"],
)
async def test_an_excluded_route_gets_no_session_and_costs_no_statement(
    options: dict[str, Any], path: str, pg_dsn: str, schema: str, wire_counter: RoundTripCounter
) -> None:
    store = AsyncPostgresStore(wire_counter.dsn, schema=schema, purge_interval=None)
    try:
        async with AsyncTestClient(app=app_for(config_for(store, **options))) as client:
            await client.get("/set?a=1")  # the client now carries a valid cookie
            wire_counter.reset()
            excluded = await client.get(path)
            assert excluded.status_code == 200
            assert excluded.json() == {"session": False}
            assert set_cookies(excluded) == []
            assert wire_counter.count == 0, wire_counter.statements
            assert (await client.get("/read")).json() == {"a": "1"}
            assert wire_counter.count == 1, wire_counter.statements  # the same cookie elsewhere: one load
    finally:
        await store.close()


async def test_statements_on_the_wire(schema: str, wire_counter: RoundTripCounter) -> None:
    store = AsyncPostgresStore(wire_counter.dsn, schema=schema, purge_interval=None)
    try:
        async with AsyncTestClient(app=app_for(config_for(store))) as client:

            async def count(path: str) -> int:
                wire_counter.reset()
                assert (await client.get(path)).status_code == 200
                return wire_counter.count

            assert await count("/read") == 0  # no cookie: nothing to load, nothing stored
            assert await count("/set?a=1") == 1  # a new session: one insert
            assert await count("/id") == 1  # a cookie: one load; an untouched session saves nothing
            assert await count("/inc") == 2  # load and write
    finally:
        await store.close()


# -- bad cookies and failures --------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        HmacIdSigner("another-secret-long-enough-not-to-be-warned-about").sign(new_session_id()),
        "not-a-signed-id",
        "x" * 5000,
        HmacIdSigner(SECRET).sign(new_session_id()),  # validly signed, but no such session
    ],
    ids=["wrong-key", "garbage", "oversized", "unknown-id"],
)
async def test_a_bad_cookie_gets_a_fresh_session(bad: str, store: AsyncPostgresStore) -> None:
    async with AsyncTestClient(app=app_for(config_for(store))) as client:
        client.cookies.set("session", bad)
        assert (await client.get("/read")).json() == {}
        written = await client.get("/set?fresh=1")
        assert written.status_code == 200
        issued = cookie_value(written)
        assert issued != bad
        assert rows(store) == [{"fresh": "1"}]
        client.cookies.clear()
        client.cookies.set("session", issued)
        assert (await client.get("/read")).json() == {"fresh": "1"}


async def test_the_store_down_is_a_503_and_one_log_line(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = AsyncPostgresStore(dead_dsn(pg_dsn), connect_timeout=1, pool_timeout=1, purge_interval=None)
    config = config_for(store)
    # No plugin (it would not start the app on this database), no logging_config (caplog's).
    app = Litestar(route_handlers=ROUTES, middleware=[config.middleware], logging_config=None)
    try:
        async with AsyncTestClient(app=app) as client:
            assert (await client.get("/read")).status_code == 200  # no cookie: the store is not asked
            client.cookies.set("session", HmacIdSigner(SECRET).sign(new_session_id()))
            with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
                response = await client.get("/read")
            in_app(client, store.close)
    finally:
        await store.close()  # if the client did not start
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "session store cannot be reached" in response.text
    assert len(session_records(caplog)) == 1


async def test_a_session_that_cannot_be_saved_is_a_500_and_one_log_line(
    store: AsyncPostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    async with AsyncTestClient(app=app_for(config_for(store, max_size=200))) as client:
        with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
            response = await client.get("/big")
        assert response.status_code == 500
        assert response.text == "Internal Server Error\n"
        assert set_cookies(response) == []
    assert rows(store) == []
    [record] = session_records(caplog)
    assert "200 bytes" in record.getMessage()


# -- the plugin ----------------------------------------------------------------------------------


async def test_the_plugin_opens_the_store_at_startup_and_closes_it_at_shutdown(
    store: AsyncPostgresStore,
) -> None:
    def table_exists() -> bool:
        [(found,)] = sql(store.dsn, "SELECT to_regclass(%s) IS NOT NULL", (store.qualified_name,))
        return bool(found)

    assert not table_exists()
    async with AsyncTestClient(app=app_for(config_for(store))):
        assert table_exists()  # opened, and the table made, before any request
    with pytest.raises(StoreUnavailable):
        await store.stats()  # closed with the app


async def test_the_plugin_opens_a_store_on_the_apps_pool_after_the_app_opens_it(
    pg_dsn: str, schema: str
) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(pg_dsn, min_size=1, max_size=2, open=False)
    store = AsyncPostgresStore.from_pool(pool, schema=schema, purge_interval=None)

    async def open_pool() -> None:
        await pool.open()

    async def close_pool() -> None:
        await pool.close()

    app = app_for(config_for(store), on_startup=[open_pool], on_shutdown=[close_pool])
    async with AsyncTestClient(app=app) as client:
        await client.get("/set?a=1")
        assert (await client.get("/read")).json() == {"a": "1"}
    assert pool.closed


async def test_the_plugin_does_not_start_the_app_on_an_unreachable_database(pg_dsn: str) -> None:
    store = AsyncPostgresStore(dead_dsn(pg_dsn), connect_timeout=1, pool_timeout=1, purge_interval=None)
    with pytest.raises(BaseException) as failed:  # in an exception group, from the client's task group
        async with AsyncTestClient(app=app_for(config_for(store))):
            pytest.fail("the app started")
    assert any(isinstance(exc, StoreUnavailable) for exc in leaves(failed.value))


def leaves(exc: BaseException) -> list[BaseException]:
    """``exc``, or every exception an exception group holds, however nested."""
    inner = getattr(exc, "exceptions", None)
    return [exc] if inner is None else [leaf for each in inner for leaf in leaves(each)]


# -- SessionAuth ---------------------------------------------------------------------------------


async def user_of(session: dict[str, Any], connection: Any) -> dict[str, str] | None:
    return {"name": session["user"]} if "user" in session else None


@get("/login", exclude_from_auth=True)
async def login(request: AnyRequest) -> str:
    request.set_session({"user": request.query_params["user"]})
    return "ok"


@get("/logout", exclude_from_auth=True)
async def logout(request: AnyRequest) -> str:
    request.clear_session()
    return "ok"


@get("/me")
async def me(request: AnyRequest) -> Any:
    return request.user


async def test_session_auth_logs_in_protects_a_route_and_logs_out(
    schema: str, wire_counter: RoundTripCounter
) -> None:
    store = AsyncPostgresStore(wire_counter.dsn, schema=schema, purge_interval=None)
    config = config_for(store)
    auth: SessionAuth[Any, PgSessionBackend] = SessionAuth(
        retrieve_user_handler=user_of, session_backend_config=config
    )
    app = Litestar(
        route_handlers=[login, logout, me], on_app_init=[auth.on_app_init], plugins=[PgSessionPlugin(config)]
    )
    try:
        async with AsyncTestClient(app=app) as client:
            assert (await client.get("/me")).status_code == 401
            assert (await client.get("/login?user=ann")).status_code == 200
            wire_counter.reset()
            assert (await client.get("/me")).json() == {"name": "ann"}
            assert wire_counter.count == 1  # one load: the plugin did not add a second middleware
            logged_out = await client.get("/logout")
            assert "Max-Age=0" in set_cookies(logged_out)[0]
            assert rows(store) == []
            assert (await client.get("/me")).status_code == 401
    finally:
        await store.close()


# -- one session with a Flask app ----------------------------------------------------------------


def flask_app(pg_dsn: str, schema: str) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
    PgSession(app)

    @app.get("/login")
    def flask_login() -> str:
        flask_session["_user_id"] = flask_request.args["user"]
        return "ok"

    @app.get("/read")
    def flask_read() -> dict[str, Any]:
        return dict(flask_session)

    return app


async def test_a_login_in_a_flask_app_is_seen_by_the_litestar_app_and_back(
    store: AsyncPostgresStore, pg_dsn: str, schema: str
) -> None:
    flask = flask_app(pg_dsn, schema).test_client()
    config = config_for(store)  # the defaults: Flask's PgSession's
    async with AsyncTestClient(app=app_for(config)) as client:
        # Logged in on Flask, read and changed on Litestar, read back on Flask.
        flask_cookie = cookie_value(flask.get("/login?user=42"))
        client.cookies.set("session", flask_cookie)
        assert (await client.get("/read")).json()["_user_id"] == "42"
        changed = await client.get("/set?cart=3")
        assert set_cookies(changed) == []  # the same session
        flask_read = flask.get("/read").get_json()
        assert flask_read["_user_id"] == "42" and flask_read["cart"] == "3"
        # Logged in on Litestar, read on Flask; both mirror the user into the same column.
        client.cookies.clear()
        litestar_cookie = cookie_value(await client.get("/set?_user_id=7"))
        other = flask_app(pg_dsn, schema).test_client()
        other.set_cookie("session", litestar_cookie)
        assert other.get("/read").get_json()["_user_id"] == "7"
        assert len(in_app(client, store.sessions_for_user, "42")) == 1
        assert len(in_app(client, store.sessions_for_user, "7")) == 1


# -- the backend's operations by session id ------------------------------------------------------


async def test_get_set_delete_delete_all_and_delete_expired_by_session_id(store: AsyncPostgresStore) -> None:
    config = config_for(store)
    backend = config.backend
    async with AsyncTestClient(app=app_for(config)) as client:
        await client.get("/set?user=ann&cart=2")
        current = (await client.get("/id")).json()["id"]
        assert in_app(client, backend.get, current) == {"user": "ann", "cart": "2"}
        assert in_app(client, backend.get, "no-such-id") is None
        assert in_app(client, backend.get, "nön-ascii") is None
        # set() replaces the data under the same id: the browser's cookie sees it.
        assert in_app(client, backend.set, current, {"user": "ann", "cart": "5"}) == current
        assert (await client.get("/read")).json() == {"user": "ann", "cart": "5"}
        # An id with no live session is never taken as given: the data gets a new one.
        issued = in_app(client, backend.set, new_session_id(), {"k": 1})
        assert issued is not None and in_app(client, backend.get, issued) == {"k": 1}
        # delete() ends a session: its cookie opens nothing any more.
        in_app(client, backend.delete, current)
        assert in_app(client, backend.get, current) is None
        assert (await client.get("/read")).json() == {}
        in_app(client, backend.delete, "no-such-id")  # nothing to do, no error
        # delete_expired() purges what has expired; delete_all() ends every session.
        sql(store, "UPDATE {t} SET expires_at = now() - interval '1 hour'")
        assert in_app(client, backend.delete_expired) == 1
        for data in ({"a": 1}, {"b": 2}):
            assert in_app(client, backend.set, "unknown", data) is not None
        assert in_app(client, backend.delete_all) == 2
    assert rows(store) == []


async def test_delete_all_works_on_a_store_on_the_apps_pool(pg_dsn: str, schema: str) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(pg_dsn, min_size=1, max_size=2, open=False)
    store = AsyncPostgresStore.from_pool(pool, schema=schema, purge_interval=None)
    backend = config_for(store).backend

    async def open_pool() -> None:
        await pool.open()

    async def close_pool() -> None:
        await pool.close()

    app = app_for(config_for(store), on_startup=[open_pool], on_shutdown=[close_pool])
    async with AsyncTestClient(app=app) as client:
        await client.get("/set?a=1")
        assert in_app(client, backend.set, "unknown", {"b": 2}) is not None
        assert in_app(client, backend.delete_all) == 2
        assert (await client.get("/read")).json() == {}
    assert sql(pg_dsn, f"SELECT count(*) FROM {store.qualified_name}") == [(0,)]


# -- websockets ----------------------------------------------------------------------------------


def test_a_websocket_reads_the_session_saves_when_asked_and_refuses_other_origins(
    pg_dsn: str, schema: str
) -> None:
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    with TestClient(app=app_for(config_for(store))) as client:
        client.get("/set?a=1")
        with client.websocket_connect("/ws") as socket:
            assert socket.receive_json() == {"a": "1"}
            socket.send_text("b=2")
            assert socket.receive_text() == "saved"
        assert client.get("/read").json() == {"a": "1", "b": "2"}
        elsewhere = {"Origin": "https://elsewhere.example"}
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect("/ws", headers=elsewhere),
        ):
            pytest.fail("a websocket from another origin's page was accepted")
        assert refused.value.code == 1008
        # A websocket cannot set a cookie: a new session is refused, not stored.
        client.cookies.clear()
        with client.websocket_connect("/ws") as socket:
            assert socket.receive_json() == {}
            socket.send_text("c=3")
            assert socket.receive_text().startswith("refused: ")
    assert len(rows(store)) == 1


# -- the options ---------------------------------------------------------------------------------


async def test_litestars_option_names_reach_the_cookie(store: AsyncPostgresStore) -> None:
    config = config_for(
        store, key="sid", max_age=600, samesite="strict", secure=True, httponly=False, permanent=True
    )
    async with AsyncTestClient(app=app_for(config)) as client:
        [cookie] = set_cookies(await client.get("/set?a=1"))
    assert cookie.startswith("sid=")
    assert "Max-Age=600" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie
    assert "HttpOnly" not in cookie


@pytest.mark.parametrize(
    "options, named",
    [
        ({"max_age": 0}, "max_age"),
        ({"key": "no spaces please"}, "key"),
        ({"samesite": "sideways"}, "samesite"),
        ({"samesite": "none", "secure": False}, "secure"),
        ({"secret_key": None}, "secret_key"),
        ({"websocket_origins": ["https://app.example.com/"]}, "websocket_origins"),
    ],
)
def test_a_bad_option_is_refused_at_construction_under_its_litestar_name(
    options: dict[str, Any], named: str, pg_dsn: str
) -> None:
    store = AsyncPostgresStore(pg_dsn)
    with pytest.raises(ConfigurationError, match=named) as refused:
        PgSessionConfig(store=store, **{"secret_key": SECRET, **options})
    for core_name in ("idle_timeout", "cookie_name", "cookie_samesite", "cookie_secure"):
        assert core_name not in str(refused.value)


def test_a_sync_store_is_refused(make_store: Any) -> None:
    sync_store: PostgresStore = make_store()
    with pytest.raises(ConfigurationError, match="AsyncPostgresStore"):
        PgSessionConfig(store=sync_store, secret_key=SECRET)  # type: ignore[arg-type]


# -- the table on SQLAlchemy engines -------------------------------------------------------------


async def test_the_session_table_made_on_an_async_engine_serves_the_litestar_app(
    pg_dsn: str, schema: str
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(engine_url(pg_dsn).set(drivername="postgresql+psycopg"))
    metadata = sa.MetaData()
    table = session_table(metadata, schema=schema)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        store = AsyncPostgresStore(store_dsn(engine), schema=schema, create_table=False, purge_interval=None)
        async with AsyncTestClient(app=app_for(config_for(store, user_key="user"))) as client:
            await client.get("/set?user=ann")
            assert (await client.get("/read")).json() == {"user": "ann"}
        async with engine.connect() as conn:
            assert (await conn.execute(sa.select(table.c.user_id))).scalars().all() == ["ann"]
    finally:
        await engine.dispose()


def test_store_dsn_of_sync_and_async_engines() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    url = "postgresql+psycopg://app:p%40ss@db.example:5433/app?sslmode=require"
    expected = "postgresql://app:p%40ss@db.example:5433/app?sslmode=require"
    assert store_dsn(create_async_engine(url)) == expected
    assert store_dsn(sa.create_engine(url.replace("+psycopg", "+psycopg2"))) == expected
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        store_dsn(sa.create_engine("sqlite://"))


# -- Litestar's own command line: `litestar sessions delete` and `litestar sessions clear` -----------

CLI_APP = '''
import os
from litestar import Litestar, Request, get
from pgsession_wsgi.litestar import AsyncPostgresStore, PgSessionConfig, PgSessionPlugin

config = PgSessionConfig(
    store=AsyncPostgresStore(os.environ["CLI_DSN"], schema=os.environ["CLI_SCHEMA"], purge_interval=None),
    secret_key=os.environ["CLI_SECRET"],
)

@get("/set")
async def set_keys(request: Request) -> str:
    request.session.update(request.query_params.dict())
    return "ok"

app = Litestar([set_keys], plugins=[PgSessionPlugin(config)])
'''


def test_litestars_sessions_commands_delete_one_session_and_clear_them_all(
    tmp_path: Any, pg_dsn: str, schema: str
) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "cli_app.py").write_text(CLI_APP)
    # Rich (Litestar's CLI output) sized and plain, whatever the terminal running the tests.
    env = {**os.environ, "CLI_DSN": pg_dsn, "CLI_SCHEMA": schema, "CLI_SECRET": SECRET,
           "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    litestar = Path(sys.executable).with_name("litestar")

    def command(*args: str) -> str:
        done = subprocess.run([str(litestar), "--app", "cli_app:app", "sessions", *args], input="y\n",
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return " ".join(done.stdout.split())  # as one line, however Rich wrapped it

    def count(where: str = "true", *params: Any) -> int:
        return int(sql(pg_dsn, f'SELECT count(*) FROM "{schema}".pgsession WHERE {where}', params)[0][0])

    # Two visitors of the same app (the same config: schema, table, key), in this process.
    config = PgSessionConfig(store=AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None),
                             secret_key=SECRET)
    app = Litestar([set_keys], plugins=[PgSessionPlugin(config)])
    with TestClient(app) as client:
        client.get("/set?user=ada")
        signed = HmacIdSigner(SECRET).unsign(client.cookies["session"])
        client.cookies.clear()
        client.get("/set?user=bob")
    assert signed is not None and count() == 2
    ada_id = signed[0]

    said = command("delete", "--", ada_id)  # "--": an id may start with "-"
    assert "Deleted session" in said, said
    assert (count("id = %s", hash_session_id(ada_id)), count()) == (0, 1), said
    said = command("clear")
    assert "All active sessions deleted" in said, said
    assert count() == 0, said
    assert config.get_store_from_app(app) is config.store
