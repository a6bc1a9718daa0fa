"""starsessions' helpers, as its documentation and docstrings describe them, against starsessions
itself ("theirs", on its ``InMemoryStore``) and against ``pgsession_wsgi.asgi`` ("ours", with
``autoload=False``, starsessions' way): the same views, calling the helpers of the flavour's
module by the same names.

What starsessions documents: the session is not loaded until ``await load_session(connection)``,
and reading it before raises ``SessionNotLoaded``; ``is_loaded(connection)`` tells whether it was;
``get_session_id(connection)`` is the current session's id (None before there is one);
``regenerate_session_id(connection)`` moves the session to a new id, keeping its data;
``get_session_remaining_seconds(connection)`` is the time left before the session expires (the
session must be loaded). Its options pair with ours as docs/asgi.md's migration table says:
``lifetime`` with ``rolling=True`` is ``idle_timeout`` with ``permanent=True``, ``lifetime=0`` a
browser-session cookie (``permanent=False``), ``cookie_https_only`` is ``cookie_secure``. The
tests marked ours-only are the differences kept on purpose, listed in docs/asgi.md.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import starsessions
from apps.asgi_support import MakeAsyncStore, http_client
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import pgsession_wsgi.asgi
from contracts.support import ours_only, set_cookies, the_cookie
from pgsession_wsgi.asgi import SessionMiddleware

pytestmark = pytest.mark.anyio

SECRET = "starsessions-contract-secret-long-enough-for-a-real-key"
LIFETIME = 3600

# The same configuration in each, as the migration table pairs them: a rolling lifetime of an
# hour, a cookie with Max-Age, Secure only if asked for (the tests run over http).
THEIRS = {"lifetime": LIFETIME, "rolling": True, "cookie_https_only": False}
OURS = {"secret_key": SECRET, "autoload": False, "idle_timeout": LIFETIME, "permanent": True}


def routes(helpers: ModuleType) -> list[Route]:
    """The views, calling ``helpers.load_session`` and the others of the flavour's module."""

    async def write(request: Request) -> Response:
        await helpers.load_session(request)
        for key, value in request.query_params.items():
            request.session[key] = value
        return PlainTextResponse("ok")

    async def read(request: Request) -> Response:
        await helpers.load_session(request)
        return JSONResponse(dict(request.session))

    async def untouched(request: Request) -> Response:
        return PlainTextResponse("untouched")

    async def clear(request: Request) -> Response:
        await helpers.load_session(request)
        request.session.clear()
        return PlainTextResponse("cleared")

    async def before_load(request: Request) -> Response:
        """What each accessor does before ``load_session``: its value, or "SessionNotLoaded"."""
        answers: dict[str, Any] = {}
        accessors: dict[str, Callable[[], Any]] = {
            "read": lambda: request.session.get("a"),
            "remaining": lambda: helpers.get_session_remaining_seconds(request),
        }
        for name, accessor in accessors.items():
            try:
                answers[name] = accessor()
            except helpers.SessionNotLoaded:
                answers[name] = "SessionNotLoaded"
        answers["is_loaded"] = helpers.is_loaded(request)
        await helpers.load_session(request)
        answers["is_loaded_after"] = helpers.is_loaded(request)
        answers["read_after"] = request.session.get("a")
        return JSONResponse(answers)

    async def session_id(request: Request) -> Response:
        await helpers.load_session(request)
        return JSONResponse({"id": helpers.get_session_id(request)})

    async def regenerate(request: Request) -> Response:
        await helpers.load_session(request)
        helpers.regenerate_session_id(request)
        return PlainTextResponse("ok")

    async def remaining(request: Request) -> Response:
        await helpers.load_session(request)
        return JSONResponse({"remaining": helpers.get_session_remaining_seconds(request)})

    return [
        Route("/write", write),
        Route("/read", read),
        Route("/none", untouched),
        Route("/clear", clear),
        Route("/before-load", before_load),
        Route("/id", session_id),
        Route("/regen", regenerate),
        Route("/remaining", remaining),
    ]


MakeApp = Callable[..., Starlette]


@pytest.fixture(params=["theirs", "ours"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Whose middleware and helpers the app uses: starsessions' ("theirs") or ours."""
    return str(request.param)


@pytest.fixture
def make_app(flavour: str, make_async_store: MakeAsyncStore) -> MakeApp:
    """``make_app(theirs={...}, ours={...})``: the app under the flavour's middleware, with
    :data:`THEIRS` or :data:`OURS` updated by that flavour's options."""
    if flavour == "theirs":
        store: Any = starsessions.InMemoryStore()
        middleware: Any = starsessions.SessionMiddleware
        helpers: ModuleType = starsessions
    else:
        store = make_async_store()
        middleware = SessionMiddleware
        helpers = pgsession_wsgi.asgi

    def make(theirs: dict[str, Any] | None = None, ours: dict[str, Any] | None = None) -> Starlette:
        options = {**THEIRS, **(theirs or {})} if flavour == "theirs" else {**OURS, **(ours or {})}
        return Starlette(routes=routes(helpers), middleware=[Middleware(middleware, store=store, **options)])

    return make


# -- loading ----------------------------------------------------------------------------------


async def test_the_session_is_read_after_load_session(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        assert (await client.get("/write?a=1&b=2")).status_code == 200
        assert (await client.get("/read")).json() == {"a": "1", "b": "2"}


async def test_before_load_session_a_stored_session_cannot_be_read(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        await client.get("/write?a=1")
        assert (await client.get("/before-load")).json() == {
            "read": "SessionNotLoaded",
            "remaining": "SessionNotLoaded",
            "is_loaded": False,
            "is_loaded_after": True,
            "read_after": "1",
        }


async def test_a_session_never_loaded_sets_no_cookie(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        await client.get("/write?a=1")
        assert set_cookies(await client.get("/none")) == []
        assert (await client.get("/read")).json() == {"a": "1"}


async def test_clearing_the_session_expires_the_cookie(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        await client.get("/write?a=1")
        assert the_cookie(await client.get("/clear")).expired
        assert (await client.get("/read")).json() == {}


# -- the session id ---------------------------------------------------------------------------


async def test_get_session_id_is_none_until_the_session_is_stored_then_stays(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        assert (await client.get("/id")).json() == {"id": None}
        await client.get("/write?a=1")
        first = (await client.get("/id")).json()["id"]
        assert isinstance(first, str) and first
        assert (await client.get("/id")).json()["id"] == first


async def test_regenerate_session_id_moves_the_session_to_a_new_id_with_its_data(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        await client.get("/write?a=1")
        before = (await client.get("/id")).json()["id"]
        assert the_cookie(await client.get("/regen")).value  # the browser gets the new id
        after = (await client.get("/id")).json()["id"]
        assert after and after != before
        assert (await client.get("/read")).json() == {"a": "1"}


# -- lifetimes and the cookie -----------------------------------------------------------------


async def test_remaining_seconds_of_a_session_in_use_is_its_lifetime(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        assert LIFETIME - 5 <= (await client.get("/remaining")).json()["remaining"] <= LIFETIME
        await client.get("/write?a=1")
        assert LIFETIME - 5 <= (await client.get("/remaining")).json()["remaining"] <= LIFETIME


async def test_a_lifetime_is_the_cookies_max_age(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        assert the_cookie(await client.get("/write?a=1")).get("max-age") == str(LIFETIME)


async def test_lifetime_zero_is_a_browser_session_cookie(make_app: MakeApp) -> None:
    app = make_app(theirs={"lifetime": 0}, ours={"permanent": False})
    async with http_client(app) as client:
        assert the_cookie(await client.get("/write?a=1")).ends_with_the_browser
        assert (await client.get("/read")).json() == {"a": "1"}


async def test_cookie_https_only_is_cookie_secure(make_app: MakeApp) -> None:
    app = make_app(theirs={"cookie_https_only": True}, ours={"cookie_secure": True})
    async with http_client(app, https=True) as client:
        assert the_cookie(await client.get("/write?a=1")).has("secure")
        assert (await client.get("/read")).json() == {"a": "1"}


async def test_cookie_name_path_and_domain_keep_their_names(make_app: MakeApp) -> None:
    options = {"cookie_name": "sid", "cookie_path": "/", "cookie_domain": "testserver.local"}
    async with http_client(make_app(theirs=options, ours=options)) as client:
        cookie = the_cookie(await client.get("/write?a=1"), "sid")
        assert cookie.get("path") == "/" and (cookie.get("domain") or "").lstrip(".") == "testserver.local"


# -- differences kept on purpose (docs/asgi.md, "Coming from starsessions") ---------------------


@ours_only("a request without a cookie has nothing to load (no statement), so its session can be "
           "read without load_session, and is_loaded is True")
async def test_without_a_cookie_the_session_is_readable_before_load_session(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        answers = (await client.get("/before-load")).json()
        assert answers["read"] is None and answers["is_loaded"] is True


@ours_only("the id a session had before regenerate_session_id stops working; starsessions keeps the "
           "old data under the old id")
async def test_the_old_id_is_dead_after_regenerate_session_id(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        old = the_cookie(await client.get("/write?a=1")).value
        await client.get("/regen")
        client.cookies.clear()
        client.cookies.set("session", old)
        assert (await client.get("/read")).json() == {}
