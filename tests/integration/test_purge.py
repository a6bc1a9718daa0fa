"""Purging expired sessions on a real PostgreSQL: the store's purge methods (batch by batch, with
progress and a way to stop, on a connection of one's own) and the background worker (a named
daemon thread that logs what it removed, warns once per outage, keeps trying and recovers, and
ends quietly when its store is gone).

Purging as a session's life sees it (live rows kept, two processes at once, a request never
waiting for the purge) is tests/integration/test_lifecycle.py; the purge on the app's own pool
is tests/integration/test_app_connections.py.
"""

from __future__ import annotations

import gc
import logging
import threading
import uuid
import weakref
from typing import Any

import pytest
from db import sql
from helpers import add_rows, dropped_mid_statement, wait_for
from psycopg2.extensions import make_dsn, parse_dsn

from pgsession_wsgi import ConfigurationError, PostgresStore
from pgsession_wsgi.purge import PurgeWorker


def purge_threads() -> list[threading.Thread]:
    """The purge workers running now, found by the name they show in a thread dump."""
    return [t for t in threading.enumerate() if t.name == "pgsession-purge"]


# -- the store's purge methods ------------------------------------------------------------------


def test_purge_expired_reports_progress_and_stops_when_told(make_store: Any) -> None:
    """store.xǁPostgresStoreǁpurge_expired__mutmut_1 to _5, _8, _13 to _20, _23 to _33,
    _count_expired__mutmut_1 to _8, _10 and _purge_batches__mutmut_25.

    ``on_batch(removed, expected)`` is called once before the first batch and after each one;
    returning False stops there, None or anything else goes on.
    """
    store = make_store()
    store.create_table()
    with pytest.raises(ConfigurationError) as error:
        store.purge_expired(batch_size=0)
    assert str(error.value) == "batch_size must be at least 1"

    expired = [(f"e{i}", None, "-1 hour") for i in range(5)]
    add_rows(store, expired)
    calls: list[tuple[int, int]] = []
    assert (
        store.purge_expired(
            batch_size=2, on_batch=lambda removed, expected: calls.append((removed, expected))
        )
        == 5
    )
    assert calls == [(0, 5), (2, 5), (4, 5), (5, 5)]

    calls.clear()
    assert (
        store.purge_expired(
            batch_size=2, on_batch=lambda removed, expected: calls.append((removed, expected))
        )
        == 0
    )
    assert calls == [(0, 0), (0, 0)]  # nothing expired: the expected count is 0, not None

    add_rows(store, expired)

    def stop_at_start(removed: int, expected: int) -> bool:
        calls.append((removed, expected))
        return False

    calls.clear()
    assert store.purge_expired(batch_size=2, on_batch=stop_at_start) == 0
    assert calls == [(0, 5)]
    assert store.stats()["expired"] == 5

    def stop_after_one_batch(removed: int, expected: int) -> bool:
        calls.append((removed, expected))
        return removed == 0

    calls.clear()
    assert store.purge_expired(batch_size=2, on_batch=stop_after_one_batch) == 2
    assert calls == [(0, 5), (2, 5)]
    assert store.stats()["expired"] == 3
    # A batch of one row at a time is allowed.
    assert store.purge_expired(batch_size=1) == 3


def test_purge_batch_by_batch_purges_everything_in_small_batches(make_store: Any) -> None:
    """store.xǁPostgresStoreǁpurge_batch_by_batch__mutmut_1 to _5, _26, _29, _30, _32."""
    store = make_store(statement_timeout=None)
    store.create_table()
    with pytest.raises(ConfigurationError) as error:
        store.purge_batch_by_batch(0)
    assert str(error.value) == "batch_size must be at least 1"
    add_rows(store, [(f"e{i}", None, "-1 hour") for i in range(5)])
    assert store.purge_batch_by_batch(2) == 5
    add_rows(store, [(f"f{i}", None, "-1 hour") for i in range(3)])
    assert store.purge_batch_by_batch(1) == 3
    add_rows(store, [("g", None, "-1 hour")])
    assert dropped_mid_statement(store, lambda: store.purge_batch_by_batch(2)) == 1


def test_a_purge_on_a_connection_of_its_own_counts_every_batch(make_store: Any) -> None:
    """store.xǁPostgresStoreǁ_purge_batches__mutmut_18 (the purge worker's path)."""
    store = make_store()
    store.create_table()
    add_rows(store, [(f"e{i}", None, "-1 hour") for i in range(5)])
    conn = store.connect_unpooled()
    try:
        assert store.purge_on(conn, 2) == 5
        assert store.purge_on(conn, 2) == 0
    finally:
        conn.close()


# -- the background worker ------------------------------------------------------------------------


def test_the_purge_thread_is_a_named_daemon_and_logs_what_it_removed(
    make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """purge.xǁPurgeWorkerǁ__init____mutmut_1 to _7 and run__mutmut_17 to _24.

    A daemon thread never keeps a process from exiting; its name shows in thread dumps.
    """
    before = set(purge_threads())
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        store = make_store(purge_interval=0.05)
        store.stats()  # the first statement starts the worker
        sql(
            store,
            f"INSERT INTO {store.qualified_name} (id, data, expires_at)"
            " SELECT sha256(g::text::bytea), '{}'::jsonb, now() - interval '1 hour'"
            " FROM generate_series(1, 3) g",
            None,
        )
        wait_for(lambda: any("purged" in r.getMessage() for r in caplog.records), "a purge log line")
    workers = [t for t in purge_threads() if t not in before]
    assert len(workers) == 1 and workers[0].daemon
    lines = [r.getMessage() for r in caplog.records if "purged" in r.getMessage()]
    assert lines[0] == f"purged 3 expired sessions from {store.qualified_name}"


def test_an_unstarted_purge_worker_stops_quietly(make_store: Any) -> None:
    """purge.xǁPurgeWorkerǁstop__mutmut_1: joining a thread never started would raise."""
    worker = PurgeWorker(make_store(), 60.0)
    worker.stop()
    assert not worker.is_alive()


def test_a_failing_purge_warns_once_keeps_running_and_warns_again_after_a_success(
    make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """purge.xǁPurgeWorkerǁrun__mutmut_2, _3, _25, _26, _29, _31 to _40.

    The table disappears: one warning, however many purges fail; the worker keeps trying and
    recovers when the table is back; a new outage warns again.
    """
    before = set(purge_threads())
    store = make_store(purge_interval=0.02)
    store.stats()  # the first statement starts the worker
    (worker,) = [t for t in purge_threads() if t not in before]

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    def purges() -> int:
        return sum("purged" in r.getMessage() for r in caplog.records)

    def add_expired(n: int) -> None:
        sql(
            store,
            f"INSERT INTO {store.qualified_name} (id, data, expires_at)"
            f" SELECT sha256((g::text || clock_timestamp()::text)::bytea), '{{}}'::jsonb,"
            " now() - interval '1 hour' FROM generate_series(1, %s) g",
            (n,),
        )

    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        sql(store, f"ALTER TABLE {store.qualified_name} RENAME TO gone", None)
        wait_for(lambda: len(warnings()) >= 1, "the first warning")
        first = warnings()[0]
        # Many more failing rounds (20 ms apart): still one warning.
        threading.Event().wait(0.5)
        assert warnings() == [first]
        assert first.startswith("purging expired sessions failed, will retry: ")
        assert "does not exist" in first  # the cause, in one line
        schema = store.qualified_name.split(".")[0]
        sql(store, f"ALTER TABLE {schema}.gone RENAME TO {store.qualified_name.split('.')[1]}", None)
        add_expired(2)
        wait_for(lambda: purges() >= 1, "a purge after the table came back")
        sql(store, f"ALTER TABLE {store.qualified_name} RENAME TO gone", None)
        wait_for(lambda: len(warnings()) >= 2, "a warning for the second outage")
    assert worker.is_alive()


def test_a_purge_that_cannot_connect_at_first_warns_keeps_running_and_recovers(
    pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """purge.xǁPurgeWorkerǁrun__mutmut_31: its first connection fails (the role may not log in
    any more); the worker warns, stays alive and purges once it can connect again."""
    role = f"purge_{uuid.uuid4().hex[:12]}"
    sql(pg_dsn, f'CREATE ROLE "{role}" SUPERUSER LOGIN', None)
    params = parse_dsn(pg_dsn)
    params["user"] = role
    store = PostgresStore(make_dsn(**params), schema=schema, purge_interval=0.2)
    before = set(purge_threads())
    try:
        with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
            store.stats()  # the pool's connection is made; the worker starts
            (worker,) = set(purge_threads()) - before  # this store's
            sql(pg_dsn, f'ALTER ROLE "{role}" NOLOGIN', None)
            wait_for(lambda: any(r.levelno == logging.WARNING for r in caplog.records), "the purge's warning")
            sql(pg_dsn, f'ALTER ROLE "{role}" LOGIN', None)
            sql(
                pg_dsn,
                f"INSERT INTO {store.qualified_name} (id, data, expires_at)"
                " VALUES (sha256('x'::bytea), '{}'::jsonb, now() - interval '1 hour')",
                None,
            )
            wait_for(lambda: any("purged 1" in r.getMessage() for r in caplog.records), "a purge")
        assert worker.is_alive()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and role in warnings[0]
    finally:
        store.close()
        sql(
            pg_dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            (role,),
        )
        sql(pg_dsn, f'DROP OWNED BY "{role}"', None)
        sql(pg_dsn, f'DROP ROLE IF EXISTS "{role}"', None)


def test_a_purge_worker_whose_store_is_gone_ends_without_an_error(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """purge.xǁPurgeWorkerǁrun__mutmut_43, _44: it never connected, so it has nothing to close."""
    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    store = PostgresStore(pg_dsn, schema=schema, purge_interval=None)  # not the fixture's: none keeps it
    worker = PurgeWorker(store, 0.01)
    gone = weakref.ref(store)
    del store  # a worker of a store nobody holds any more
    gc.collect()
    assert gone() is None
    worker.start()
    worker.join(timeout=10)
    gc.collect()
    assert not worker.is_alive()
    assert failures == []
