"""Numbers in a stored row read back exactly as stored, or not at all (issue 20, finding 8).

The encoder writes a float as a plain JSON number only where its repr has no exponent, and jsonb
prints it back as written. A row written by something else may hold a number a float cannot hold
(``1e-400``) or can only round (``0.30000000000000000001``): reading it as ``0.0`` or ``0.3``
would hand the app another value than was stored, in silence. Both stores, through the WSGI and
the ASGI middleware, read such a row as a :class:`SessionDataError`: a 500 with one log line.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import pytest
from apps.asgi_support import MakeAsyncStore, http_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from webtest import TestApp

from pgsession_wsgi import PostgresStore, SessionMiddleware, get_session
from pgsession_wsgi.asgi import SessionMiddleware as AsgiSessionMiddleware
from pgsession_wsgi.codec import dumps, encode_value
from pgsession_wsgi.cookies import hash_session_id, new_session_id
from pgsession_wsgi.core import Insert

SECRET = "numbers-as-stored-secret-0123456789abcdef"
IDLE = timedelta(hours=2)

# Spelled otherwise than the encoder writes any float: each would read as another value.
# (jsonb itself prints 1E5 as 100000, an int, and -0.0 as 0.0: the same numbers.)
ROUNDED = ["1e-400", "-1e-400", "0.30000000000000000001", "9007199254740993.0", "1.50", "2.0000"]
# What the encoder writes: the float's repr, which jsonb prints back unchanged.
WRITTEN = [0.1, 100.0, -2.5, 0.0001, 123456789012345.6, 0.0, 9007199254740992.0]


async def test_minus_zero_keeps_its_sign_through_both_stores(
    make_store: Callable[..., PostgresStore],
    make_async_store: MakeAsyncStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """jsonb prints -0.0 as 0.0: the encoder tags it (as it tags 1e+16), so it reads back -0.0."""
    stored = dumps(encode_value({"v": -0.0}))
    assert stored == '{"v":{" f":"-0.0"}}'
    for status, body in (
        wsgi_read(make_store(), stored, caplog),
        await asgi_read(make_async_store(), stored, caplog),
    ):
        assert status == 200
        assert math.copysign(1.0, json.loads(body)["v"]) == -1.0


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = json.dumps(dict(get_session(environ)))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


async def read(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.session))


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "pgsession_wsgi" and r.levelno >= logging.ERROR
    ]


def wsgi_read(store: PostgresStore, stored: str, caplog: pytest.LogCaptureFixture) -> Any:
    session_id = new_session_id()
    store.execute(Insert(hash_session_id(session_id), stored, None, IDLE, None, None))
    middleware = SessionMiddleware(wsgi_app, store, secret_key=SECRET)
    client = TestApp(middleware)
    client.set_cookie("session", middleware.core.signer.sign(session_id))
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        response = client.get("/", expect_errors=True)
    return response.status_int, response.body


async def asgi_read(store: Any, stored: str, caplog: pytest.LogCaptureFixture) -> Any:
    session_id = new_session_id()
    await store.execute(Insert(hash_session_id(session_id), stored, None, IDLE, None, None))
    app = AsgiSessionMiddleware(Starlette(routes=[Route("/", read)]), store=store, secret_key=SECRET)
    async with http_client(app) as client:
        client.cookies["session"] = app.core.signer.sign(session_id)
        with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
            response = await client.get("/")
    return response.status_code, response.content


@pytest.mark.parametrize("number", ROUNDED)
async def test_a_number_spelled_otherwise_is_a_500_with_one_line_on_both_stores(
    make_store: Callable[..., PostgresStore],
    make_async_store: MakeAsyncStore,
    caplog: pytest.LogCaptureFixture,
    number: str,
) -> None:
    stored = '{"v": ' + number + "}"
    status, _ = wsgi_read(make_store(), stored, caplog)
    assert status == 500
    status, _ = await asgi_read(make_async_store(), stored, caplog)
    assert status == 500
    lines = log_lines(caplog)
    assert len(lines) == 2 and all("a stored session could not be decoded" in line for line in lines), lines
    assert all("not spelled" in line or "spelled otherwise" in line for line in lines), lines


@pytest.mark.parametrize("number", WRITTEN)
async def test_a_float_as_the_encoder_writes_it_reads_back_equal_on_both_stores(
    make_store: Callable[..., PostgresStore],
    make_async_store: MakeAsyncStore,
    caplog: pytest.LogCaptureFixture,
    number: float,
) -> None:
    stored = json.dumps({"v": number, "in": [number, {"x": number}]})
    expected = {"v": number, "in": [number, {"x": number}]}
    status, body = wsgi_read(make_store(), stored, caplog)
    assert (status, json.loads(body)) == (200, expected)
    status, body = await asgi_read(make_async_store(), stored, caplog)
    assert (status, json.loads(body)) == (200, expected)
    assert log_lines(caplog) == []
