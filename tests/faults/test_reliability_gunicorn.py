"""A real gunicorn with 4 workers on 127.0.0.1: sessions across workers, one connection per
process, one purge at a time, and table creation by workers that all start at once."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from apps.support import APPS_DIR, gunicorn, http_get
from db import sql

from pgsession_wsgi import PostgresStore

pytestmark = pytest.mark.slow

WORKERS = 4


def app_env(dsn: str, schema: str, **extra: str) -> dict[str, str]:
    return {"PGSESSION_APP_DSN": dsn, "PGSESSION_APP_SCHEMA": schema, **extra}


def test_preloaded_workers_share_sessions_but_never_a_connection(
    pg_dsn: str, schema: str, tmp_path: Path
) -> None:
    """--preload: the master opens a connection before forking; no worker may use it."""
    env = app_env(pg_dsn, schema, PGSESSION_APP_PROBE_AT_IMPORT="1")
    args = ("--preload", "--workers", str(WORKERS), "-c", str(APPS_DIR / "gunicorn_conf.py"))
    with gunicorn("counter_app:app", env, tmp_path, *args) as server:
        server.wait_ready()
        served_by: set[int] = set()
        counts: dict[int, list[int]] = defaultdict(list)
        backends: dict[int, set[int]] = defaultdict(set)  # backend pid -> worker pids
        import_backends: set[Any] = set()
        failures: list[str] = []

        def client(n: int) -> None:
            cookie = None
            for _ in range(15):
                answer = http_get(server.port, "/inc", cookie)
                if answer.status != 200:
                    failures.append(f"/inc: {answer.status} {answer.body!r}")
                    return
                cookie = answer.cookie() or cookie
                body = answer.json()
                served_by.add(body["pid"])
                counts[n].append(body["n"])
                probe = http_get(server.port, "/backend").json()
                backends[probe["backend"]].add(probe["pid"])
                import_backends.add(probe["import_backend"])

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert server.alive, server.log()
    assert failures == []
    assert all(counts[n] == list(range(1, 16)) for n in range(8)), dict(counts)
    assert len(served_by) >= 2, "all requests went to one worker: nothing crossed workers"
    (master_backend,) = import_backends
    assert isinstance(master_backend, int)
    assert master_backend not in backends, "a worker used the connection the master opened"
    shared = {backend: pids for backend, pids in backends.items() if len(pids) > 1}
    assert shared == {}, f"backends used by several workers: {shared}"


PURGE_LOG = """
CREATE TABLE {s}.purge_log (backend int, txid bigint, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION {s}.log_purge() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(0.003);  -- make each batch last long enough to overlap another one
    INSERT INTO {s}.purge_log (backend, txid) VALUES (pg_backend_pid(), txid_current());
    RETURN OLD;
END $$;
CREATE TRIGGER log_purge BEFORE DELETE ON {s}.pgsession
    FOR EACH ROW EXECUTE FUNCTION {s}.log_purge();
"""


def test_the_purge_runs_in_one_process_at_a_time(
    pg_dsn: str, schema: str, tmp_path: Path, make_store: Callable[..., PostgresStore]
) -> None:
    """Every worker has a purge thread; a trigger logs each deleted row with its backend and
    transaction; the batches of different transactions must never overlap in time."""
    make_store().create_table()
    sql(pg_dsn, PURGE_LOG.format(s=f'"{schema}"'))
    insert_expired = (
        f'INSERT INTO "{schema}".pgsession (id, data, expires_at)'
        " SELECT sha256(gen_random_uuid()::text::bytea), '{}', now() - interval '1 hour'"
        " FROM generate_series(1, %s)"
    )
    env = app_env(pg_dsn, schema, PGSESSION_APP_PURGE_INTERVAL="0.05")
    args = ("--preload", "--workers", str(WORKERS), "-c", str(APPS_DIR / "gunicorn_conf.py"))
    with gunicorn("counter_app:app", env, tmp_path, *args) as server:
        server.wait_ready()
        for _ in range(40):  # keep expired rows coming for about two seconds
            sql(pg_dsn, insert_expired, (15,))
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while sql(pg_dsn, f'SELECT count(*) FROM "{schema}".pgsession')[0][0]:
            assert time.monotonic() < deadline, "the purge threads left expired rows behind"
            time.sleep(0.1)
        assert server.alive, server.log()
    batches = sql(
        pg_dsn,
        f"SELECT txid, min(backend), max(backend), min(at), max(at), count(*)"
        f' FROM "{schema}".purge_log GROUP BY txid ORDER BY min(at)',
    )
    assert sum(rows for *_, rows in batches) == 40 * 15
    assert all(first == last for _, first, last, *_ in batches)
    purgers = {backend for _, backend, *_ in batches}
    assert len(purgers) >= 2, "only one process ever purged: nothing to serialise"
    for earlier, later in zip(batches, batches[1:]):
        assert earlier[4] < later[3], f"purge batches overlapped: {earlier} and {later}"


def test_workers_starting_together_on_a_fresh_schema_all_create_the_table(
    pg_dsn: str, schema: str, tmp_path: Path
) -> None:
    """4 workers without --preload meet at a barrier, then all create schema and table at the
    same instant; repeated on fresh schemas. Unserialised CREATE ... IF NOT EXISTS fails here
    with a unique violation on the catalog."""
    for attempt in range(4):
        fresh = f"{schema}_r{attempt}"  # does not exist yet: the workers create it
        barrier = tmp_path / f"barrier-{attempt}"
        barrier.mkdir()
        env = app_env(
            pg_dsn, fresh, PGSESSION_APP_BARRIER_DIR=str(barrier), PGSESSION_APP_BARRIER_COUNT=str(WORKERS)
        )
        try:
            with gunicorn("counter_app:app", env, tmp_path, "--workers", str(WORKERS)) as server:
                wait_for_files(barrier, "created-*", WORKERS, server)
                failed = [p.read_text() for p in barrier.glob("failed-*")]
                assert failed == [], failed[0]
                server.wait_ready()
                answer = http_get(server.port, "/inc")
                assert (answer.status, answer.json()["n"]) == (200, 1)
                assert server.alive, server.log()
            tables = sql(
                pg_dsn,
                "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename = 'pgsession'",
                (fresh,),
            )
            assert tables == [(1,)]
        finally:
            sql(pg_dsn, f'DROP SCHEMA IF EXISTS "{fresh}" CASCADE')


def wait_for_files(folder: Path, pattern: str, count: int, server: Any) -> None:
    deadline = time.monotonic() + 30
    while len(list(folder.glob(pattern))) < count:
        if list(folder.glob("failed-*")):
            return
        assert server.alive, f"gunicorn exited:\n{server.log()}"
        assert time.monotonic() < deadline, f"workers never finished:\n{server.log()}"
        time.sleep(0.02)


def test_counter_app_reports_its_worker(pg_dsn: str, schema: str, tmp_path: Path) -> None:
    """The probe the tests above rely on: /backend names this worker and a live backend."""
    with gunicorn("counter_app:app", app_env(pg_dsn, schema), tmp_path) as server:
        server.wait_ready()
        body = json.loads(http_get(server.port, "/backend").body)
        worker_pids = {int(p) for p in os.listdir("/proc") if p.isdigit()}
        assert body["pid"] in worker_pids
        assert sql(pg_dsn, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (body["backend"],)) == [
            (1,)
        ]
