"""Database faults, each on a private PostgreSQL the test owns: outages, killed connections,
slow statements, an exhausted pool. The app answers 503 in bounded time and recovers by itself."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Callable

import psycopg2
import pytest
from apps.support import Response, SwitchProxy, wsgi_call
from db import sql
from helpers import wait_for
from wire import RoundTripCounter, statement_kind

from pgsession_wsgi import PostgresStore, SessionMiddleware, StoreUnavailable, get_session
from pgsession_wsgi.embedded import EmbeddedPostgres

pytestmark = pytest.mark.slow

SCHEMA = "faults"


def counter_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """/inc adds one to the session's counter and answers it; /read answers it unchanged."""
    session = get_session(environ)
    if environ["PATH_INFO"] == "/inc":
        session["n"] = session.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(session.get("n", 0)).encode()]


@pytest.fixture
def make_app(owned_server: EmbeddedPostgres) -> Iterator[Callable[..., SessionMiddleware]]:
    """``make_app(dsn=None, **store_options)``: the counter app on a store in the owned server."""
    stores: list[PostgresStore] = []

    def make(dsn: str | None = None, **options: Any) -> SessionMiddleware:
        options.setdefault("purge_interval", None)
        store = PostgresStore(dsn or owned_server.dsn, schema=SCHEMA, **options)
        stores.append(store)
        return SessionMiddleware(counter_app, store, secret_key="faults-secret")

    yield make
    for store in stores:
        store.close()


def stored_n(dsn: str, cookie: str) -> int | None:
    id_hash = hashlib.sha256(cookie.rsplit(".", 1)[0].encode()).digest()
    rows = sql(dsn, f'SELECT data FROM "{SCHEMA}".pgsession WHERE id = %s', (id_hash,))
    return rows[0][0].get("n") if rows else None


def new_session(app: SessionMiddleware) -> str:
    answer = wsgi_call(app, "/inc")
    assert answer.status == 200 and answer.body == b"1"
    cookie = answer.cookie()
    assert cookie
    return cookie


def timed(app: SessionMiddleware, path: str, cookie: str | None) -> tuple[Response, float]:
    started = time.monotonic()
    answer = wsgi_call(app, path, cookie)
    return answer, time.monotonic() - started


@pytest.fixture
def row_lock(owned_server: EmbeddedPostgres) -> Iterator[Callable[[str], Callable[[], None]]]:
    """``lock(cookie)`` holds that session's row FOR UPDATE in an open transaction until the
    returned ``release()`` is called (or the test ends)."""
    conns: list[Any] = []

    def lock(cookie: str) -> Callable[[], None]:
        conn = psycopg2.connect(owned_server.dsn, application_name="pgsession-test-locker")
        conns.append(conn)
        id_hash = hashlib.sha256(cookie.rsplit(".", 1)[0].encode()).digest()
        with conn.cursor() as cur:
            cur.execute(f'SELECT 1 FROM "{SCHEMA}".pgsession WHERE id = %s FOR UPDATE', (id_hash,))
            assert cur.rowcount == 1
        return conn.rollback

    yield lock
    for conn in conns:
        conn.close()


# -- the server goes away and comes back -----------------------------------------------------


def test_an_outage_mid_load_answers_503_quickly_and_the_app_recovers_by_itself(
    owned_server: EmbeddedPostgres, make_app: Callable[..., SessionMiddleware]
) -> None:
    """Stop the server under load, start it again: bounded 503s, then success, nothing lost."""
    connect_timeout, pool_timeout = 2.0, 1.0
    app = make_app(
        max_connections=3, connect_timeout=connect_timeout, pool_timeout=pool_timeout, statement_timeout=2
    )
    clients = 6
    cookies = [new_session(app) for _ in range(clients)]
    acked = dict.fromkeys(cookies, 1)  # the last counter value a 200 confirmed
    attempted = dict.fromkeys(cookies, 1)  # the highest value a request may have written
    log: list[tuple[float, float, int]] = []  # (started, took, status)
    stop = threading.Event()
    errors: list[BaseException] = []

    def client(cookie: str) -> None:
        try:
            while not stop.is_set():
                attempted[cookie] = acked[cookie] + 1
                started = time.monotonic()
                answer, took = timed(app, "/inc", cookie)
                log.append((started, took, answer.status))
                if answer.status == 200:
                    acked[cookie] = int(answer.body)
                time.sleep(0.005)
        except BaseException as exc:  # a crash instead of a response fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in cookies]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        owned_server.stop()
        time.sleep(1.5)
        owned_server.start()
        restarted = time.monotonic()
        time.sleep(0.7)
    finally:
        stop.set()
        for thread in threads:
            thread.join(connect_timeout + pool_timeout + 10)
    assert not any(thread.is_alive() for thread in threads), "a request hung"
    assert errors == []

    statuses = {status for _, _, status in log}
    assert statuses <= {200, 503}
    assert 503 in statuses, "the outage was not noticed"
    slowest = max(took for _, took, _ in log)
    # Bounded by the timeouts, not hung; the margin is for a loaded machine, not a speed claim.
    assert slowest < connect_timeout + pool_timeout + 10
    after = [status for started, _, status in log if started >= restarted]
    assert after and set(after) == {200}, "requests after the restart still failed"
    for cookie in cookies:
        # A 503 write may or may not have committed; a 200 one must have.
        assert acked[cookie] <= stored_n(owned_server.dsn, cookie) <= attempted[cookie]
        assert int(wsgi_call(app, "/read", cookie).body) == stored_n(owned_server.dsn, cookie)


CONNECT_TIMEOUT, POOL_TIMEOUT = 5, 0.5


def silent_server_requests(app: SessionMiddleware, cookie: str | None) -> list[float]:
    """Three overlapping requests (max_connections=1); how long each took to get its 503, sorted.

    One request takes the only connection slot and waits connect_timeout; the other two must give
    up after pool_timeout instead of queueing behind it. The timeouts are far apart so that a busy
    machine cannot blur which is which.
    """
    results: list[tuple[Response, float]] = []
    threads = [threading.Thread(target=lambda: results.append(timed(app, "/inc", cookie))) for _ in range(3)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # the first one most likely takes the slot; which one does is not checked
    for thread in threads:
        thread.join(CONNECT_TIMEOUT + 30)
    assert len(results) == 3
    assert {answer.status for answer, _ in results} == {503}
    took = sorted(took for _, took in results)
    # Two gave up after pool_timeout, well before the connect could time out (3.5 s of slack)...
    assert took[1] < CONNECT_TIMEOUT - 1, took
    # ...and one waited for the connect (libpq counts whole seconds: up to 1 s early), not forever.
    assert CONNECT_TIMEOUT - 1 <= took[2] < CONNECT_TIMEOUT + 10, took
    return took


def test_a_server_that_stops_answering_costs_at_most_connect_timeout_or_pool_timeout(
    owned_server: EmbeddedPostgres, make_app: Callable[..., SessionMiddleware]
) -> None:
    """The network to a running app's database goes silent: bounded 503s, then recovery."""
    proxy = SwitchProxy(owned_server.dsn)
    try:
        app = make_app(
            proxy.dsn, max_connections=1, connect_timeout=CONNECT_TIMEOUT, pool_timeout=POOL_TIMEOUT
        )
        cookie = new_session(app)
        proxy.silent = True
        owned_server.terminate_backends("pgsession-wsgi")  # the pooled connection is gone too

        silent_server_requests(app, cookie)

        proxy.silent = False
        assert wsgi_call(app, "/inc", cookie).body == b"2"
    finally:
        proxy.close()


def test_a_silent_server_at_startup_costs_at_most_connect_timeout_or_pool_timeout(
    make_app: Callable[..., SessionMiddleware],
) -> None:
    """Same, before the store's first successful statement (table creation still pending).

    Each waiting request must give up after pool_timeout, not queue behind the table creation
    of the one before it (3 requests would then take 5 s, 10 s and 15 s).
    """
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:
        port = silent.getsockname()[1]
        app = make_app(
            f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable",
            max_connections=1,
            connect_timeout=CONNECT_TIMEOUT,
            pool_timeout=POOL_TIMEOUT,
        )
        silent_server_requests(app, None)


# -- connections killed under the pool -------------------------------------------------------


def test_a_connection_killed_under_the_pool_is_replaced_and_the_next_request_succeeds(
    owned_server: EmbeddedPostgres, make_app: Callable[..., SessionMiddleware]
) -> None:
    app = make_app(max_connections=2)
    cookie = new_session(app)
    for expected in (2, 3):
        assert wsgi_call(app, "/inc", cookie).body == str(expected).encode()
    assert owned_server.terminate_backends("pgsession-wsgi") >= 1

    answer = wsgi_call(app, "/inc", cookie)

    assert (answer.status, answer.body) == (200, b"4")
    assert stored_n(owned_server.dsn, cookie) == 4


def test_a_read_on_a_connection_that_died_unnoticed_is_retried_once(
    owned_server: EmbeddedPostgres,
    make_app: Callable[..., SessionMiddleware],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the pool's liveness check blinded, the dead connection reaches the read: the read
    fails on it and is retried on a fresh connection."""
    app = make_app(max_connections=1)
    cookie = new_session(app)
    monkeypatch.setattr("pgsession_wsgi.pool._is_dead", lambda conn: bool(conn.closed))
    assert owned_server.terminate_backends("pgsession-wsgi") == 1

    answer = wsgi_call(app, "/read", cookie)

    assert (answer.status, answer.body) == (200, b"1")


def test_a_write_cut_off_mid_statement_is_not_retried_blindly(
    owned_server: EmbeddedPostgres,
    make_app: Callable[..., SessionMiddleware],
    row_lock: Callable[[str], Callable[[], None]],
) -> None:
    """The write may have committed when its connection dies: 503, and it is sent only once."""
    counter = RoundTripCounter(owned_server.dsn)
    try:
        app = make_app(counter.dsn, max_connections=2, statement_timeout=10)
        cookie = new_session(app)
        release = row_lock(cookie)  # the write's UPDATE now waits for this lock
        result: list[Response] = []
        counter.reset()
        thread = threading.Thread(target=lambda: result.append(wsgi_call(app, "/inc", cookie)))
        thread.start()
        waiting = wait_for_waiting_backend(owned_server.dsn)
        sql(owned_server.dsn, "SELECT pg_terminate_backend(%s, 5000)", (waiting,))
        thread.join(10)
        release()
        assert result and result[0].status == 503
        writes = [s for s in counter.statements if statement_kind(s) != "SELECT"]
        assert len(writes) == 1, counter.statements  # the UPDATE, sent once
        assert stored_n(owned_server.dsn, cookie) == 1

        assert wsgi_call(app, "/inc", cookie).body == b"2"  # and the app carries on
    finally:
        counter.close()


def wait_for_waiting_backend(dsn: str, timeout: float = 30.0) -> int:
    """The pid of the pgsession-wsgi backend waiting for a lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = sql(
            dsn,
            "SELECT pid FROM pg_stat_activity WHERE application_name = "
            "'pgsession-wsgi' AND wait_event_type = 'Lock'",
        )
        if rows:
            return int(rows[0][0])
        time.sleep(0.01)
    raise AssertionError("no session statement ever waited for the lock")


# -- slow statements and an exhausted pool ---------------------------------------------------


def test_a_statement_slower_than_statement_timeout_answers_503(
    owned_server: EmbeddedPostgres,
    make_app: Callable[..., SessionMiddleware],
    row_lock: Callable[[str], Callable[[], None]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(statement_timeout=0.5)
    cookie = new_session(app)
    release = row_lock(cookie)
    # Bounds the test if the timeout were lost: the write would then succeed, 30 s late.
    backstop = threading.Timer(30, release)
    backstop.start()
    try:
        with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
            answer, took = timed(app, "/inc", cookie)
        assert answer.status == 503
        assert 0.5 <= took < 20  # waited statement_timeout, then gave up (wide: a busy machine)
        assert "statement_timeout" in caplog.text
        with pytest.raises(StoreUnavailable, match="statement_timeout"):
            app.store.touch(
                hashlib.sha256(cookie.rsplit(".", 1)[0].encode()).digest(), timedelta(days=1), None
            )
    finally:
        backstop.cancel()
        release()
    assert stored_n(owned_server.dsn, cookie) == 1
    assert wsgi_call(app, "/inc", cookie).body == b"2"


def test_an_exhausted_pool_makes_requests_wait_then_answer_503_after_pool_timeout(
    owned_server: EmbeddedPostgres,
    make_app: Callable[..., SessionMiddleware],
    row_lock: Callable[[str], Callable[[], None]],
) -> None:
    """Two connections held by blocked writes; four more requests wait pool_timeout, get 503."""
    pool_timeout = 1.0
    app = make_app(max_connections=2, pool_timeout=pool_timeout, statement_timeout=60)
    cookie = new_session(app)
    release = row_lock(cookie)
    results: list[tuple[Response, float]] = []
    crashes: list[BaseException] = []

    def request() -> None:
        try:
            results.append(timed(app, "/inc", cookie))
        except BaseException as exc:  # a pool error escaping the middleware
            crashes.append(exc)

    threads = [threading.Thread(target=request) for _ in range(6)]
    try:
        for thread in threads:
            thread.start()
        # Released only once four have answered: the two holding connections cannot finish first.
        wait_for(lambda: len(results) + len(crashes) >= 4, "four requests gave up")
        assert [answer.status for answer, _ in results] == [503] * 4
    finally:
        release()
    for thread in threads:
        thread.join(30)
    assert crashes == []
    statuses = sorted(answer.status for answer, _ in results)
    assert statuses == [200, 200, 503, 503, 503, 503]
    for answer, took in results:
        if answer.status == 503:
            assert pool_timeout <= took < pool_timeout + 10  # waited it out, then did not hang
            assert answer.header_all("Retry-After")


def test_requests_waiting_for_the_pool_succeed_when_a_connection_frees_in_time(
    owned_server: EmbeddedPostgres,
    make_app: Callable[..., SessionMiddleware],
    row_lock: Callable[[str], Callable[[], None]],
) -> None:
    app = make_app(max_connections=1, pool_timeout=60, statement_timeout=60)
    cookie = new_session(app)
    release = row_lock(cookie)
    results: list[Response] = []
    threads = [
        threading.Thread(target=lambda: results.append(wsgi_call(app, "/inc", cookie))) for _ in range(4)
    ]
    try:
        for thread in threads:
            thread.start()
        wait_for_waiting_backend(owned_server.dsn)  # one write holds the only connection...
        pool = app.store._pool
        # ...and the other three wait for it (threading.Condition keeps its waiters in _waiters).
        wait_for(lambda: len(pool._cond._waiters) == 3, "three requests wait for the pool")
        assert results == []
    finally:
        release()
    for thread in threads:
        thread.join(30)
    assert [answer.status for answer in results] == [200] * 4
    assert stored_n(owned_server.dsn, cookie) is not None
