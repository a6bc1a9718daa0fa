"""The connection pool: bounded, blocking, self-healing and safe across fork()."""

from __future__ import annotations

import os
import select
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from db import sql

from pgsession_wsgi import PostgresStore, StoreUnavailable
from pgsession_wsgi import pool as pool_module
from pgsession_wsgi.pool import ConnectionPool


def backend_pid(store: PostgresStore) -> int:
    return store._run(lambda cur: (cur.execute("SELECT pg_backend_pid()"), cur.fetchone())[1][0], retry=True)


def test_pool_is_bounded_and_times_out_with_store_unavailable(
    make_store: Callable[..., PostgresStore],
) -> None:
    store = make_store(max_connections=2, pool_timeout=0.5)
    store.create_table()
    holders = [store._pool.connection() for _ in range(2)]
    for holder in holders:
        holder.__enter__()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="pool_timeout"):
        backend_pid(store)
    waited = time.monotonic() - started
    # It waited the whole pool_timeout (a lower bound a busy machine cannot break), and it gave up:
    # the upper bound only says "did not hang", with room for any load.
    assert 0.5 <= waited < 30
    assert store._pool._open == 2  # no third connection was opened meanwhile
    for holder in holders:
        holder.__exit__(None, None, None)
    assert backend_pid(store) > 0


def test_a_waiting_request_gets_the_connection_when_it_is_returned(
    make_store: Callable[..., PostgresStore],
) -> None:
    store = make_store(max_connections=1, pool_timeout=60)
    store.create_table()
    holder = store._pool.connection()
    held = holder.__enter__()
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(backend_pid(store)))
    waiter.start()
    waiter.join(0.3)  # gives a wrong pool the chance to hand out a second connection
    assert result == []  # still waiting: the pool never opens a second connection
    holder.__exit__(None, None, None)
    waiter.join(60)
    assert result == [held.get_backend_pid()]  # it got the very connection that was returned


def test_killed_connection_is_replaced_without_an_error(
    make_store: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    store = make_store(max_connections=1)
    store.create_table()
    first = backend_pid(store)
    # Waits (up to 10 s) until the backend has exited.
    assert sql(pg_dsn, "SELECT pg_terminate_backend(%s, 10000)", (first,)) == [(True,)]
    [pooled] = store._pool._idle
    select.select([pooled.fileno()], [], [], 10)  # until the server's goodbye reaches us
    second = backend_pid(store)
    assert second != first
    assert pooled.closed  # discarded, never handed out again


def test_forked_child_never_uses_the_parents_connection(make_store: Callable[..., PostgresStore]) -> None:
    store = make_store(max_connections=2)
    store.create_table()
    parent_pid = backend_pid(store)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: use the store, report its backend, exit without cleanup
        try:
            os.write(write_end, str(backend_pid(store)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(child, 0)
    child_backend = int(os.read(read_end, 64).decode())
    os.close(read_end)
    assert status == 0
    assert child_backend != parent_pid
    assert backend_pid(store) == parent_pid  # the parent's connection survived the child's exit


def test_statements_run_in_autocommit(make_store: Callable[..., PostgresStore]) -> None:
    store = make_store()
    store.create_table()
    with store._pool.connection() as conn:
        assert conn.autocommit


def test_synchronous_commit_off_reaches_the_server_and_on_leaves_its_default(
    make_store: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    def shown(store: PostgresStore) -> str:
        return str(
            store._run(lambda cur: (cur.execute("SHOW synchronous_commit"), cur.fetchone())[1][0], retry=True)
        )

    [(default,)] = sql(pg_dsn, "SHOW synchronous_commit")
    assert shown(make_store(synchronous_commit=False)) == "off"
    assert shown(make_store()) == default  # True: the DBA's setting is left alone


def test_without_poll_select_finds_a_killed_connection_and_keeps_a_live_one(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows has no select.poll(): the pool falls back to select() and still heals itself."""
    native = pool_module._readable_poll if hasattr(select, "poll") else pool_module._readable_select
    assert pool_module._readable is native  # the import-time choice
    monkeypatch.delattr(select, "poll", raising=False)
    monkeypatch.setattr(pool_module, "_readable", pool_module._choose_readable())  # as an import would
    assert pool_module._readable is pool_module._readable_select

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
