"""The benchmark's Flask app, with the session backend chosen by environment variables.

Environment:
    BENCH_VARIANT    one of VARIANTS (default ``none``)
    BENCH_PG_DSN     libpq URI of the PostgreSQL database (PostgreSQL variants)
    BENCH_REDIS_URL  Redis URL (``flask-session-redis``; default redis://127.0.0.1:6379/0)
    BENCH_POOL_SIZE  connections per worker process for the PostgreSQL variants (default 4: one
                     per gunicorn thread)

Serve with gunicorn: ``gunicorn --chdir benchmarks 'app:create_app()'``.
``python app.py`` builds the app once and exits: the driver runs it before starting gunicorn so that
schema creation happens once, not concurrently in every worker.

Routes:
    /login  writes an initial session (user id and a counter); used once per client for a cookie.
            ``/login?size=N`` adds a value of N bytes under "blob" (the session-size sweep)
    /read   reads a session value and returns it
    /write  increments the counter in the session
    /none   does not touch the session
"""

from __future__ import annotations

import os
import secrets
from typing import Callable

from flask import Flask, request, session

VARIANTS = (
    "none",
    "cookie",
    "flask-session-sqlalchemy",
    "flask-pg-session",
    "flask-session-redis",
    "pgsession-wsgi",
    "pgsession-wsgi-async",
    "pgsession-wsgi-unlogged",
    "pgsession-wsgi-noprep",
    "floor",
    "floor-async",
    "floor-unlogged",
)
PG_VARIANTS = (
    "flask-session-sqlalchemy",
    "flask-pg-session",
    "pgsession-wsgi",
    "pgsession-wsgi-async",
    "pgsession-wsgi-unlogged",
    "pgsession-wsgi-noprep",
    "floor",
    "floor-async",
    "floor-unlogged",
)
SECRET_KEY = "benchmark-only-secret-key-not-for-production"


def blob(size: int) -> str:
    """``size`` random URL-safe characters: a value no store can compress away (TOAST would
    shrink a repeated character to almost nothing)."""
    return secrets.token_urlsafe(size)[:size]


def _require_dsn() -> str:
    dsn = os.environ.get("BENCH_PG_DSN")
    if not dsn:
        raise RuntimeError("BENCH_PG_DSN is not set")
    return dsn


def _sqlalchemy_url(dsn: str) -> str:
    """The libpq URI as an SQLAlchemy URL with the psycopg2 driver."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme not in ("postgres", "postgresql"):
        raise RuntimeError(f"not a postgresql:// URI: {dsn!r}")
    return f"postgresql+psycopg2://{rest}"


def _setup_flask_session_sqlalchemy(app: Flask) -> None:
    from flask_session import Session
    from flask_sqlalchemy import SQLAlchemy

    app.config["SQLALCHEMY_DATABASE_URI"] = _sqlalchemy_url(_require_dsn())
    app.config["SESSION_TYPE"] = "sqlalchemy"
    app.config["SESSION_SQLALCHEMY"] = SQLAlchemy(app)
    app.config["SESSION_SQLALCHEMY_TABLE"] = "flask_session_sessions"
    Session(app)


def _setup_flask_pg_session(app: Flask) -> None:
    from flask_pg_session import FlaskPgSession

    # flask-pg-session 0.1.0 reads its (libpq) DSN from SQLALCHEMY_DATABASE_URI.
    app.config["SQLALCHEMY_DATABASE_URI"] = _require_dsn()
    FlaskPgSession(app)


def _setup_flask_session_redis(app: Flask) -> None:
    from flask_session import Session
    from redis import Redis

    url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    app.config["SESSION_TYPE"] = "redis"
    app.config["SESSION_REDIS"] = Redis.from_url(url)
    Session(app)


def _setup_pgsession_wsgi(app: Flask) -> None:
    from pgsession_wsgi.flask import PgSession

    app.config["PGSESSION_DSN"] = _require_dsn()
    PgSession(app)


def _setup_pgsession_wsgi_async(app: Flask) -> None:
    """pgsession-wsgi with synchronous_commit off: writes no longer wait for the WAL flush,
    which is the durability the Redis variant (no persistence) has anyway."""
    app.config["PGSESSION_SYNCHRONOUS_COMMIT"] = False
    _setup_pgsession_wsgi(app)


def _setup_pgsession_wsgi_unlogged(app: Flask) -> None:
    """pgsession-wsgi on an unlogged table: no WAL at all, the table is emptied after a crash
    (everyone is logged out), the durability of a Redis without persistence."""
    app.config["PGSESSION_UNLOGGED"] = True
    app.config["PGSESSION_TABLE"] = "pgsession_unlogged"  # the logged variants' table stays logged
    _setup_pgsession_wsgi(app)


def _setup_pgsession_wsgi_noprep(app: Flask) -> None:
    """pgsession-wsgi without server-side prepared statements: every statement is parsed and
    planned anew (the 0.1 behaviour), to measure what preparing them gains."""
    app.config["PGSESSION_PREPARED_STATEMENTS"] = False
    _setup_pgsession_wsgi(app)


# "none" and "cookie" keep Flask's default session interface (the signed cookie).
_SETUP: dict[str, Callable[[Flask], None]] = {
    "flask-session-sqlalchemy": _setup_flask_session_sqlalchemy,
    "flask-pg-session": _setup_flask_pg_session,
    "flask-session-redis": _setup_flask_session_redis,
    "pgsession-wsgi": _setup_pgsession_wsgi,
    "pgsession-wsgi-async": _setup_pgsession_wsgi_async,
    "pgsession-wsgi-unlogged": _setup_pgsession_wsgi_unlogged,
    "pgsession-wsgi-noprep": _setup_pgsession_wsgi_noprep,
}


def create_app(variant: str | None = None) -> Flask:
    variant = variant or os.environ.get("BENCH_VARIANT", "none")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    app = Flask(__name__)
    if variant.startswith("floor"):
        # No session library: Flask's own session stays a NullSession (no SECRET_KEY), and the
        # floor's routes do the session work by hand (benchmarks/floor.py).
        import floor

        pool_size = int(os.environ.get("BENCH_POOL_SIZE", "4"))
        store = floor.install(app, _require_dsn(), variant=variant, secret=SECRET_KEY, pool_size=pool_size)
        app.extensions["bench_floor"] = store
        return app
    # SECRET_KEY is a per-variant choice: without one, Flask's default interface gives every
    # request a NullSession and does no cookie work, which is what "none" means.
    app.config["SECRET_KEY"] = SECRET_KEY if variant != "none" else None
    uses_session = variant != "none"
    setup = _SETUP.get(variant)
    if setup is not None:
        setup(app)

    @app.get("/login")
    def login() -> str:
        if uses_session:
            session["user_id"] = "user-42"
            session["counter"] = 0
            size = request.args.get("size", type=int)
            if size:
                session["blob"] = blob(size)
            session.permanent = True
        return "logged in"

    @app.get("/read")
    def read() -> str:
        user_id = session.get("user_id") if uses_session else None
        return f"user_id={user_id}"

    @app.get("/write")
    def write() -> str:
        counter = 0
        if uses_session:
            counter = int(session.get("counter", 0)) + 1
            session["counter"] = counter
        return f"counter={counter}"

    @app.get("/none")
    def no_session() -> str:
        return "no session"

    return app


if __name__ == "__main__":
    built = create_app()
    if "bench_floor" in built.extensions:
        built.extensions["bench_floor"].create_table()
    print(f"app for variant {os.environ.get('BENCH_VARIANT', 'none')!r} builds")
