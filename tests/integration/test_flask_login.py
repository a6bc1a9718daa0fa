"""Flask-Login on both Flask extensions, with real flask_login and a real PostgreSQL: a login
regenerates and tags the row, ``PGSESSION_LOGOUT_ENDS_SESSION`` makes ``logout_user()`` end the
session, ``sessions_for_user()`` / ``log_out_other_sessions()``, the same two on Quart, and the
demo's "Active sessions" page."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flask
import flask_login
import pytest
from db import sql
from flask import Flask, flash, get_flashed_messages, request
from flask.testing import FlaskClient
from helpers import ClosingClient, close_extension_stores

from pgsession_wsgi import ConfigurationError, OutsideRequestError, SessionMiddleware
from pgsession_wsgi.cookies import hash_session_id
from pgsession_wsgi.flask import (
    EXTENSION_KEY,
    EnvironSessionInterface,
    FlaskPgSession,
    PgSession,
    UserSession,
    log_out_other_sessions,
    sessions_for_user,
)

ROOT = Path(__file__).resolve().parents[2]
EXTENSIONS = {"PgSession": PgSession, "FlaskPgSession": FlaskPgSession}


class User(flask_login.UserMixin):  # type: ignore[misc]
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def add_login(app: Flask) -> None:
    """Flask-Login and the views the tests drive; none of them calls pgsession-wsgi at login."""
    manager = flask_login.LoginManager(app)
    manager.user_loader(lambda user_id: User(user_id) if user_id in ("7", "8") else None)

    @app.route("/visit")
    def visit() -> str:
        flask.session["cart"] = ["book"]
        return "ok"

    @app.route("/login/<user_id>")
    def login(user_id: str) -> str:
        flask_login.login_user(User(user_id), remember=request.args.get("remember") == "1")
        return "in"

    @app.route("/me")
    def me() -> dict[str, Any]:
        return {"id": flask_login.current_user.get_id(), "cart": flask.session.get("cart")}

    @app.route("/logout")
    def logout() -> str:
        flask_login.logout_user()
        flash("bye")  # after logout_user(): it lands in a fresh session
        return "out"

    @app.route("/flashes")
    def flashes() -> dict[str, Any]:
        return {"messages": get_flashed_messages()}

    @app.route("/sessions")
    def sessions() -> list[dict[str, Any]]:
        listed = sessions_for_user(request.args.get("user"))
        return [{"hash": s.id_hash, "current": s.current} for s in listed]

    @app.post("/others")
    def others() -> str:
        return str(log_out_other_sessions(request.args.get("user")))


@pytest.fixture
def make_app(pg_dsn: str, schema: str) -> Iterator[Callable[..., Flask]]:
    """``make_app(kind, **config)``: an app on this test's schema with Flask-Login; closed after."""
    made: list[Flask] = []

    def make(kind: str = "PgSession", ext: Any = None, **config: Any) -> Flask:
        app = Flask(f"login{len(made)}")
        app.test_client_class = ClosingClient
        app.config.update(SECRET_KEY="login-secret")
        if kind == "PgSession":
            app.config.update(PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
        else:
            app.config.update(SQLALCHEMY_DATABASE_URI=pg_dsn, SESSION_PG_SCHEMA=schema)
        app.config.update(config)
        (ext or EXTENSIONS[kind]()).init_app(app)
        made.append(app)
        add_login(app)
        return app

    yield make
    close_extension_stores(made)


def middleware(app: Flask) -> SessionMiddleware:
    found = app.extensions[EXTENSION_KEY]
    assert isinstance(found, SessionMiddleware)
    return found


def rows(app: Flask) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(hex id hash, user_id column, data) of every live row, oldest first."""
    return sql(
        middleware(app).store,
        "SELECT encode(id, 'hex'), user_id, data FROM {t} WHERE expires_at > now() ORDER BY created_at",
    )


def session_cookie(client: FlaskClient, name: str = "session") -> str | None:
    cookie = client.get_cookie(name)
    return None if cookie is None else cookie.value


def set_cookies(response: Any) -> list[str]:
    return response.headers.getlist("Set-Cookie")


def same_browser(app: Flask, cookie: str | None) -> FlaskClient:
    """A second client replaying a session cookie, as an attacker who copied it would."""
    client = app.test_client()
    assert cookie is not None
    client.set_cookie("session", cookie)
    return client


# -- login_user: a new id and the user column, with no call of ours ------------------------------


@pytest.mark.parametrize("kind", EXTENSIONS)
def test_login_user_regenerates_and_fills_the_user_column(make_app: Callable[..., Flask], kind: str) -> None:
    app = make_app(kind)
    client = app.test_client()
    client.get("/visit")
    before = session_cookie(client)
    [(anonymous_hash, anonymous_user, _)] = rows(app)
    assert anonymous_user is None

    client.get("/login/7")
    after = session_cookie(client)
    assert after is not None and after != before
    [(row_hash, user_id, data)] = rows(app)  # moved, not copied
    assert row_hash != anonymous_hash and user_id == "7"
    assert data["_user_id"] == "7" and data["cart"] == ["book"]  # the data came along
    assert client.get("/me").json == {"id": "7", "cart": ["book"]}

    # The cookie from before the login opens nothing now, not even the cart.
    assert same_browser(app, before).get("/me").json == {"id": None, "cart": None}
    assert [user for _, user, _ in rows(app)] == ["7"]


# -- logout_user: PGSESSION_LOGOUT_ENDS_SESSION ---------------------------------------------------


@pytest.mark.parametrize("kind", EXTENSIONS)
def test_logout_ends_the_session_with_the_setting(make_app: Callable[..., Flask], kind: str) -> None:
    app = make_app(kind, PGSESSION_LOGOUT_ENDS_SESSION=True)
    client = app.test_client()
    client.get("/visit")
    client.get("/login/7")
    logged_in = session_cookie(client)
    [(row_hash, _, _)] = rows(app)

    response = client.get("/logout")
    # The row is gone; the flash made after logout_user() is a new session under a new id.
    [(new_hash, user_id, data)] = rows(app)
    assert new_hash != row_hash and user_id is None and set(data) == {"_flashes"}
    assert [c for c in set_cookies(response) if c.startswith("session=")]
    assert session_cookie(client) not in (None, logged_in)
    assert client.get("/flashes").json == {"messages": ["bye"]}
    assert client.get("/me").json == {"id": None, "cart": None}  # the cart went with the session
    assert rows(app) == []  # the flash was shown: the emptied session is deleted
    # The logged-in cookie, copied before the logout, opens nothing.
    assert same_browser(app, logged_in).get("/me").json == {"id": None, "cart": None}


def test_logout_with_nothing_after_it_deletes_the_row_and_expires_the_cookie(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(PGSESSION_LOGOUT_ENDS_SESSION=True)

    @app.route("/quiet-logout")
    def quiet_logout() -> str:
        flask_login.logout_user()
        return "out"

    client = app.test_client()
    client.get("/login/7")
    client.get("/visit")
    assert len(rows(app)) == 1
    response = client.get("/quiet-logout")
    assert rows(app) == []
    [expired] = set_cookies(response)
    assert expired.startswith("session=;") and "Max-Age=0" in expired
    assert session_cookie(client) is None


@pytest.mark.parametrize("kind", EXTENSIONS)
def test_logout_without_the_setting_only_removes_flask_logins_keys(
    make_app: Callable[..., Flask], kind: str
) -> None:
    app = make_app(kind)
    client = app.test_client()
    client.get("/login/7")
    client.get("/visit")
    logged_in = session_cookie(client)
    [(row_hash, _, _)] = rows(app)
    client.get("/logout")
    # As before: the same row under the same id, Flask-Login's keys gone, the rest kept.
    [(same_hash, user_id, data)] = rows(app)
    assert same_hash == row_hash and user_id is None
    assert data["cart"] == ["book"] and "_user_id" not in data
    assert session_cookie(client) == logged_in
    assert client.get("/me").json == {"id": None, "cart": ["book"]}


def test_logout_still_clears_the_remember_me_cookie(make_app: Callable[..., Flask]) -> None:
    """logout_user() leaves ``_remember = "clear"`` for its own hook; ending the session keeps it."""
    app = make_app(PGSESSION_LOGOUT_ENDS_SESSION=True)
    client = app.test_client()
    login = client.get("/login/7?remember=1")
    assert any(c.startswith("remember_token=") for c in set_cookies(login))
    assert session_cookie(client, "remember_token") is not None

    logout = client.get("/logout")
    [cleared] = [c for c in set_cookies(logout) if c.startswith("remember_token=")]
    assert "Max-Age=0" in cleared or "1970" in cleared
    assert session_cookie(client, "remember_token") is None
    # Not logged in again from the remember-me cookie on the next request.
    assert client.get("/me").json["id"] is None
    assert all(user is None and "_remember" not in data for _, user, data in rows(app))


def test_the_setting_ends_sessions_only_on_its_own_app(make_app: Callable[..., Flask]) -> None:
    """One extension instance, two apps: only the app with the setting ends its sessions."""
    ext = PgSession()
    ending = make_app(ext=ext, PGSESSION_LOGOUT_ENDS_SESSION=True, PGSESSION_TABLE="ending")
    keeping = make_app(ext=ext, PGSESSION_TABLE="keeping")
    for app in (ending, keeping):
        client = app.test_client()
        client.get("/login/7")
        client.get("/visit")
        client.get("/logout")
        client.get("/flashes")
    assert rows(ending) == []
    [(_, _, kept)] = rows(keeping)
    assert kept["cart"] == ["book"]


def test_the_setting_without_flask_login_is_a_configuration_error(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "flask_login", None)  # as if it were not installed
    app = Flask("no_login")
    app.config.update(
        SECRET_KEY="s", PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema, PGSESSION_LOGOUT_ENDS_SESSION=True
    )
    with pytest.raises(ConfigurationError) as raised:
        PgSession(app)
    assert str(raised.value) == (
        "PGSESSION_LOGOUT_ENDS_SESSION = True makes Flask-Login's logout_user() end the session, "
        "but Flask-Login is not installed: `pip install flask-login`, or remove the setting and "
        "call flask.session.invalidate() in your logout view"
    )
    assert EXTENSION_KEY not in app.extensions
    assert app.wsgi_app.__class__ is not SessionMiddleware  # nothing was set up, nothing to close
    app.config["PGSESSION_LOGOUT_ENDS_SESSION"] = False
    PgSession(app)  # without the setting Flask-Login is not needed
    middleware(app).store.close()


# -- sessions_for_user() and log_out_other_sessions() --------------------------------------------


def logged_in_clients(app: Flask, user_id: str, count: int) -> list[FlaskClient]:
    clients = []
    for _ in range(count):
        client = app.test_client()
        client.get("/visit")
        client.get(f"/login/{user_id}")
        clients.append(client)
    return clients


def own_hash(client: FlaskClient) -> str:
    """The hex hash of the session id a PgSession client's cookie carries (signed: ``id.sig``)."""
    cookie = session_cookie(client)
    assert cookie is not None
    session_id = cookie.rsplit(".", 1)[0]
    return hash_session_id(session_id).hex()


@pytest.mark.parametrize("kind", EXTENSIONS)
def test_log_out_other_sessions_keeps_the_current_one(make_app: Callable[..., Flask], kind: str) -> None:
    app = make_app(kind)
    this, laptop, phone = logged_in_clients(app, "7", 3)
    [other_user] = logged_in_clients(app, "8", 1)

    listed = this.get("/sessions").json
    assert len(listed) == 3 and [s["current"] for s in listed].count(True) == 1
    [current] = [s["hash"] for s in listed if s["current"]]
    assert {h for h, user, _ in rows(app) if user == "7"} == {s["hash"] for s in listed}

    response = this.post("/others")
    assert response.text == "2"
    assert [(h, user) for h, user, _ in rows(app) if user == "7"] == [(current, "7")]
    assert this.get("/me").json == {"id": "7", "cart": ["book"]}  # this device stays logged in
    for gone in (laptop, phone):
        assert gone.get("/me").json == {"id": None, "cart": None}
    assert other_user.get("/me").json["id"] == "8"  # another user's sessions are not touched
    assert this.get("/sessions").json == [{"hash": current, "current": True}]
    assert this.post("/others").text == "0"


def test_the_current_flag_is_the_requests_own_session(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    first, second = logged_in_clients(app, "7", 2)
    for client in (first, second):
        [current] = [s["hash"] for s in client.get("/sessions").json if s["current"]]
        assert current == own_hash(client)


def test_an_explicit_user_id_and_the_extension_methods(make_app: Callable[..., Flask]) -> None:
    ext = PgSession()
    app = make_app(ext=ext)

    @app.route("/admin/<user_id>")
    def admin_view(user_id: str) -> dict[str, Any]:
        listed = ext.sessions_for_user(user_id)
        assert all(isinstance(s, UserSession) and not s.current for s in listed)
        assert all(len(s.fingerprint) == 8 and s.id_hash.startswith(s.fingerprint) for s in listed)
        return {"listed": len(listed), "ended": ext.log_out_other_sessions(user_id)}

    admin, _ = logged_in_clients(app, "8", 2)
    logged_in_clients(app, "7", 2)
    # Another user's sessions: none is the admin's own, so all of them end.
    assert admin.get("/admin/7").json == {"listed": 2, "ended": 2}
    assert [user for _, user, _ in rows(app)] == ["8", "8"]
    assert [s["current"] for s in admin.get("/sessions?user=8").json].count(True) == 1


def test_without_a_logged_in_user_or_a_request_they_say_what_is_missing(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    anonymous = app.test_client()
    # A SessionError in a view is the middleware's 500 with one log line saying what to do.
    assert anonymous.post("/others").status_code == 500
    assert re.search(r"no user is logged in .*'_user_id'.*user_id=", caplog.text)
    caplog.clear()
    assert anonymous.get("/sessions").status_code == 500
    assert "no user is logged in" in caplog.text
    for call, name in (
        (log_out_other_sessions, "log_out_other_sessions"),
        (sessions_for_user, "sessions_for_user"),
    ):
        with app.app_context(), pytest.raises(OutsideRequestError) as raised:
            call("7")
        assert str(raised.value) == (
            f"{name}() works on the request's session: call it while handling a request (in a view)"
        )

    untagged = make_app(PGSESSION_USER_KEY=None, PGSESSION_TABLE="untagged")
    [client] = logged_in_clients(untagged, "7", 1)
    caplog.clear()
    assert client.post("/others?user=7").status_code == 500
    assert "PGSESSION_USER_KEY is None" in caplog.text
    assert len(rows(untagged)) == 1


def test_outside_pgsession_it_is_a_configuration_error(
    make_store: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A plain Flask app (the error propagates with TESTING), and one with the middleware wired
    by hand, with no extension for the two functions to find (the middleware's 500 and its one
    log line): both say to set up PgSession(app) or FlaskPgSession(app)."""
    plain = Flask("plain")
    by_hand = Flask("by_hand")
    by_hand.session_interface = EnvironSessionInterface()
    by_hand.wsgi_app = SessionMiddleware(by_hand.wsgi_app, make_store(), secret_key="s" * 32)  # type: ignore[method-assign]
    for app in (plain, by_hand):
        app.config["SECRET_KEY"] = "s" * 32
        app.testing = True

        @app.route("/others")
        def others() -> str:
            return str(log_out_other_sessions("7"))

        @app.route("/sessions")
        def sessions() -> str:
            return str(sessions_for_user("7"))

    def needs(name: str, app: Flask) -> str:
        return (
            f"{name}() needs pgsession-wsgi on the app {app.name!r}: set it up with "
            "PgSession(app) or FlaskPgSession(app)"
        )

    for path, name in (("/others", "log_out_other_sessions"), ("/sessions", "sessions_for_user")):
        with pytest.raises(ConfigurationError) as raised:
            plain.test_client().get(path)
        assert str(raised.value) == needs(name, plain)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
            assert by_hand.test_client().get(path).status_code == 500
        assert [r.getMessage() for r in caplog.records if r.name == "pgsession_wsgi"] == [
            "session error, answering 500: " + needs(name, by_hand)
        ]


# -- the same two on Quart -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_quart_lists_and_logs_out_other_sessions(pg_dsn: str, schema: str) -> None:
    from quart import Quart
    from quart import session as quart_session

    from pgsession_wsgi import quart as pg_quart

    app = Quart("quart_devices")
    app.config.update(SECRET_KEY="q", PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
    ext = pg_quart.PgSession(app)

    @app.route("/login/<user_id>")
    async def login(user_id: str) -> str:
        quart_session["_user_id"] = user_id  # what a login stores under PGSESSION_USER_KEY
        return "in"

    @app.route("/me")
    async def me() -> str:
        return str(quart_session.get("_user_id"))

    @app.route("/sessions")
    async def sessions() -> list[bool]:
        return [s.current for s in await pg_quart.sessions_for_user()]

    @app.post("/others")
    async def others() -> str:
        return str(await ext.log_out_other_sessions())

    try:
        clients = [app.test_client() for _ in range(3)]
        for client in clients:
            await client.get("/login/7")
        this, *others_ = clients
        assert sorted(await (await this.get("/sessions")).get_json()) == [False, False, True]
        assert await (await this.post("/others")).get_data(as_text=True) == "2"
        assert await (await this.get("/me")).get_data(as_text=True) == "7"
        for gone in others_:
            assert await (await gone.get("/me")).get_data(as_text=True) == "None"
        assert await (await this.get("/sessions")).get_json() == [True]
        assert len(sql(ext.store, "SELECT 1 FROM {t} WHERE user_id = '7'")) == 1
    finally:
        await ext.store.close()


# -- the demo's "Active sessions" page -------------------------------------------------------------


def load_demo() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("flask_demo_under_test", ROOT / "examples" / "flask_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def demo(pg_dsn: str, schema: str) -> Iterator[Flask]:
    app = load_demo().create_app(pg_dsn, "demo-secret", schema=schema)
    app.test_client_class = ClosingClient
    yield app
    middleware(app).store.close()


def csrf(page: Any) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def demo_login(app: Flask) -> tuple[FlaskClient, Any]:
    """A browser that logged in as alice; and its "Active sessions" page."""
    client = app.test_client()
    token = csrf(client.get("/"))
    form = {"username": "alice", "password": "wonderland", "csrf_token": token}
    assert client.post("/login", data=form).status_code == 302
    page = client.get("/sessions")
    assert page.status_code == 200
    return client, page


def listed(page: Any) -> list[tuple[str, bool]]:
    """(fingerprint, this device?) of each row on the page."""
    found = re.findall(r'<tr class="(current|other)">\s*<td><code>([0-9a-f]+)</code>', page.text)
    return [(fingerprint, kind == "current") for kind, fingerprint in found]


def test_demo_lists_the_users_sessions_and_logs_out_the_others(demo: Flask) -> None:
    laptop, _ = demo_login(demo)
    phone, _ = demo_login(demo)
    this, page = demo_login(demo)
    assert "Active sessions of alice" in page.text
    shown = listed(page)
    assert len(shown) == 3 and [current for _, current in shown].count(True) == 1
    assert page.text.count("(this device)") == 1
    [(this_fingerprint, _)] = [row for row in shown if row[1]]
    assert this_fingerprint == own_hash(this)[:8]
    full_hashes = [h for h, _, _ in rows(demo)]
    assert {f for f, _ in shown} == {h[:8] for h in full_hashes}
    # Neither the session id nor its full hash is on the page.
    assert session_cookie(this).split(".")[0] not in page.text  # type: ignore[union-attr]
    assert not any(h in page.text for h in full_hashes)
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page.text)  # started, last used, expires

    done = this.post("/sessions/log-out-others", data={"csrf_token": csrf(page)})
    assert done.status_code == 302 and done.headers["Location"].endswith("/sessions")
    page = this.get("/sessions")
    assert "Logged out 2 other sessions." in page.text
    assert listed(page) == [(this_fingerprint, True)]
    assert [user for _, user, _ in rows(demo)] == ["alice"]
    for other in (laptop, phone):
        home = other.get("/")
        assert "Not logged in" in home.text
        assert other.get("/sessions").status_code == 302  # login_required sends it home


def test_demo_refuses_a_post_without_its_csrf_token(demo: Flask) -> None:
    demo_login(demo)
    this, page = demo_login(demo)
    for form in ({}, {"csrf_token": "forged"}):
        refused = this.post("/sessions/log-out-others", data=form)
        assert refused.status_code == 400 and "CSRF" in refused.text
    assert len([u for _, u, _ in rows(demo) if u == "alice"]) == 2  # nothing was ended
    # The same for logging out and in: a cross-site form cannot end or plant a login.
    assert this.post("/logout").status_code == 400
    assert "Hello, alice!" in this.get("/").text
    stranger = demo.test_client()
    stranger.get("/")
    form = {"username": "alice", "password": "wonderland"}
    assert stranger.post("/login", data=form).status_code == 400
    assert "Not logged in" in stranger.get("/").text
    assert this.post("/sessions/log-out-others", data={"csrf_token": csrf(page)}).status_code == 302


def test_demo_logout_ends_the_session_and_rotates_the_token(demo: Flask) -> None:
    client = demo.test_client()
    anonymous_token = csrf(client.get("/"))
    form = {"username": "alice", "password": "wonderland", "csrf_token": anonymous_token}
    client.post("/login", data=form)
    home = client.get("/")
    assert csrf(home) != anonymous_token  # a token known before the login is not the user's
    logged_in = session_cookie(client)
    [(row_hash, _, _)] = rows(demo)
    page = client.post("/logout", data={"csrf_token": csrf(home)}, follow_redirects=True)
    assert "You are logged out." in page.text and "Not logged in" in page.text
    assert row_hash not in [h for h, _, _ in rows(demo)]  # the row is gone, not emptied
    assert "Not logged in" in same_browser(demo, logged_in).get("/").text


def test_the_demo_without_flask_login_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``import flask_login`` fails as if it were not installed; nothing reaches the database."""
    from pgsession_wsgi.cli import main

    monkeypatch.setitem(sys.modules, "flask_login", None)
    monkeypatch.delitem(sys.modules, "pgsession_wsgi.examples.flask_app", raising=False)
    status = main(["demo", "--app", "flask", "--port", "1", "--dsn", "postgresql://nobody@127.0.0.1:1/x"])
    out, err = capsys.readouterr()
    assert (status, out) == (2, "")
    assert "flask_login" in err and "pip install 'pgsession-wsgi[demo]'" in err


@pytest.mark.parametrize("remember", [True, False])
def test_demo_remember_me_gives_the_session_30_days(demo: Flask, remember: bool) -> None:
    client = demo.test_client()
    form = {"username": "alice", "password": "wonderland", "csrf_token": csrf(client.get("/"))}
    if remember:
        form["remember"] = "1"
    response = client.post("/login", data=form)
    [cookie] = [c for c in set_cookies(response) if c.startswith("session=")]
    [(days, seconds)] = sql(
        middleware(demo).store,
        "SELECT extract(day FROM expires_at - now())::int, extract(epoch FROM expires_at - now())::int"
        " FROM {t} WHERE user_id = 'alice'",
    )
    if remember:  # a cookie that outlives the browser, a row that lasts 30 days unused
        assert "Max-Age=2592000" in cookie and days == 29
    else:  # the defaults: a browser-session cookie, 2 hours unused
        assert "Max-Age" not in cookie and 7000 < seconds <= 7200
    assert "Hello, alice!" in client.get("/").text
