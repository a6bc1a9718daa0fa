"""The connection pool: bounded, blocking, self-healing and safe across fork().

The store's connections are told apart by an application_name of the test's own and watched in
pg_stat_activity; which one ran a statement is found by the statement (a load of a fresh id).
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from db import sql
from helpers import wait_for

from pgsession_wsgi import PostgresStore, StoreUnavailable
from pgsession_wsgi import pool as pool_module
from pgsession_wsgi._drivers import connections
from pgsession_wsgi.pool import ConnectionPool

MINUTE = timedelta(minutes=1)


def named(pg_dsn: str) -> tuple[str, str]:
    """A DSN whose connections carry an application_name of their own, and that name."""
    name = f"pool-{uuid.uuid4().hex[:12]}"
    return psycopg2.extensions.make_dsn(pg_dsn, application_name=name), name


def backends(pg_dsn: str, name: str, waiting: bool = False) -> list[int]:
    """The server processes of the connections named ``name`` (those waiting for a lock only, if
    ``waiting``)."""
    rows = sql(
        pg_dsn,
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
        " AND (NOT %s OR wait_event_type = 'Lock') ORDER BY pid",
        (name, waiting),
    )
    return [int(pid) for (pid,) in rows]


def backend_pid(store: PostgresStore, pg_dsn: str) -> int:
    """The server process the store's next statement runs on: a load of a fresh id, found in
    pg_stat_activity by that id."""
    id_hash = os.urandom(32)
    assert store.load(id_hash, MINUTE) is None
    [(pid,)] = sql(
        pg_dsn,
        "SELECT pid FROM pg_stat_activity WHERE position(%s in query) > 0 AND pid <> pg_backend_pid()",
        (id_hash.hex(),),
    )
    return int(pid)


def waiting_in_the_pool(thread: threading.Thread) -> bool:
    """Whether ``thread`` is blocked in the store's pool, waiting for a connection to come back.

    The pool publishes no count of its waiters, so the thread's own stack tells: innermost a
    ``threading.Condition.wait`` called from pgsession_wsgi/pool.py, which waits there only once
    every connection is out and no other may be opened.
    """
    frame = sys._current_frames().get(thread.ident or 0)
    if frame is None or (frame.f_code.co_filename, frame.f_code.co_name) != (threading.__file__, "wait"):
        return False
    return frame.f_back is not None and frame.f_back.f_code.co_filename == pool_module.__file__


@pytest.fixture
def hold(pg_dsn: str) -> Iterator[Callable[[PostgresStore, int], Callable[[], None]]]:
    """``release = hold(store, n)``: ``n`` of the store's statements (deletes of rows the test
    locks) each keep one of its connections busy until ``release()`` (or the test's end)."""
    cleanups: list[Callable[[], None]] = []

    def start(store: PostgresStore, n: int) -> Callable[[], None]:
        ids = [os.urandom(32) for _ in range(n)]
        for id_hash in ids:
            store.insert(id_hash, "{}", None, timedelta(minutes=5), None)
        locker = psycopg2.connect(pg_dsn)
        with locker.cursor() as cur:
            cur.execute(f"SELECT 1 FROM {store.qualified_name} WHERE id = ANY(%s) FOR UPDATE", (ids,))
        threads = [threading.Thread(target=store.delete, args=(id_hash,)) for id_hash in ids]
        for thread in threads:
            thread.start()

        def release() -> None:
            if not locker.closed:
                locker.rollback()
                locker.close()
            for thread in threads:
                thread.join(30)

        cleanups.append(release)
        blocked = "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
        wait_for(
            lambda: sql(pg_dsn, blocked, (locker.get_backend_pid(),)) == [(n,)],
            f"{n} of the store's statements wait for the test's row locks",
        )
        return release

    yield start
    for release in cleanups:
        release()


def test_pool_is_bounded_and_times_out_with_store_unavailable(
    make_store: Callable[..., PostgresStore],
    pg_dsn: str,
    hold: Callable[[PostgresStore, int], Callable[[], None]],
) -> None:
    dsn, name = named(pg_dsn)
    store = make_store(dsn=dsn, max_connections=2, pool_timeout=0.5, statement_timeout=60)
    store.create_table()
    release = hold(store, 2)  # both connections busy
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"pool_timeout=0\.5s \(max_connections=2\)"):
        store.stats()
    waited = time.monotonic() - started
    # It waited the whole pool_timeout (a lower bound a busy machine cannot break), and it gave up:
    # the upper bound only says "did not hang", with room for any load.
    assert 0.5 <= waited < 30
    assert len(backends(pg_dsn, name)) == 2  # no third connection was opened meanwhile
    release()
    assert store.stats()["live"] == 0  # both deletes went through; the pool serves again


def test_a_waiting_request_gets_the_connection_when_it_is_returned(
    make_store: Callable[..., PostgresStore],
    pg_dsn: str,
    hold: Callable[[PostgresStore, int], Callable[[], None]],
) -> None:
    dsn, name = named(pg_dsn)
    store = make_store(dsn=dsn, max_connections=1, pool_timeout=60, statement_timeout=60)
    store.create_table()
    release = hold(store, 1)  # the only connection is busy
    [held] = backends(pg_dsn, name, waiting=True)
    result: list[Any] = []

    def ask() -> None:
        try:
            result.append(store.stats())
        except Exception as exc:  # handed to the test's thread
            result.append(exc)

    waiter = threading.Thread(target=ask)
    waiter.start()
    wait_for(lambda: waiting_in_the_pool(waiter) or result, "the request waits for a connection")
    assert result == []  # still waiting: no error, and no second connection opened for it
    release()
    waiter.join(60)
    assert [answer["live"] for answer in result] == [0]
    assert backends(pg_dsn, name) == [held]  # it got the very connection that was returned


def test_killed_connection_is_replaced_without_an_error(pg_dsn: str, schema: str) -> None:
    # The pool is the same for a connection factory; the factory lets the test hold its connections.
    made: list[psycopg2.extensions.connection] = []

    def factory() -> psycopg2.extensions.connection:
        made.append(psycopg2.connect(pg_dsn))
        return made[-1]

    store = PostgresStore.from_factory(factory, schema=schema, max_connections=1, purge_interval=None)
    try:
        store.create_table()
        [first] = made
        # Waits (up to 10 s) until the backend has exited.
        assert sql(pg_dsn, "SELECT pg_terminate_backend(%s, 10000)", (first.get_backend_pid(),)) == [(True,)]
        select.select([first.fileno()], [], [], 10)  # until the server's goodbye reaches us
        # An insert is never retried: it succeeds only if the dead connection was found before use.
        store.insert(os.urandom(32), "{}", None, timedelta(minutes=5), None)
        assert len(made) == 2  # replaced...
        assert first.closed  # ...and discarded, never handed out again
    finally:
        store.close()


def test_forked_child_never_uses_the_parents_connection(
    make_store: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    store = make_store(max_connections=2)
    store.create_table()
    parent_pid = backend_pid(store, pg_dsn)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: use the store, report its backend, exit without cleanup
        try:
            os.write(write_end, str(backend_pid(store, pg_dsn)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(child, 0)
    child_backend = int(os.read(read_end, 64).decode())
    os.close(read_end)
    assert status == 0
    assert child_backend != parent_pid
    assert backend_pid(store, pg_dsn) == parent_pid  # the parent's connection survived the child's exit


def test_statements_run_in_autocommit(make_store: Callable[..., PostgresStore], pg_dsn: str) -> None:
    make_store().create_table()  # elsewhere: its explicit BEGIN/COMMIT would hide a missing autocommit
    dsn, name = named(pg_dsn)
    store = make_store(dsn=dsn, max_connections=1, create_table=False)
    store.insert(os.urandom(32), "{}", None, timedelta(minutes=5), None)
    assert sql(store, "SELECT count(*) FROM {t}") == [(1,)]  # committed: another connection sees it
    states = "SELECT state FROM pg_stat_activity WHERE application_name = %s"
    assert sql(pg_dsn, states, (name,)) == [("idle",)]  # not idle in a transaction left open


def test_synchronous_commit_off_reaches_the_server_and_on_leaves_its_default(
    make_store: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    def shown(store: PostgresStore) -> str:
        """The setting on a connection the store opens as it opens its pooled ones."""
        conn = store.connect_unpooled()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW synchronous_commit")
                return str(cur.fetchone()[0])  # type: ignore[index]
        finally:
            conn.close()

    [(default,)] = sql(pg_dsn, "SHOW synchronous_commit")
    assert shown(make_store(synchronous_commit=False)) == "off"
    assert shown(make_store()) == default  # True: the DBA's setting is left alone


def test_without_poll_select_finds_a_killed_connection_and_keeps_a_live_one(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows has no select.poll(): the pool falls back to select() and still heals itself.

    Seam: such a platform is stood in for by removing select.poll and making the pool's
    import-time choice again (pool._readable); the pool is driven directly.
    """
    native = connections._readable_poll if hasattr(select, "poll") else connections._readable_select
    assert pool_module._readable is native  # the import-time choice
    monkeypatch.delattr(select, "poll", raising=False)
    monkeypatch.setattr(pool_module, "_readable", pool_module._choose_readable())  # as an import would
    assert pool_module._readable is connections._readable_select

    name = f"pool-select-{uuid.uuid4().hex[:12]}"
    pool = ConnectionPool({"dsn": pg_dsn, "application_name": name}, max_connections=1, timeout=5)
    try:
        with pool.connection() as conn:
            first, first_pid = conn, conn.get_backend_pid()
        assert not pool_module._is_dead(first)  # idle and alive: nothing to read
        with pool.connection() as conn:
            assert conn is first  # so the pool hands the same one back

        killed = sql(  # waits (up to 10 s) until the backend has exited
            pg_dsn,
            "SELECT pid, pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        )
        assert killed == [(first_pid, True)]
        select.select([first.fileno()], [], [], 10)  # until the server's goodbye reaches us
        assert pool_module._is_dead(first)

        with pool.connection() as conn:
            assert conn is not first
            assert conn.get_backend_pid() != first_pid
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                assert cur.fetchone() == (1,)
        assert first.closed  # the dead one was discarded, not handed out
    finally:
        pool.close()
