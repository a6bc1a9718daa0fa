"""Starlette's sessions, as its documentation describes them, against Starlette's own
``SessionMiddleware`` ("theirs") and ``pgsession_wsgi.asgi.SessionMiddleware`` ("ours"): the
same app, the same options by Starlette's names, the import changed and a ``store=`` added.

What the docs promise: ``request.session`` is a dictionary interface whose values come back in
the next request; the session is signed (a changed cookie, or another key, reads as empty);
``secret_key`` (a string or Starlette's ``Secret``), ``session_cookie``, ``max_age`` (None: the
cookie lasts as long as the browser session), ``path``, ``same_site``, ``https_only`` (the
Secure flag), ``domain`` and ``partitioned`` (the middleware's signature) set the cookie. The
tests marked ours-only are the differences kept on purpose, listed in docs/asgi.md.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import starlette
from apps.asgi_support import MakeAsyncStore, http_client
from starlette.applications import Starlette
from starlette.datastructures import Secret
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from contracts.support import SetCookie, ours_only, set_cookies, the_cookie, theirs_since, use_as_a_dictionary
from pgsession_wsgi import ConfigurationError
from pgsession_wsgi.asgi import SessionMiddleware

pytestmark = pytest.mark.anyio

SECRET = "starlette-contract-secret-long-enough-for-a-real-key"


# -- one app, under either middleware ---------------------------------------------------------


async def write(request: Request) -> Response:
    for key, value in request.query_params.items():
        request.session[key] = value
    return PlainTextResponse("ok")


async def write_nested(request: Request) -> Response:
    request.session["cart"] = {"items": [1, 2], "coupon": None}
    request.session["n"] = 3
    return PlainTextResponse("ok")


async def read(request: Request) -> Response:
    return JSONResponse(dict(request.session))


async def untouched(request: Request) -> Response:
    return PlainTextResponse("untouched")


async def clear(request: Request) -> Response:
    request.session.clear()
    return PlainTextResponse("cleared")


async def dictionary(request: Request) -> Response:
    """Every dictionary method an app uses, on the session; the answer is what each returned."""
    return JSONResponse(use_as_a_dictionary(request.session))


#: One response object, sent again on every request (an app may keep a constant response).
SHARED_RESPONSE = PlainTextResponse("ok")


async def write_then_shared_response(request: Request) -> Response:
    request.session["user"] = request.query_params["user"]
    return SHARED_RESPONSE


ROUTES = [
    Route("/write-shared", write_then_shared_response),
] + [
    Route(prefix + path, endpoint)
    for prefix in ("", "/app")
    for path, endpoint in [
        ("/write", write),
        ("/nested", write_nested),
        ("/read", read),
        ("/none", untouched),
        ("/clear", clear),
        ("/dict", dictionary),
    ]
]

MakeApp = Callable[..., Starlette]

#: Features of Starlette's own middleware that older releases (Python 3.9 gets 0.49) lack.
STARLETTE_MAJOR = int(starlette.__version__.split(".")[0])
STARLETTE_PARTITIONED = "partitioned" in inspect.signature(StarletteSessionMiddleware).parameters


@pytest.fixture(params=["theirs", "ours"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Which middleware the app gets: Starlette's own ("theirs") or pgsession-wsgi's ("ours")."""
    return str(request.param)


@pytest.fixture
def middleware_class(flavour: str, make_async_store: MakeAsyncStore) -> Callable[..., Any]:
    """``build(app, **options)``: the flavour's middleware around ``app``, options by
    Starlette's names (ours also gets a store in this test's schema, made once)."""
    if flavour == "theirs":
        return StarletteSessionMiddleware
    store = make_async_store()

    def ours(app: Any, **options: Any) -> SessionMiddleware:
        return SessionMiddleware(app, store=store, **options)

    return ours


@pytest.fixture
def make_app(middleware_class: Callable[..., Any]) -> MakeApp:
    """``make_app(**options)``: the app under the flavour's middleware; ``secret_key`` defaults."""

    def make(**options: Any) -> Starlette:
        options.setdefault("secret_key", SECRET)
        return Starlette(routes=ROUTES, middleware=[Middleware(middleware_class, **options)])

    return make


def cookie_of(response: httpx.Response, name: str = "session") -> SetCookie:
    return the_cookie(response, name)


# -- request.session --------------------------------------------------------------------------


async def test_values_written_come_back_in_the_next_request(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        assert (await client.get("/write?user=ada&theme=dark")).status_code == 200
        assert (await client.get("/read")).json() == {"user": "ada", "theme": "dark"}
        await client.get("/nested")
        assert (await client.get("/read")).json() == {
            "user": "ada", "theme": "dark", "cart": {"items": [1, 2], "coupon": None}, "n": 3,
        }


async def test_the_app_serves_sessions_through_each_run_of_its_lifespan(make_app: MakeApp) -> None:
    # Starlette's testing docs: `with TestClient(app):` runs the lifespan. A module-level app and
    # one such block per test start and stop it again each time, in a new event loop.
    app = make_app()
    for run in range(3):
        with TestClient(app) as client:
            client.get(f"/write?run={run}")
            assert client.get("/read").json() == {"run": str(run)}


async def test_a_response_sent_again_carries_only_this_visitors_cookie(make_app: MakeApp) -> None:
    app = make_app()
    async with http_client(app) as ada, http_client(app) as bob:
        ada_cookie = cookie_of(await ada.get("/write-shared?user=ada")).value
        sent = await bob.get("/write-shared?user=bob")
        assert [cookie.value for cookie in set_cookies(sent)] == [cookie_of(sent).value]
        assert cookie_of(sent).value != ada_cookie
        assert (await bob.get("/read")).json() == {"user": "bob"}
    assert SHARED_RESPONSE.headers.getlist("set-cookie") == []


async def test_request_session_is_a_dictionary_interface(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        answers = (await client.get("/dict")).json()
        assert answers == {
            "get": 1, "get_missing": "default", "in": True, "pop": 2, "pop_missing": None,
            "len": 2, "keys": ["a", "c"], "items": [["a", 1], ["c", 3]], "after_del": {"a": 1},
        }
        assert (await client.get("/read")).json() == {"a": 1}


@theirs_since(STARLETTE_MAJOR >= 1, "Starlette before 1.0 sends the cookie again on every request")
async def test_a_request_that_leaves_the_session_alone_sets_no_cookie(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        assert set_cookies(await client.get("/none")) == []
        await client.get("/write?a=1")
        assert set_cookies(await client.get("/none")) == []
        assert (await client.get("/read")).json() == {"a": "1"}


async def test_clearing_the_session_expires_the_cookie(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        await client.get("/write?a=1")
        cleared = await client.get("/clear")
        assert cookie_of(cleared).expired
        assert (await client.get("/read")).json() == {}


async def test_a_changed_cookie_reads_as_an_empty_session(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        value = cookie_of(await client.get("/write?a=1")).value
        # The signature's last base64 character carries padding bits some decoders ignore, so
        # change one that is all signature.
        forged = value[:-5] + ("A" if value[-5] != "A" else "B") + value[-4:]
        client.cookies.clear()
        client.cookies.set("session", forged)
        assert (await client.get("/read")).json() == {}


async def test_another_secret_key_reads_nothing(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        value = cookie_of(await client.get("/write?a=1")).value
    other = make_app(secret_key="another-secret-key-just-as-long-as-the-first-one")
    async with http_client(other) as client:
        client.cookies.set("session", value)
        assert (await client.get("/read")).json() == {}


# -- the options ------------------------------------------------------------------------------


async def test_secret_key_may_be_a_starlette_secret(make_app: MakeApp) -> None:
    async with http_client(make_app(secret_key=Secret(SECRET))) as client:
        await client.get("/write?a=1")
        assert (await client.get("/read")).json() == {"a": "1"}


async def test_the_middleware_needs_a_secret_key(middleware_class: Callable[..., Any]) -> None:
    with pytest.raises((TypeError, ConfigurationError)):  # Starlette's: a required argument
        middleware_class(Starlette())


async def test_session_cookie_names_the_cookie(make_app: MakeApp) -> None:
    async with http_client(make_app(session_cookie="sid")) as client:
        response = await client.get("/write?a=1")
        assert [cookie.name for cookie in set_cookies(response)] == ["sid"]
        assert (await client.get("/read")).json() == {"a": "1"}


async def test_max_age_is_the_cookies_max_age(make_app: MakeApp) -> None:
    async with http_client(make_app(max_age=3600)) as client:
        assert cookie_of(await client.get("/write?a=1")).get("max-age") == "3600"


async def test_max_age_none_makes_a_cookie_that_lasts_as_long_as_the_browser(make_app: MakeApp) -> None:
    async with http_client(make_app(max_age=None)) as client:
        cookie = cookie_of(await client.get("/write?a=1"))
        assert cookie.ends_with_the_browser
        assert (await client.get("/read")).json() == {"a": "1"}


async def test_path_is_the_cookies_path(make_app: MakeApp) -> None:
    async with http_client(make_app(path="/app")) as client:
        assert cookie_of(await client.get("/app/write?a=1")).get("path") == "/app"
        assert (await client.get("/app/read")).json() == {"a": "1"}
        assert (await client.get("/read")).json() == {}  # the browser sends it under /app only


@pytest.mark.parametrize("same_site", ["lax", "strict"])
async def test_same_site_is_the_cookies_samesite(make_app: MakeApp, same_site: str) -> None:
    async with http_client(make_app(same_site=same_site)) as client:
        assert (cookie_of(await client.get("/write?a=1")).get("samesite") or "").lower() == same_site


async def test_same_site_defaults_to_lax_and_the_cookie_is_httponly(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        cookie = cookie_of(await client.get("/write?a=1"))
        assert (cookie.get("samesite") or "").lower() == "lax"
        assert cookie.has("httponly")


async def test_same_site_none_with_https_only(make_app: MakeApp) -> None:
    async with http_client(make_app(same_site="none", https_only=True), https=True) as client:
        cookie = cookie_of(await client.get("/write?a=1"))
        assert (cookie.get("samesite") or "").lower() == "none"
        assert cookie.has("secure")


async def test_https_only_sets_the_secure_flag(make_app: MakeApp) -> None:
    async with http_client(make_app(https_only=True), https=True) as client:
        assert cookie_of(await client.get("/write?a=1")).has("secure")
        assert (await client.get("/read")).json() == {"a": "1"}


async def test_without_https_only_the_cookie_is_not_secure_over_http(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        assert not cookie_of(await client.get("/write?a=1")).has("secure")


async def test_domain_is_the_cookies_domain(make_app: MakeApp) -> None:
    async with http_client(make_app(domain="example.com")) as client:
        assert (cookie_of(await client.get("/write?a=1")).get("domain") or "").lstrip(".") == "example.com"


async def test_without_domain_the_cookie_has_none(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        assert not cookie_of(await client.get("/write?a=1")).has("domain")


@theirs_since(STARLETTE_PARTITIONED, "this Starlette release has no partitioned option")
async def test_partitioned_sets_the_partitioned_attribute(make_app: MakeApp) -> None:
    async with http_client(make_app(partitioned=True, https_only=True), https=True) as client:
        cookie = cookie_of(await client.get("/write?a=1"))
        assert cookie.has("partitioned") and cookie.has("secure")
        assert (await client.get("/read")).json() == {"a": "1"}


# -- differences kept on purpose (docs/asgi.md, "Differences from Starlette's sessions") -------


@ours_only("without max_age ours makes a browser-session cookie (the default of every front end, "
           "Flask's too), where Starlette's lasts 14 days")
async def test_without_max_age_the_cookie_lasts_as_long_as_the_browser(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        assert cookie_of(await client.get("/write?a=1")).ends_with_the_browser


@ours_only("the cookie holds a signed random id, never the session's data, which stays on the server")
async def test_the_cookie_holds_no_session_data(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        value = cookie_of(await client.get("/write?note=a-long-distinctive-value")).value
        assert "distinctive" not in value and len(value) < 100


@ours_only("a session cleared on the server stays cleared: a copy of its old cookie brings nothing "
           "back, where Starlette's signed cookie still holds the data until max_age")
async def test_a_cookie_kept_from_before_a_logout_brings_nothing_back(make_app: MakeApp) -> None:
    async with http_client(make_app()) as client:
        old = cookie_of(await client.get("/write?user=ada")).value
        await client.get("/clear")
        client.cookies.clear()
        client.cookies.set("session", old)
        assert (await client.get("/read")).json() == {}


@ours_only("without https_only, the cookie of a request that came over https is Secure anyway")
async def test_over_https_the_cookie_is_secure_without_https_only(make_app: MakeApp) -> None:
    async with http_client(make_app(), https=True) as client:
        assert cookie_of(await client.get("/write?a=1")).has("secure")


@ours_only("a Partitioned cookie is always sent Secure: browsers drop one without Secure")
async def test_partitioned_alone_is_sent_secure(make_app: MakeApp) -> None:
    async with http_client(make_app(partitioned=True)) as client:
        cookie = cookie_of(await client.get("/write?a=1"))
        assert cookie.has("partitioned") and cookie.has("secure")


@ours_only("options a browser would drop the cookie for are refused at start-up")
@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"partitioned": True, "https_only": False}, "https_only"),
        ({"same_site": "none", "https_only": False}, "https_only"),
        ({"session_cookie": "__Host-session", "path": "/app"}, "path"),
    ],
)
async def test_a_cookie_browsers_would_drop_is_refused(
    middleware_class: Callable[..., Any], options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        middleware_class(Starlette(), secret_key=SECRET, **options)


@ours_only("ours needs a store, where the sessions live")
async def test_the_middleware_needs_a_store(flavour: str) -> None:
    with pytest.raises(TypeError):
        SessionMiddleware(Starlette(), secret_key=SECRET)  # type: ignore[call-arg]
