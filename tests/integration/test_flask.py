"""pgsession_wsgi.flask.PgSession and EnvironSessionInterface, against a real PostgreSQL.

Every app gets the test's own schema; the Flask test client and webtest drive the requests.
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import flask
import flask_login
import pytest
from db import sql
from flask import Flask, flash, get_flashed_messages, request, session
from flask.testing import FlaskClient
from helpers import ClosingClient, add_count_route, close_extension_stores
from markupsafe import Markup
from webtest import TestApp
from wire import RoundTripCounter

from pgsession_wsgi import (
    ENVIRON_KEY,
    ConfigurationError,
    OutsideRequestError,
    PostgresStore,
    Session,
    SessionMiddleware,
    StoreUnavailable,
)
from pgsession_wsgi.flask import EXTENSION_KEY, EnvironSessionInterface, PgSession

ROOT = Path(__file__).resolve().parents[2]


# -- helpers --------------------------------------------------------------------------------------


def stored(dsn: str, schema: str, table: str = "pgsession") -> list[dict[str, Any]]:
    """The data of every live row, oldest first."""
    rows = sql(dsn, f'SELECT data FROM "{schema}"."{table}" WHERE expires_at > now() ORDER BY created_at')
    return [row[0] for row in rows]


def set_cookies(response: Any) -> list[str]:
    return [value for key, value in response.headers.items() if key.lower() == "set-cookie"]


def cookie_value(response: Any, name: str = "session") -> str:
    (header,) = [c for c in set_cookies(response) if c.startswith(name + "=")]
    return header.split(";", 1)[0].split("=", 1)[1]


@pytest.fixture
def make_app(pg_dsn: str, schema: str) -> Iterator[Callable[..., Flask]]:
    """``make_app(**config)``: a Flask app with PgSession on this test's schema, closed after."""
    made: list[Flask] = []

    def make(ext: PgSession | None = None, **config: Any) -> Flask:
        app = Flask(f"app{len(made)}")
        app.test_client_class = ClosingClient
        app.config.update(SECRET_KEY="test-secret", PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
        app.config.update(config)
        if ext is None:
            PgSession(app)
        else:
            ext.init_app(app)
        made.append(app)
        add_routes(app)
        return app

    yield make
    close_extension_stores(made)


def add_routes(app: Flask) -> None:
    add_count_route(app)

    @app.route("/read")
    def read() -> dict[str, Any]:
        return {key: repr(value) for key, value in session.items()}

    @app.route("/nothing")
    def nothing() -> str:
        return "no session here"

    @app.route("/template")
    def template() -> str:
        # Flask puts `session` into every template context, which marks it accessed.
        return flask.render_template_string("hello {{ 1 + 1 }}")

    @app.route("/permanent")
    def permanent() -> str:
        session.permanent = True
        session["p"] = 1
        return "ok"

    @app.route("/make-permanent")
    def make_permanent() -> str:
        session.permanent = True
        return "ok"

    @app.route("/identity")
    def identity() -> dict[str, Any]:
        return {
            "same": session._get_current_object() is request.environ[ENVIRON_KEY],  # type: ignore[attr-defined]
            "type": type(session._get_current_object()).__name__,  # type: ignore[attr-defined]
        }


# -- flask.session is the environ session -------------------------------------------------------


def test_flask_session_is_the_environ_session_and_counts(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str
) -> None:
    client = make_app().test_client()
    assert client.get("/identity").json == {"same": True, "type": "Session"}
    assert [client.get("/count").text for _ in range(3)] == ["1", "2", "3"]
    assert stored(pg_dsn, schema) == [{"n": 3}]
    # Another browser has its own session.
    other = client.application.test_client()
    assert other.get("/count").text == "1"
    assert sorted(row["n"] for row in stored(pg_dsn, schema)) == [1, 3]


def test_untouched_session_costs_no_statement_and_sets_no_cookie(
    make_app: Callable[..., Flask], wire_counter: RoundTripCounter, pg_dsn: str, schema: str
) -> None:
    client = make_app(PGSESSION_DSN=wire_counter.dsn).test_client()
    wire_counter.reset()
    for path in ("/nothing", "/template"):
        response = client.get(path)
        assert response.status_code == 200
        assert set_cookies(response) == []
    assert wire_counter.count == 0, wire_counter.statements
    # Reading a session that does not exist needs no statement either (no cookie, no row).
    assert client.get("/read").json == {}
    assert wire_counter.count == 0, wire_counter.statements
    assert client.get("/count").text == "1"
    assert wire_counter.count == 1  # one INSERT
    wire_counter.reset()
    assert client.get("/nothing").status_code == 200
    assert wire_counter.count == 0
    assert stored(pg_dsn, schema) == [{"n": 1}]


def test_importing_the_package_does_not_import_flask() -> None:
    code = "import sys, pgsession_wsgi, pgsession_wsgi.legacy; print('flask' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "False"


# -- the flags after the save, and a change made then ------------------------------------------


def test_a_change_in_teardown_after_the_flags_were_read_reaches_the_same_row(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str
) -> None:
    """The save ran when the response started; teardown still sees what the request did to the
    session (``modified``, ``new``), and its own change is saved into the row just written."""
    app = make_app()
    seen: list[tuple[bool, bool]] = []

    @app.get("/write-a")
    def write_a() -> str:
        session["a"] = 1
        return "ok"

    @app.teardown_request
    def late(exc: BaseException | None) -> None:
        if request.path == "/write-a":
            seen.append((session.modified, session.new))
            session["late"] = 2

    client = app.test_client()
    client.get("/write-a")
    assert seen == [(True, True)]
    assert stored(pg_dsn, schema) == [{"a": 1, "late": 2}]
    assert client.get("/read").json == {"a": "1", "late": "2"}


def test_a_logout_read_again_in_teardown_writes_nothing_and_warns_nothing(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``modified`` stays True after the logout's save; that alone is no change left to save (a
    late save would need a new cookie, and say so in the log)."""
    app = make_app()
    seen: list[tuple[bool, dict[str, Any]]] = []

    @app.get("/logout")
    def logout() -> str:
        session.invalidate()
        return "bye"

    @app.teardown_request
    def after(exc: BaseException | None) -> None:
        if request.path == "/logout":
            seen.append((session.modified, dict(session)))

    client = app.test_client()
    client.get("/count")
    caplog.clear()  # the setup's warning about the test's short key
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        client.get("/logout")
    assert seen == [(True, {})]
    assert caplog.messages == []
    assert stored(pg_dsn, schema) == []


LATE_REFUSED = (
    "session changed after the response headers were sent and needs a new cookie, which can no "
    "longer be set; the change was not saved"
)
# Flask's own test client leaves the body unread (no server ever does); ours reads and closes it.
CLIENTS = pytest.mark.parametrize("client_class", [ClosingClient, FlaskClient], ids=["read", "left-unread"])


def count_teardowns_into_the_session(app: Flask, path: str) -> list[int]:
    """A ``teardown_request`` that stores how many times it ran for ``path`` in ``late``: under
    ``with client:`` Flask runs it (again) when the block ends, after the body and its save."""
    runs: list[int] = []

    @app.teardown_request
    def late(exc: BaseException | None) -> None:
        if request.path == path:
            runs.append(1)
            session["late"] = len(runs)

    return runs


@CLIENTS
@pytest.mark.parametrize("kept_open", [True, False], ids=["with-client", "plain"])
@pytest.mark.parametrize("view", ["/bump", "/nothing"], ids=["view-wrote", "view-left-it"])
def test_a_change_in_teardown_reaches_the_same_row_whenever_teardown_runs(
    make_app: Callable[..., Flask],
    pg_dsn: str,
    schema: str,
    client_class: type[FlaskClient],
    kept_open: bool,
    view: str,
) -> None:
    """The session has a row and the browser its cookie: every change teardown makes is saved
    into that row, whether the view touched the session or not, the one made when a ``with
    client:`` block ends too, and whether or not the test reads the body."""
    app = make_app()
    app.test_client_class = client_class
    add_count_route(app, "/bump")
    runs = count_teardowns_into_the_session(app, view)
    client = app.test_client()
    client.get("/count").get_data()
    with client if kept_open else contextlib.nullcontext():
        response = client.get(view)
    assert runs
    assert client.get("/read").get_json() == {"n": "2" if view == "/bump" else "1", "late": repr(len(runs))}
    assert stored(pg_dsn, schema) == [{"n": 2 if view == "/bump" else 1, "late": len(runs)}]
    response.close()  # as a server would at last: the request is over (current_session unbound)


@CLIENTS
def test_a_change_in_teardown_with_the_client_kept_open_that_needs_a_new_cookie_says_so_once(
    make_app: Callable[..., Flask],
    pg_dsn: str,
    schema: str,
    caplog: pytest.LogCaptureFixture,
    client_class: type[FlaskClient],
) -> None:
    """A first visit whose only change is made in teardown would need a cookie the response no
    longer carries: nothing is stored, and one warning says so, however often teardown runs."""
    app = make_app()
    app.test_client_class = client_class
    runs = count_teardowns_into_the_session(app, "/nothing")
    client = app.test_client()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"), client:
        response = client.get("/nothing")
    response.get_data()  # Flask's client runs the rest of the body only now
    assert runs
    assert set_cookies(response) == []
    assert caplog.messages == [LATE_REFUSED]
    assert stored(pg_dsn, schema) == []


def test_a_request_context_the_test_pushes_itself_saves_nothing_and_says_nothing(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``app.test_request_context()`` makes no response, so nothing is saved (as with Flask's
    own session), not even by a teardown's late save; ``app.app_context()`` has no session."""
    app = make_app()
    client = app.test_client()
    client.get("/count")
    cookie = client.get_cookie("session")
    assert cookie is not None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        with app.test_request_context("/", headers={"Cookie": f"session={cookie.value}"}):
            assert session["n"] == 1
            session["n"] = 5
        with app.test_request_context("/"):
            session["fresh"] = True
        with app.app_context():
            assert not flask.has_request_context()
    assert caplog.messages == []
    assert stored(pg_dsn, schema) == [{"n": 1}]
    assert client.get("/count").text == "2"


# -- config -------------------------------------------------------------------------------------


def test_missing_secret_key_names_the_config_key(pg_dsn: str) -> None:
    app = Flask(__name__)
    app.test_client_class = ClosingClient
    app.config["PGSESSION_DSN"] = pg_dsn
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        PgSession(app)
    assert EXTENSION_KEY not in app.extensions


@pytest.mark.parametrize("uri", [None, "sqlite:///app.db", "mysql://u@h/db"])
def test_missing_dsn_names_the_config_key(uri: str | None) -> None:
    app = Flask(__name__)
    app.test_client_class = ClosingClient
    app.config["SECRET_KEY"] = "k"
    if uri is not None:
        app.config["SQLALCHEMY_DATABASE_URI"] = uri
    ext = PgSession()
    with pytest.raises(ConfigurationError, match="PGSESSION_DSN"):
        ext.init_app(app)


@pytest.mark.parametrize("scheme", ["postgresql://", "postgresql+psycopg2://", "postgres://"])
def test_dsn_falls_back_to_sqlalchemy_database_uri(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str, scheme: str
) -> None:
    if not pg_dsn.startswith("postgresql://"):
        pytest.skip("needs a URL-style PGSESSION_TEST_DSN")
    uri = scheme + pg_dsn.removeprefix("postgresql://")
    client = make_app(PGSESSION_DSN=None, SQLALCHEMY_DATABASE_URI=uri).test_client()
    assert client.get("/count").text == "1"
    assert stored(pg_dsn, schema) == [{"n": 1}]


def test_the_stores_settings_come_from_config(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str, wire_counter: RoundTripCounter
) -> None:
    """The defaults (a purge worker, synchronous_commit on, prepared statements) and
    PGSESSION_UNLOGGED, PGSESSION_SYNCHRONOUS_COMMIT, PGSESSION_PREPARED_STATEMENTS reach the
    store; synchronous_commit is read on its connection through its one seam, ``_run`` (no public
    call shows it) (_Extension._make_store mutants 5-8, 14-17)."""
    def show(store: Any) -> Any:
        return store._run(lambda cur: (cur.execute("SHOW synchronous_commit"), cur.fetchone())[1],
                          retry=False)

    def request_statements(app: Flask) -> list[str]:
        client = app.test_client()
        client.get("/count")
        wire_counter.reset()
        client.get("/count")
        return wire_counter.statements

    default = make_app(PGSESSION_DSN=wire_counter.dsn)
    store = default.extensions[EXTENSION_KEY].store
    assert store.purge_interval is not None
    assert show(store) == tuple(sql(pg_dsn, "SHOW synchronous_commit")[0])  # the server's own: not set
    sent = request_statements(default)
    assert sent and all(s.startswith(("EXECUTE", "PREPARE")) for s in sent), sent
    other = make_app(PGSESSION_DSN=wire_counter.dsn, PGSESSION_TABLE="other", PGSESSION_UNLOGGED=True,
                     PGSESSION_SYNCHRONOUS_COMMIT=False, PGSESSION_PREPARED_STATEMENTS=False)
    assert show(other.extensions[EXTENSION_KEY].store) == ("off",)
    sent = request_statements(other)
    assert sent and not any(s.startswith(("EXECUTE", "PREPARE")) for s in sent), sent
    persistence = sql(pg_dsn, "SELECT relpersistence FROM pg_class WHERE oid = to_regclass(%s)",
                      (f'"{schema}".other',))
    assert persistence == [("u",)]


def test_table_schema_and_pool_size_come_from_config(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str
) -> None:
    sql(pg_dsn, f'CREATE SCHEMA "{schema}_other"')
    try:
        app = make_app(
            PGSESSION_TABLE="web sessions", PGSESSION_SCHEMA=f"{schema}_other", PGSESSION_MAX_CONNECTIONS=3
        )
        # Created at init_app, before any request.
        assert stored(pg_dsn, f"{schema}_other", "web sessions") == []
        app.test_client().get("/count")
        assert stored(pg_dsn, f"{schema}_other", "web sessions") == [{"n": 1}]
        store = app.extensions[EXTENSION_KEY].store
        assert store.table == "web sessions"
        assert store._pool.max_connections == 3
    finally:
        sql(pg_dsn, f'DROP SCHEMA "{schema}_other" CASCADE')


def test_cookie_settings_come_from_flask_config(make_app: Callable[..., Flask]) -> None:
    app = make_app(
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_DOMAIN="example.test",
        SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="strict",
    )
    response = app.test_client().get("/count", base_url="http://example.test/")
    (header,) = set_cookies(response)
    assert header.startswith("sid=")
    parts = {part.strip().split("=")[0].lower(): part.strip() for part in header.split(";")}
    assert parts["domain"] == "Domain=example.test"
    assert parts["path"] == "Path=/app"
    assert "secure" in parts and "httponly" not in parts
    assert parts["samesite"] == "SameSite=Strict"


def test_flask_default_cookie_is_lax_and_not_forced_secure(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()
    (plain,) = set_cookies(app.test_client().get("/count"))
    assert "HttpOnly" in plain and "Secure" not in plain and "SameSite=Lax" in plain
    assert "Path=/" in plain
    # SESSION_COOKIE_SECURE=False (Flask's default) still marks the cookie Secure over https.
    (https,) = set_cookies(app.test_client().get("/count", base_url="https://localhost/"))
    assert "Secure" in https


def test_secret_key_fallbacks_are_accepted_and_re_signed(make_app: Callable[..., Flask]) -> None:
    old = make_app(SECRET_KEY="old-key")
    client = old.test_client()
    client.get("/count")
    client.get("/count")
    cookie = client.get_cookie("session").value  # type: ignore[union-attr]
    new = make_app(SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"])
    new_client = new.test_client()
    new_client.set_cookie("session", cookie)
    response = new_client.get("/count")
    assert response.text == "3"
    resigned = cookie_value(response)
    assert resigned != cookie and resigned.split(".")[0] == cookie.split(".")[0]
    # Without the fallback the old cookie is just a new, empty session.
    strict = make_app(SECRET_KEY="new-key").test_client()
    strict.set_cookie("session", cookie)
    assert strict.get("/count").text == "1"


def test_double_init_is_refused(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    with pytest.raises(ConfigurationError, match="already set up"):
        PgSession(app)


# -- permanence, lifetime and refresh -----------------------------------------------------------


def test_sessions_are_browser_sessions_until_made_permanent(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str
) -> None:
    app = make_app(PERMANENT_SESSION_LIFETIME=timedelta(hours=2))
    client = app.test_client()
    (header,) = set_cookies(client.get("/count"))
    assert "Max-Age" not in header and "Expires" not in header
    (header,) = set_cookies(app.test_client().get("/permanent"))
    assert "Max-Age=7200" in header and "Expires=" in header
    # The idle timeout on the server is PERMANENT_SESSION_LIFETIME, measured by the database clock.
    ((low, high),) = sql(
        pg_dsn, f'SELECT min(expires_at - now()), max(expires_at - now()) FROM "{schema}".pgsession'
    )
    assert timedelta(hours=1, minutes=59) < low <= high <= timedelta(hours=2)


def test_making_an_existing_session_permanent_resends_the_cookie(
    make_app: Callable[..., Flask],
) -> None:
    client = make_app(PERMANENT_SESSION_LIFETIME=timedelta(hours=2)).test_client()
    first = cookie_value(client.get("/count"))
    response = client.get("/make-permanent")
    (header,) = set_cookies(response)
    assert header.startswith(f"session={first};") and "Max-Age=7200" in header


@pytest.mark.parametrize("refresh", [True, False])
def test_refresh_each_request_resends_a_permanent_cookie_after_a_touch(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str, refresh: bool
) -> None:
    client = make_app(SESSION_REFRESH_EACH_REQUEST=refresh).test_client()
    assert client.get("/permanent").status_code == 200
    # Make the row due for an expiry push, as if the last request were an hour ago.
    sql(pg_dsn, f"UPDATE \"{schema}\".pgsession SET accessed_at = now() - interval '1 hour'")
    response = client.get("/read")
    assert len(set_cookies(response)) == (1 if refresh else 0)
    (touched,) = sql(pg_dsn, f"SELECT now() - accessed_at < interval '1 minute' FROM \"{schema}\".pgsession")
    assert touched == (True,)


# -- flash, Markup, Flask-Login -----------------------------------------------------------------


def test_flash_messages_and_markup_survive_the_round_trip(make_app: Callable[..., Flask]) -> None:
    app = make_app()

    @app.route("/flash")
    def do_flash() -> str:
        flash(Markup("<b>saved</b>"), "info")
        flash("plain & simple")
        return "ok"

    @app.route("/show")
    def show() -> dict[str, Any]:
        messages = get_flashed_messages(with_categories=True)
        return {"messages": [[c, str(m), type(m).__name__] for c, m in messages]}

    client = app.test_client()
    client.get("/flash")
    assert client.get("/show").json == {
        "messages": [
            ["info", "<b>saved</b>", "Markup"],
            ["message", "plain & simple", "str"],
        ]
    }
    assert client.get("/show").json == {"messages": []}  # consumed


def test_markup_values_keep_their_type(make_app: Callable[..., Flask]) -> None:
    app = make_app()

    @app.route("/put")
    def put() -> str:
        session["html"] = Markup("<i>x</i>")
        return "ok"

    @app.route("/get")
    def get() -> str:
        value = session["html"]
        return f"{type(value).__name__}:{flask.render_template_string('{{ v }}', v=value)}"

    client = app.test_client()
    client.get("/put")
    assert client.get("/get").text == "Markup:<i>x</i>"  # not escaped again


def test_flask_login_works_unchanged(make_app: Callable[..., Flask], pg_dsn: str, schema: str) -> None:
    app = make_app()
    manager = flask_login.LoginManager(app)

    class User(flask_login.UserMixin):  # type: ignore[name-defined,misc]
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    @manager.user_loader
    def load(user_id: str) -> User | None:
        return User(user_id) if user_id in ("7", "8") else None

    @app.route("/login/<user_id>")
    def login(user_id: str) -> str:
        session.regenerate()  # type: ignore[attr-defined]
        flask_login.login_user(User(user_id))
        return "in"

    @app.route("/me")
    def me() -> dict[str, Any]:
        user = flask_login.current_user
        return {"auth": user.is_authenticated, "id": user.get_id(), "fresh": flask_login.login_fresh()}

    @app.route("/logout")
    def logout() -> str:
        flask_login.logout_user()
        return "out"

    @app.route("/private")
    @flask_login.login_required
    def private() -> str:
        return "secret"

    client = app.test_client()
    assert client.get("/me").json == {"auth": False, "id": None, "fresh": False}
    assert client.get("/private").status_code == 401
    client.get("/count")
    before = client.get_cookie("session").value  # type: ignore[union-attr]
    client.get("/login/7")
    after = client.get_cookie("session").value  # type: ignore[union-attr]
    assert after != before  # a new id at login
    assert client.get("/me").json == {"auth": True, "id": "7", "fresh": True}
    assert client.get("/private").text == "secret"
    (data,) = stored(pg_dsn, schema)
    assert data["_user_id"] == "7" and data["_fresh"] is True and data["n"] == 1
    # The pre-login id is dead.
    stale = app.test_client()
    stale.set_cookie("session", before)
    assert stale.get("/me").json["auth"] is False
    client.get("/logout")
    assert client.get("/me").json == {"auth": False, "id": None, "fresh": False}
    assert client.get("/private").status_code == 401
    (data,) = stored(pg_dsn, schema)
    assert "_user_id" not in data and data["n"] == 1


# -- the test client's session_transaction ------------------------------------------------------


def test_session_transaction_sets_and_reads_the_session(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str
) -> None:
    client = make_app().test_client()
    with client.session_transaction() as sess:
        assert isinstance(sess, Session) and dict(sess) == {}
        sess["n"] = 41
        sess["user"] = "alice"
    assert client.get("/count").text == "42"
    with client.session_transaction() as sess:
        assert sess["n"] == 42 and sess["user"] == "alice"
        del sess["user"]
    assert client.get("/read").json == {"n": "42"}
    assert stored(pg_dsn, schema) == [{"n": 42}]


def test_session_transaction_that_changes_nothing_writes_nothing(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str
) -> None:
    client = make_app().test_client()
    with client.session_transaction() as sess:
        assert dict(sess) == {}
    assert client.get_cookie("session") is None
    assert stored(pg_dsn, schema) == []


def test_session_transaction_can_log_a_flask_login_user_in(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    manager = flask_login.LoginManager(app)

    class User(flask_login.UserMixin):  # type: ignore[name-defined,misc]
        id = "5"

    manager.user_loader(lambda user_id: User() if user_id == "5" else None)

    @app.route("/whoami")
    def whoami() -> str:
        return str(flask_login.current_user.get_id())

    client = app.test_client()
    with client.session_transaction() as sess:
        sess["_user_id"] = "5"
        sess["_fresh"] = True
    assert client.get("/whoami").text == "5"


# -- the store unavailable: a 503 through Flask's error handling -------------------------------


def broken_app(make_app: Callable[..., Flask], counter: RoundTripCounter, **config: Any) -> Flask:
    """An app whose database goes away after start-up (the proxy in front of it is cut)."""
    app = make_app(PGSESSION_DSN=counter.dsn, **config)
    app.extensions[EXTENSION_KEY].store._pool.timeout = 1.0
    return app


def test_store_unavailable_is_a_503_rendered_by_the_apps_handler(
    make_app: Callable[..., Flask], wire_counter: RoundTripCounter
) -> None:
    """The app's 503 page sees an empty session, and a write there fails saying why."""
    app = broken_app(make_app, wire_counter)
    refused: list[str] = []

    @app.errorhandler(503)
    def unavailable(error: Exception) -> tuple[str, int]:
        try:
            session["seen_error"] = True
        except StoreUnavailable as exc:
            refused.append(str(exc))
        return f"custom 503 page ({type(error).__name__}, {dict(session)})", 503

    client = app.test_client()
    client.get("/count")  # a session to load
    wire_counter.close()
    response = client.get("/count")
    assert response.status_code == 503
    assert response.text == "custom 503 page (ServiceUnavailable, {})"
    assert refused == [
        "the session store is unavailable; the session is read-only and empty for the rest of this request"
    ]


def test_store_unavailable_without_a_handler_is_a_plain_503(
    make_app: Callable[..., Flask], wire_counter: RoundTripCounter, caplog: pytest.LogCaptureFixture
) -> None:
    """Flask's own 503 page saying what failed, and one log line with the store's reason."""
    app = broken_app(make_app, wire_counter)
    client = app.test_client()
    client.get("/count")
    wire_counter.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        response = client.get("/read")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "<p>The session store cannot be reached. Please try again shortly.</p>" in response.text
    [record] = [r for r in caplog.records if r.name == "pgsession_wsgi" and r.levelno >= logging.WARNING]
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert message.startswith("session store unavailable, answering 503: ")
    assert "PostgreSQL" in message  # the store's own reason follows


def test_store_unavailable_when_saving_a_write_only_request_is_a_503(
    make_app: Callable[..., Flask], wire_counter: RoundTripCounter
) -> None:
    # The write happens as the response starts, after Flask is done: the middleware answers.
    app = broken_app(make_app, wire_counter)

    @app.route("/write-only")
    def write_only() -> str:
        session["x"] = 1  # never read: no statement until the save
        return "ok"

    web = TestApp(app)
    web.get("/count")
    wire_counter.close()
    response = web.get("/write-only", status=503)
    assert response.headers["Retry-After"] == "5"


def test_store_unavailable_when_saving_is_a_503_under_the_flask_test_client(
    make_app: Callable[..., Flask], wire_counter: RoundTripCounter
) -> None:
    app = broken_app(make_app, wire_counter)

    @app.route("/write-only")
    def write_only() -> str:
        session["x"] = 1
        return "ok"

    client = app.test_client()
    client.get("/count")
    wire_counter.close()
    assert client.get("/write-only").status_code == 503


def test_store_unavailable_stays_a_503_with_flask_login(
    make_app: Callable[..., Flask], wire_counter: RoundTripCounter
) -> None:
    # Flask-Login reads the session again in after_request; that must not turn into a 500.
    app = broken_app(make_app, wire_counter)
    flask_login.LoginManager(app).user_loader(lambda user_id: None)

    @app.errorhandler(503)
    def unavailable(error: Exception) -> tuple[str, int]:
        return f"down; user={flask.session.get('_user_id')}", 503

    client = app.test_client()
    client.get("/count")
    wire_counter.close()
    response = client.get("/count")
    assert (response.status_code, response.text) == (503, "down; user=None")


def test_an_apps_own_store_unavailable_handler_is_kept(
    make_app: Callable[..., Flask], wire_counter: RoundTripCounter, pg_dsn: str
) -> None:
    app = Flask(__name__)
    app.test_client_class = ClosingClient
    app.config.update(
        SECRET_KEY="k",
        PGSESSION_DSN=wire_counter.dsn,
        PGSESSION_SCHEMA=make_app().extensions[EXTENSION_KEY].store.schema,
    )
    app.register_error_handler(StoreUnavailable, lambda e: ("mine", 502))
    ext = PgSession(app)
    add_routes(app)
    try:
        client = app.test_client()
        client.get("/count")
        ext.store._pool.timeout = 1.0
        wire_counter.close()
        assert client.get("/count").status_code == 502
    finally:
        ext.store.close()


# -- several apps in one process ----------------------------------------------------------------


def test_several_apps_keep_their_own_store_and_config(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str
) -> None:
    ext = PgSession()
    shop = make_app(ext, SECRET_KEY="shop-key", PGSESSION_TABLE="shop")
    blog = make_app(ext, SECRET_KEY="blog-key", PGSESSION_TABLE="blog", SESSION_COOKIE_NAME="blog_session")
    assert ext.get_middleware(shop).store is not ext.get_middleware(blog).store
    with shop.app_context():
        assert ext.store.table == "shop"
    with blog.app_context():
        assert ext.store.table == "blog"
    shop_client, blog_client = shop.test_client(), blog.test_client()
    for _ in range(2):
        shop_client.get("/count")
    first = blog_client.get("/count")
    assert first.text == "1" and set_cookies(first)[0].startswith("blog_session=")
    blog_client.get("/count")
    assert stored(pg_dsn, schema, "shop") == [{"n": 2}]
    assert stored(pg_dsn, schema, "blog") == [{"n": 2}]
    # A shop cookie means nothing to the blog (another key, another table).
    stranger = blog.test_client()
    stranger.set_cookie("blog_session", shop_client.get_cookie("session").value)  # type: ignore[union-attr]
    assert stranger.get("/count").text == "1"


# -- EnvironSessionInterface: the middleware wired by hand --------------------------------------


def plain_flask_app() -> Flask:
    app = Flask(__name__)
    app.test_client_class = ClosingClient
    app.session_interface = EnvironSessionInterface()
    add_routes(app)
    return app


def test_environ_interface_with_the_middleware_inside_flask(
    make_store: Callable[..., PostgresStore], pg_dsn: str, schema: str
) -> None:
    app = plain_flask_app()
    app.wsgi_app = SessionMiddleware(app.wsgi_app, make_store(), secret_key="k")  # type: ignore[method-assign]
    client = app.test_client()
    assert client.get("/identity").json == {"same": True, "type": "Session"}
    assert [client.get("/count").text for _ in range(2)] == ["1", "2"]
    assert stored(pg_dsn, schema) == [{"n": 2}]


def test_environ_interface_with_the_middleware_outside_flask(
    make_store: Callable[..., PostgresStore], pg_dsn: str, schema: str
) -> None:
    # As under gunicorn with `SessionMiddleware(app, ...)` as the WSGI entry point.
    app = plain_flask_app()
    web = TestApp(SessionMiddleware(app, make_store(), secret_key="k"))
    assert [web.get("/count").text for _ in range(3)] == ["1", "2", "3"]
    assert web.get("/identity").json == {"same": True, "type": "Session"}
    assert stored(pg_dsn, schema) == [{"n": 3}]


def test_environ_interface_without_the_middleware_says_what_to_wrap() -> None:
    app = plain_flask_app()
    app.testing = True  # propagate the error to the test
    with pytest.raises(OutsideRequestError, match=r"app\.wsgi_app = SessionMiddleware"):
        app.test_client().get("/count")
    app.testing = False
    assert app.test_client().get("/count").status_code == 500


# -- the example app, through webtest -----------------------------------------------------------


def load_example() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("flask_app_example", ROOT / "examples" / "flask_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def csrf(page: Any) -> str:
    """The CSRF token of the example's forms on ``page``."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def test_example_app_login_counter_flash_and_logout(pg_dsn: str, schema: str) -> None:
    app = load_example().create_app(pg_dsn, "example-secret", schema=schema)
    web = TestApp(app)
    try:
        page = web.get("/")
        assert "visited this page 1 time." in page.text and "Not logged in" in page.text
        anonymous_cookie = web.cookies["session"]
        page = web.get("/")
        assert "visited this page 2 times" in page.text

        bad = web.post("/login", {"username": "alice", "password": "nope", "csrf_token": csrf(page)})
        page = bad.follow()
        assert "Wrong user name or password." in page.text

        web.post("/login", {"username": "alice", "password": "wonderland", "csrf_token": csrf(page)})
        logged_in_cookie = web.cookies["session"]
        assert logged_in_cookie != anonymous_cookie  # regenerated at login, by login_user() alone
        page = web.get("/")
        assert "Hello, alice!" in page.text and "Welcome, alice." in page.text
        assert "visited this page 4 times" in page.text  # the counter carried over
        assert "Welcome" not in web.get("/").text  # a flash is shown once

        # The anonymous id died at login: replaying it gets a fresh session.
        replay = TestApp(app)
        replay.set_cookie("session", anonymous_cookie)
        assert "visited this page 1 time." in replay.get("/").text

        page = web.post("/logout", {"csrf_token": csrf(page)}).follow()
        assert "You are logged out." in page.text and "Not logged in" in page.text
        assert "visited this page 1 time." in page.text
        replay = TestApp(app)
        replay.set_cookie("session", logged_in_cookie)
        assert "Not logged in" in replay.get("/").text
        rows = stored(pg_dsn, schema)
        assert all(row.get("_user_id") is None for row in rows)
        assert sql(pg_dsn, f'SELECT count(*) FROM "{schema}".pgsession WHERE user_id IS NOT NULL') == [(0,)]
    finally:
        app.extensions[EXTENSION_KEY].store.close()
