"""The store through PgBouncer in transaction pooling mode, in front of a server the test owns:
consecutive statements of one client connection may run on different server connections, so
nothing may rely on state kept in a server session."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest
from apps.support import Response, wsgi_call
from db import sql

from pgsession_wsgi import PostgresStore, SessionMiddleware, get_session
from pgsession_wsgi.embedded import EmbeddedPostgres

# make_pgbouncer first: without pgbouncer the test is skipped before a private server is started.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("make_pgbouncer")]

SCHEMA = "bounced"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """/set?k=v, /inc, /read, /regen, /logout."""
    session = get_session(environ)
    path, query_string = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    if path == "/set":
        key, value = query_string.split("=")
        session[key] = value
    elif path == "/inc":
        session["n"] = session.get("n", 0) + 1
    elif path == "/regen":
        session.regenerate()
    elif path == "/logout":
        session.invalidate()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [repr(sorted(dict(session).items())).encode()]


@pytest.fixture
def bounced(
    owned_server: EmbeddedPostgres, make_pgbouncer: Callable[[str], Any]
) -> Iterator[SessionMiddleware]:
    """The app on a store that reaches the owned server only through PgBouncer."""
    bouncer = make_pgbouncer(owned_server.dsn)
    store = PostgresStore(bouncer.dsn, schema=SCHEMA, purge_interval=None, max_connections=8)
    try:
        yield SessionMiddleware(app, store, secret_key="bouncer-secret")
    finally:
        store.close()


def row(dsn: str, cookie: str) -> Any:
    id_hash = hashlib.sha256(cookie.rsplit(".", 1)[0].encode()).digest()
    rows = sql(dsn, f"SELECT data FROM {SCHEMA}.pgsession WHERE id = %s", (id_hash,))
    return rows[0][0] if rows else None


def test_sessions_load_save_regenerate_and_end_through_pgbouncer(
    owned_server: EmbeddedPostgres, bounced: SessionMiddleware
) -> None:
    created = wsgi_call(bounced, "/set?user=alice")
    cookie = created.cookie()
    assert created.status == 200 and cookie
    assert wsgi_call(bounced, "/set?theme=dark", cookie).status == 200
    assert wsgi_call(bounced, "/read", cookie).body == b"[('theme', 'dark'), ('user', 'alice')]"

    regen = wsgi_call(bounced, "/regen", cookie)
    new_cookie = regen.cookie()
    assert new_cookie and new_cookie != cookie
    assert row(owned_server.dsn, cookie) is None
    assert row(owned_server.dsn, new_cookie) == {"theme": "dark", "user": "alice"}
    assert wsgi_call(bounced, "/read", cookie).body == b"[]"  # the old id is dead

    logout = wsgi_call(bounced, "/logout", new_cookie)
    assert logout.cookie() == ""
    assert row(owned_server.dsn, new_cookie) is None


def test_expired_sessions_are_purged_through_pgbouncer(
    owned_server: EmbeddedPostgres, bounced: SessionMiddleware
) -> None:
    live = wsgi_call(bounced, "/set?user=bob").cookie()
    assert live
    sql(
        owned_server.dsn,
        f"INSERT INTO {SCHEMA}.pgsession (id, data, expires_at) SELECT sha256(i::text::bytea),"
        " '{}', now() - interval '1 minute' FROM generate_series(1, 2500) i",
    )

    assert bounced.store.purge_expired(batch_size=1000) == 2500

    assert sql(owned_server.dsn, f"SELECT count(*) FROM {SCHEMA}.pgsession") == [(1,)]
    assert row(owned_server.dsn, live) == {"user": "bob"}
    # The purge's lock is transaction-scoped: nothing stays held on a pooled server connection.
    assert sql(owned_server.dsn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == [(0,)]


def test_concurrent_sessions_through_pgbouncer_keep_every_write(
    owned_server: EmbeddedPostgres, bounced: SessionMiddleware
) -> None:
    """8 threads x 15 counter requests: transactions are spread over PgBouncer's server
    connections, and every session ends with the right count."""
    results: dict[int, list[Response]] = {}

    def client(n: int) -> None:
        cookie = None
        answers = []
        for _ in range(15):
            answer = wsgi_call(bounced, "/inc", cookie)
            cookie = answer.cookie() or cookie
            answers.append(answer)
        results[n] = answers

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 8
    for answers in results.values():
        assert [a.status for a in answers] == [200] * 15
        assert answers[-1].body == b"[('n', 15)]"
    servers = sql(
        owned_server.dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE"
        " backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    assert servers[0][0] >= 2, "PgBouncer used a single server connection: nothing was shown"


def test_statement_timeout_still_applies_through_pgbouncer(
    owned_server: EmbeddedPostgres, bounced: SessionMiddleware
) -> None:
    """PgBouncer drops the startup option that carries statement_timeout; a blocked write must
    still end with 503 after statement_timeout, not hang the worker."""
    store = PostgresStore(bounced.store.dsn, schema=SCHEMA, purge_interval=None, statement_timeout=1)
    timed_app = SessionMiddleware(app, store, secret_key="bouncer-secret")
    cookie = wsgi_call(timed_app, "/set?user=carol").cookie()
    assert cookie
    locker = psycopg2.connect(owned_server.dsn)
    try:
        with locker.cursor() as cur:
            id_hash = hashlib.sha256(cookie.rsplit(".", 1)[0].encode()).digest()
            cur.execute(f"SELECT 1 FROM {SCHEMA}.pgsession WHERE id = %s FOR UPDATE", (id_hash,))
        # Bounds the test if the timeout were lost: the write would then succeed, 30 s late.
        release = threading.Timer(30, locker.rollback)
        release.start()
        started = time.monotonic()
        answer = wsgi_call(timed_app, "/set?user=dave", cookie)
        took = time.monotonic() - started
        release.cancel()
    finally:
        locker.close()
        store.close()
    # Gave up after statement_timeout=1 s; the upper bound is wide, for a busy machine.
    assert answer.status == 503 and 1 <= took < 20, (answer.status, took)
