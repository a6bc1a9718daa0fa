"""Regenerate, invalidate, timeouts, purge, per-user revocation and hardening (issue 4)."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg2
import pytest
from db import sql
from helpers import wait_for
from session_app import session_app
from webtest import TestApp

from pgsession_wsgi import (
    ConfigurationError,
    PostgresStore,
    SessionMiddleware,
    SessionTooLarge,
    get_session,
)

SECRET = "lifecycle"


@pytest.fixture
def store(make_store: Callable[..., PostgresStore]) -> PostgresStore:
    store = make_store()
    store.create_table()
    return store


def client_for(store: PostgresStore, app: Any = session_app, **options: Any) -> TestApp:
    options.setdefault("secret_key", SECRET)
    return TestApp(SessionMiddleware(app, store, **options))


def id_of(client: TestApp, name: str = "session") -> str:
    return str(client.cookies[name]).split(".")[0]


# -- regenerate and invalidate --------------------------------------------------------------


def test_regenerate_moves_data_to_a_new_id_and_kills_the_old_one(store: PostgresStore) -> None:
    client = client_for(store)
    client.get("/set?user=alice")
    old_cookie = str(client.cookies["session"])
    response = client.get("/regen")
    assert "Set-Cookie" in response.headers
    assert str(client.cookies["session"]) != old_cookie
    assert client.get("/read").json == {"user": "alice"}
    attacker = client_for(store)
    attacker.set_cookie("session", old_cookie)
    assert attacker.get("/read").json == {}
    assert len(sql(store, "SELECT 1 FROM {t}")) == 1


def test_regenerate_on_a_new_session_issues_a_fresh_id(store: PostgresStore) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        session = get_session(environ)
        session.regenerate()
        session["user"] = "bob"
        start_response("200 OK", [])
        return [b""]

    client = client_for(store, app)
    client.get("/")
    first = id_of(client)
    client.get("/")
    assert id_of(client) != first
    assert client_for(store).get("/read").json == {}  # no cookie: nothing


def test_regenerate_on_an_empty_session_does_not_fail_or_store(store: PostgresStore) -> None:
    client = client_for(store)
    response = client.get("/regen")
    assert response.status_int == 200
    assert sql(store, "SELECT 1 FROM {t}") == []


def test_invalidate_deletes_row_and_expires_cookie(store: PostgresStore) -> None:
    client = client_for(store)
    client.get("/set?user=alice")
    old_cookie = str(client.cookies["session"])
    response = client.get("/logout")
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    assert sql(store, "SELECT 1 FROM {t}") == []
    replay = client_for(store)
    replay.set_cookie("session", old_cookie)
    assert replay.get("/read").json == {}


# -- timeouts -------------------------------------------------------------------------------


def age(store: PostgresStore, minutes: int) -> None:
    """Move every row ``minutes`` into the past: as if that much time went by, without waiting."""
    shift = f"interval '{minutes} minutes'"
    sql(
        store,
        f"UPDATE {{t}} SET created_at = created_at - {shift}, accessed_at = accessed_at - {shift},"
        f" expires_at = expires_at - {shift}",
    )


def test_absolute_timeout_ends_even_an_active_session(store: PostgresStore) -> None:
    client = client_for(
        store, idle_timeout=timedelta(minutes=30), absolute_timeout=timedelta(hours=1), touch_interval=1
    )
    client.get("/set?a=1")
    for _ in range(2):  # used every 20 minutes: the idle timeout alone would never end it
        age(store, 20)
        assert client.get("/read").json == {"a": "1"}
    [(capped,)] = sql(store, "SELECT expires_at = created_at + interval '1 hour' FROM {t}")
    assert capped  # the touch moved the expiry only as far as the absolute limit
    age(store, 20)  # an hour since the login, 20 minutes since the last request
    assert client.get("/read").json == {}


def test_regenerate_keeps_the_creation_time(store: PostgresStore) -> None:
    client = client_for(store, absolute_timeout=timedelta(hours=1))
    client.get("/set?a=1")
    [(created_before,)] = sql(store, "SELECT created_at FROM {t}")
    time.sleep(0.05)
    client.get("/regen")
    [(created_after, expires)] = sql(store, "SELECT created_at, expires_at FROM {t}")
    assert created_after == created_before
    assert expires <= created_before + timedelta(hours=1)


def test_touch_moves_only_the_expiry(store: PostgresStore) -> None:
    client = client_for(store, idle_timeout=timedelta(hours=1), touch_interval=1)
    client.get("/set?a=1")
    sql(
        store,
        "UPDATE {t} SET accessed_at = now() - interval '5 seconds',"
        " expires_at = now() + interval '10 minutes'",
    )
    [(xmin_data_before,)] = sql(store, "SELECT data::text FROM {t}")
    client.get("/read")
    [(data_after, remaining)] = sql(store, "SELECT data::text, expires_at - now() FROM {t}")
    assert data_after == xmin_data_before
    assert remaining > timedelta(minutes=30)  # moved to an hour from the touch


def test_touch_interval_is_capped_at_a_tenth_of_idle(store: PostgresStore) -> None:
    middleware = SessionMiddleware(
        session_app,
        store,
        secret_key=SECRET,
        idle_timeout=timedelta(seconds=100),
        touch_interval=timedelta(hours=1),
    )
    assert middleware.policy.touch_interval == timedelta(seconds=10)


# -- purge ----------------------------------------------------------------------------------


def fill(store: PostgresStore, live: int, expired: int) -> None:
    sql(
        store,
        "INSERT INTO {t} (id, data, expires_at) SELECT sha256(('live' || g)::bytea),"
        " '{\"k\": 1}', now() + interval '1 hour' FROM generate_series(1, %s) g",
        (live,),
    )
    sql(
        store,
        "INSERT INTO {t} (id, data, expires_at) SELECT sha256(('dead' || g)::bytea),"
        " '{\"k\": 1}', now() - interval '1 minute' FROM generate_series(1, %s) g",
        (expired,),
    )


def test_purge_removes_expired_rows_in_batches_and_keeps_live_ones(store: PostgresStore) -> None:
    fill(store, live=3000, expired=5500)
    assert store.purge_expired(batch_size=1000) == 5500
    [(live, dead)] = sql(
        store,
        "SELECT count(*) FILTER (WHERE expires_at > now()),"
        " count(*) FILTER (WHERE expires_at <= now()) FROM {t}",
    )
    assert (live, dead) == (3000, 0)
    assert store.purge_expired() == 0


def _purge_in_child(dsn: str, schema: str, results: Any) -> None:
    store = PostgresStore(dsn, schema=schema, purge_interval=None, create_table=False)
    total = 0
    for _ in range(50):
        total += store.purge_expired(batch_size=100)
    results.put(total)
    store.close()


def test_concurrent_purgers_in_two_processes(store: PostgresStore, pg_dsn: str) -> None:
    fill(store, live=2000, expired=20000)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    children = [ctx.Process(target=_purge_in_child, args=(pg_dsn, store.schema, results)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    removed = results.get(timeout=5) + results.get(timeout=5)
    removed += store.purge_expired()  # whatever a purger left when the other held the lock
    assert removed == 20000  # every expired row removed exactly once
    [(live,)] = sql(store, "SELECT count(*) FROM {t}")
    assert live == 2000


def test_background_purge_thread_runs_and_stops(make_store: Callable[..., PostgresStore]) -> None:
    def purge_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "pgsession-purge"}

    store = make_store(purge_interval=0.2)
    store.create_table()
    fill(store, live=10, expired=50)
    before = purge_threads()
    client_for(store).get("/set?a=1")  # first use starts the thread
    wait_for(
        lambda: sql(store, "SELECT count(*) FROM {t} WHERE expires_at <= now()") == [(0,)],
        "the purge thread removes the expired rows",
    )
    [purger] = purge_threads() - before
    assert purger.is_alive()
    store.close()
    assert not purger.is_alive()


def purge_backends(store: PostgresStore, waiting: bool) -> list[tuple[Any, ...]]:
    """This store's purge statements now running (those waiting for a lock, if ``waiting``)."""
    return sql(
        store,
        "SELECT pid FROM pg_stat_activity WHERE query LIKE '%%pg_try_advisory_xact_lock%%'"
        " AND position(%s in query) > 0 AND (NOT %s OR wait_event_type = 'Lock')"
        " AND pid <> pg_backend_pid()",
        (store.schema, waiting),
    )


def test_the_background_purge_never_takes_the_requests_connection(
    make_store: Callable[..., PostgresStore],
) -> None:
    """With a one-connection pool and the purge stuck, a request is still served: the purge has
    a connection of its own. (A statement_timeout longer than the test keeps the purge stuck.)"""
    store = make_store(max_connections=1, pool_timeout=5, purge_interval=0.05, statement_timeout=120)
    store.create_table()
    client = client_for(store)
    client.get("/set?a=1")  # first use starts the purge thread
    fill(store, live=0, expired=5)
    locker = psycopg2.connect(store.dsn)
    try:
        with locker.cursor() as cur:  # reads pass a SHARE lock, the purge's DELETE does not
            cur.execute(f"LOCK TABLE {store.qualified_name} IN SHARE MODE")
        wait_for(lambda: purge_backends(store, waiting=True), "the purge waits for the lock")

        response = client.get("/read")  # needs the pool's only connection

        assert response.json == {"a": "1"}
        assert purge_backends(store, waiting=True), "the purge was no longer stuck: nothing shown"
    finally:
        locker.rollback()
        locker.close()
    wait_for(lambda: sql(store, "SELECT count(*) FROM {t}") == [(1,)], "the purge finishes")


def test_purge_skips_rows_a_request_holds_and_never_waits_for_them(store: PostgresStore) -> None:
    fill(store, live=1, expired=3)
    [(held,)] = sql(store, "SELECT id FROM {t} WHERE expires_at <= now() LIMIT 1")
    locker = psycopg2.connect(store.dsn)
    try:
        with locker.cursor() as cur:  # as a request's statement on that row would
            cur.execute(f"SELECT 1 FROM {store.qualified_name} WHERE id = %s FOR UPDATE", (held,))
        assert store.purge_expired() == 2  # returns (statement_timeout is 5 s): it did not wait
        [(still_there,)] = sql(store, "SELECT count(*) FROM {t} WHERE id = %s", (held,))
        assert still_there == 1
    finally:
        locker.rollback()
        locker.close()
    assert store.purge_expired() == 1  # the next purge takes it


def test_purge_returns_at_once_while_another_process_purges(store: PostgresStore) -> None:
    other = psycopg2.connect(store.dsn)  # not in autocommit: its purge batch stays open
    try:
        assert store.purge_on(other, 100) == 0  # another process in the middle of a purge batch
        fill(store, live=0, expired=3)  # rows that process has not locked
        assert store.purge_expired() == 0  # gave way rather than waited
        assert sql(store, "SELECT count(*) FROM {t}") == [(3,)]
    finally:
        other.rollback()
        other.close()
    assert store.purge_expired() == 3


def test_a_request_on_an_expired_row_never_waits_for_the_purge_holding_it(store: PostgresStore) -> None:
    """A purge batch locks the expired rows it deletes; a request bringing the cookie of one of
    them reads or writes past it instead of queueing behind the purge."""
    client = client_for(store)
    client.get("/set?user=alice")
    sql(store, "UPDATE {t} SET expires_at = now() - interval '1 second'")
    [(expired_id,)] = sql(store, "SELECT id FROM {t}")
    quick = PostgresStore(store.dsn, schema=store.schema, statement_timeout=3, purge_interval=None)
    locker = psycopg2.connect(store.dsn)
    try:
        with locker.cursor() as cur:  # what the purge's DELETE ... FOR UPDATE SKIP LOCKED holds
            cur.execute(f"SELECT 1 FROM {store.qualified_name} WHERE id = %s FOR UPDATE", (expired_id,))
        replay = TestApp(SessionMiddleware(session_app, quick, secret_key=SECRET))
        cookie = {"Cookie": f"session={client.cookies['session']}"}
        assert replay.get("/read", headers=cookie).json == {}
        written = replay.get("/set?b=2", headers=cookie)  # a blind write: 503 had it waited
        assert "Set-Cookie" in written.headers  # a new session, not the expired one
        assert replay.get("/read").json == {"b": "2"}
    finally:
        locker.rollback()
        locker.close()
        quick.close()


# -- log out everywhere ---------------------------------------------------------------------


def login_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    session = get_session(environ)
    path = environ["PATH_INFO"]
    if path.startswith("/login/"):
        session.regenerate()
        session["_user_id"] = path.rsplit("/", 1)[1]
    elif path == "/everywhere":
        store = environ["test.store"]
        removed = store.revoke_user(session["_user_id"], keep=session)
        start_response("200 OK", [])
        return [str(removed).encode()]
    start_response("200 OK", [])
    return [b""]


def test_user_id_is_mirrored_and_sessions_listed(store: PostgresStore) -> None:
    devices = [client_for(store, login_app, user_key="_user_id") for _ in range(3)]
    for device in devices:
        device.get("/login/42")
    client_for(store, login_app, user_key="_user_id").get("/login/7")
    sessions = store.sessions_for_user(42)
    assert len(sessions) == 3
    ids = {id_of(device) for device in devices}
    for info in sessions:
        assert info.id_hash in {hashlib.sha256(i.encode()).hexdigest() for i in ids}
        assert info.id_hash not in ids and info.created_at <= info.accessed_at < info.expires_at
    assert len(store.sessions_for_user("7")) == 1


def test_revoke_user_keeps_the_current_session(store: PostgresStore) -> None:
    def with_store(app: Any) -> Any:
        def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            environ["test.store"] = store
            return app(environ, start_response)

        return wrapped

    devices = [client_for(store, with_store(login_app), user_key="_user_id") for _ in range(3)]
    for device in devices:
        device.get("/login/42")
    assert devices[0].get("/everywhere").body == b"2"
    assert len(store.sessions_for_user("42")) == 1
    assert store.revoke_user("42") == 1
    assert store.sessions_for_user("42") == []


def test_removing_the_user_key_clears_the_column(store: PostgresStore) -> None:
    client = client_for(store, user_key="u")
    client.get("/set?u=9&x=1")
    assert len(store.sessions_for_user("9")) == 1
    client.get("/del?k=u")
    assert store.sessions_for_user("9") == []


# -- hardening ------------------------------------------------------------------------------


def test_fallback_key_cookie_is_resigned_with_the_current_key(store: PostgresStore) -> None:
    old = client_for(store, secret_key="old-key")
    old.get("/set?a=1")
    old_cookie = str(old.cookies["session"])
    rotated = client_for(store, secret_key="new-key", fallback_secret_keys=["old-key"])
    response = rotated.get("/read", headers={"Cookie": f"session={old_cookie}"})
    assert response.json == {"a": "1"}
    new_cookie = response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    assert new_cookie != old_cookie and new_cookie.split(".")[0] == old_cookie.split(".")[0]
    again = rotated.get("/read", headers={"Cookie": f"session={new_cookie}"})
    assert again.json == {"a": "1"} and "Set-Cookie" not in again.headers
    current_only = client_for(store, secret_key="new-key")
    assert current_only.get("/read", headers={"Cookie": f"session={new_cookie}"}).json == {"a": "1"}
    assert current_only.get("/read", headers={"Cookie": f"session={old_cookie}"}).json == {}


def test_session_over_max_size_is_refused_and_nothing_is_written(
    store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(store, max_size=1000)
    client.get("/set?a=1")
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        client.get("/set?big=" + "x" * 2000, status=500)
    assert "limit of 1000 bytes" in caplog.text
    assert client.get("/read").json == {"a": "1"}


def test_session_too_large_error_names_size_and_limit() -> None:
    error = SessionTooLarge(5000, 1000)
    assert "5000" in str(error) and "1000" in str(error) and error.size == 5000


def test_host_prefixed_cookie_works_end_to_end(store: PostgresStore) -> None:
    client = client_for(store, cookie_name="__Host-session")
    response = client.get("/set?a=1", extra_environ={"wsgi.url_scheme": "https"})
    header = response.headers["Set-Cookie"]
    assert header.startswith("__Host-session=") and "Secure" in header and "Path=/" in header
    assert "Domain" not in header
    cookie = header.split(";")[0]
    assert client.get(
        "/read", headers={"Cookie": cookie}, extra_environ={"wsgi.url_scheme": "https"}
    ).json == {"a": "1"}


def test_host_prefix_with_contradicting_options_fails_at_construction(store: PostgresStore) -> None:
    with pytest.raises(ConfigurationError, match="__Host-"):
        SessionMiddleware(
            session_app, store, secret_key=SECRET, cookie_name="__Host-s", cookie_domain="example.com"
        )


def test_session_id_never_reaches_logs_or_errors(
    store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(store)
    client.get("/set?a=1")
    sid = id_of(client)
    with caplog.at_level(logging.DEBUG):
        client.get("/bad", status=500)
        store.close()  # every later statement fails
        client.get("/read", status=503)
    assert caplog.records
    assert sid not in caplog.text
