"""The headers a save adds to the app's own (issue 23, point 4), the same through every adapter
(WSGI ``SessionMiddleware``, Flask, Starlette, Quart) on a real PostgreSQL:

* ``Vary``: one header, the app's tokens and ``Cookie`` (never a second ``Vary`` line, never
  ``Cookie`` twice whatever its case, and ``*`` left alone);
* ``Partitioned``: the cookie is set with ``Partitioned; Secure`` when asked for.

Each app answers ``/write?vary=...`` (the ``vary`` parameter repeated for several ``Vary``
lines of the app's own, absent for none) after writing the session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
from apps.asgi_support import MakeAsyncStore, http_client
from flask import Flask, make_response
from flask import request as flask_request
from flask import session as flask_session
from helpers import ClosingClient, close_extension_stores
from quart import Quart
from quart import make_response as make_quart_response
from quart import request as quart_request
from quart import session as quart_session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from webtest import TestApp

from pgsession_wsgi import PostgresStore, SessionMiddleware, get_session
from pgsession_wsgi.asgi import SessionMiddleware as AsgiSessionMiddleware
from pgsession_wsgi.errors import ConfigurationError
from pgsession_wsgi.flask import PgSession
from pgsession_wsgi.quart import EXTENSION_KEY as QUART_EXTENSION_KEY
from pgsession_wsgi.quart import PgSession as QuartPgSession

SECRET = "response-headers-secret-long-enough-for-the-check"

#: The app's own Vary lines -> the Vary lines the response carries once the session is saved.
VARY_CASES = [
    pytest.param([], ["Cookie"], id="none"),
    pytest.param(["Accept-Encoding"], ["Accept-Encoding, Cookie"], id="one token"),
    pytest.param(["Accept-Encoding", "Origin"], ["Accept-Encoding, Origin, Cookie"], id="two lines"),
    pytest.param(["Accept-Encoding, cookie"], ["Accept-Encoding, cookie"], id="cookie already"),
    pytest.param(["COOKIE"], ["COOKIE"], id="cookie in capitals"),
    pytest.param(["*"], ["*"], id="star"),
]


def write_path(vary: list[str]) -> str:
    return "/write?" + urlencode([("vary", value) for value in vary])


# -- WSGI --------------------------------------------------------------------------------------


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    get_session(environ)["n"] = 1
    vary = parse_qs(environ["QUERY_STRING"]).get("vary", [])
    start_response("200 OK", [("Content-Type", "text/plain"), *(("Vary", value) for value in vary)])
    return [b"ok"]


@pytest.fixture
def make_wsgi(make_store: Callable[..., PostgresStore]) -> Callable[..., TestApp]:
    def make(**options: Any) -> TestApp:
        return TestApp(SessionMiddleware(wsgi_app, make_store(), secret_key=SECRET, **options))

    return make


@pytest.mark.parametrize(("app_vary", "expected"), VARY_CASES)
def test_wsgi_one_merged_vary_header(
    make_wsgi: Callable[..., TestApp], app_vary: list[str], expected: list[str]
) -> None:
    response = make_wsgi().get(write_path(app_vary))
    assert response.headers.getall("Vary") == expected
    assert "Set-Cookie" in response.headers


# -- Flask -------------------------------------------------------------------------------------


@pytest.fixture
def make_flask(pg_dsn: str, schema: str) -> Iterator[Callable[..., Flask]]:
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = Flask("headers")
        app.test_client_class = ClosingClient
        app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema, TESTING=True)
        app.config.update(config)
        PgSession(app)

        @app.get("/write")
        def write() -> Any:
            flask_session["n"] = 1
            response = make_response("ok")
            for value in flask_request.args.getlist("vary"):
                response.headers.add("Vary", value)
            return response

        made.append(app)
        return app

    yield make
    close_extension_stores(made)


@pytest.mark.parametrize(("app_vary", "expected"), VARY_CASES)
def test_flask_one_merged_vary_header(
    make_flask: Callable[..., Flask], app_vary: list[str], expected: list[str]
) -> None:
    response = make_flask().test_client().get(write_path(app_vary))
    assert response.headers.getlist("Vary") == expected
    assert "Set-Cookie" in response.headers


# -- Starlette ---------------------------------------------------------------------------------


async def starlette_write(request: Request) -> PlainTextResponse:
    request.session["n"] = 1
    response = PlainTextResponse("ok")
    for value in request.query_params.getlist("vary"):
        response.headers.append("Vary", value)
    return response


def starlette_app(store: Any, **options: Any) -> Starlette:
    app = Starlette(routes=[Route("/write", starlette_write)])
    app.add_middleware(AsgiSessionMiddleware, store=store, secret_key=SECRET, **options)
    return app


@pytest.mark.anyio
@pytest.mark.parametrize(("app_vary", "expected"), VARY_CASES)
async def test_starlette_one_merged_vary_header(
    make_async_store: MakeAsyncStore, app_vary: list[str], expected: list[str]
) -> None:
    async with http_client(starlette_app(make_async_store())) as client:
        response = await client.get(write_path(app_vary))
    assert response.headers.get_list("vary") == expected
    assert "set-cookie" in response.headers


# -- Quart -------------------------------------------------------------------------------------


@pytest.fixture
async def make_quart(pg_dsn: str, schema: str) -> AsyncIterator[Callable[..., Quart]]:
    made: list[Quart] = []

    def make(**config: Any) -> Quart:
        app = Quart("headers")
        app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema, TESTING=True)
        app.config.update(config)
        QuartPgSession(app)

        @app.get("/write")
        async def write() -> Any:
            quart_session["n"] = 1
            response = await make_quart_response("ok")
            for value in quart_request.args.getlist("vary"):
                response.headers.add("Vary", value)
            return response

        made.append(app)
        return app

    yield make
    for app in made:
        await app.extensions[QUART_EXTENSION_KEY].store.close()


@pytest.mark.anyio
@pytest.mark.parametrize(("app_vary", "expected"), VARY_CASES)
async def test_quart_one_merged_vary_header(
    make_quart: Callable[..., Quart], app_vary: list[str], expected: list[str]
) -> None:
    response = await make_quart().test_client().get(write_path(app_vary))
    assert response.headers.getlist("Vary") == expected
    assert "Set-Cookie" in response.headers


# -- Partitioned cookies -------------------------------------------------------------------------


def attributes(set_cookie: str) -> set[str]:
    """A ``Set-Cookie`` header's attribute names, in lower case."""
    return {part.split("=", 1)[0].strip().lower() for part in set_cookie.split(";")[1:]}


def test_wsgi_partitioned_cookie_is_set_partitioned_and_secure(
    make_wsgi: Callable[..., TestApp],
) -> None:
    client = make_wsgi(cookie_partitioned=True)
    written = client.get("/write")  # over http: Secure all the same, or the browser drops it
    assert {"partitioned", "secure"} <= attributes(written.headers["Set-Cookie"])


def test_wsgi_partitioned_cookie_without_secure_is_refused(make_store: Callable[..., PostgresStore]) -> None:
    with pytest.raises(ConfigurationError, match="cookie_partitioned=True needs Secure"):
        SessionMiddleware(
            wsgi_app, make_store(), secret_key=SECRET, cookie_partitioned=True, cookie_secure=False
        )


@pytest.mark.parametrize("secure", [False, True])
def test_flask_session_cookie_partitioned(make_flask: Callable[..., Flask], secure: bool) -> None:
    """Flask's SESSION_COOKIE_SECURE=False means "not forced", so it goes with Partitioned."""
    client = make_flask(SESSION_COOKIE_PARTITIONED=True, SESSION_COOKIE_SECURE=secure).test_client()
    response = client.get("/write")
    assert {"partitioned", "secure"} <= attributes(response.headers["Set-Cookie"])


def test_flask_session_cookie_not_partitioned_by_default(make_flask: Callable[..., Flask]) -> None:
    response = make_flask().test_client().get("/write")
    assert attributes(response.headers["Set-Cookie"]).isdisjoint({"partitioned", "secure"})


@pytest.mark.anyio
async def test_starlette_cookie_partitioned(make_async_store: MakeAsyncStore) -> None:
    async with http_client(starlette_app(make_async_store(), cookie_partitioned=True)) as client:
        response = await client.get("/write")
    assert {"partitioned", "secure"} <= attributes(response.headers["set-cookie"])


@pytest.mark.anyio
@pytest.mark.parametrize("secure", [False, True])
async def test_quart_session_cookie_partitioned(make_quart: Callable[..., Quart], secure: bool) -> None:
    client = make_quart(SESSION_COOKIE_PARTITIONED=True, SESSION_COOKIE_SECURE=secure).test_client()
    response = await client.get("/write")
    assert {"partitioned", "secure"} <= attributes(response.headers["Set-Cookie"])
