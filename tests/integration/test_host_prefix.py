"""``__Host-`` cookie names in every adapter (the WSGI middleware, Flask, Quart, the ASGI
middleware), on a real PostgreSQL: the cookie goes out ``Secure`` with ``Path=/`` and no
``Domain`` even when the app is reached over plain http, it opens its session again, and a
configuration that would make browsers drop it is refused at setup with an error naming the
option (or the config key) to change."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Callable

import pytest
from apps.asgi_apps import SECRET, quart_app, starlette_app
from apps.asgi_support import MakeAsyncStore, http_client
from apps.support import wsgi_call
from flask import Flask
from flask import session as flask_session
from helpers import ClosingClient, close_extension_stores
from quart import Quart
from session_app import session_app

from pgsession_wsgi import ConfigurationError, PostgresStore, SessionMiddleware
from pgsession_wsgi.asgi import SessionMiddleware as AsgiSessionMiddleware
from pgsession_wsgi.flask import PgSession as FlaskPgSession
from pgsession_wsgi.quart import EXTENSION_KEY as QUART_EXTENSION_KEY
from pgsession_wsgi.quart import PgSession as QuartPgSession

HOST = "__Host-session"


def assert_host_cookie(header: str) -> str:
    """Check the attributes a browser requires of a ``__Host-`` cookie; return its value."""
    first, *attributes = header.split("; ")
    name, value = first.split("=", 1)
    assert name == HOST and value
    assert "Secure" in attributes, header
    assert "Path=/" in attributes, header
    assert not any(attribute.lower().startswith("domain=") for attribute in attributes), header
    return value


# The options a __Host- cookie cannot have, as the middlewares take them.
MIDDLEWARE_CONFLICTS = [
    ({"cookie_domain": "example.com"}, "cookie_domain"),
    ({"cookie_path": "/app"}, "cookie_path"),
    ({"cookie_secure": False}, "cookie_secure"),
]
# ... and as a Flask or Quart config sets them (SESSION_COOKIE_SECURE=False means "not forced").
CONFIG_CONFLICTS = [
    ({"SESSION_COOKIE_DOMAIN": "example.com"}, "SESSION_COOKIE_DOMAIN"),
    ({"SESSION_COOKIE_PATH": "/app"}, "SESSION_COOKIE_PATH"),
    ({"APPLICATION_ROOT": "/app"}, "SESSION_COOKIE_PATH"),  # the path falls back to it
]


# -- the WSGI middleware -------------------------------------------------------------------------


def test_wsgi_a_host_cookie_is_secure_over_plain_http(make_store: Callable[..., PostgresStore]) -> None:
    middleware = SessionMiddleware(session_app, make_store(), secret_key=SECRET, cookie_name=HOST)
    response = wsgi_call(middleware, "/set?a=1")  # http://localhost/
    [header] = response.header_all("Set-Cookie")
    value = assert_host_cookie(header)
    assert wsgi_call(middleware, "/read", cookie_header=f"{HOST}={value}").json() == {"a": "1"}


@pytest.mark.parametrize(("options", "named"), MIDDLEWARE_CONFLICTS, ids=lambda v: str(v))
def test_wsgi_refuses_what_would_make_browsers_drop_a_host_cookie(
    make_store: Callable[..., PostgresStore], options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named) as refused:
        SessionMiddleware(session_app, make_store(), secret_key=SECRET, cookie_name=HOST, **options)
    assert repr(HOST) in str(refused.value)


# -- Flask ---------------------------------------------------------------------------------------


@pytest.fixture
def make_flask(pg_dsn: str, schema: str) -> Iterator[Callable[..., Flask]]:
    """``make_flask(**config)``: a Flask app with PgSession on this test's schema, closed after."""
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = Flask(f"host_prefix_{len(made)}")
        app.test_client_class = ClosingClient
        app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
        app.config.update(config)
        FlaskPgSession(app)
        made.append(app)

        @app.route("/set")
        def set_key() -> str:
            flask_session["a"] = "1"
            return "ok"

        @app.route("/read")
        def read() -> dict[str, Any]:
            return dict(flask_session)

        return app

    yield make
    close_extension_stores(made)


# SESSION_COOKIE_SECURE=False is Flask's default: "not forced", so the cookie is still Secure.
@pytest.mark.parametrize("secure", [False, True])
def test_flask_a_host_cookie_is_secure_over_plain_http(
    make_flask: Callable[..., Flask], secure: bool
) -> None:
    app = make_flask(SESSION_COOKIE_NAME=HOST, SESSION_COOKIE_SECURE=secure)
    client = app.test_client(use_cookies=False)
    response = client.get("/set", base_url="http://localhost")
    value = assert_host_cookie(response.headers["Set-Cookie"])
    assert client.get("/read", headers={"Cookie": f"{HOST}={value}"}).get_json() == {"a": "1"}


@pytest.mark.parametrize(("config", "key"), CONFIG_CONFLICTS, ids=lambda v: str(v))
def test_flask_refuses_what_would_make_browsers_drop_a_host_cookie_naming_the_key(
    make_flask: Callable[..., Flask], config: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigurationError, match=key) as refused:
        make_flask(SESSION_COOKIE_NAME=HOST, **config)
    assert repr(HOST) in str(refused.value)


# -- Quart ---------------------------------------------------------------------------------------


@pytest.fixture
async def make_quart(pg_dsn: str, schema: str) -> AsyncIterator[Callable[..., Quart]]:
    """``make_quart(**config)``: the Quart test app on this test's schema; stores closed after."""
    made: list[Quart] = []

    def make(**config: Any) -> Quart:
        app = quart_app(pg_dsn, schema, **config)
        made.append(app)
        return app

    yield make
    for app in made:
        await app.extensions[QUART_EXTENSION_KEY].store.close()


@pytest.mark.anyio
@pytest.mark.parametrize("secure", [False, True])
async def test_quart_a_host_cookie_is_secure_over_plain_http(
    make_quart: Callable[..., Quart], secure: bool
) -> None:
    app = make_quart(SESSION_COOKIE_NAME=HOST, SESSION_COOKIE_SECURE=secure)
    client = app.test_client(use_cookies=False)
    response = await client.get("/set?a=1", scheme="http")
    value = assert_host_cookie(response.headers["Set-Cookie"])
    read = await client.get("/read", headers={"Cookie": f"{HOST}={value}"})
    assert (await read.get_json()) == {"answer": {"a": "1"}}


@pytest.mark.parametrize(("config", "key"), CONFIG_CONFLICTS, ids=lambda v: str(v))
def test_quart_refuses_what_would_make_browsers_drop_a_host_cookie_naming_the_key(
    pg_dsn: str, schema: str, config: dict[str, Any], key: str
) -> None:
    app = Quart("host_prefix_refused")
    app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
    app.config.update(SESSION_COOKIE_NAME=HOST, **config)
    with pytest.raises(ConfigurationError, match=key) as refused:
        QuartPgSession(app)
    assert repr(HOST) in str(refused.value)


# -- the ASGI middleware -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_asgi_a_host_cookie_is_secure_over_plain_http(make_async_store: MakeAsyncStore) -> None:
    async with http_client(starlette_app(make_async_store(), cookie_name=HOST)) as client:  # http
        response = await client.get("/set?a=1")
        value = assert_host_cookie(response.headers["set-cookie"])
        read = await client.get("/read", headers={"Cookie": f"{HOST}={value}"})
        assert read.json() == {"a": "1"}


@pytest.mark.anyio
@pytest.mark.parametrize(("options", "named"), MIDDLEWARE_CONFLICTS, ids=lambda v: str(v))
async def test_asgi_refuses_what_would_make_browsers_drop_a_host_cookie(
    make_async_store: MakeAsyncStore, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named) as refused:
        AsgiSessionMiddleware(
            starlette_app,  # type: ignore[arg-type]
            make_async_store(),
            secret_key=SECRET,
            cookie_name=HOST,
            **options,
        )
    assert repr(HOST) in str(refused.value)
