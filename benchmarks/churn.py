"""Rolling updates under churn: table size and update throughput by fillfactor and autovacuum.

    python benchmarks/churn.py [--sessions 100000] [--updates 1000000] [--threads 4]
                               [--configs ff100,ff90,ff70,ff90-av] [--chunks 10] [--dsn URI]

Each configuration gets a session table of its own (made by ``PostgresStore.create_table()``,
then ``ALTER TABLE ... SET (...)``) holding ``--sessions`` sessions of a logged-in user. Then
``--updates`` writes per table, each ``store.write`` of one changed key to a random session
(the store's own per-key merge; a touch moves the indexed ``expires_at`` whenever a session's
touch is due, by the default 60 s touch interval), from ``--threads`` threads. The tables take
their updates in interleaved chunks (``--chunks``), so a slow spell of a shared machine hits
every configuration alike. Reported per table: updates per second (all chunks, and the last
chunk against the first), the share of HOT updates (no index entry written), dead rows, the
autovacuum runs, and the size of the heap and indexes after the updates, before any manual
VACUUM: what the table looks like in production.

Configurations: ``ffNN`` is ``fillfactor = NN``; a ``-av`` suffix adds autovacuum settings for
the table (``autovacuum_vacuum_scale_factor = 0.02``, ``autovacuum_vacuum_cost_delay = 0``,
``autovacuum_vacuum_insert_scale_factor = 0.02``), so that it runs after 2 % of the rows
changed instead of 20 %, at full speed.

Without ``--dsn`` it starts a private embedded PostgreSQL (removed at the end); with ``--dsn`` it
works in a schema of its own, dropped at the end. Writes run with ``synchronous_commit = off``: the
point is the table, not the disk's flush latency.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg2

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from scale import admin_connect, format_table, query, signals_ignored  # noqa: E402

from pgsession_wsgi import PostgresStore  # noqa: E402
from pgsession_wsgi.defaults import DEFAULT_MAX_SIZE  # noqa: E402
from pgsession_wsgi.embedded import start_embedded  # noqa: E402

IDLE = timedelta(days=31)
TOUCH = timedelta(seconds=60)
FILL_SQL = """
INSERT INTO {table} (id, data, user_id, expires_at)
SELECT sha256(convert_to('s-' || k, 'UTF8')),
       jsonb_build_object('_user_id', (k %% 50000)::text, 'csrf', md5(k::text), 'n', 0,
                          '_fresh', true, 'cart', jsonb_build_array(k, k + 1, k + 2)),
       (k %% 50000)::text, now() + interval '31 days'
FROM generate_series(1, %(n)s) AS k
"""
AUTOVACUUM = {
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_vacuum_insert_scale_factor": "0.02",
    "autovacuum_vacuum_cost_delay": "0",
}


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: unwind so that every cleanup runs."""


@dataclass
class Config:
    name: str
    fillfactor: int
    autovacuum: bool

    @classmethod
    def parse(cls, text: str) -> Config:
        head, _, tail = text.partition("-")
        if not head.startswith("ff") or tail not in ("", "av"):
            raise argparse.ArgumentTypeError(f"not a configuration: {text!r} (ffNN or ffNN-av)")
        fillfactor = int(head[2:])
        if not 10 <= fillfactor <= 100:
            raise argparse.ArgumentTypeError("fillfactor must be between 10 and 100")
        return cls(text, fillfactor, tail == "av")

    def storage(self) -> str:
        options = {"fillfactor": str(self.fillfactor), **(AUTOVACUUM if self.autovacuum else {})}
        return ", ".join(f"{k} = {v}" for k, v in options.items())


@dataclass
class TableResult:
    config: Config
    seconds: float = 0.0
    updates: int = 0
    chunk_rates: list[float] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def row(self) -> list[str]:
        rate = self.updates / self.seconds if self.seconds else 0.0
        first, last = (self.chunk_rates[0], self.chunk_rates[-1]) if self.chunk_rates else (0.0, 0.0)
        upd = self.stats.get("n_tup_upd") or 0
        hot = self.stats.get("n_tup_hot_upd") or 0
        return [
            self.config.name,
            str(self.config.fillfactor),
            "tuned" if self.config.autovacuum else "default",
            f"{rate:,.0f}",
            f"{first:,.0f} / {last:,.0f}",
            f"{100 * hot / upd:.1f} %" if upd else "-",
            f"{self.stats.get('n_dead_tup', 0):,}",
            str(self.stats.get("autovacuum_count", 0)),
            f"{self.sizes.get('heap', 0) / 2**20:,.1f}",
            f"{self.sizes.get('indexes', 0) / 2**20:,.1f}",
            f"{self.sizes.get('total', 0) / 2**20:,.1f}",
        ]


def _stats(dsn: str, qualified: str) -> dict[str, Any]:
    rows = query(
        dsn,
        "SELECT n_tup_upd, n_tup_hot_upd, n_dead_tup, n_live_tup, autovacuum_count, vacuum_count"
        " FROM pg_stat_user_tables WHERE relid = %s::regclass",
        (qualified,),
    )
    keys = ("n_tup_upd", "n_tup_hot_upd", "n_dead_tup", "n_live_tup", "autovacuum_count", "vacuum_count")
    return dict(zip(keys, rows[0])) if rows else {}


def _sizes(dsn: str, qualified: str) -> dict[str, int]:
    heap, indexes, total = query(
        dsn,
        "SELECT pg_relation_size(%s::regclass), pg_indexes_size(%s::regclass),"
        " pg_total_relation_size(%s::regclass)",
        (qualified, qualified, qualified),
    )[0]
    return {"heap": int(heap), "indexes": int(indexes), "total": int(total)}


def _updates(store: PostgresStore, sessions: int, count: int, threads: int, seed: int) -> float:
    """``count`` store.write calls on random sessions from ``threads`` threads; seconds taken."""
    import hashlib

    ids = [hashlib.sha256(f"s-{k}".encode()).digest() for k in range(1, sessions + 1)]
    errors: list[BaseException] = []

    def work(n: int, part: int) -> None:
        rng = random.Random(seed * 1000 + n)
        try:
            for i in range(part):
                store.write(
                    ids[rng.randrange(sessions)],
                    json.dumps({"n": i}),
                    [],
                    replace=False,
                    new_hash=None,
                    idle=IDLE,
                    absolute=None,
                    touch_interval=TOUCH,
                    max_size=DEFAULT_MAX_SIZE,  # as the middleware sends it
                )
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    parts = [count // threads + (1 if n < count % threads else 0) for n in range(threads)]
    workers = [threading.Thread(target=work, args=(n, part)) for n, part in enumerate(parts)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise RuntimeError(f"an update failed: {errors[0]!r}")
    return time.perf_counter() - start


@contextlib.contextmanager
def database(dsn: str | None) -> Iterator[tuple[str, str]]:
    if dsn is None:
        print("starting embedded PostgreSQL ...", flush=True)
        server = start_embedded()
        try:
            yield server.dsn, "churn"
        finally:
            with signals_ignored():
                server.close()
        return
    schema = f"pgsession_churn_{os.getpid()}"
    try:
        yield dsn, schema
    finally:
        with signals_ignored():
            query(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def run(ns: argparse.Namespace) -> list[TableResult]:
    results = [TableResult(config) for config in ns.configs]
    with database(ns.dsn) as (dsn, schema):
        stores: list[PostgresStore] = []
        try:
            for result in results:
                table = f"churn_{result.config.name.replace('-', '_')}"
                store = PostgresStore(
                    dsn,
                    table,
                    schema,
                    purge_interval=None,
                    statement_timeout=None,
                    synchronous_commit=False,
                    max_connections=ns.threads,
                )
                stores.append(store)
                store.create_table()
                qualified = store.qualified_name
                with contextlib.closing(admin_connect(dsn)) as conn, conn.cursor() as cur:
                    cur.execute(f"ALTER TABLE {qualified} SET ({result.config.storage()})")
                    cur.execute("SET synchronous_commit = off")
                    cur.execute(FILL_SQL.format(table=qualified), {"n": ns.sessions})
                    cur.execute(f"VACUUM (ANALYZE) {qualified}")
                print(f"{result.config.name}: {ns.sessions:,} sessions in {qualified}", flush=True)
            per_chunk = ns.updates // ns.chunks
            for chunk in range(ns.chunks):
                order = list(zip(results, stores))
                if chunk % 2:
                    order.reverse()  # ABBA: no table always goes first
                for result, store in order:
                    seconds = _updates(store, ns.sessions, per_chunk, ns.threads, seed=chunk)
                    result.seconds += seconds
                    result.updates += per_chunk
                    result.chunk_rates.append(per_chunk / seconds)
                done = (chunk + 1) * per_chunk
                rates = ", ".join(f"{r.config.name} {r.chunk_rates[-1]:,.0f}/s" for r in results)
                print(f"  {done:,} updates per table: {rates}", flush=True)
            time.sleep(1.0)  # the statistics collector catches up
            for result, store in zip(results, stores):
                result.stats = _stats(dsn, store.qualified_name)
                result.sizes = _sizes(dsn, store.qualified_name)
        finally:
            with signals_ignored():
                for store in stores:
                    store.close()
    return results


def print_results(results: Sequence[TableResult], ns: argparse.Namespace) -> None:
    print()
    print(
        f"{ns.updates:,} store.write updates per table on {ns.sessions:,} sessions, {ns.threads} threads,"
        f" {ns.chunks} interleaved chunks; {os.cpu_count()} CPUs"
    )
    headers = [
        "config",
        "fillfactor",
        "autovacuum",
        "updates/s",
        "first / last chunk",
        "HOT",
        "dead rows",
        "autovacuums",
        "heap MiB",
        "indexes MiB",
        "total MiB",
    ]
    print(format_table(headers, [r.row() for r in results], "lrlrrrrrrrr"))
    print("autovacuum tuned: " + ", ".join(f"{k} = {v}" for k, v in AUTOVACUUM.items()))


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--updates", type=int, default=1_000_000, help="per table")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument(
        "--configs",
        type=lambda text: [Config.parse(part.strip()) for part in text.split(",") if part.strip()],
        default=[Config.parse(c) for c in ("ff100", "ff90", "ff70", "ff90-av")],
    )
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--json", type=Path, default=None)
    ns = parser.parse_args(argv)
    if ns.sessions < 1 or ns.updates < ns.chunks or ns.threads < 1:
        parser.error("--sessions and --threads must be positive, --updates at least --chunks")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)
    try:
        results = run(ns)
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; everything started here has been stopped", file=sys.stderr)
        return 130
    except psycopg2.Error as exc:
        print(f"database error: {exc}", file=sys.stderr)
        return 1
    print_results(results, ns)
    if ns.json is not None:
        ns.json.write_text(
            json.dumps(
                [
                    {
                        "config": r.config.name,
                        "options": r.config.storage(),
                        "updates_per_second": r.updates / r.seconds if r.seconds else None,
                        "chunk_rates": r.chunk_rates,
                        "stats": r.stats,
                        "sizes": r.sizes,
                    }
                    for r in results
                ],
                indent=2,
                default=str,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
