"""The middleware end to end on a real PostgreSQL: laziness, cookies, storage, expiry, errors.

Most tests go through WebTest; those about what a WSGI server itself sees call the middleware
with an environ and a recording ``start_response``: each call's status, headers and exc_info,
the exact 503 and 500 answers with their one log line, the body closed.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from db import sql
from session_app import session_app
from webtest import TestApp

from pgsession_wsgi import (
    ConfigurationError,
    OutsideRequestError,
    PostgresStore,
    Session,
    SessionMiddleware,
    current_session,
    get_session,
)
from pgsession_wsgi.cookies import hash_session_id, new_session_id
from pgsession_wsgi.errors import SessionDataError, StoreUnavailable

SECRET = "test-secret"


@pytest.fixture
def store(make_store: Callable[..., PostgresStore]) -> PostgresStore:
    store = make_store()
    store.create_table()
    return store


@pytest.fixture
def make_client(store: PostgresStore) -> Callable[..., TestApp]:
    def make(app: Any = session_app, **options: Any) -> TestApp:
        options.setdefault("secret_key", SECRET)
        return TestApp(SessionMiddleware(app, store, **options))

    return make


@pytest.fixture
def client(make_client: Callable[..., TestApp]) -> TestApp:
    return make_client()


def rows(store: PostgresStore) -> list[tuple[Any, ...]]:
    return sql(store, "SELECT id, data, user_id FROM {t} ORDER BY created_at")


def cookie_id(client: TestApp) -> str:
    return str(client.cookies["session"]).split(".")[0]


def test_untouched_session_sets_no_cookie_and_stores_nothing(client: TestApp, store: PostgresStore) -> None:
    response = client.get("/none")
    assert "Set-Cookie" not in response.headers
    assert "Vary" not in response.headers
    assert rows(store) == []


def test_session_round_trip(client: TestApp, store: PostgresStore) -> None:
    first = client.get("/inc")
    assert first.json == 1
    assert "Set-Cookie" in first.headers
    assert first.headers["Vary"] == "Cookie"
    assert client.get("/inc").json == 2
    assert client.get("/read").json == {"n": 2}
    assert len(rows(store)) == 1


def test_environ_and_current_session_are_the_same_object(make_client: Callable[..., TestApp]) -> None:
    seen: list[bool] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        session = environ["pgsession.session"]
        seen.append(session is get_session(environ))
        seen.append(isinstance(current_session, Session))
        current_session["x"] = 1
        seen.append(session["x"] == 1)
        start_response("200 OK", [])
        return [b""]

    make_client(app).get("/")
    assert seen == [True, True, True]


def test_current_session_outside_a_request_raises() -> None:
    with pytest.raises(RuntimeError, match="current_session"):
        current_session["x"]
    with pytest.raises(OutsideRequestError):
        len(current_session)


def test_get_session_without_middleware_says_what_to_wrap() -> None:
    with pytest.raises(OutsideRequestError, match="SessionMiddleware"):
        get_session({})


def test_empty_session_is_not_stored(client: TestApp, store: PostgresStore) -> None:
    response = client.get("/read")
    assert "Set-Cookie" not in response.headers
    assert response.headers["Vary"] == "Cookie"
    assert rows(store) == []


def test_session_that_becomes_empty_is_deleted_and_cookie_expired(
    client: TestApp, store: PostgresStore
) -> None:
    client.get("/set?a=1")
    assert len(rows(store)) == 1
    response = client.get("/del?k=a")
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    assert rows(store) == []


def test_table_stores_the_hash_never_the_id(client: TestApp, store: PostgresStore) -> None:
    client.get("/set?a=1")
    sid = cookie_id(client)
    [(stored_id, data, _)] = rows(store)
    assert bytes(stored_id) == hashlib.sha256(sid.encode()).digest()
    assert sid not in str(data)


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "a.b",
        "",
        "x" * 5000,
        "\u00e9t\u00e9",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_bad_cookies_get_a_fresh_session(client: TestApp, store: PostgresStore, value: str) -> None:
    client.set_cookie("session", value)
    response = client.get("/inc")
    assert response.json == 1
    assert cookie_id(client) != value.split(".")[0]


def test_forged_cookie_signed_with_another_key_is_not_used(
    client: TestApp, make_client: Callable[..., TestApp]
) -> None:
    other = make_client(secret_key="someone-else")
    other.get("/set?a=1")
    client.set_cookie("session", str(other.cookies["session"]))
    assert client.get("/read").json == {}


def test_id_without_live_row_is_never_reused(client: TestApp, store: PostgresStore) -> None:
    client.get("/set?a=1")
    old = cookie_id(client)
    sql(store, "DELETE FROM {t}")
    client.get("/set?b=2")
    assert cookie_id(client) != old
    [(stored_id, data, _)] = rows(store)
    assert data == {"b": "2"}
    assert bytes(stored_id) != hashlib.sha256(old.encode()).digest()


def test_expired_row_is_never_served_even_before_purge(client: TestApp, store: PostgresStore) -> None:
    client.get("/set?a=1")
    sql(store, "UPDATE {t} SET expires_at = now() - interval '1 second'")
    assert client.get("/read").json == {}
    assert len(rows(store)) == 1  # still there, unpurged, but not served


def test_a_blind_write_to_an_idle_expired_session_does_not_bring_it_back(
    client: TestApp, store: PostgresStore
) -> None:
    """A user logged out by the idle timeout stays logged out, even if the next request only writes.

    The row is expired by the database clock and left unpurged; the write does not read first.
    """
    client.get("/set?user=alice")
    old_cookie = str(client.cookies["session"])
    sql(
        store,
        "UPDATE {t} SET accessed_at = now() - interval '2 hours', expires_at = now() - interval '1 second'",
    )
    response = client.get("/set?b=2")  # sets a key without reading the session
    assert "Set-Cookie" in response.headers, "the write went into the expired row"
    new_cookie = str(client.cookies["session"])
    assert new_cookie.split(".")[0] != old_cookie.split(".")[0]
    assert client.get("/read").json == {"b": "2"}
    replay = TestApp(client.app)
    replay.set_cookie("session", old_cookie)
    assert replay.get("/read").json == {}
    expired = [data for _, data, _ in rows(store) if data.get("user") == "alice"]
    assert expired == [{"user": "alice"}]  # untouched, waiting for the purge


def test_idle_timeout_expires_sessions_by_the_database_clock(
    make_client: Callable[..., TestApp], store: PostgresStore
) -> None:
    client = make_client(idle_timeout=timedelta(seconds=1), touch_interval=0.05, permanent=True)
    created = client.get("/set?a=1")
    value = str(client.cookies["session"])
    assert "Max-Age=1" in created.headers["Set-Cookie"]
    [(lifetime,)] = sql(store, "SELECT expires_at - accessed_at FROM {t}")
    assert lifetime == timedelta(seconds=1)  # computed by the database from its own now()
    wait_until_expired_by_the_database(store)
    # The browser has dropped the cookie by now (Max-Age=1); replay it by hand, as an attacker
    # holding a copy would, so the server is the one that must refuse it.
    replay = TestApp(client.app)
    response = replay.get("/read", headers={"Cookie": f"session={value}"})
    assert response.json == {}
    assert "Max-Age=0" in response.headers["Set-Cookie"]  # the cookie arrived, and was refused
    assert len(rows(store)) == 1  # not purged: the expiry check alone refused it


def wait_until_expired_by_the_database(store: PostgresStore, limit: float = 30.0) -> None:
    """Poll until every row is past its expiry by the database clock (an outer bound, not a test)."""
    deadline = time.monotonic() + limit
    while sql(store, "SELECT count(*) FROM {t} WHERE expires_at > now()") != [(0,)]:
        assert time.monotonic() < deadline, "rows never expired"
        time.sleep(0.1)


def test_permanent_cookie_has_max_age(make_client: Callable[..., TestApp]) -> None:
    client = make_client(idle_timeout=timedelta(hours=2), permanent=True)
    header = client.get("/set?a=1").headers["Set-Cookie"]
    assert "Max-Age=7200" in header and "Expires=" in header


def test_cookie_has_no_domain_unless_cookie_domain_is_set(make_client: Callable[..., TestApp]) -> None:
    """Host-only by default: a Domain attribute would hand the session to every subdomain."""
    client = make_client()
    headers = [client.get("/set?a=1").headers["Set-Cookie"], client.get("/regen").headers["Set-Cookie"]]
    headers.append(client.get("/logout").headers["Set-Cookie"])
    assert all("domain" not in header.lower() for header in headers), headers
    scoped = make_client(cookie_domain="example.com")
    created = scoped.get("/set?a=1", extra_environ={"HTTP_HOST": "www.example.com"})
    assert "Domain=example.com" in created.headers["Set-Cookie"]


def test_a_cookie_is_a_browser_session_cookie_unless_permanent(
    make_client: Callable[..., TestApp], store: PostgresStore
) -> None:
    """The default since 0.2.0, as in Flask: the server still forgets it after ``idle_timeout``."""
    client = make_client(idle_timeout=timedelta(hours=2))
    header = client.get("/set?a=1").headers["Set-Cookie"]
    assert "Max-Age" not in header and "Expires" not in header
    [(remaining,)] = sql(store, "SELECT expires_at - now() FROM {t}")
    assert timedelta(hours=1, minutes=59) < remaining <= timedelta(hours=2)


def test_permanent_flag_is_remembered(make_client: Callable[..., TestApp]) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        session = get_session(environ)
        if environ["PATH_INFO"] == "/login":
            session["user"] = "u"
            session.permanent = True
        else:
            session["n"] = session.get("n", 0) + 1
        start_response("200 OK", [])
        return [b""]

    client = make_client(app, permanent=False, touch_interval=0.05)
    assert "Max-Age" in client.get("/login").headers["Set-Cookie"]
    time.sleep(0.1)  # let a touch fall due: the expiry moves, so the cookie is re-sent
    assert "Max-Age" in client.get("/other").headers["Set-Cookie"]
    never_permanent = make_client(permanent=False, touch_interval=0.05)
    assert "Max-Age" not in never_permanent.get("/set?a=1").headers["Set-Cookie"]


def test_nested_change_is_saved_without_modified(client: TestApp) -> None:
    client.get("/append")
    client.get("/append")
    assert client.get("/read").json == {"cart": [0, 1]}


def test_read_only_request_writes_nothing(client: TestApp, store: PostgresStore) -> None:
    client.get("/set?a=1")
    sql(store, "UPDATE {t} SET data = data || '{\"marker\": 1}'")  # a change made elsewhere
    client.get("/read")
    [(_, data, _)] = rows(store)
    assert data == {"a": "1", "marker": 1}


def test_changes_after_headers_are_saved_at_close(client: TestApp) -> None:
    client.get("/set?a=1")
    assert client.get("/stream").body == b"first chunk\nsecond chunk\n"
    client.get("/stream")
    assert client.get("/read").json == {"a": "1", "streamed": 2}


def test_unencodable_value_is_a_500_naming_the_key(
    client: TestApp, store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    client.get("/set?a=1")
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        response = client.get("/bad", status=500)
    assert "'sock'" in caplog.text
    assert "Set-Cookie" not in response.headers
    [(_, data, _)] = rows(store)
    assert data == {"a": "1"}


def test_clear_replaces_the_whole_value(client: TestApp, store: PostgresStore) -> None:
    client.get("/set?a=1&b=2")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        session = get_session(environ)
        session.clear()
        session["c"] = 3
        start_response("200 OK", [])
        return [b""]

    wrapped = SessionMiddleware(app, store, secret_key=SECRET)
    other = TestApp(wrapped, cookiejar=client.cookiejar)
    sql(store, "UPDATE {t} SET data = data || '{\"late\": 1}'")
    other.get("/")
    [(_, data, _)] = rows(store)
    assert data == {"c": 3}


def test_missing_secret_is_a_configuration_error(store: PostgresStore) -> None:
    with pytest.raises(ConfigurationError, match="secret_key"):
        SessionMiddleware(session_app, store)
    with pytest.raises(ConfigurationError, match="secret_key"):
        SessionMiddleware(session_app, store, secret_key="")


def test_secure_cookie_follows_the_request_scheme(client: TestApp) -> None:
    response = client.get("/set?a=1", extra_environ={"wsgi.url_scheme": "https"})
    assert "Secure" in response.headers["Set-Cookie"]
    assert "HttpOnly" in response.headers["Set-Cookie"]
    assert "SameSite=Lax" in response.headers["Set-Cookie"]


def test_repr_never_shows_the_id(client: TestApp) -> None:
    reprs: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        session = get_session(environ)
        session["k"] = 1
        reprs.append(repr(session))
        list(session)
        reprs.append(repr(session))
        start_response("200 OK", [])
        return [b""]

    wrapped = SessionMiddleware(app, client.app.store, secret_key=SECRET)
    other = TestApp(wrapped, cookiejar=client.cookiejar)
    other.get("/")
    other.get("/")
    sid = cookie_id(other)
    assert reprs and all(sid not in text for text in reprs)


@pytest.mark.parametrize(
    ("schema_name", "table_name"),
    [("sch.ema", 'odd.name "x"'), ("s", "\u8868" * 21), ("s", "t; DROP TABLE x; --")],
)
def test_odd_table_and_schema_names_work_with_both_indexes(
    make_store: Callable[..., PostgresStore], pg_dsn: str, schema_name: str, table_name: str
) -> None:
    import uuid

    schema_name = f"{schema_name}{uuid.uuid4().hex[:6]}"
    store = make_store(schema=schema_name, table=table_name)
    try:
        client = TestApp(SessionMiddleware(session_app, store, secret_key=SECRET))
        client.get("/set?a=1")
        assert client.get("/read").json == {"a": "1"}
        [(indexes,)] = sql(
            pg_dsn,
            "SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
            (schema_name, table_name),
        )
        assert indexes == 3  # primary key, expires_at, user_id
    finally:
        sql(pg_dsn, 'DROP SCHEMA IF EXISTS "{}" CASCADE'.format(schema_name.replace('"', '""')))


# -- what a WSGI server sees: start_response, exc_info, the error answers, closing -----------------

DEAD_DSN = "postgresql://postgres@127.0.0.1:1/nothing_listens_here?connect_timeout=2"


class Recorder:
    """A server's ``start_response``: keeps every call's arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]], Any]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.calls.append((status, list(headers), exc_info))
        return lambda data: None


def plain_environ(cookie: str | None = None) -> dict[str, Any]:
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


def dead_store() -> PostgresStore:
    return PostgresStore(DEAD_DSN, purge_interval=None, create_table=False)


def finish(body: Any) -> bytes:
    """Read and close a response as a server does (closing unbinds ``current_session``)."""
    try:
        return b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def test_the_503_answer_is_exact_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """middleware.xǁSessionMiddlewareǁ_commit_or_fail__mutmut_2 to _9 and _error_response__mutmut_6,
    _7, _15 to _21, _23, _24, _26 to _29.

    A save that cannot reach the database answers exactly this 503 (with Retry-After) and logs
    exactly one line naming the cause.
    """
    store = dead_store()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        get_session(environ)["user"] = "alice"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        body = SessionMiddleware(app, store, secret_key="k" * 32)(plain_environ(), recorder)
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

    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        body = SessionMiddleware(app, store, secret_key="k" * 32, max_size=100)(plain_environ(), recorder)
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
    store = dead_store()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        get_session(environ).get("user")  # a cookie: the load runs, and fails
        return [b"never"]

    middleware = SessionMiddleware(app, store, secret_key="k" * 32)
    cookie = "session=" + middleware.signer.sign(new_session_id())
    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        finish(middleware(plain_environ(cookie), recorder))
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
    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        finish(middleware(plain_environ("session=" + middleware.signer.sign(session_id)), recorder))
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
            start_response("500 Internal Server Error", [], sys.exc_info())
        return [b"error page"]

    recorder = Recorder()
    finish(SessionMiddleware(app, store, secret_key="k" * 32, max_size=100)(plain_environ(), recorder))
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
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error page"]

    middleware = SessionMiddleware(app, store, secret_key="k" * 32)
    store.create_table()
    wire_counter.reset()
    recorder = Recorder()
    finish(middleware(plain_environ(), recorder))
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
        SessionMiddleware(app, make_store(), secret_key="k" * 32)(plain_environ(), Recorder())
    with pytest.raises(OutsideRequestError):
        current_session.get("x")


def test_two_cache_control_headers_are_merged_into_one_private_header(make_store: Any) -> None:
    """middleware.x__with_session_headers__mutmut_17, _25, _26."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        get_session(environ)["user"] = "alice"
        start_response("200 OK", [("Cache-Control", "max-age=60"), ("Cache-Control", "public")])
        return [b"ok"]

    recorder = Recorder()
    finish(SessionMiddleware(app, make_store(), secret_key="k" * 32)(plain_environ(), recorder))
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

    result = SessionMiddleware(app, make_store(), secret_key="k" * 32)(plain_environ(), Recorder())
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
        finish(signer_middleware(plain_environ(), Recorder()))
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

    recorder = Recorder()
    finish(SessionMiddleware(login, store, secret_key="k" * 32)(plain_environ(), recorder))
    set_cookie = next(value for name, value in recorder.calls[0][1] if name == "Set-Cookie")
    cookie = set_cookie.split(";", 1)[0]
    late = SessionMiddleware(streaming("big", "x" * 500), store, secret_key="k" * 32, max_size=100)
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        finish(late(plain_environ(cookie), Recorder()))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith("session change made while streaming was not saved: ")
    assert "max_size" in lines[0]


# -- the refusals, and the calls a framework integration makes -----------------------------------


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

    def cookie_of(recorder: Recorder) -> str:
        return next(value for name, value in recorder.calls[0][1] if name == "Set-Cookie")

    forced = Recorder()
    finish(
        SessionMiddleware(app, store, secret_key="k" * 32, cookie_secure=True)(
            dict(plain_environ(), PATH_INFO="/set"), forced
        )
    )
    assert "; Secure" in cookie_of(forced)  # over http: only the option can have set it

    one = SessionMiddleware(app, store, secret_key="k" * 32, key_prefix="one:")
    other = SessionMiddleware(app, store, secret_key="k" * 32, key_prefix="other:")
    recorder = Recorder()
    finish(one(dict(plain_environ(), PATH_INFO="/set"), recorder))
    cookie = cookie_of(recorder).split(";", 1)[0]
    assert finish(one(plain_environ(cookie), Recorder())) == b"{'user': 'alice'}"
    assert finish(other(plain_environ(cookie), Recorder())) == b"{}"


def test_open_session_and_commit_serve_framework_integrations(make_store: Any) -> None:
    """middleware.xǁSessionMiddlewareǁopen_session__mutmut_1 to _7, _9, _11, _12, _14, _16, _18,
    _19: the session comes from the environ's cookie and scheme, and loads through the store."""
    middleware = SessionMiddleware(lambda e, s: [], make_store(), secret_key="k" * 32)
    untouched = middleware.open_session(dict(plain_environ(), **{"wsgi.url_scheme": "https"}))
    assert middleware.commit(untouched) == []
    session = middleware.open_session(dict(plain_environ(), **{"wsgi.url_scheme": "https"}))
    session["user"] = "alice"
    headers = middleware.commit(session)
    set_cookie = next(value for name, value in headers if name == "Set-Cookie")
    assert "; Secure" in set_cookie  # https, read from the environ
    cookie = set_cookie.split(";", 1)[0]
    again = middleware.open_session(plain_environ(cookie))
    assert dict(again) == {"user": "alice"}
    assert middleware.commit(again) == [("Vary", "Cookie")]  # read: nothing to write
