"""Quart's session, as its documentation describes it (Quart's session is Flask's
``SecureCookieSession``, with Flask's config keys), against Quart's own cookie session ("theirs")
and ``pgsession_wsgi.quart.PgSession`` ("ours"): the same app and config, with ``PgSession(app)``
and a DSN added. The same promises as tests/contracts/test_flask_contract.py, through Quart's
test client; the ours-only tests are the differences listed in docs/flask.md.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from importlib.metadata import version
from typing import Any

import httpx
import pytest
from quart import Quart, request, session

from contracts.support import SetCookie, ours_only, set_cookies, the_cookie, theirs_since
from pgsession_wsgi.quart import EXTENSION_KEY
from pgsession_wsgi.quart import PgSession as QuartPgSession

pytestmark = pytest.mark.anyio

#: 200 random characters: a cookie holding them, even compressed, is longer than a signed id.
NOTE = secrets.token_urlsafe(150)
SECRET = "quart-contract-secret-long-enough-for-a-real-key"


def flags() -> dict[str, Any]:
    return {"accessed": session.accessed, "modified": session.modified, "permanent": session.permanent}


class Boom(Exception):
    """What the ``/boom`` view raises; with ``TESTING``, Quart lets it past its error handling."""


#: Quart's release as (major, minor): Python 3.9 gets 0.20, whose own session has no
#: ``SESSION_COOKIE_PARTITIONED`` and whose test client raises a view's exception.
QUART_RELEASE = tuple(int(part) for part in version("quart").split(".")[:2])


async def status_of_boom(client: Any) -> int:
    """The status the test client gets for ``/boom``: Quart's traceback page (500) from 0.22 on;
    before, the client raises the view's exception itself, which is that same 500 for a server."""
    try:
        return int((await client.get("/boom")).status_code)
    except Boom:
        return 500


def build(teardowns: list[dict[str, Any]]) -> Quart:
    app = Quart("quart-contract")

    @app.get("/write")
    async def write() -> Any:
        for key, value in request.args.items():
            session[key] = value
        return flags()

    @app.get("/read")
    async def read() -> Any:
        data = dict(session)
        data.pop("_permanent", None)
        return {"data": data, **flags()}

    @app.get("/none")
    async def untouched() -> str:
        return "untouched"

    @app.get("/boom")
    async def boom() -> str:
        session["boom"] = "1"
        raise Boom("the view failed after changing the session")

    @app.get("/clear")
    async def clear() -> str:
        session.clear()
        return "cleared"

    @app.get("/permanent")
    async def permanent() -> Any:
        session.permanent = True
        session["p"] = 1
        return flags()

    @app.get("/cart")
    async def cart() -> str:
        session["cart"] = {"items": [1]}
        return "ok"

    @app.get("/cart/add-and-mark")
    async def add_and_mark() -> Any:
        session["cart"]["items"].append(2)
        session.modified = True
        return flags()

    @app.get("/cart/add")
    async def add() -> str:
        session["cart"]["items"].append(2)
        return "ok"

    @app.get("/dict")
    async def dictionary() -> Any:
        session.update({"a": 1, "b": 2})
        session.setdefault("c", 3)
        answers = {
            "get": session.get("a"), "in": "b" in session, "pop": session.pop("b"),
            "len": len(session), "keys": sorted(session.keys()),
        }
        del session["c"]
        answers["after_del"] = dict(session)
        return answers

    @app.get("/late")
    async def late() -> str:
        session["b"] = "1"
        return "ok"

    @app.teardown_request
    async def teardown(exc: BaseException | None) -> None:
        teardowns.append({"path": request.path, "new": session.new, **flags()})
        if request.path == "/late":
            session["late"] = "yes"  # after the response was built

    return app


@pytest.fixture(params=["theirs", "ours"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


MakeApp = Callable[..., Quart]


@pytest.fixture
async def make_app(flavour: str, pg_dsn: str, schema: str) -> AsyncIterator[MakeApp]:
    """``make_app(**config)``: the app with the flavour's session; ``app.teardowns`` lists what
    ``teardown_request`` saw. Ours gets ``PgSession(app)`` on this test's schema."""
    made: list[Quart] = []

    def make(**config: Any) -> Quart:
        teardowns: list[dict[str, Any]] = []
        app = build(teardowns)
        app.teardowns = teardowns  # type: ignore[attr-defined]
        app.config.update(TESTING=True, SECRET_KEY=SECRET)
        app.config.update(config)
        if flavour == "ours":
            app.config.update(PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
            QuartPgSession(app)
        made.append(app)
        return app

    yield make
    for app in made:
        if EXTENSION_KEY in app.extensions:
            await app.extensions[EXTENSION_KEY].store.close()


def as_httpx(response: Any) -> httpx.Response:
    return httpx.Response(response.status_code, headers=list(response.headers.items()))


def cookies_of(response: Any) -> list[SetCookie]:
    return set_cookies(as_httpx(response))


def cookie_of(response: Any, name: str = "session") -> SetCookie:
    return the_cookie(as_httpx(response), name)


async def answer(client: Any, path: str, **kwargs: Any) -> Any:
    return await (await client.get(path, **kwargs)).get_json()



# -- quart.session is a dict -------------------------------------------------------------------


async def test_values_written_come_back_in_the_next_request(make_app: MakeApp) -> None:
    client = make_app().test_client()
    await client.get("/write?user=ada")
    await client.get("/cart")
    assert (await answer(client, "/read"))["data"] == {"user": "ada", "cart": {"items": [1]}}


async def test_the_app_serves_sessions_through_each_run_of_its_serving(make_app: MakeApp) -> None:
    # Quart's testing docs: `async with app.test_app()` runs before_serving and after_serving;
    # one such block per test starts and stops the app again each time.
    app = make_app()
    for run in range(3):
        async with app.test_app() as served:
            client = served.test_client()
            await client.get(f"/write?run={run}")
            assert (await answer(client, "/read"))["data"] == {"run": str(run)}


async def test_the_session_is_a_dictionary(make_app: MakeApp) -> None:
    client = make_app().test_client()
    assert await answer(client, "/dict") == {
        "get": 1, "in": True, "pop": 2, "len": 2, "keys": ["a", "c"], "after_del": {"a": 1},
    }
    assert (await answer(client, "/read"))["data"] == {"a": 1}


# -- the cookie ---------------------------------------------------------------------------------


async def test_a_request_that_leaves_the_session_alone_sets_no_cookie(make_app: MakeApp) -> None:
    client = make_app().test_client()
    assert cookies_of(await client.get("/none")) == []
    await client.get("/write?a=1")
    assert cookies_of(await client.get("/none")) == []
    assert cookies_of(await client.get("/read")) == []


async def test_clearing_the_session_deletes_the_cookie(make_app: MakeApp) -> None:
    client = make_app().test_client()
    await client.get("/write?a=1")
    assert cookie_of(await client.get("/clear")).expired
    assert (await answer(client, "/read"))["data"] == {}


# -- SessionMixin -------------------------------------------------------------------------------


async def test_writing_marks_the_session_modified_and_reading_does_not(make_app: MakeApp) -> None:
    client = make_app().test_client()
    assert (await answer(client, "/write?a=1"))["modified"] is True
    assert (await answer(client, "/read"))["modified"] is False


async def test_modified_after_a_change_in_place_makes_the_save_see_it(make_app: MakeApp) -> None:
    client = make_app().test_client()
    await client.get("/cart")
    assert (await answer(client, "/cart/add-and-mark"))["modified"] is True
    assert (await answer(client, "/read"))["data"] == {"cart": {"items": [1, 2]}}


async def test_the_flags_keep_their_meaning_in_teardown_request(make_app: MakeApp) -> None:
    app = make_app()
    client = app.test_client()
    await client.get("/write?a=1")
    await client.get("/read")
    await client.get("/clear")
    seen = {entry["path"]: entry for entry in app.teardowns}  # type: ignore[attr-defined]
    assert seen["/write"]["modified"] is True
    assert seen["/read"]["modified"] is False
    assert seen["/clear"]["modified"] is True


async def test_the_flags_keep_their_meaning_after_the_request_with_the_client(make_app: MakeApp) -> None:
    app = make_app()
    async with app.test_client() as client:
        await client.get("/write?a=1")
        assert session.modified is True and session["a"] == "1"


async def test_a_request_whose_exception_propagates_keeps_none_of_its_changes(make_app: MakeApp) -> None:
    """With ``TESTING`` the view's exception goes past Quart's error handling (the test client
    gets Quart's traceback page): no response of the app's was made, so nothing of the request
    is saved, though its teardown_request runs; with the client kept open too."""
    app = make_app()
    client = app.test_client()
    await client.get("/write?a=1")
    assert await status_of_boom(client) == 500
    async with client:
        assert await status_of_boom(client) == 500
    assert (await answer(client, "/read"))["data"] == {"a": "1"}
    assert "/boom" in [entry["path"] for entry in app.teardowns]  # type: ignore[attr-defined]


async def test_a_permanent_cookie_lives_the_permanent_session_lifetime(make_app: MakeApp) -> None:
    client = make_app(PERMANENT_SESSION_LIFETIME=timedelta(hours=3)).test_client()
    assert (await answer(client, "/write?a=1"))["permanent"] is False
    cookie = cookie_of(await client.get("/permanent"))
    assert not cookie.ends_with_the_browser
    assert (await answer(client, "/read"))["permanent"] is True


# -- the config keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "attribute", "expected"),
    [
        ({"SESSION_COOKIE_DOMAIN": "example.test"}, "domain", "example.test"),
        ({"SESSION_COOKIE_PATH": "/app"}, "path", "/app"),
        ({"APPLICATION_ROOT": "/root"}, "path", "/root"),
        ({"SESSION_COOKIE_SAMESITE": "Strict"}, "samesite", "Strict"),
    ],
    ids=["domain", "path", "application-root", "samesite"],
)
async def test_the_config_keys_set_the_cookies_attributes(
    make_app: MakeApp, config: dict[str, Any], attribute: str, expected: str
) -> None:
    cookie = cookie_of(await make_app(**config).test_client().get("/write?a=1"))
    assert (cookie.get(attribute) or "").lstrip(".") == expected


@theirs_since(QUART_RELEASE >= (0, 22), "Quart before 0.22 does not read SESSION_COOKIE_PARTITIONED")
async def test_the_config_keys_set_the_cookies_flags(make_app: MakeApp) -> None:
    client = make_app(SESSION_COOKIE_NAME="sid", SESSION_COOKIE_HTTPONLY=False).test_client()
    cookie = cookie_of(await client.get("/write?a=1"), "sid")
    assert not cookie.has("httponly") and not cookie.has("secure")
    secure = make_app(SESSION_COOKIE_SECURE=True, SESSION_COOKIE_PARTITIONED=True).test_client()
    cookie = cookie_of(await secure.get("/write?a=1", scheme="https"))
    assert cookie.has("secure") and cookie.has("partitioned") and cookie.has("httponly")


async def test_without_refresh_each_request_reading_a_permanent_session_sends_no_cookie(
    make_app: MakeApp,
) -> None:
    client = make_app(SESSION_REFRESH_EACH_REQUEST=False).test_client()
    await client.get("/permanent")
    assert cookies_of(await client.get("/read")) == []


# -- differences kept on purpose (docs/flask.md) ------------------------------------------------


@ours_only("ours saves a value changed in place without session.modified = True")
async def test_a_change_in_place_is_saved_without_marking_the_session_modified(make_app: MakeApp) -> None:
    client = make_app().test_client()
    await client.get("/cart")
    await client.get("/cart/add")
    assert (await answer(client, "/read"))["data"] == {"cart": {"items": [1, 2]}}


@ours_only("ours marks the session accessed when it is read or written (and sends Vary: Cookie); "
           "Quart's own session, with Flask 3.1.3 or later, never sets accessed")
async def test_reading_marks_the_session_accessed(make_app: MakeApp) -> None:
    client = make_app().test_client()
    await client.get("/write?a=1")
    response = await client.get("/read")
    assert (await response.get_json())["accessed"] is True
    assert "cookie" in response.headers.get("Vary", "").lower()


@ours_only("ours tells a first visit: session.new is True for the request that starts the session, "
           "to its end (Quart's cookie session always says False)")
async def test_new_is_true_for_the_request_that_starts_the_session(make_app: MakeApp) -> None:
    app = make_app()
    client = app.test_client()
    await client.get("/write?a=1")
    await client.get("/read")
    assert [entry["new"] for entry in app.teardowns] == [True, False]  # type: ignore[attr-defined]


@ours_only("a change made in teardown_request, after the response was built, is saved too, into "
           "the same row; Quart's cookie was built already")
async def test_a_change_made_in_teardown_request_is_saved(make_app: MakeApp) -> None:
    client = make_app().test_client()
    await client.get("/write?a=1")
    await client.get("/late")
    assert (await answer(client, "/read"))["data"] == {"a": "1", "b": "1", "late": "yes"}


@ours_only("the cookie holds a signed random id, never the session's data")
async def test_the_cookie_holds_no_session_data(make_app: MakeApp) -> None:
    response = await make_app().test_client().get(f"/write?note={NOTE}")
    value = cookie_of(response).value
    assert len(value) < 100  # an id and its signature: no room for the note


@ours_only("unset SESSION_COOKIE_SAMESITE is read as Lax, and the cookie of a request that came "
           "over https is Secure without SESSION_COOKIE_SECURE")
async def test_the_default_cookie_is_lax_and_secure_over_https(make_app: MakeApp) -> None:
    cookie = cookie_of(await make_app().test_client().get("/write?a=1", scheme="https"))
    assert cookie.get("samesite") == "Lax" and cookie.has("secure")
