"""pgsession_wsgi.quart.PgSession on a real PostgreSQL, through Quart's own test client:
statements on the wire, Flask-style config, the 503s, websockets, streaming, the serving
lifecycle, and one session shared with a Flask app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest
from apps.asgi_apps import SECRET, quart_app
from apps.asgi_support import dead_dsn, session_records, signed_cookie
from db import sql
from flask import Flask
from flask import session as flask_session
from helpers import ClosingClient, build_core
from quart import Quart
from quart import request as quart_request
from quart import session as quart_session
from quart import websocket as quart_websocket
from quart.signals import websocket_started
from quart.testing.app import LifespanError
from quart.testing.connections import WebsocketResponseError
from wire import RoundTripCounter

from pgsession_wsgi.async_store import AsyncPostgresStore
from pgsession_wsgi.errors import ConfigurationError, OutsideRequestError, SessionError, StoreUnavailable
from pgsession_wsgi.flask import EXTENSION_KEY as FLASK_EXTENSION_KEY
from pgsession_wsgi.flask import PgSession as FlaskPgSession
from pgsession_wsgi.quart import EXTENSION_KEY, WEBSOCKET_UNAVAILABLE, PgSession, PgSessionInterface

pytestmark = pytest.mark.anyio


@pytest.fixture
async def make_app(pg_dsn: str, schema: str) -> AsyncIterator[Any]:
    """``make_app(dsn=None, **config)``: the Quart test app on this test's schema; stores closed after."""
    made: list[Quart] = []

    def make(dsn: str | None = None, **config: Any) -> Quart:
        app = quart_app(dsn or pg_dsn, schema, **config)
        made.append(app)
        return app

    yield make
    for app in made:
        await interface(app).store.close()


def interface(app: Quart) -> PgSessionInterface:
    found = app.extensions[EXTENSION_KEY]
    assert isinstance(found, PgSessionInterface)
    return found


def stored(app: Quart) -> list[Any]:
    return [data for (data,) in sql(interface(app).store, "SELECT data FROM {t} ORDER BY created_at")]


async def get(client: Any, path: str, **kwargs: Any) -> tuple[int, Any, list[str]]:
    """(status, the answer, the Set-Cookie headers)."""
    response = await client.get(path, **kwargs)
    body = await response.get_json() if response.mimetype == "application/json" else await response.get_data()
    answer = body["answer"] if isinstance(body, dict) and "answer" in body else body
    return response.status_code, answer, response.headers.getlist("Set-Cookie")


async def handshake(
    app: Quart, path: str, headers: dict[str, str], *, http_response: bool = True, client_leaves: bool = True,
    leave_when: anyio.Event | None = None,
) -> list[dict[str, Any]]:
    """What ``app`` sends over ASGI for one websocket handshake, driven as a server drives it
    (``http_response``: whether the server offers the ``websocket.http.response`` extension, as
    Quart's test client does). The client leaves once the app has closed the websocket or
    answered it with an HTTP response; with ``client_leaves`` False it never answers a close, so
    the handler runs on after closing until it returns. Quart's test client cannot tell a close
    code on every release: up to 0.22 it raises ``WebsocketDisconnectError(code)``, from 0.23 it
    keeps none."""
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost")] + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("localhost", 80),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if http_response else {},
    }
    connected = False
    ended = anyio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal connected
        if not connected:
            connected = True
            return {"type": "websocket.connect"}
        await ended.wait()
        if leave_when is not None:  # the client answers the close only once the test says so
            await leave_when.wait()
        elif not client_leaves:
            await anyio.sleep_forever()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Any) -> None:
        sent.append(dict(message))
        if message["type"] == "websocket.close" or (
            message["type"] == "websocket.http.response.body" and not message.get("more_body", False)
        ):
            ended.set()

    # 30 s only stops a hang (an app that never ends the handshake); it is never what a test checks.
    with anyio.move_on_after(30) as waited:
        await app(scope, receive, send)
    assert not waited.cancelled_caught, f"the app neither closed nor answered the handshake: {sent}"
    return sent


# -- sessions and statements ---------------------------------------------------------------


async def test_round_trip_vary_and_nothing_for_an_untouched_session(make_app: Any) -> None:
    app = make_app()
    await interface(app).store.open()
    client = app.test_client()
    status, answer, cookies = await get(client, "/none")
    assert (status, answer, cookies) == (200, "untouched", [])
    assert stored(app) == []
    response = await client.get("/inc")
    assert response.headers["Vary"] == "Cookie"
    [cookie] = response.headers.getlist("Set-Cookie")
    assert "Max-Age" not in cookie  # as in Quart: a browser-session cookie until made permanent
    assert (await get(client, "/inc"))[1] == 2
    assert (await get(client, "/read"))[1] == {"n": 2}
    assert stored(app) == [{"n": 2}]


@pytest.mark.parametrize("prepared", [True, False])
async def test_prepared_statements_follow_the_config(
    prepared: bool, make_app: Any, wire_counter: RoundTripCounter
) -> None:
    app = make_app(wire_counter.dsn, PGSESSION_PREPARED_STATEMENTS=prepared)
    client = app.test_client()
    await get(client, "/set?a=1")
    wire_counter.reset()
    assert (await get(client, "/read"))[1] == {"a": "1"}
    [load] = wire_counter.statements  # with its PREPARE if the connection has not seen it yet
    assert ("EXECUTE pgsession_load_" in load) == prepared, load


async def test_statements_on_the_wire(make_app: Any, wire_counter: RoundTripCounter) -> None:
    app = make_app(wire_counter.dsn)
    await interface(app).store.open()
    client = app.test_client()

    async def count(path: str, **kwargs: Any) -> int:
        wire_counter.reset()
        status, _, _ = await get(client, path, **kwargs)
        assert status == 200
        return wire_counter.count

    assert await count("/read") == 0  # no cookie
    assert await count("/set?a=1") == 1  # new
    assert await count("/read") == 1  # read
    assert await count("/inc") == 2, wire_counter.statements  # read + write
    stranger = app.test_client()
    bad = {"Cookie": f"session={signed_cookie('not-the-secret')}"}
    wire_counter.reset()
    assert (await get(stranger, "/read", headers=bad))[1] == {}
    assert wire_counter.count == 0  # bad signature


async def test_logout_deletes_the_row_and_expires_the_cookie(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    await get(client, "/set?a=1")
    _, _, [expired] = await get(client, "/logout")
    assert expired.startswith("session=;") and "Max-Age=0" in expired
    assert stored(app) == []


async def test_a_login_under_the_user_key_regenerates_and_is_listed(make_app: Any) -> None:
    app = make_app()  # PGSESSION_USER_KEY defaults to Flask-Login's "_user_id"
    client = app.test_client()
    _, _, [first] = await get(client, "/set?a=1")
    _, _, [second] = await get(client, "/set?_user_id=7")
    assert first.split(";")[0] != second.split(";")[0]
    [info] = await interface(app).store.sessions_for_user(7)
    assert info is not None
    assert await interface(app).store.revoke_user(7) == 1
    assert (await get(client, "/read"))[1] == {}


async def test_changes_made_while_streaming_are_saved_after_the_body(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    await get(client, "/set?a=1")
    assert (await get(client, "/stream"))[1] == b"first chunk\nsecond chunk\n"
    await get(client, "/stream")
    assert (await get(client, "/read"))[1] == {"a": "1", "streamed": 2}


async def test_a_streamed_body_sees_the_flags_of_the_request_and_its_change_reaches_the_same_row(
    make_app: Any,
) -> None:
    """The save ran before the body; the body still sees what the request did (``modified``,
    ``new``), and its own change is saved into the row just written."""
    app = make_app()
    seen: list[tuple[bool, bool]] = []

    @app.get("/stream-flags")
    async def stream_flags() -> Any:
        quart_session["a"] = 1
        session = quart_session._get_current_object()  # type: ignore[attr-defined]

        async def body() -> AsyncIterator[bytes]:
            yield b"chunk"
            seen.append((session.modified, session.new))
            session["late"] = 2

        return body(), 200

    client = app.test_client()
    await client.get("/stream-flags")
    assert seen == [(True, True)]
    assert stored(app) == [{"a": 1, "late": 2}]


async def test_a_logout_read_again_while_streaming_writes_nothing_and_warns_nothing(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """``modified`` stays True after the logout's save; that alone is no change left to save."""
    app = make_app()
    seen: list[tuple[bool, dict[str, Any]]] = []

    @app.get("/logout-stream")
    async def logout_stream() -> Any:
        session = quart_session._get_current_object()  # type: ignore[attr-defined]
        session.invalidate()

        async def body() -> AsyncIterator[bytes]:
            yield b"bye"
            seen.append((session.modified, dict(session)))

        return body(), 200

    client = app.test_client()
    await get(client, "/set?a=1")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        await client.get("/logout-stream")
    assert seen == [(True, {})]
    assert caplog.messages == []
    assert stored(app) == []


async def test_a_change_in_teardown_that_needs_a_new_cookie_is_not_saved_and_says_so(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A first visit whose only change is made in teardown_request would need a cookie the
    response no longer carries: nothing is stored (no statement is sent), and the log says why."""
    app = make_app()

    @app.get("/untouched-view")
    async def untouched_view() -> str:
        return "ok"

    @app.teardown_request
    async def late(exc: BaseException | None) -> None:
        if quart_request.path == "/untouched-view":
            quart_session["late"] = 1

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        response = await app.test_client().get("/untouched-view")
    assert response.headers.getlist("Set-Cookie") == []
    assert caplog.messages == [
        "session changed in teardown_request in a way that needs a new cookie, which can no "
        "longer be set; the change was not saved"
    ]


async def test_a_teardown_change_refused_before_a_streamed_body_is_reported_once(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Quart runs teardown_request before it streams the body: the change refused there is the
    one warning, not told again as the body ends, even if the body reads the session."""
    app = make_app()
    seen: list[Any] = []

    @app.get("/untouched-stream")
    async def untouched_stream() -> Any:
        session = quart_session._get_current_object()  # type: ignore[attr-defined]

        async def body() -> AsyncIterator[bytes]:
            yield b"chunk"
            seen.append(session.get("late"))

        return body(), 200

    @app.teardown_request
    async def late(exc: BaseException | None) -> None:
        if quart_request.path == "/untouched-stream":
            quart_session["late"] = 1

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        response = await app.test_client().get("/untouched-stream")
        assert await response.get_data() == b"chunk"
    assert seen == [1]
    assert response.headers.getlist("Set-Cookie") == []
    assert caplog.messages == [
        "session changed in teardown_request in a way that needs a new cookie, which can no "
        "longer be set; the change was not saved"
    ]
    await interface(app).store.open()
    assert stored(app) == []


async def test_a_change_while_streaming_that_needs_a_new_cookie_is_not_saved_and_says_so(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A first visit whose body starts the session after the headers went out: nothing is
    stored, and one warning says where the change was made and why it was dropped."""
    app = make_app()

    @app.get("/late-start")
    async def late_start() -> Any:
        session = quart_session._get_current_object()  # type: ignore[attr-defined]

        async def body() -> AsyncIterator[bytes]:
            yield b"chunk"
            session["late"] = 1

        return body(), 200

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        response = await app.test_client().get("/late-start")
        assert await response.get_data() == b"chunk"
    assert response.headers.getlist("Set-Cookie") == []
    [record] = session_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "session changed while streaming in a way that needs a new cookie, which can no longer "
        "be set; the change was not saved"
    )
    await interface(app).store.open()
    assert stored(app) == []


async def test_a_change_while_streaming_the_save_refuses_is_not_saved_and_logged_once(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """No response is left to turn into a 500: one error line says the change made while
    streaming was not saved, and why (over max_size); the row keeps what the request saved."""
    app = make_app()

    @app.get("/late-big")
    async def late_big() -> Any:
        session = quart_session._get_current_object()  # type: ignore[attr-defined]

        async def body() -> AsyncIterator[bytes]:
            yield b"chunk"
            session["big"] = "x" * 300_000  # over the 256 KiB limit

        return body(), 200

    client = app.test_client()
    await get(client, "/set?a=1")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        response = await client.get("/late-big")
        assert await response.get_data() == b"chunk"
    [record] = session_records(caplog)
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert message.startswith("session change made while streaming was not saved: ")
    assert "262144 bytes" in message
    assert stored(app) == [{"a": "1"}]


async def test_a_websocket_that_leaves_a_new_session_for_its_end_saves_nothing_and_says_so(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Without save_session(), Quart saves when the handler returns: a change that needs a new
    cookie cannot be saved from a websocket, and one warning says so."""
    app = make_app()

    @app.websocket("/ws-new")
    async def ws_new() -> None:
        await quart_websocket.accept()
        quart_session["a"] = 1
        await quart_websocket.send("set")

    await interface(app).store.open()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        async with app.test_client().websocket("/ws-new") as ws:
            assert await ws.receive() == "set"
    [record] = session_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "session changed in a websocket in a way that needs a new cookie, which can no longer "
        "be set; the change was not saved"
    )
    assert stored(app) == []


async def test_an_unstorable_value_is_a_500_naming_the_key(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    client = app.test_client()
    await get(client, "/set?a=1")
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        status, _, cookies = await get(client, "/bad")
    assert status == 500 and cookies == []
    # Raised through Quart's own request handling: Quart logs it, once; nothing is saved.
    assert session_records(caplog) == []
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None and "'sock'" in str(record.exc_info[1])
    assert stored(app) == [{"a": "1"}]


# -- configuration, as for the Flask extension ---------------------------------------------


async def test_cookie_settings_come_from_the_quart_config(make_app: Any) -> None:
    app = make_app(
        SESSION_COOKIE_NAME="qsession",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="strict",
        SESSION_COOKIE_PATH="/app",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=2),
    )

    @app.route("/permanent")
    async def permanent() -> str:
        quart_session.permanent = True
        quart_session["p"] = 1
        return "ok"

    client = app.test_client()
    response = await client.get("/permanent")
    [cookie] = response.headers.getlist("Set-Cookie")
    assert cookie.startswith("qsession=")
    for attribute in ("Secure", "SameSite=Strict", "Path=/app", "Max-Age=7200", "HttpOnly"):
        assert attribute in cookie


async def test_the_cookie_is_secure_over_https_and_not_over_http_by_default(make_app: Any) -> None:
    app = make_app()  # SESSION_COOKIE_SECURE unset: Secure follows the request's scheme
    _, _, [over_https] = await get(app.test_client(), "/set?a=1", scheme="https")
    assert "Secure" in over_https.split("; ")[1:]
    _, _, [over_http] = await get(app.test_client(), "/set?a=1", scheme="http")
    assert "Secure" not in over_http.split("; ")[1:]


async def test_a_cookie_in_any_of_several_cookie_headers_is_read(make_app: Any) -> None:
    """HTTP/2 clients may send each cookie in a header of its own."""
    app = make_app()
    _, _, [cookie] = await get(app.test_client(), "/set?a=1")
    client = app.test_client(use_cookies=False)
    headers = [("Cookie", "theme=dark"), ("Cookie", cookie.split(";")[0])]
    assert (await get(client, "/read", headers=headers))[1] == {"a": "1"}


async def test_secret_key_fallbacks_read_cookies_signed_with_an_old_key(make_app: Any) -> None:
    old = make_app()
    _, _, [cookie] = await get(old.test_client(), "/set?a=1")
    rotated = make_app(SECRET_KEY="a new key " * 4, SECRET_KEY_FALLBACKS=[SECRET])
    client = rotated.test_client(use_cookies=False)
    assert (await get(client, "/read", headers={"Cookie": cookie.split(";")[0]}))[1] == {"a": "1"}
    without = make_app(SECRET_KEY="a new key " * 4)
    assert (await get(without.test_client(), "/read", headers={"Cookie": cookie.split(";")[0]}))[1] == {}


async def test_the_dsn_stores_table_settings_come_from_the_quart_config(
    make_app: Any, pg_dsn: str, schema: str
) -> None:
    app = make_app(PGSESSION_TABLE="q_unlogged", PGSESSION_UNLOGGED=True)
    assert interface(app).store.purge_interval == 300  # the default purge, every 5 minutes
    async with app.test_app():
        [(persistence,)] = sql(
            pg_dsn,
            "SELECT relpersistence FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (schema, "q_unlogged"),
        )
    assert persistence == "u"
    missing = make_app(PGSESSION_TABLE="q_missing", PGSESSION_CREATE_TABLE=False)
    with pytest.raises(LifespanError, match='"q_missing" does not exist'):
        async with missing.test_app():  # startup fails: the table was not created
            pass


async def test_setting_up_twice_or_without_secret_or_dsn_is_refused(pg_dsn: str, schema: str) -> None:
    app = Quart("twice")
    app.config.update(SECRET_KEY="s", PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
    extension = PgSession(app)
    try:
        with pytest.raises(ConfigurationError, match="already set up"):
            PgSession(app)
        assert extension.store is interface(app).store
    finally:
        await extension.store.close()
    no_secret = Quart("no_secret")
    no_secret.config.update(PGSESSION_DSN=pg_dsn)
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        PgSession(no_secret)
    no_dsn = Quart("no_dsn")
    no_dsn.config.update(SECRET_KEY="s", SQLALCHEMY_DATABASE_URI="sqlite:///x.db")
    with pytest.raises(ConfigurationError, match="PGSESSION_DSN"):
        PgSession(no_dsn)


async def test_the_dsn_falls_back_to_a_postgresql_sqlalchemy_uri(pg_dsn: str, schema: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(pg_dsn)
    query = urlencode({key: params[key] for key in ("host", "port", "user") if key in params})
    url = f"postgresql:///{params['dbname']}?{query}"  # a socket directory as host works too
    app = Quart("fallback")
    app.config.update(SECRET_KEY="s", SQLALCHEMY_DATABASE_URI=url, PGSESSION_SCHEMA=schema)
    extension = PgSession(app)
    try:
        assert extension.store.dsn.startswith("postgresql://")

        @app.route("/set")
        async def set_key() -> str:
            quart_session["k"] = "v"
            return "ok"

        assert (await app.test_client().get("/set")).status_code == 200
        assert [data for (data,) in sql(extension.store, "SELECT data FROM {t}")] == [{"k": "v"}]
    finally:
        await extension.store.close()


async def test_serving_opens_the_store_and_closes_it_after(make_app: Any) -> None:
    app = make_app()
    store = interface(app).store
    async with app.test_app() as test_app:
        assert sql(store, "SELECT count(*) FROM {t}") == [(0,)]  # before_serving created the table
        assert (await get(test_app.test_client(), "/inc"))[1] == 1
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.stats()


# -- the store down ------------------------------------------------------------------------


async def test_the_store_down_is_a_503_with_one_log_line(
    make_app: Any, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """At the load (Quart's error handler) and at the save (the view's response replaced, a JSON
    one here): the same answer, and one line saying the store failed, with the store's reason."""
    app = make_app(dead_dsn(pg_dsn))
    client = app.test_client()
    assert (await get(client, "/none"))[0] == 200  # nothing asked of the store
    cases = [("/read", {"Cookie": f"session={signed_cookie()}"}), ("/set?a=1", {})]  # load, save
    for path, headers in cases:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
            response = await client.get(path, headers=headers)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert await response.get_data(as_text=True) == (
            "Service Unavailable: the session store cannot be reached. Please try again shortly.\n"
        )
        assert response.headers.getlist("Set-Cookie") == []
        [record] = session_records(caplog)
        assert record.levelno == logging.ERROR
        assert record.getMessage().startswith("session store unavailable, answering 503: cannot connect")


async def test_a_save_the_database_refuses_is_a_500_with_one_log_line(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Each change is under max_size, the merged row is not: the database refuses the save,
    which the check before it could not know. The view's response becomes a plain 500, and one
    line says the save failed and why; the row keeps what it had."""
    app = make_app()

    @app.get("/big/<key>")
    async def big(key: str) -> dict[str, str]:
        quart_session[key] = "x" * 150_000  # 256 KiB is the limit
        return {"answer": "stored"}

    client = app.test_client()
    assert (await client.get("/big/a")).status_code == 200
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        response = await client.get("/big/b")
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "Retry-After" not in response.headers
    assert await response.get_data(as_text=True) == "Internal Server Error\n"
    assert response.headers.getlist("Set-Cookie") == []
    [record] = session_records(caplog)
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert message.startswith("session error while saving, answering 500: ")
    assert "262144 bytes" in message  # the limit the row went over
    assert [sorted(data) for data in stored(app)] == [["a"]]


async def test_an_apps_own_store_unavailable_handler_is_kept(make_app: Any, pg_dsn: str) -> None:
    app = Quart("own")
    app.config.update(SECRET_KEY="s", PGSESSION_DSN=dead_dsn(pg_dsn))

    @app.errorhandler(StoreUnavailable)
    async def own(error: StoreUnavailable) -> tuple[str, int]:
        return "our own page", 503

    @app.route("/set")
    async def set_key() -> str:
        quart_session["k"] = "v"
        return "ok"

    extension = PgSession(app)
    try:
        response = await app.test_client().get("/read", headers={"Cookie": f"session={signed_cookie('s')}"})
        assert response.status_code == 503
        assert await response.get_data() == b"our own page"
    finally:
        await extension.store.close()


async def test_the_store_down_closes_a_websocket_with_1013(
    make_app: Any, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(dead_dsn(pg_dsn))
    headers = {"Cookie": f"session={signed_cookie()}"}
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        sent = await handshake(app, "/ws", headers)
    assert WEBSOCKET_UNAVAILABLE == 1013
    assert sent == [{"type": "websocket.close", "code": 1013, "reason": "session store unavailable"}]
    assert len(session_records(caplog)) == 1


async def test_a_session_error_at_connect_closes_the_websocket_with_1011_and_runs_no_handler(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Not an outage (a row something else wrote, which cannot be decoded): 1011, and the
    websocket's handler never runs (it would accept a handshake already closed)."""
    app = make_app()
    ran: list[bool] = []

    @app.websocket("/ws-handler")
    async def handler() -> None:
        ran.append(True)
        await quart_websocket.accept()

    _, _, [cookie] = await get(app.test_client(), "/set?a=1")
    sql(interface(app).store, """UPDATE {t} SET data = '{"v": {" u": "not-a-uuid"}}'::jsonb""")
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        sent = await handshake(app, "/ws-handler", {"Cookie": cookie.split(";")[0]})
    assert sent == [{"type": "websocket.close", "code": 1011, "reason": "session error"}]
    assert ran == []
    [record] = session_records(caplog)
    assert record.getMessage().startswith("session error while loading, closing the websocket with 1011: ")
    assert "could not be decoded" in record.getMessage()


async def test_a_session_error_at_load_is_a_plain_500_with_one_log_line(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Not an outage (a row something else wrote, which cannot be decoded): a plain 500 before
    the view runs, and one line saying the load failed and why."""
    app = make_app()
    _, _, [cookie] = await get(app.test_client(), "/set?a=1")
    sql(interface(app).store, """UPDATE {t} SET data = '{"v": {" u": "not-a-uuid"}}'::jsonb""")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        response = await app.test_client().get("/read", headers={"Cookie": cookie.split(";")[0]})
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert await response.get_data(as_text=True) == "Internal Server Error\n"
    [record] = session_records(caplog)
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("session error while loading, answering 500: ")
    assert "could not be decoded" in record.getMessage()


async def test_a_write_before_the_refusal_fails_saying_why(
    make_app: Any, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """What the app runs before the hook that answers for a session that could not be loaded
    (URL value preprocessors, the started signals): a write there fails with a StoreUnavailable
    saying the session is read-only and empty, which is the one line of the 503; a cross-origin
    websocket's session says which setting would allow its Origin."""
    down = make_app(dead_dsn(pg_dsn))

    @down.url_value_preprocessor
    def write_early(endpoint: str | None, values: dict[str, Any] | None) -> None:
        quart_session["early"] = 1

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        response = await down.test_client().get("/read", headers={"Cookie": f"session={signed_cookie()}"})
    assert response.status_code == 503
    [record] = session_records(caplog)
    assert record.getMessage() == (
        "session store unavailable, answering 503: the session store is unavailable; the session is "
        "read-only and empty for the rest of this request"
    )

    app = make_app()
    said: list[str] = []

    async def write_from_websocket(sender: Quart, **extra: Any) -> None:
        try:
            quart_session["early"] = 1
        except SessionError as exc:
            said.append(str(exc))

    with websocket_started.connected_to(write_from_websocket, sender=app):  # before any hook
        sent = await handshake(app, "/ws", {"Origin": "https://evil.example"})
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 403
    assert said == [
        "this websocket's Origin may not use the session: list it in PGSESSION_WEBSOCKET_ORIGINS "
        "if that page may"
    ]


async def test_the_refusals_come_before_the_apps_own_hooks_even_those_registered_first(
    pg_dsn: str, schema: str
) -> None:
    """A session that could not be loaded (the store down) and a cross-origin handshake are
    answered before any of the app's before_request/before_websocket hooks, also those the app
    registered before PgSession(app): none of them meets such a session."""
    app = Quart("hooks_first")
    app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=dead_dsn(pg_dsn), PGSESSION_SCHEMA=schema)
    ran: list[str] = []

    @app.before_request
    async def early_request() -> None:
        ran.append(f"request: {dict(quart_session)}")

    @app.before_websocket
    async def early_websocket() -> None:
        ran.append(f"websocket: {dict(quart_session)}")

    @app.websocket("/ws")
    async def ws() -> None:
        await quart_websocket.accept()

    ext = PgSession(app)
    try:
        response = await app.test_client().get("/", headers={"Cookie": f"session={signed_cookie()}"})
        assert response.status_code == 503
        sent = await handshake(app, "/ws", {"Origin": "https://evil.example"})
        assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 403
        assert ran == []
    finally:
        await ext.store.close()


async def test_a_websocket_the_handler_closed_is_not_closed_again_when_the_store_fails(
    make_app: Any, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The store fails after the handler closed its websocket itself (the client has not
    answered the close yet, so the handler runs on): the 503's close is skipped, and nothing
    else fails (one line, ours)."""
    from pgsession_wsgi import quart as pg_quart

    app = make_app(dead_dsn(pg_dsn))

    handler_done = anyio.Event()

    @app.websocket("/ws-closed")
    async def ws_closed() -> None:
        await quart_websocket.accept()
        await quart_websocket.close(1000)
        try:
            await pg_quart.sessions_for_user("7")  # the store is down: StoreUnavailable
        finally:
            handler_done.set()

    caplog.clear()
    with caplog.at_level(logging.INFO):
        # The client answers the close once the handler failed (Quart 0.23 waits for that answer).
        sent = await handshake(app, "/ws-closed", {}, leave_when=handler_done)
    assert sent == [
        {"type": "websocket.accept", "subprotocol": None, "headers": []},
        {"type": "websocket.close", "code": 1000, "reason": ""},
    ]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.name, r.getMessage().split(":")[0]) for r in errors] == [
        ("pgsession_wsgi", "session store unavailable, answering 503")
    ]


# -- websockets ----------------------------------------------------------------------------


async def test_a_websocket_reads_the_session_and_saves_when_asked(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    await get(client, "/set?a=1")
    async with client.websocket("/ws") as ws:
        assert await ws.receive_json() == {"a": "1"}
        await ws.send("b=2")
        assert await ws.receive() == "saved"
    assert (await get(client, "/read"))[1] == {"a": "1", "b": "2"}


async def test_a_websocket_cannot_save_a_new_session(make_app: Any) -> None:
    app = make_app()
    await interface(app).store.open()
    async with app.test_client().websocket("/ws") as ws:
        assert await ws.receive_json() == {}
        await ws.send("a=1")
        assert str(await ws.receive()).startswith("SessionError: this session change needs a new cookie")
    assert stored(app) == []


async def test_a_websocket_save_that_goes_through_after_a_refused_one_leaves_the_end_save_working(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused save is said once (the handler's SessionError); once a later save goes
    through, what the handler leaves for its end is saved there again, not dropped unsaid."""
    from pgsession_wsgi.quart import save_session as save_quart_session

    app = make_app()

    @app.websocket("/ws-login")
    async def ws_login() -> None:
        await quart_websocket.accept()
        quart_session["_user_id"] = "7"  # a login: it needs a new cookie
        try:
            await save_quart_session()
        except SessionError as exc:
            await quart_websocket.send(f"refused: {exc}")
        del quart_session["_user_id"]
        quart_session["b"] = "2"
        await save_quart_session()
        quart_session["c"] = "3"  # left for the end of the handler
        await quart_websocket.send("done")

    client = app.test_client()
    _, _, cookies = await get(client, "/set?a=1")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        # Driven as a server drives it: the client leaves only once the app closed, which Quart
        # does after the handler's end and its save (a test client leaving at once would have
        # Quart cancel the handler first, and Quart 0.23's client never sees the close).
        sent = await handshake(app, "/ws-login", {"cookie": cookies[0].split(";")[0]})
    texts = [message.get("text") for message in sent if message["type"] == "websocket.send"]
    assert len(texts) == 2 and texts[0].startswith("refused: this session change needs a new cookie")
    assert texts[1] == "done"
    assert (await get(client, "/read"))[1] == {"a": "1", "b": "2", "c": "3"}
    assert caplog.messages == []


async def test_a_websocket_save_after_a_logout_elsewhere_raises_and_writes_no_row(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    await get(client, "/set?a=1")
    async with client.websocket("/ws") as ws:
        assert await ws.receive_json() == {"a": "1"}
        await get(client, "/logout")  # another request ends the session meanwhile
        await ws.send("b=2")
        assert str(await ws.receive()).startswith("SessionError: the session had ended")
    assert stored(app) == []


# -- websockets: the Origin check ----------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "origin"),
    [("ws", None), ("ws", "http://localhost"), ("wss", "https://localhost:443")],
    ids=["no-origin", "own", "own-wss"],
)
async def test_a_websocket_from_the_apps_own_origin_or_none_gets_its_session(
    make_app: Any, scheme: str, origin: str | None
) -> None:
    app = make_app()
    client = app.test_client()
    await get(client, "/set?a=1")
    headers = {} if origin is None else {"Origin": origin}
    async with client.websocket("/ws", headers=headers, scheme=scheme) as ws:
        assert await ws.receive_json() == {"a": "1"}


@pytest.mark.parametrize("origin", ["https://evil.example", "https://localhost", "null"])
async def test_a_cross_origin_websocket_handshake_is_refused_with_403_before_any_statement(
    make_app: Any, origin: str, wire_counter: RoundTripCounter, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(wire_counter.dsn)
    client = app.test_client()
    await get(client, "/set?a=1")
    wire_counter.reset()
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        async with client.websocket("/ws", headers={"Origin": origin}) as ws:
            with pytest.raises(WebsocketResponseError) as refused:
                await ws.receive()
    assert refused.value.response.status_code == 403
    assert refused.value.response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "Origin" in (await refused.value.response.get_data(as_text=True))
    assert wire_counter.count == 0  # refused before the session was loaded
    [record] = session_records(caplog)
    assert "PGSESSION_WEBSOCKET_ORIGINS" in record.getMessage()


async def test_without_the_http_response_extension_a_cross_origin_handshake_is_closed_with_1008(
    make_app: Any,
) -> None:
    """A server that cannot answer a handshake with an HTTP response: websocket.close, 1008."""
    app = make_app()
    sent = await handshake(app, "/ws", {"Origin": "https://evil.example"}, http_response=False)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "websocket Origin not allowed"}]


async def test_pgsession_websocket_origins_widens_the_check(make_app: Any) -> None:
    app = make_app(PGSESSION_WEBSOCKET_ORIGINS=["https://app.example.com"])
    client = app.test_client()
    await get(client, "/set?a=1")
    async with client.websocket("/ws", headers={"Origin": "https://app.example.com"}) as ws:
        assert await ws.receive_json() == {"a": "1"}
    async with client.websocket("/ws", headers={"Origin": "https://evil.example"}) as ws:
        with pytest.raises(WebsocketResponseError):
            await ws.receive()
    one = make_app(PGSESSION_WEBSOCKET_ORIGINS="https://app.example.com")  # one origin as a string
    async with one.test_client().websocket("/ws", headers={"Origin": "https://app.example.com"}) as ws:
        assert await ws.receive_json() == {}


async def test_a_pgsession_websocket_origin_that_is_not_an_origin_is_refused_at_setup(
    pg_dsn: str, schema: str
) -> None:
    app = Quart("bad_origin")
    app.config.update(
        SECRET_KEY="s",
        PGSESSION_DSN=pg_dsn,
        PGSESSION_SCHEMA=schema,
        PGSESSION_WEBSOCKET_ORIGINS=["https://app.example.com/"],
    )
    with pytest.raises(ConfigurationError, match=r"PGSESSION_WEBSOCKET_ORIGINS .*scheme://host\[:port\]"):
        PgSession(app)


# -- the user's sessions, and the extension's apps -----------------------------------------


async def test_sessions_for_user_and_log_out_other_sessions_take_another_users_id(
    pg_dsn: str, schema: str
) -> None:
    """With a user id, both work on that user's sessions, not the logged-in one's; through the
    functions and through the extension's methods alike."""
    from pgsession_wsgi import quart as pg_quart

    app = Quart("devices")
    app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
    ext = PgSession(app)

    @app.get("/login/<user_id>")
    async def login(user_id: str) -> str:
        quart_session["_user_id"] = user_id  # what a login stores under PGSESSION_USER_KEY
        return "in"

    @app.get("/devices/<user_id>")
    async def devices(user_id: str) -> dict[str, Any]:
        listed = await pg_quart.sessions_for_user(user_id)
        by_method = await ext.sessions_for_user(user_id)
        return {"answer": [[s.current for s in listed], [s.current for s in by_method]]}

    @app.post("/end/<user_id>")
    async def end(user_id: str) -> dict[str, Any]:
        return {"answer": await pg_quart.log_out_other_sessions(user_id)}

    @app.post("/end-by-method/<user_id>")
    async def end_by_method(user_id: str) -> dict[str, Any]:
        return {"answer": await ext.log_out_other_sessions(user_id)}

    try:
        seven = app.test_client()
        await seven.get("/login/7")
        eights = [app.test_client() for _ in range(3)]
        for client in eights:
            await client.get("/login/8")
        assert (await get(seven, "/devices/8"))[1] == [[False] * 3, [False] * 3]
        assert (await get(seven, "/devices/7"))[1] == [[True], [True]]
        assert (await get(eights[0], "/devices/8"))[1] == [[False, False, True]] * 2  # most recent first
        assert await (await seven.post("/end/8")).get_json() == {"answer": 3}
        for client in eights[:2]:
            await client.get("/login/8")
        assert await (await seven.post("/end-by-method/8")).get_json() == {"answer": 2}
        assert stored(app) == [{"_user_id": "7"}]
    finally:
        await ext.store.close()


async def test_outside_a_request_the_users_sessions_say_where_to_call_them() -> None:
    from pgsession_wsgi import quart as pg_quart

    for call, name in (
        (pg_quart.sessions_for_user, "sessions_for_user"),
        (pg_quart.log_out_other_sessions, "log_out_other_sessions"),
    ):
        with pytest.raises(OutsideRequestError) as raised:
            await call()
        assert str(raised.value) == (
            f"{name}() works on the request's session: call it while handling a request (in a view)"
        )


async def test_an_app_without_pgsession_is_told_to_set_it_up(pg_dsn: str, schema: str) -> None:
    """A plain Quart app, and one whose PgSessionInterface was set by hand (without
    ``PgSession(app)``, so the functions cannot find it): each says to use PgSession(app)."""
    from pgsession_wsgi import quart as pg_quart

    plain = Quart("plain")
    plain.config.update(SECRET_KEY=SECRET)
    by_hand = Quart("by_hand")
    by_hand.config.update(SECRET_KEY=SECRET)
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    by_hand.session_interface = PgSessionInterface(build_core(SECRET, user_key="_user_id"), store)  # type: ignore[assignment]
    said: list[str] = []
    for app in (plain, by_hand):

        @app.get("/devices")
        async def devices() -> str:
            for call in (pg_quart.sessions_for_user, pg_quart.log_out_other_sessions):
                try:
                    await call("7")
                except ConfigurationError as exc:
                    said.append(str(exc))
            return "ok"

        @app.websocket("/ws-save")
        async def ws_save() -> None:
            await quart_websocket.accept()
            quart_session["a"] = 1
            try:
                await pg_quart.save_session()
            except OutsideRequestError as exc:
                said.append(str(exc))
            await quart_websocket.send("done")

    try:
        for app in (plain, by_hand):
            assert (await app.test_client().get("/devices")).status_code == 200
            async with app.test_client().websocket("/ws-save") as ws:
                assert await ws.receive() == "done"
    finally:
        await store.close()
    needs = "needs pgsession-wsgi on the app {!r}: set it up with PgSession(app)"
    not_ours = "quart.session is not a pgsession-wsgi session: set the app up with PgSession(app) first"
    assert said == [
        "sessions_for_user() " + needs.format("plain"),
        "log_out_other_sessions() " + needs.format("plain"),
        not_ours,
        "sessions_for_user() " + needs.format("by_hand"),
        "log_out_other_sessions() " + needs.format("by_hand"),
        not_ours,
    ]


async def test_get_interface_finds_the_app_given_or_the_current_one(pg_dsn: str, schema: str) -> None:
    ext = PgSession()
    apps = [Quart("first"), Quart("second")]
    for app in apps:
        app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
        ext.init_app(app)
    first, second = (interface(app) for app in apps)
    try:
        assert first is not second
        assert ext.get_interface(apps[1]) is second and ext.get_interface(apps[0]) is first
        async with apps[1].app_context():
            assert ext.get_interface() is second
            assert ext.store is second.store
        with pytest.raises(OutsideRequestError, match="several apps"):
            ext.get_interface()
    finally:
        for found in (first, second):
            await found.store.close()


# -- one session, Quart and Flask ----------------------------------------------------------


@pytest.fixture
def flask_app(pg_dsn: str, schema: str) -> Iterator[Flask]:
    app = Flask("shared_with_quart")
    app.test_client_class = ClosingClient
    app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
    FlaskPgSession(app)

    @app.route("/set")
    def set_keys() -> str:
        from flask import request

        for key, value in request.args.items():
            flask_session[key] = value
        return "ok"

    @app.route("/read")
    def read() -> dict[str, Any]:
        return dict(flask_session)

    yield app
    app.extensions[FLASK_EXTENSION_KEY].store.close()


async def test_quart_and_flask_share_one_session(make_app: Any, flask_app: Flask) -> None:
    quart = make_app()
    flask_client = flask_app.test_client(use_cookies=False)
    login = flask_client.get("/set?user=alice")
    cookie = login.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
    headers = {"Cookie": f"session={cookie}"}
    quart_client = quart.test_client(use_cookies=False)
    assert (await get(quart_client, "/read", headers=headers))[1] == {"user": "alice"}
    assert (await get(quart_client, "/set?cart=3", headers=headers))[2] == []  # same id, no cookie
    assert flask_client.get("/read", headers=headers).get_json() == {"user": "alice", "cart": "3"}
