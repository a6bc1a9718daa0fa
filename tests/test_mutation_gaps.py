"""Tests that kill mutants the rest of the suite let survive (tests/MUTATION.md lists them).

Each test names, in its docstring, the mutants it was written for (mutmut's names, e.g.
``codec.xǁCodecǁregister__mutmut_20``: the module, the function, the mutation's number). The
tests that need a database use the real one through the fixtures in conftest.py: nothing is mocked.
"""

from __future__ import annotations

import logging

# -- middleware: the WSGI adapter's error responses, headers and log lines ---------------------
import sys as _sys  # noqa: E402
import threading  # noqa: E402
from datetime import timedelta
from typing import Any

import psycopg2
import pytest

from pgsession_wsgi import ConfigurationError, SessionMiddleware, current_session, get_session  # noqa: E402
from pgsession_wsgi.cookies import hash_session_id, new_session_id
from pgsession_wsgi.errors import (  # noqa: E402
    OutsideRequestError,
    SessionDataError,
    SessionError,
    StoreUnavailable,
)
from pgsession_wsgi.store import PostgresStore  # noqa: E402

_DEAD_DSN = "postgresql://postgres@127.0.0.1:1/nothing_listens_here?connect_timeout=2"


class _Recorder:
    """A server's ``start_response``: keeps every call's arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]], Any]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.calls.append((status, list(headers), exc_info))
        return lambda data: None


def _environ(cookie: str | None = None) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }
    if cookie is not None:
        environ["HTTP_COOKIE"] = cookie
    return environ


def _dead_store() -> PostgresStore:
    return PostgresStore(_DEAD_DSN, purge_interval=None, create_table=False)


def _finish(body: Any) -> bytes:
    """Read and close a response as a server does (closing unbinds ``current_session``)."""
    try:
        return b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def test_outside_a_request_the_errors_say_what_to_do() -> None:
    """middleware.x__current_or_raise__mutmut_2, _3, _5, _6 and x_get_session__mutmut_6 to _9."""
    with pytest.raises(OutsideRequestError) as outside:
        current_session.get("anything")
    assert str(outside.value) == (
        "current_session is only bound while SessionMiddleware handles a request; outside "
        "one, pass the session explicitly or use get_session(environ)"
    )
    with pytest.raises(OutsideRequestError) as no_session:
        get_session({})
    assert str(no_session.value) == (
        "this WSGI environ has no session: wrap the application with "
        "pgsession_wsgi.SessionMiddleware(app, store, secret_key=...)"
    )


def test_a_store_of_another_kind_is_refused_with_what_to_pass() -> None:
    """middleware.xǁSessionMiddlewareǁ__init____mutmut_12 to _15."""
    with pytest.raises(ConfigurationError) as refused:
        SessionMiddleware(lambda e, s: [], object(), secret_key="k" * 32)  # type: ignore[arg-type]
    assert str(refused.value) == "store must be a pgsession_wsgi.PostgresStore"


def test_the_503_answer_is_exact_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """middleware.xǁSessionMiddlewareǁ_commit_or_fail__mutmut_2 to _9 and _error_response__mutmut_6,
    _7, _15 to _21, _23, _24, _26 to _29.

    A save that cannot reach the database answers exactly this 503 (with Retry-After) and logs
    exactly one line naming the cause.
    """
    store = _dead_store()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        get_session(environ)["user"] = "alice"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    recorder = _Recorder()
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        body = SessionMiddleware(app, store, secret_key="k" * 32)(_environ(), recorder)
    store.close()
    expected_body = b"Service Unavailable: the session store cannot be reached. Please try again shortly.\n"
    assert b"".join(body) == expected_body
    assert recorder.calls == [
        (
            "503 Service Unavailable",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(expected_body))),
                ("Retry-After", "5"),
            ],
            None,
        )
    ]
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith("session store unavailable, answering 503: cannot connect to PostgreSQL")


def test_the_500_answer_for_an_unsavable_session_is_exact_and_logged_once(
    make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """middleware.xǁSessionMiddlewareǁ_commit_or_fail__mutmut_12, _14 and _error_response__mutmut_11,
    _12 (and the 500 half of the header mutants)."""
    store = make_store()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        get_session(environ)["big"] = "x" * 500
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    recorder = _Recorder()
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        body = SessionMiddleware(app, store, secret_key="k" * 32, max_size=100)(_environ(), recorder)
    assert b"".join(body) == b"Internal Server Error\n"
    assert recorder.calls == [
        (
            "500 Internal Server Error",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "22")],
            None,
        )
    ]
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith("session not saved, answering 500: ")
    assert "max_size" in lines[0] or "100" in lines[0]


def test_a_load_failing_after_the_app_started_its_response_passes_exc_info_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """middleware.xǁSessionMiddlewareǁ__call____mutmut_15, _16, _42 to _45, _49 and
    _error_response__mutmut_32, _35, _36.

    The app has called start_response (the session untouched, so nothing was saved) when reading
    the session fails: the 503 replaces its status, which a server allows only with exc_info.
    """
    store = _dead_store()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        get_session(environ).get("user")  # a cookie: the load runs, and fails
        return [b"never"]

    middleware = SessionMiddleware(app, store, secret_key="k" * 32)
    cookie = "session=" + middleware.signer.sign(new_session_id())
    recorder = _Recorder()
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        _finish(middleware(_environ(cookie), recorder))
    store.close()
    assert [call[0] for call in recorder.calls] == ["200 OK", "503 Service Unavailable"]
    exc_info = recorder.calls[1][2]
    assert exc_info is not None and isinstance(exc_info[1], StoreUnavailable)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [f"session store unavailable, answering 503: {exc_info[1]}"]


def test_a_session_error_after_the_app_started_its_response_passes_exc_info_and_logs(
    make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """middleware.xǁSessionMiddlewareǁ__call____mutmut_57, _59, _63: a row that cannot be read."""
    from db import sql

    store = make_store()
    store.create_table()
    session_id = new_session_id()
    sql(
        store,
        f"INSERT INTO {store.qualified_name} (id, data, expires_at)"
        " VALUES (%s, (repeat('[', 5000) || repeat(']', 5000))::jsonb, now() + interval '1 hour')",
        (hash_session_id(session_id),),
    )

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        get_session(environ).get("user")
        return [b"never"]

    middleware = SessionMiddleware(app, store, secret_key="k" * 32)
    recorder = _Recorder()
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        _finish(middleware(_environ("session=" + middleware.signer.sign(session_id)), recorder))
    assert [call[0] for call in recorder.calls] == ["200 OK", "500 Internal Server Error"]
    assert recorder.calls[1][2] is not None and isinstance(recorder.calls[1][2][1], SessionDataError)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("session error, answering 500: ")
    assert "delete the row or fix the writer" in lines[0]


def test_a_save_failing_at_the_second_start_response_passes_exc_info(make_store: Any) -> None:
    """middleware.xǁSessionMiddlewareǁ__call____mutmut_36: the app started its response with the
    session untouched, then changed it and restarted with exc_info; that save fails."""
    store = make_store()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        get_session(environ)["big"] = "x" * 500
        try:
            raise RuntimeError("the app's own error page")
        except RuntimeError:
            start_response("500 Internal Server Error", [], _sys.exc_info())
        return [b"error page"]

    recorder = _Recorder()
    _finish(SessionMiddleware(app, store, secret_key="k" * 32, max_size=100)(_environ(), recorder))
    assert [call[0] for call in recorder.calls] == ["200 OK", "500 Internal Server Error"]
    assert recorder.calls[1][1] == [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "22")]
    assert recorder.calls[1][2] is not None


def test_exc_info_is_passed_through_and_a_second_start_response_saves_nothing_more(
    make_store: Any, wire_counter: Any
) -> None:
    """middleware.xǁSessionMiddlewareǁ__call____mutmut_9, _11, _12, _24, _27.

    An app that restarts its response with exc_info: the server gets that exc_info, and the
    session, saved at the first start_response, is not written again.
    """
    store = make_store(dsn=wire_counter.dsn)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        get_session(environ)["user"] = "alice"
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("late failure")
        except RuntimeError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], _sys.exc_info())
        return [b"error page"]

    middleware = SessionMiddleware(app, store, secret_key="k" * 32)
    store.create_table()
    wire_counter.reset()
    recorder = _Recorder()
    _finish(middleware(_environ(), recorder))
    assert wire_counter.count == 1
    assert recorder.calls[0][2] is None
    assert recorder.calls[1][2] is not None and isinstance(recorder.calls[1][2][1], RuntimeError)
    # The second start_response carries the cookie too: the headers were fixed at the first.
    assert any(name == "Set-Cookie" for name, _ in recorder.calls[1][1])


def test_an_app_exception_propagates_and_unbinds_current_session(make_store: Any) -> None:
    """middleware.xǁSessionMiddlewareǁ__call____mutmut_68."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise LookupError("the app's bug")

    with pytest.raises(LookupError, match="the app's bug"):
        SessionMiddleware(app, make_store(), secret_key="k" * 32)(_environ(), _Recorder())
    with pytest.raises(OutsideRequestError):
        current_session.get("x")


def test_two_cache_control_headers_are_merged_into_one_private_header(make_store: Any) -> None:
    """middleware.x__with_session_headers__mutmut_17, _25, _26."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        get_session(environ)["user"] = "alice"
        start_response("200 OK", [("Cache-Control", "max-age=60"), ("Cache-Control", "public")])
        return [b"ok"]

    recorder = _Recorder()
    _finish(SessionMiddleware(app, make_store(), secret_key="k" * 32)(_environ(), recorder))
    headers = recorder.calls[0][1]
    cache_control = [h for h in headers if h[0].lower() == "cache-control"]
    assert cache_control == [("Cache-Control", "private, max-age=60")]


def test_closing_the_response_closes_the_apps_body(make_store: Any) -> None:
    """middleware.xǁ_ClosingBodyǁclose__mutmut_1, _2, _7, _8."""
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Any:
            return iter([b"ok"])

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body()

    result = SessionMiddleware(app, make_store(), secret_key="k" * 32)(_environ(), _Recorder())
    result.close()  # type: ignore[attr-defined]
    assert closed == [True]


def test_streaming_changes_that_cannot_be_saved_are_logged(
    make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """middleware.xǁSessionMiddlewareǁ_save_after_headers__mutmut_3 to _5, _8 to _13.

    A new session changed after the headers went out needs a cookie that can no longer be
    sent (a warning); an existing one whose late change is too big is not saved (an error).
    """
    store = make_store()

    def streaming(key: str, value: str) -> Any:
        def app(environ: dict[str, Any], start_response: Any) -> Any:
            session = get_session(environ)
            session.get("user")
            start_response("200 OK", [])

            def body() -> Any:
                yield b"part"
                session[key] = value

            return body()

        return app

    signer_middleware = SessionMiddleware(streaming("late", "v"), store, secret_key="k" * 32, max_size=100)
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        _finish(signer_middleware(_environ(), _Recorder()))
    assert [r.getMessage() for r in caplog.records] == [
        "session changed after the response headers were sent and needs a new "
        "cookie, which can no longer be set; the change was not saved"
    ]
    caplog.clear()

    # An existing session: first save it normally, then change it too much while streaming.
    def login(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        get_session(environ)["user"] = "alice"
        start_response("200 OK", [])
        return [b"ok"]

    recorder = _Recorder()
    _finish(SessionMiddleware(login, store, secret_key="k" * 32)(_environ(), recorder))
    set_cookie = next(value for name, value in recorder.calls[0][1] if name == "Set-Cookie")
    cookie = set_cookie.split(";", 1)[0]
    late = SessionMiddleware(streaming("big", "x" * 500), store, secret_key="k" * 32, max_size=100)
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        _finish(late(_environ(cookie), _Recorder()))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith("session change made while streaming was not saved: ")
    assert "max_size" in lines[0]


def test_the_purge_on_an_apps_pool_borrows_and_purges(
    pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """purge.xǁPurgeWorkerǁrun__mutmut_9, _10: the per-batch purge on borrowed connections."""
    import psycopg2.pool
    from db import sql
    from helpers import wait_for

    pool = psycopg2.pool.ThreadedConnectionPool(1, 2, pg_dsn)
    store = PostgresStore.from_pool(pool, schema=schema, purge_interval=0.05)
    try:
        with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
            store.stats()  # creates the table and starts the worker
            sql(
                pg_dsn,
                f"INSERT INTO {store.qualified_name} (id, data, expires_at)"
                " SELECT sha256(g::text::bytea), '{}'::jsonb, now() - interval '1 hour'"
                " FROM generate_series(1, 4) g",
                None,
            )
            wait_for(lambda: any("purged" in r.getMessage() for r in caplog.records), "a purge")
        assert [r.getMessage() for r in caplog.records if "purged" in r.getMessage()][0] == (
            f"purged 4 expired sessions from {store.qualified_name}"
        )
    finally:
        store.close()
        pool.closeall()


def test_the_middleware_passes_cookie_secure_and_key_prefix_to_the_core(make_store: Any) -> None:
    """middleware.xǁSessionMiddlewareǁ__init____mutmut_29 (cookie_secure) and _55 (key_prefix)."""
    store = make_store()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        session = get_session(environ)
        if environ["PATH_INFO"] == "/set":
            session["user"] = "alice"
        body = repr(dict(session)).encode()
        start_response("200 OK", [])
        return [body]

    def cookie_of(recorder: _Recorder) -> str:
        return next(value for name, value in recorder.calls[0][1] if name == "Set-Cookie")

    forced = _Recorder()
    _finish(
        SessionMiddleware(app, store, secret_key="k" * 32, cookie_secure=True)(
            dict(_environ(), PATH_INFO="/set"), forced
        )
    )
    assert "; Secure" in cookie_of(forced)  # over http: only the option can have set it

    one = SessionMiddleware(app, store, secret_key="k" * 32, key_prefix="one:")
    other = SessionMiddleware(app, store, secret_key="k" * 32, key_prefix="other:")
    recorder = _Recorder()
    _finish(one(dict(_environ(), PATH_INFO="/set"), recorder))
    cookie = cookie_of(recorder).split(";", 1)[0]
    assert _finish(one(_environ(cookie), _Recorder())) == b"{'user': 'alice'}"
    assert _finish(other(_environ(cookie), _Recorder())) == b"{}"


def test_open_session_and_commit_serve_framework_integrations(make_store: Any) -> None:
    """middleware.xǁSessionMiddlewareǁopen_session__mutmut_1 to _7, _9, _11, _12, _14, _16, _18,
    _19: the session comes from the environ's cookie and scheme, and loads through the store."""
    middleware = SessionMiddleware(lambda e, s: [], make_store(), secret_key="k" * 32)
    untouched = middleware.open_session(dict(_environ(), **{"wsgi.url_scheme": "https"}))
    assert middleware.commit(untouched) == []
    session = middleware.open_session(dict(_environ(), **{"wsgi.url_scheme": "https"}))
    session["user"] = "alice"
    headers = middleware.commit(session)
    set_cookie = next(value for name, value in headers if name == "Set-Cookie")
    assert "; Secure" in set_cookie  # https, read from the environ
    cookie = set_cookie.split(";", 1)[0]
    again = middleware.open_session(_environ(cookie))
    assert dict(again) == {"user": "alice"}
    assert middleware.commit(again) == [("Vary", "Cookie")]  # read: nothing to write


# -- store: stats, a user's sessions, revoking, purging, the retry on a dropped connection -----


def _add_rows(store: PostgresStore, rows: list[tuple[str, str | None, str]]) -> None:
    """Rows of ``(session id, user id or None, expiry offset from now)``, written as SQL."""
    from db import sql

    for session_id, user_id, offset in rows:
        sql(
            store,
            f"INSERT INTO {store.qualified_name} (id, data, user_id, expires_at)"
            " VALUES (%s, '{}'::jsonb, %s, now() + %s::interval)",
            (hash_session_id(session_id), user_id, offset),
        )


def _dropped_mid_statement(store: PostgresStore, call: Any) -> Any:
    """``call()``'s answer when the server ends its connection while its statement runs.

    Another connection locks the table, so the statement waits; its backend is then terminated
    (as a server restart or a failover would), and the lock released.
    """
    from db import sql
    from helpers import wait_for

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


# -- store: prepared statements, the other request statements, purging batch by batch ---------

_DAY = timedelta(days=1)


def _insert(store: PostgresStore, session_id: str, data_json: str = '{"a": 1}') -> None:
    store.insert(hash_session_id(session_id), data_json, None, _DAY, None)


def _prepared_here(store: PostgresStore) -> int:
    # Seam: pg_prepared_statements shows only on the store's own connection, which only _run reaches.
    return store._run(
        lambda cur: (cur.execute("SELECT count(*) FROM pg_prepared_statements"), cur.fetchone())[1][0],
        retry=True,
    )


def test_request_statements_are_prepared_and_recover_when_the_server_loses_them(
    make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """store.xǁPostgresStoreǁ_send__mutmut_1, _2, _40 to _52.

    Prepared on the store's own connection; when they are gone (DEALLOCATE, as PgBouncer's
    server switch does), the store says so once and sends plain statements from then on.
    """
    store = make_store(max_connections=1)
    _insert(store, "one")
    assert store.load(hash_session_id("one"), _DAY) is not None
    assert _prepared_here(store) == 2  # insert and load
    # Seam: only SQL run on the store's own connection can make its server session forget them.
    store._run(lambda cur: cur.execute("DEALLOCATE ALL"), retry=True)
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        row = store.load(hash_session_id("one"), _DAY)
        _insert(store, "two")
        other = store.load(hash_session_id("two"), _DAY)
    assert row is not None and other is not None
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "prepared statements dropped by the server side (PgBouncer?); sending plain statements"
    ]
    assert _prepared_here(store) == 0


def test_without_prepared_statements_the_plain_text_is_sent(make_store: Any) -> None:
    """store.xǁPostgresStoreǁ_send__mutmut_2 to _10."""
    store = make_store(prepared_statements=False)
    _insert(store, "one")
    row = store.load(hash_session_id("one"), _DAY)
    assert row is not None
    assert _prepared_here(store) == 0


def test_a_prepare_whose_execute_failed_is_not_prepared_twice(
    make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """store.xǁPostgresStoreǁ_send__mutmut_23, _32 to _34, _36 to _39.

    ``PREPARE ...; EXECUTE ...`` where the EXECUTE fails (bad JSON) leaves the statement
    prepared: the next insert uses it, without turning prepared statements off.
    """
    store = make_store(max_connections=1)
    store.stats()
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        with pytest.raises(SessionError):
            _insert(store, "bad", "{not json")
        _insert(store, "good")
        _insert(store, "better")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []
    assert store.load(hash_session_id("good"), _DAY) is not None
    assert store.load(hash_session_id("better"), _DAY) is not None
    assert _prepared_here(store) == 2  # the insert, and the load prepared after it: still on


def test_a_prepare_that_failed_is_sent_again(make_store: Any, caplog: pytest.LogCaptureFixture) -> None:
    """store.xǁPostgresStoreǁ_send__mutmut_24: the table was missing, so the PREPARE failed too."""
    from db import sql

    store = make_store(max_connections=1)
    store.stats()
    name = store.qualified_name.split(".")[1]
    sql(store, f"ALTER TABLE {store.qualified_name} RENAME TO gone", None)
    with pytest.raises(SessionError):
        store.load(hash_session_id("one"), _DAY)
    sql(store, f"ALTER TABLE {store.qualified_name.split('.')[0]}.gone RENAME TO {name}", None)
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        assert store.load(hash_session_id("one"), _DAY) is None
    assert caplog.records == []
    assert _prepared_here(store) == 1


def test_a_store_on_an_apps_pool_opens_no_connection_and_says_how_to_purge(pg_dsn: str, schema: str) -> None:
    """store.xǁPostgresStoreǁconnect_unpooled__mutmut_1 to _3 and _lent__mutmut_35."""
    import psycopg2.pool

    pool = psycopg2.pool.ThreadedConnectionPool(1, 2, pg_dsn)
    store = PostgresStore.from_pool(pool, schema=schema)
    try:
        with pytest.raises(ConfigurationError) as error:
            store.connect_unpooled()
        assert str(error.value) == (
            "this store borrows every connection from your psycopg2 pool and opens none of its "
            "own; purge with purge_expired() or purge_batch_by_batch()"
        )
    finally:
        store.close()
        pool.closeall()


# -- store: on an app's psycopg2 pool, the DDL, purging on a connection of one's own -----------


def _blocked(
    dsn: str, store: PostgresStore, call: Any, *, until_it_gives_up: bool = False
) -> tuple[str, Any]:
    """The text PostgreSQL shows for ``call()``'s statement while a lock holds it, and its answer.

    ``dsn`` is the database's (a store on an app's pool knows none). The lock is released once
    the text is seen, or, with ``until_it_gives_up``, once the call has ended by itself (a
    statement timeout).
    """
    from db import sql
    from helpers import wait_for

    locker = psycopg2.connect(dsn)
    outcome: list[Any] = []
    texts: list[str] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # the answer under test may be an error
            outcome.append(exc)

    def seen() -> bool:
        waiting = (
            "SELECT a.query FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.relation = to_regclass(%s) AND NOT l.granted"
        )
        if not texts:
            texts.extend(row[0] for row in sql(dsn, waiting, (store.qualified_name,)))
        return bool(texts) and (bool(outcome) or not until_it_gives_up)

    try:
        with locker.cursor() as cur:
            cur.execute(f"LOCK TABLE {store.qualified_name} IN ACCESS EXCLUSIVE MODE")
            thread = threading.Thread(target=run)
            thread.start()
            wait_for(seen, "the statement to wait on the lock")
    finally:
        locker.rollback()
        locker.close()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return texts[0], outcome[0]


def test_a_store_on_an_apps_pool_sets_its_settings_on_each_statement(pg_dsn: str, schema: str) -> None:
    """store.xǁPostgresStoreǁfrom_pool__mutmut_2, _3, _5, _9, _19, _20, _23, _27, _28, _29, _30,
    _31 and _lent__mutmut_5, _6, _12, _13, _16, _20 to _24, _28.

    No startup option reaches a connection the app made: the statement timeout and
    synchronous_commit are set with SET LOCAL before each statement, and the timeout's error
    names the value to raise.
    """
    import psycopg2.pool

    from pgsession_wsgi.errors import StoreUnavailable as Unavailable

    pool = psycopg2.pool.ThreadedConnectionPool(1, 4, pg_dsn)
    stores: list[PostgresStore] = []
    try:
        with pytest.raises(ConfigurationError) as error:
            PostgresStore.from_pool(pool, schema=schema, purge_interval=0)
        assert str(error.value) == "purge_interval must be a positive number of seconds, or None"

        default = PostgresStore.from_pool(pool, schema=schema, purge_interval=None)
        stores.append(default)
        assert (default.statement_timeout, default.unlogged, default.purge_interval) == (5.0, False, None)
        assert default.borrows_connections
        default.stats()  # creates the table
        assert sql_rows(pg_dsn, default) == [("p",)]
        text, answer = _blocked(pg_dsn, default, default.stats)
        assert text.startswith("SET LOCAL statement_timeout = 5000; SELECT")
        assert "synchronous_commit" not in text
        assert answer["live"] == 0

        quick = PostgresStore.from_pool(
            pool, "other", schema=schema, statement_timeout=0.2, synchronous_commit=False, unlogged=True
        )
        stores.append(quick)
        quick.stats()
        assert sql_rows(pg_dsn, quick) == [("u",)]
        text, answer = _blocked(pg_dsn, quick, quick.stats, until_it_gives_up=True)
        assert text.startswith("SET LOCAL statement_timeout = 200; SET LOCAL synchronous_commit = off; ")
        assert isinstance(answer, Unavailable)
        assert str(answer) == (
            "a session statement ran longer than statement_timeout=0.2s; check the database load, "
            "or raise statement_timeout"
        )
    finally:
        for store in stores:
            store.close()
        pool.closeall()


def sql_rows(dsn: str, store: PostgresStore) -> list[tuple[Any, ...]]:
    """The table's persistence: ``p`` logged, ``u`` unlogged."""
    from db import sql

    return sql(
        dsn, "SELECT relpersistence FROM pg_class WHERE oid = to_regclass(%s)", (store.qualified_name,)
    )


def test_a_store_on_a_connection_factory_checks_its_options_and_sets_its_settings(
    pg_dsn: str, schema: str
) -> None:
    """store.xǁPostgresStoreǁfrom_factory__mutmut_2, _4, _5, _7 to _21, _23 to _37, _39 to _46, _48 to _56,
    _58 to _60: the refusals, the defaults, the settings
    reaching each statement (the factory's connections lack them), the table's persistence."""
    from pgsession_wsgi.errors import StoreUnavailable as Unavailable

    with pytest.raises(ConfigurationError) as error:
        PostgresStore.from_factory("not callable")  # type: ignore[arg-type]
    assert str(error.value) == (
        "from_factory() takes a callable returning a new psycopg2 connection, "
        "e.g. lambda: psycopg2.connect(dsn)"
    )
    with pytest.raises(ConfigurationError) as error:
        PostgresStore.from_factory(lambda: psycopg2.connect(pg_dsn), schema=schema, purge_interval=0)
    assert str(error.value) == "purge_interval must be a positive number of seconds, or None"
    with pytest.raises(ConfigurationError) as error:
        PostgresStore.from_factory(lambda: psycopg2.connect(pg_dsn), schema=schema, max_connections=0)
    assert str(error.value) == "max_connections must be at least 1"

    stores: list[PostgresStore] = []
    try:
        default = PostgresStore.from_factory(
            lambda: psycopg2.connect(pg_dsn), schema=schema, purge_interval=None
        )
        stores.append(default)
        assert (default.statement_timeout, default.unlogged, default.purge_interval) == (5.0, False, None)
        assert not default.borrows_connections
        with pytest.raises(ConfigurationError) as error:
            default.dsn  # noqa: B018
        assert str(error.value) == (
            "this store takes its connections from your connection factory and knows no DSN; use the DSN "
            "your app opens them with (e.g. pgsession-wsgi --dsn ...)"
        )
        _insert(default, "one")
        assert default.load(hash_session_id("one"), _DAY) is not None
        assert sql_rows(pg_dsn, default) == [("p",)]

        quick = PostgresStore.from_factory(
            lambda: psycopg2.connect(pg_dsn),
            "other",
            schema=schema,
            statement_timeout=0.2,
            synchronous_commit=False,
            unlogged=True,
            purge_interval=None,
        )
        stores.append(quick)
        quick.stats()
        assert sql_rows(pg_dsn, quick) == [("u",)]
        _, answer = _blocked(pg_dsn, quick, quick.stats, until_it_gives_up=True)
        assert isinstance(answer, Unavailable)
        assert str(answer) == (
            "a session statement ran longer than statement_timeout=0.2s; check the database load, "
            "or raise statement_timeout"
        )
    finally:
        for store in stores:
            store.close()


def test_a_store_on_an_engine_checks_its_options_and_sets_its_settings(
    pg_dsn: str, schema: str, make_engine: Any
) -> None:
    """store.xǁPostgresStoreǁfrom_engine__mutmut_1 to _12, _16 to _21, _23 to _32: the refusal,
    the defaults, the settings on each statement (SET LOCAL), the table's persistence."""
    from pgsession_wsgi.errors import StoreUnavailable as Unavailable

    engine = make_engine(pg_dsn)
    with pytest.raises(ConfigurationError) as error:
        PostgresStore.from_engine(engine, schema=schema, purge_interval=0)
    assert str(error.value) == "purge_interval must be a positive number of seconds, or None"
    stores: list[PostgresStore] = []
    try:
        default = PostgresStore.from_engine(engine, schema=schema, purge_interval=None)
        stores.append(default)
        assert (default.statement_timeout, default.unlogged, default.purge_interval) == (5.0, False, None)
        assert default.borrows_connections
        default.stats()
        assert sql_rows(pg_dsn, default) == [("p",)]
        text, answer = _blocked(pg_dsn, default, default.stats)
        assert text.startswith("SET LOCAL statement_timeout = 5000; SELECT")
        assert answer["live"] == 0

        quick = PostgresStore.from_engine(
            engine,
            "other",
            schema=schema,
            statement_timeout=0.2,
            synchronous_commit=False,
            unlogged=True,
            purge_interval=None,
        )
        stores.append(quick)
        quick.stats()
        assert sql_rows(pg_dsn, quick) == [("u",)]
        text, answer = _blocked(pg_dsn, quick, quick.stats, until_it_gives_up=True)
        assert text.startswith("SET LOCAL statement_timeout = 200; SET LOCAL synchronous_commit = off; ")
        assert isinstance(answer, Unavailable)
        assert "statement_timeout=0.2s" in str(answer)
    finally:
        for store in stores:
            store.close()
