"""The middleware end to end on a real PostgreSQL: laziness, cookies, storage, expiry, errors."""

from __future__ import annotations

import hashlib
import logging
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
