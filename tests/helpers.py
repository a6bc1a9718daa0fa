"""Small helpers the test modules share (SQL of their own goes through ``db.sql``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flask import Flask, session
from flask.testing import FlaskClient

from pgsession_wsgi.cookies import hash_session_id
from pgsession_wsgi.core import Operation, SessionCore

if TYPE_CHECKING:
    from pgsession_wsgi.store import PostgresStore


def wait_for(condition: Callable[[], object], what: str, limit: float = 30.0) -> None:
    """Poll until ``condition()`` is true. ``limit`` only stops a hang; it is never what a test checks."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


class ClosingClient(FlaskClient):
    """Reads and closes every response, as a WSGI server does (Flask's client leaves it open)."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def add_count_route(app: Flask, path: str = "/count") -> None:
    """``path``: one more in the session's ``n``, answered as text (a write on every request).

    The view's endpoint is the path without its slash (``count``, ``bump``).
    """

    @app.route(path, endpoint=path.strip("/"))
    def count() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])


def close_extension_stores(apps: Iterable[Flask]) -> None:
    """Close the store of each app the Flask extension was set up on (others are passed over)."""
    from pgsession_wsgi.flask import EXTENSION_KEY

    for app in apps:
        middleware = app.extensions.get(EXTENSION_KEY)
        if middleware is not None:
            middleware.store.close()


def core_options() -> dict[str, Any]:
    """Every option ``SessionCore.configure`` takes besides the secret, at the middleware's defaults
    (one day idle), for tests that drive the core without a middleware."""
    return dict(
        cookie_name="session",
        idle_timeout=timedelta(days=1),
        absolute_timeout=None,
        touch_interval=timedelta(seconds=60),
        permanent=True,
        refresh_each_request=True,
        cookie_path="/",
        cookie_domain=None,
        cookie_secure=None,
        cookie_httponly=True,
        cookie_samesite="Lax",
        fallback_secret_keys=(),
        user_key=None,
        regenerate_on_user_change=True,
        max_size=None,
        signer=None,
    )


def build_core(secret: str | None, **options: Any) -> SessionCore:
    """A core at :func:`core_options`' defaults, ``options`` overriding them."""
    return SessionCore.configure(secret, **{**core_options(), **options})


class Script:
    """Answers the core's operations from a list, and records what was asked."""

    def __init__(self, *answers: Any) -> None:
        self.answers: Iterator[Any] = iter(answers)
        self.asked: list[Operation] = []

    def __call__(self, operation: Operation) -> Any:
        self.asked.append(operation)
        return next(self.answers)

    def kinds(self) -> list[type]:
        return [type(op) for op in self.asked]


def insert_session(store: PostgresStore, session_id: str, data_json: str = '{"a": 1}') -> None:
    """A row for ``session_id`` written by the store itself (no user, a day of idle lifetime)."""
    store.insert(hash_session_id(session_id), data_json, None, timedelta(days=1), None)


def add_rows(store: PostgresStore, rows: list[tuple[str, str | None, str]]) -> None:
    """Rows of ``(session id, user id or None, expiry offset from now)``, written as SQL."""
    from db import sql

    for session_id, user_id, offset in rows:
        sql(
            store,
            f"INSERT INTO {store.qualified_name} (id, data, user_id, expires_at)"
            " VALUES (%s, '{}'::jsonb, %s, now() + %s::interval)",
            (hash_session_id(session_id), user_id, offset),
        )


def dropped_mid_statement(store: PostgresStore, call: Any) -> Any:
    """``call()``'s answer when the server ends its connection while its statement runs.

    Another connection locks the table, so the statement waits; its backend is then terminated
    (as a server restart or a failover would), and the lock released.
    """
    import psycopg2
    from db import sql

    locker = psycopg2.connect(store.dsn)
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # the answer under test may be an error
            outcome.append(exc)

    try:
        with locker.cursor() as cur:
            cur.execute(f"LOCK TABLE {store.qualified_name} IN ACCESS EXCLUSIVE MODE")
        thread = threading.Thread(target=run)
        thread.start()
        waiting = "SELECT pid FROM pg_locks WHERE relation = to_regclass(%s) AND NOT granted"
        wait_for(
            lambda: sql(store.dsn, waiting, (store.qualified_name,)), "the statement to wait on the lock"
        )
        ((pid,),) = sql(store.dsn, waiting, (store.qualified_name,))
        sql(store.dsn, "SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(
            lambda: not sql(store.dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)),
            "the waiting backend to end",
        )
    finally:
        locker.rollback()
        locker.close()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return outcome[0]
