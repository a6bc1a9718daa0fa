"""Flask's session, as Flask's documentation describes it, against Flask's own cookie session
(``SecureCookieSessionInterface``, "theirs") and ``pgsession_wsgi.flask.PgSession`` ("ours"): the
same app and the same config keys, with ``PgSession(app)`` and a DSN added.

What the docs promise: ``flask.session`` is a dict (a ``MutableMapping``) whose values come back
in the next request, with the attributes of ``SessionMixin``: ``permanent`` (the ``_permanent``
key; a permanent cookie lives ``PERMANENT_SESSION_LIFETIME``, another ends with the browser),
``modified`` (set when the session changes; ``session.modified = True`` after changing a value in
place makes the save see it), ``accessed`` (read or written: ``Vary: Cookie``) and ``new``. No
cookie is set for a session left alone or empty, and clearing the session deletes the cookie.
``SESSION_COOKIE_NAME``, ``_DOMAIN``, ``_PATH`` (else ``APPLICATION_ROOT``), ``_HTTPONLY``,
``_SECURE``, ``_SAMESITE`` and ``_PARTITIONED`` set the cookie's attributes;
``SESSION_REFRESH_EACH_REQUEST`` sends a permanent session's cookie again. The flags keep their
meaning for the rest of the request: in ``teardown_request`` and after ``with client:``.

The tests marked ours-only are the differences kept on purpose, listed in docs/flask.md.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from flask import Flask, jsonify, request, session
from helpers import ClosingClient, close_extension_stores

from contracts.support import SetCookie, ours_only, set_cookies, the_cookie, use_as_a_dictionary
from pgsession_wsgi import ConfigurationError
from pgsession_wsgi.flask import PgSession

#: 200 random characters: a cookie holding them, even compressed, is longer than a signed id.
NOTE = secrets.token_urlsafe(150)
SECRET = "flask-contract-secret-long-enough-for-a-real-key"


# -- one app, with either session --------------------------------------------------------------


def flags() -> dict[str, Any]:
    """What ``SessionMixin`` says about the request's session, as a view or a hook sees it."""
    return {
        "accessed": session.accessed,
        "modified": session.modified,
        "new": session.new,
        "permanent": session.permanent,
    }


@dataclass
class App:
    """The app under test, and what its ``teardown_request`` saw, one entry per request."""

    flask: Flask
    teardowns: list[dict[str, Any]] = field(default_factory=list)

    def client(self) -> Any:
        return self.flask.test_client()


def add_routes(app: App) -> None:
    web = app.flask

    @web.get("/write")
    def write() -> Any:
        for key, value in request.args.items():
            session[key] = value
        return jsonify(flags())

    @web.get("/read")
    def read() -> Any:
        data = dict(session)
        data.pop("_permanent", None)
        return jsonify(data=data, **flags())

    @web.get("/late")
    def late() -> str:
        session["b"] = "1"
        return "ok"

    @web.get("/none")
    def untouched() -> str:
        return "untouched"

    @web.get("/boom")
    def boom() -> str:
        session["boom"] = "1"
        raise Boom("the view failed after changing the session")

    @web.get("/clear")
    def clear() -> str:
        session.clear()
        return "cleared"

    @web.get("/permanent")
    def permanent() -> Any:
        session.permanent = True
        session["p"] = 1
        return jsonify(flags())

    @web.get("/cart")
    def cart() -> str:
        session["cart"] = {"items": [1]}
        return "ok"

    @web.get("/cart/add-and-mark")
    def add_and_mark() -> Any:
        session["cart"]["items"].append(2)
        session.modified = True
        return jsonify(flags())

    @web.get("/cart/add")
    def add() -> str:
        session["cart"]["items"].append(2)
        return "ok"

    @web.get("/same")
    def same() -> Any:
        session["a"] = session["a"]
        return jsonify(flags())

    @web.get("/dict")
    def dictionary() -> Any:
        """Every dict method an app uses, on the session; the answer is what each returned."""
        return jsonify({"mapping": isinstance(session, MutableMapping), **use_as_a_dictionary(session)})

    @web.teardown_request
    def teardown(exc: BaseException | None) -> None:
        if request.path != "/none":  # reading flask.session marks it accessed
            app.teardowns.append({"path": request.path, **flags()})
        if request.path == "/late":
            session["late"] = "yes"  # after the response was built


MakeApp = Callable[..., App]


class Boom(Exception):
    """What the ``/boom`` view raises; with ``TESTING``, Flask lets it through to the test."""


@pytest.fixture(params=["theirs", "ours"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Which session the app gets: Flask's own cookie session ("theirs") or ours."""
    return str(request.param)


@pytest.fixture
def make_app(flavour: str, pg_dsn: str, schema: str) -> Iterator[MakeApp]:
    """``make_app(**config)``: the app with the flavour's session; ``SECRET_KEY`` defaults.

    Ours also gets ``PgSession(app)`` on this test's schema (its store closed after the test).
    """
    made: list[Flask] = []

    def make(**config: Any) -> App:
        web = Flask(f"contract{len(made)}")
        web.test_client_class = ClosingClient  # reads and closes each response, as a server does
        web.config.update(TESTING=True, SECRET_KEY=SECRET)
        web.config.update(config)
        if flavour == "ours":
            web.config.update(PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
            PgSession(web)
        made.append(web)
        app = App(web)
        add_routes(app)
        return app

    yield make
    close_extension_stores(made)


def cookies_of(response: Any) -> list[SetCookie]:
    """The ``Set-Cookie`` headers of a test client's response."""
    return set_cookies(httpx.Response(response.status_code, headers=list(response.headers.items())))


def cookie_of(response: Any, name: str = "session") -> SetCookie:
    """The one cookie ``name`` the response sets."""
    return the_cookie(httpx.Response(response.status_code, headers=list(response.headers.items())), name)


def varies_on_cookie(response: Any) -> bool:
    return any(token.strip().lower() == "cookie" for token in response.headers.get("Vary", "").split(","))


def lifetime(cookie: SetCookie) -> float:
    """How long the browser keeps ``cookie``, in seconds: its ``Max-Age``, else its ``Expires``."""
    max_age = cookie.get("max-age")
    if max_age is not None:
        return float(max_age)
    expires = cookie.get("expires")
    assert expires is not None, "a browser-session cookie"
    return (parsedate_to_datetime(expires) - datetime.now(timezone.utc)).total_seconds()


# -- flask.session is a dict -------------------------------------------------------------------


def test_values_written_come_back_in_the_next_request(make_app: MakeApp) -> None:
    client = make_app().client()
    client.get("/write?user=ada&theme=dark")
    assert client.get("/read").json["data"] == {"user": "ada", "theme": "dark"}
    client.get("/cart")
    assert client.get("/read").json["data"] == {"user": "ada", "theme": "dark", "cart": {"items": [1]}}


def test_the_session_is_a_mutable_mapping(make_app: MakeApp) -> None:
    client = make_app().client()
    assert client.get("/dict").json == {
        "mapping": True, "get": 1, "get_missing": "default", "in": True, "pop": 2,
        "pop_missing": None, "len": 2, "keys": ["a", "c"], "items": [["a", 1], ["c", 3]],
        "after_del": {"a": 1},
    }
    assert client.get("/read").json["data"] == {"a": 1}


# -- the cookie: set when there is something to keep, deleted when the session is cleared ------


def test_a_request_that_leaves_the_session_alone_sets_no_cookie(make_app: MakeApp) -> None:
    client = make_app().client()
    first = client.get("/none")
    assert cookies_of(first) == [] and not varies_on_cookie(first)
    client.get("/write?a=1")
    again = client.get("/none")
    assert cookies_of(again) == [] and not varies_on_cookie(again)
    assert client.get("/read").json["data"] == {"a": "1"}


def test_an_empty_session_that_was_only_read_sets_no_cookie(make_app: MakeApp) -> None:
    response = make_app().client().get("/read")
    assert response.json["data"] == {}
    assert cookies_of(response) == []


def test_reading_a_stored_session_sends_no_cookie_again(make_app: MakeApp) -> None:
    client = make_app().client()
    client.get("/write?a=1")
    response = client.get("/read")
    assert response.json["data"] == {"a": "1"}
    assert cookies_of(response) == [] and varies_on_cookie(response)


def test_clearing_the_session_deletes_the_cookie(make_app: MakeApp) -> None:
    client = make_app().client()
    client.get("/write?a=1")
    cleared = client.get("/clear")
    assert cookie_of(cleared).expired
    assert client.get("/read").json["data"] == {}


# -- SessionMixin: accessed, modified, new, permanent ------------------------------------------


def test_reading_marks_the_session_accessed_not_modified(make_app: MakeApp) -> None:
    client = make_app().client()
    client.get("/write?a=1")
    answer = client.get("/read").json
    assert answer["accessed"] is True and answer["modified"] is False


def test_writing_marks_the_session_modified_and_accessed(make_app: MakeApp) -> None:
    answer = make_app().client().get("/write?a=1").json
    assert answer["accessed"] is True and answer["modified"] is True


def test_new_is_a_bool(make_app: MakeApp) -> None:
    client = make_app().client()
    assert isinstance(client.get("/write?a=1").json["new"], bool)
    assert client.get("/read").json["new"] is False  # a stored session is never new


def test_modified_after_a_change_in_place_makes_the_save_see_it(make_app: MakeApp) -> None:
    client = make_app().client()
    client.get("/cart")
    answer = client.get("/cart/add-and-mark").json
    assert answer["modified"] is True
    assert client.get("/read").json["data"] == {"cart": {"items": [1, 2]}}


def test_the_flags_keep_their_meaning_in_teardown_request(make_app: MakeApp) -> None:
    app = make_app()
    client = app.client()
    client.get("/write?a=1")
    client.get("/read")
    client.get("/clear")
    seen = {entry["path"]: entry for entry in app.teardowns}
    assert seen["/write"]["modified"] is True and seen["/write"]["accessed"] is True
    assert seen["/read"]["modified"] is False and seen["/read"]["accessed"] is True
    assert seen["/clear"]["modified"] is True


def test_the_flags_keep_their_meaning_after_the_request_with_the_client(make_app: MakeApp) -> None:
    client = make_app().client()
    with client:
        client.get("/write?a=1")
        assert session.modified is True and session.accessed is True
        assert session["a"] == "1"
    with client:
        client.get("/read")
        assert session.modified is False and session.accessed is True
        assert dict(session) == {"a": "1"}


def test_a_request_whose_exception_propagates_keeps_none_of_its_changes(make_app: MakeApp) -> None:
    """With ``TESTING`` the view's exception reaches the test: no response was made, so nothing
    of the request is saved, with the client kept open too (its teardown then runs as the
    ``with`` block ends)."""
    client = make_app().client()
    client.get("/write?a=1")
    with pytest.raises(Boom):
        client.get("/boom")
    with client, pytest.raises(Boom):
        client.get("/boom")
    # Flask's client pushes the failed request's contexts again after the next request: the
    # block pops them (with its teardown), so none is left over for the next test.
    with client:
        data = client.get("/read").json["data"]
    assert data == {"a": "1"}


def test_a_change_in_a_request_context_the_test_pushes_is_not_saved(make_app: MakeApp) -> None:
    """``app.test_request_context()`` makes no response: what its code does to the session stays
    there, even with the browser's cookie in the request."""
    app = make_app()
    client = app.client()
    client.get("/write?a=1")
    cookie = client.get_cookie("session")
    assert cookie is not None
    with app.flask.test_request_context("/", headers={"Cookie": f"session={cookie.value}"}):
        assert session["a"] == "1"
        session["a"] = "2"
    with app.flask.app_context():
        pass
    assert client.get("/read").json["data"] == {"a": "1"}


def test_permanent_is_false_until_set_and_is_the_permanent_key(make_app: MakeApp) -> None:
    client = make_app().client()
    with client:
        assert client.get("/write?a=1").json["permanent"] is False
        assert "_permanent" not in session
    with client:
        assert client.get("/permanent").json["permanent"] is True
        assert session["_permanent"] is True and session.permanent is True
    assert client.get("/read").json["permanent"] is True  # kept in the session


def test_a_session_that_is_not_permanent_has_a_cookie_that_ends_with_the_browser(make_app: MakeApp) -> None:
    assert cookie_of(make_app().client().get("/write?a=1")).ends_with_the_browser


@pytest.mark.parametrize("configured", [timedelta(hours=3), 7200], ids=["timedelta", "seconds"])
def test_a_permanent_cookie_lives_the_permanent_session_lifetime(
    make_app: MakeApp, configured: timedelta | int
) -> None:
    seconds = configured.total_seconds() if isinstance(configured, timedelta) else configured
    client = make_app(PERMANENT_SESSION_LIFETIME=configured).client()
    cookie = cookie_of(client.get("/permanent"))
    assert seconds - 5 <= lifetime(cookie) <= seconds
    assert client.get("/read").json["data"] == {"p": 1}


# -- the config keys, as they show in Set-Cookie ------------------------------------------------


def test_the_default_cookie(make_app: MakeApp) -> None:
    cookie = cookie_of(make_app().client().get("/write?a=1"))
    assert cookie.name == "session" and cookie.get("path") == "/"
    assert cookie.has("httponly") and not cookie.has("domain") and not cookie.has("secure")
    assert not cookie.has("partitioned")


def test_session_cookie_name_names_the_cookie(make_app: MakeApp) -> None:
    client = make_app(SESSION_COOKIE_NAME="sid").client()
    assert [cookie.name for cookie in cookies_of(client.get("/write?a=1"))] == ["sid"]
    assert client.get("/read").json["data"] == {"a": "1"}


def test_session_cookie_domain_is_the_cookies_domain(make_app: MakeApp) -> None:
    cookie = cookie_of(make_app(SESSION_COOKIE_DOMAIN="example.test").client().get("/write?a=1"))
    assert (cookie.get("domain") or "").lstrip(".") == "example.test"


def test_session_cookie_path_is_the_cookies_path(make_app: MakeApp) -> None:
    cookie = cookie_of(make_app(SESSION_COOKIE_PATH="/app").client().get("/write?a=1"))
    assert cookie.get("path") == "/app"


def test_without_a_cookie_path_application_root_is_the_cookies_path(make_app: MakeApp) -> None:
    cookie = cookie_of(make_app(APPLICATION_ROOT="/root").client().get("/write?a=1"))
    assert cookie.get("path") == "/root"


def test_session_cookie_httponly_false_leaves_httponly_out(make_app: MakeApp) -> None:
    assert not cookie_of(make_app(SESSION_COOKIE_HTTPONLY=False).client().get("/write?a=1")).has("httponly")


def test_session_cookie_secure_sets_secure(make_app: MakeApp) -> None:
    client = make_app(SESSION_COOKIE_SECURE=True).client()
    assert cookie_of(client.get("/write?a=1", base_url="https://localhost")).has("secure")


@pytest.mark.parametrize("samesite", ["Lax", "Strict"])
def test_session_cookie_samesite_is_the_cookies_samesite(make_app: MakeApp, samesite: str) -> None:
    cookie = cookie_of(make_app(SESSION_COOKIE_SAMESITE=samesite).client().get("/write?a=1"))
    assert cookie.get("samesite") == samesite


def test_session_cookie_samesite_none_with_secure(make_app: MakeApp) -> None:
    client = make_app(SESSION_COOKIE_SAMESITE="None", SESSION_COOKIE_SECURE=True).client()
    cookie = cookie_of(client.get("/write?a=1", base_url="https://localhost"))
    assert cookie.get("samesite") == "None" and cookie.has("secure")


def test_session_cookie_partitioned_sets_partitioned_and_secure(make_app: MakeApp) -> None:
    client = make_app(SESSION_COOKIE_PARTITIONED=True).client()
    cookie = cookie_of(client.get("/write?a=1", base_url="https://localhost"))
    assert cookie.has("partitioned") and cookie.has("secure")


def test_without_refresh_each_request_reading_a_permanent_session_sends_no_cookie(make_app: MakeApp) -> None:
    client = make_app(SESSION_REFRESH_EACH_REQUEST=False).client()
    client.get("/permanent")
    assert cookies_of(client.get("/read")) == []


def test_refresh_each_request_sends_a_permanent_sessions_cookie_again(make_app: MakeApp) -> None:
    # A lifetime of 10 s: ours pushes the expiry (and sends the cookie) at most every tenth of it.
    client = make_app(PERMANENT_SESSION_LIFETIME=10).client()
    client.get("/permanent")
    time.sleep(1.2)
    cookie = cookie_of(client.get("/read"))
    assert 5 <= lifetime(cookie) <= 10
    assert client.get("/read").json["data"] == {"p": 1}


# -- differences kept on purpose (docs/flask.md, "Differences from Flask's own session") --------


@ours_only("ours saves a value changed in place without session.modified = True: each value is "
           "compared with what was loaded")
def test_a_change_in_place_is_saved_without_marking_the_session_modified(make_app: MakeApp) -> None:
    client = make_app().client()
    client.get("/cart")
    client.get("/cart/add")
    assert client.get("/read").json["data"] == {"cart": {"items": [1, 2]}}


@ours_only("ours counts as modified what a save must write: assigning the value a key already "
           "has is no change")
def test_assigning_the_same_value_is_no_change(make_app: MakeApp) -> None:
    client = make_app().client()
    client.get("/write?a=1")
    response = client.get("/same")
    assert response.json["modified"] is False and cookies_of(response) == []


@ours_only("ours tells a first visit: session.new is True until the session is stored, for the "
           "rest of that request too (Flask's cookie session cannot tell, and always says False)")
def test_new_is_true_for_the_request_that_starts_the_session(make_app: MakeApp) -> None:
    app = make_app()
    client = app.client()
    with client:
        assert client.get("/write?a=1").json["new"] is True
        assert session.new is True
    assert app.teardowns[-1]["new"] is True
    with client:
        assert client.get("/read").json["new"] is False
        assert session.new is False


@ours_only("a change made in teardown_request, after the response was built, is saved too, into "
           "the same row; Flask's cookie was built already")
def test_a_change_made_in_teardown_request_is_saved(make_app: MakeApp) -> None:
    client = make_app().client()
    client.get("/write?a=1")
    client.get("/late")
    assert client.get("/read").json["data"] == {"a": "1", "b": "1", "late": "yes"}


@ours_only("the cookie holds a signed random id, never the session's data, which stays on the server")
def test_the_cookie_holds_no_session_data(make_app: MakeApp) -> None:
    value = cookie_of(make_app().client().get(f"/write?note={NOTE}")).value
    assert len(value) < 100  # an id and its signature: no room for the note


@ours_only("a session cleared on the server stays cleared: a copy of its old cookie brings nothing "
           "back, where Flask's signed cookie still holds the data")
def test_a_cookie_kept_from_before_the_session_was_cleared_brings_nothing_back(make_app: MakeApp) -> None:
    client = make_app().client()
    old = cookie_of(client.get("/write?user=ada")).value
    client.get("/clear")
    client.set_cookie("session", old)
    assert client.get("/read").json["data"] == {}


@ours_only("unset SESSION_COOKIE_SAMESITE is read as Lax (Flask sends no SameSite)")
def test_the_default_cookie_is_samesite_lax(make_app: MakeApp) -> None:
    assert cookie_of(make_app().client().get("/write?a=1")).get("samesite") == "Lax"


@ours_only("with SESSION_COOKIE_SECURE = False (Flask's default) the cookie of a request that came "
           "over https is Secure anyway; Flask's never is")
def test_over_https_the_cookie_is_secure_without_session_cookie_secure(make_app: MakeApp) -> None:
    response = make_app().client().get("/write?a=1", base_url="https://localhost")
    assert cookie_of(response).has("secure")


@ours_only("a permanent session's cookie is sent again when its expiry moves forward (at most once "
           "a minute, or a tenth of the lifetime), not on every request")
def test_refresh_each_request_does_not_send_the_cookie_on_every_request(make_app: MakeApp) -> None:
    client = make_app().client()
    client.get("/permanent")
    assert cookies_of(client.get("/read")) == []


@ours_only("a session holding nothing but _permanent is not stored: there is nothing in it to keep")
def test_making_an_empty_session_permanent_stores_nothing(make_app: MakeApp) -> None:
    app = make_app()

    @app.flask.get("/only-permanent")
    def only_permanent() -> str:
        session.permanent = True
        return "ok"

    assert cookies_of(app.client().get("/only-permanent")) == []


@ours_only("ours needs SECRET_KEY at setup (it signs the id), where Flask's session fails at the "
           "first write")
def test_setup_without_a_secret_key_fails_naming_it(flavour: str, pg_dsn: str, schema: str) -> None:
    app = Flask("no-secret")
    app.config.update(PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        PgSession(app)

