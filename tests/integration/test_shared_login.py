"""One login across a Flask app and a Starlette (FastAPI) app, each set up with its defaults only,
as the README says: "with the same secret and table it shares its users' sessions" (issue 21,
point 7).

The Flask app is ``PgSession(app)`` with Flask-Login; the Starlette app is ``SessionMiddleware(app,
store=..., secret_key=...)`` storing the user where Flask-Login does. A login in either is seen by
the other, both list it with ``sessions_for_user``, and the cookies they set agree: same name and
attributes, a browser-session cookie unless the app makes the session permanent. A plain WSGI app
(``SessionMiddleware(app, store, secret_key=...)``) sets the same cookie too.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import flask_login
import pytest
from flask import Flask, session
from helpers import ClosingClient, close_extension_stores
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from webtest import TestApp

from pgsession_wsgi import PostgresStore, SessionMiddleware, get_session
from pgsession_wsgi.asgi import AsyncPostgresStore
from pgsession_wsgi.asgi import SessionMiddleware as AsgiSessionMiddleware
from pgsession_wsgi.flask import PgSession, sessions_for_user

SECRET = secrets.token_hex(32)
DEFAULT_LIFETIME = timedelta(days=31)  # Flask's PERMANENT_SESSION_LIFETIME, and ours


class User(flask_login.UserMixin):  # type: ignore[misc]
    def __init__(self, user_id: str) -> None:
        self.id = user_id


@pytest.fixture
def flask_app(pg_dsn: str, schema: str) -> Iterator[Flask]:
    """Flask with ``PgSession(app)`` and Flask-Login, nothing else configured."""
    app = Flask("shared_flask")
    app.test_client_class = ClosingClient
    app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
    PgSession(app)
    manager = flask_login.LoginManager(app)
    manager.user_loader(User)

    @app.get("/login/<user_id>")
    def login(user_id: str) -> str:
        flask_login.login_user(User(user_id))
        return "in"

    @app.get("/remember")
    def remember() -> str:
        session.permanent = True
        return "remembered"

    @app.get("/me")
    def me() -> dict[str, Any]:
        return {"user": flask_login.current_user.get_id(), "cart": session.get("cart")}

    @app.get("/devices")
    def devices() -> list[dict[str, Any]]:
        return [
            {"current": s.current, "lifetime": (s.expires_at - s.accessed_at).total_seconds()}
            for s in sessions_for_user()
        ]

    yield app
    close_extension_stores([app])


def starlette_app(pg_dsn: str, schema: str) -> Starlette:
    """Starlette with ``SessionMiddleware(app, store=..., secret_key=...)``, nothing else."""
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)

    async def login(request: Request) -> JSONResponse:
        request.session["_user_id"] = request.path_params["user_id"]  # as Flask-Login stores it
        return JSONResponse("in")

    async def me(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.session.get("_user_id")})

    async def cart(request: Request) -> JSONResponse:
        request.session["cart"] = ["book"]
        return JSONResponse("added")

    async def devices(request: Request) -> JSONResponse:
        found = await store.sessions_for_user(request.session["_user_id"])
        return JSONResponse([(s.expires_at - s.accessed_at).total_seconds() for s in found])

    routes = [
        Route("/login/{user_id}", login),
        Route("/me", me),
        Route("/cart", cart),
        Route("/devices", devices),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(AsgiSessionMiddleware, store=store, secret_key=SECRET)
    return app


@pytest.fixture
def starlette(pg_dsn: str, schema: str, flask_app: Flask) -> Iterator[TestClient]:
    """The Starlette app under its test client (lifespan run); made after Flask made the table."""
    with TestClient(starlette_app(pg_dsn, schema), base_url="http://testserver") as client:
        yield client


def set_cookie(headers: Any) -> str:
    """The one Set-Cookie header of a response (Flask's, webtest's or httpx's headers)."""
    pairs = headers.multi_items() if hasattr(headers, "multi_items") else headers.items()  # httpx folds
    (value,) = [v for k, v in pairs if k.lower() == "set-cookie"]
    return str(value)


def attributes(header: str) -> tuple[str, list[str]]:
    """(the cookie's name, its attributes in lower case, sorted), without its value."""
    first, *rest = [part.strip() for part in header.split(";")]
    return first.split("=", 1)[0], sorted(part.lower() for part in rest)


def value_of(header: str) -> str:
    return header.split(";", 1)[0].split("=", 1)[1]


def test_a_flask_login_is_seen_by_the_starlette_app(flask_app: Flask, starlette: TestClient) -> None:
    flask = flask_app.test_client(use_cookies=False)
    cookie = value_of(set_cookie(flask.get("/login/alice").headers))
    starlette.cookies.set("session", cookie)
    assert starlette.get("/me").json() == {"user": "alice"}
    response = starlette.get("/cart")
    assert "set-cookie" not in response.headers  # the same session, the same cookie
    assert starlette.get("/devices").json() == [DEFAULT_LIFETIME.total_seconds()]  # found, and 31 days
    headers = {"Cookie": f"session={cookie}"}
    assert flask.get("/me", headers=headers).json == {"user": "alice", "cart": ["book"]}


def test_a_starlette_login_is_seen_by_flask_login(flask_app: Flask, starlette: TestClient) -> None:
    starlette.get("/cart")
    before = starlette.cookies["session"]
    response = starlette.get("/login/bob")
    cookie = value_of(set_cookie(response.headers))
    assert cookie != before  # a login gets a new id, in the Starlette app too
    flask = flask_app.test_client(use_cookies=False)
    headers = {"Cookie": f"session={cookie}"}
    assert flask.get("/me", headers=headers).json == {"user": "bob", "cart": ["book"]}
    assert flask.get("/devices", headers=headers).json == [
        {"current": True, "lifetime": DEFAULT_LIFETIME.total_seconds()}
    ]
    stale = {"Cookie": f"session={before}"}
    assert flask.get("/me", headers=stale).json == {"user": None, "cart": None}  # the old id is dead


def wsgi_login_cookie(pg_dsn: str, schema: str) -> str:
    """The Set-Cookie of a login in a plain WSGI app with the middleware's defaults."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        get_session(environ)["_user_id"] = "carol"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"in"]

    store = PostgresStore(pg_dsn, schema=schema, purge_interval=None)
    try:
        return set_cookie(TestApp(SessionMiddleware(app, store, secret_key=SECRET)).get("/").headers)
    finally:
        store.close()


def test_every_front_end_sets_the_same_cookie_at_login(
    flask_app: Flask, starlette: TestClient, pg_dsn: str, schema: str
) -> None:
    flask_cookie = set_cookie(flask_app.test_client().get("/login/alice").headers)
    starlette_cookie = set_cookie(starlette.get("/login/bob").headers)
    wsgi_cookie = set_cookie_of(wsgi_login_cookie, pg_dsn, schema)
    expected = ("session", ["httponly", "path=/", "samesite=lax"])  # a browser-session cookie
    assert attributes(flask_cookie) == attributes(starlette_cookie) == attributes(wsgi_cookie) == expected


def set_cookie_of(make: Callable[[str, str], str], pg_dsn: str, schema: str) -> str:
    return make(pg_dsn, schema)


def test_a_session_made_permanent_in_one_app_is_permanent_in_the_other(
    flask_app: Flask, starlette: TestClient
) -> None:
    starlette.get("/login/bob")
    cookie = starlette.cookies["session"]
    flask = flask_app.test_client(use_cookies=False)
    remembered = set_cookie(flask.get("/remember", headers={"Cookie": f"session={cookie}"}).headers)
    max_age = f"max-age={int(DEFAULT_LIFETIME.total_seconds())}"
    assert max_age in attributes(remembered)[1]
    # The Starlette app now sends the same lifetime when it sends the cookie again.
    starlette.cookies.set("session", value_of(remembered))
    assert starlette.get("/me").json() == {"user": "bob"}
    again = starlette.get("/login/dave")  # another user: a new id, so a new cookie
    assert max_age in attributes(set_cookie(again.headers))[1]
