"""A session keeps its values for the rest of the request once it is saved (issue 23, point 4):
in teardown, in a streamed body, through the test clients after the request; and a change a
streamed body makes reaches the row the cookie points to. Each on a first visit (no cookie),
where the save writes a new row, through Flask's, Quart's and Starlette's own test clients.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from apps.asgi_support import MakeAsyncStore, http_client
from db import sql
from flask import Flask, stream_with_context
from flask import session as flask_session
from helpers import ClosingClient, close_extension_stores
from quart import Quart
from quart import session as quart_session
from quart import stream_with_context as quart_stream_with_context
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from pgsession_wsgi.asgi import SessionMiddleware as AsgiSessionMiddleware
from pgsession_wsgi.flask import EXTENSION_KEY as FLASK_EXTENSION_KEY
from pgsession_wsgi.flask import PgSession
from pgsession_wsgi.quart import EXTENSION_KEY as QUART_EXTENSION_KEY
from pgsession_wsgi.quart import PgSession as QuartPgSession

SECRET = "values-after-save-secret-long-enough-for-the-check"


def stored(store: Any) -> list[Any]:
    return [data for (data,) in sql(store, "SELECT data FROM {t} ORDER BY created_at")]


# -- Flask -------------------------------------------------------------------------------------


@pytest.fixture
def flask_app(pg_dsn: str, schema: str) -> Iterator[tuple[Flask, list[Any]]]:
    app = Flask("after-save")
    app.test_client_class = ClosingClient
    app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema, TESTING=True)
    PgSession(app)
    seen: list[Any] = []

    @app.get("/write")
    def write() -> str:
        flask_session["a"] = 1
        return "ok"

    @app.get("/spoil")
    def spoil() -> Any:
        flask_session["cart"] = [1]

        @stream_with_context
        def body() -> Iterator[bytes]:
            yield b"first part;"
            flask_session["cart"].append({2})  # a set, changed in place after the save
            yield b"second part"

        return body(), 200

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        seen.append(dict(flask_session))

    yield app, seen
    close_extension_stores([app])


def test_flask_values_kept_in_teardown_and_after_the_request(flask_app: tuple[Flask, list[Any]]) -> None:
    app, seen = flask_app
    with app.test_client() as client:
        client.get("/write")
        assert dict(flask_session) == {"a": 1}
    assert seen and all(values == {"a": 1} for values in seen)
    assert stored(app.extensions[FLASK_EXTENSION_KEY].store) == [{"a": 1}]


# -- Quart -------------------------------------------------------------------------------------


@pytest.fixture
async def quart_app(pg_dsn: str, schema: str) -> AsyncIterator[tuple[Quart, list[Any]]]:
    app = Quart("after-save")
    app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema, TESTING=True)
    QuartPgSession(app)
    seen: list[Any] = []

    @app.get("/write")
    async def write() -> str:
        quart_session["a"] = 1
        return "ok"

    @app.get("/stream")
    async def stream() -> Any:
        quart_session["a"] = 1

        @quart_stream_with_context
        async def body() -> AsyncIterator[bytes]:
            yield json.dumps(dict(quart_session)).encode()
            quart_session["b"] = 2  # after the headers went out

        return body(), 200

    @app.get("/read")
    async def read() -> Any:
        return dict(quart_session)

    @app.get("/spoil")
    async def spoil() -> Any:
        quart_session["cart"] = [1]

        @quart_stream_with_context
        async def body() -> AsyncIterator[bytes]:
            yield b"first part;"
            quart_session["cart"].append({2})  # a set, changed in place after the save
            yield b"second part"

        return body(), 200

    @app.teardown_request
    async def teardown(exc: BaseException | None) -> None:
        seen.append(dict(quart_session))

    yield app, seen
    await app.extensions[QUART_EXTENSION_KEY].store.close()


@pytest.mark.anyio
async def test_quart_values_kept_in_teardown(quart_app: tuple[Quart, list[Any]]) -> None:
    app, seen = quart_app
    await app.test_client().get("/write")
    assert seen == [{"a": 1}]


@pytest.mark.anyio
async def test_quart_values_kept_through_the_test_client_after_the_request(
    quart_app: tuple[Quart, list[Any]],
) -> None:
    app, _ = quart_app
    async with app.test_client() as client:
        await client.get("/write")
        assert dict(quart_session) == {"a": 1}


@pytest.mark.anyio
async def test_quart_streamed_body_reads_the_values_and_its_change_reaches_the_same_row(
    quart_app: tuple[Quart, list[Any]],
) -> None:
    app, _ = quart_app
    client = app.test_client()
    response = await client.get("/stream")
    assert json.loads(await response.get_data()) == {"a": 1}
    assert stored(app.extensions[QUART_EXTENSION_KEY].store) == [{"a": 1, "b": 2}]
    assert await (await client.get("/read")).get_json() == {"a": 1, "b": 2}


# -- Starlette ---------------------------------------------------------------------------------


async def starlette_stream(request: Request) -> StreamingResponse:
    session = request.session
    session["a"] = 1

    async def body() -> AsyncIterator[bytes]:
        yield json.dumps(dict(session)).encode()
        session["b"] = 2  # after the headers went out

    return StreamingResponse(body())


async def starlette_read(request: Request) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        yield json.dumps(dict(request.session)).encode()

    return StreamingResponse(body())


@pytest.mark.anyio
async def test_starlette_streamed_body_reads_the_values_and_its_change_reaches_the_same_row(
    make_async_store: MakeAsyncStore,
) -> None:
    store = make_async_store()
    app = Starlette(routes=[Route("/stream", starlette_stream), Route("/read", starlette_read)])
    app.add_middleware(AsgiSessionMiddleware, store=store, secret_key=SECRET)
    async with http_client(app) as client:
        assert (await client.get("/stream")).json() == {"a": 1}
        assert stored(store) == [{"a": 1, "b": 2}]
        assert (await client.get("/read")).json() == {"a": 1, "b": 2}


# -- a late change into something unstorable ------------------------------------------------------


async def starlette_spoil_while_streaming(request: Request) -> StreamingResponse:
    request.session["cart"] = [1]

    async def body() -> AsyncIterator[bytes]:
        yield b"first part;"
        request.session["cart"].append({2})  # a set, changed in place after the save
        yield b"second part"

    return StreamingResponse(body())


@pytest.mark.anyio
async def test_a_streamed_change_into_an_unstorable_value_is_one_log_line_not_a_crash(
    make_async_store: MakeAsyncStore, caplog: pytest.LogCaptureFixture,
) -> None:
    """The response was sent; what the body changed cannot be stored: the saved row stays as it
    was and one error line names the value, instead of an exception out of the app."""
    store = make_async_store()
    app = Starlette(routes=[Route("/spoil", starlette_spoil_while_streaming)])
    app.add_middleware(AsgiSessionMiddleware, store=store, secret_key=SECRET)
    async with http_client(app) as client:
        response = await client.get("/spoil")
    assert response.text == "first part;second part"
    assert stored(store) == [{"cart": [1]}]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "cart" in errors[0].getMessage(), caplog.text


def only_error_names_the_key(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "cart" in errors[0].getMessage(), caplog.text


def test_flask_streamed_change_into_an_unstorable_value_is_one_log_line(
    flask_app: tuple[Flask, list[Any]], caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = flask_app
    with app.test_client() as client:
        assert client.get("/spoil").data == b"first part;second part"
    only_error_names_the_key(caplog)


@pytest.mark.anyio
async def test_quart_streamed_change_into_an_unstorable_value_is_one_log_line(
    quart_app: tuple[Quart, list[Any]], caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = quart_app
    response = await app.test_client().get("/spoil")
    assert await response.get_data() == b"first part;second part"
    only_error_names_the_key(caplog)
