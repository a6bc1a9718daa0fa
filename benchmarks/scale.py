"""How pgsession-wsgi behaves with millions of sessions: lookups, purging, disk space.

    python benchmarks/scale.py [--rows 1000,1000000] [--dsn URI] [--lookups 5000] [--before 3]
    python benchmarks/scale.py --rows 1000,1000000,10000000     # the 10M sweep (about 20 minutes)

On a private embedded PostgreSQL (started and removed here), or in a schema of its own on --dsn
(dropped at the end), one session table per size is created by PostgresStore.create_table(), so
it has the real layout and indexes, then:

1. fills each table with N live and N expired sessions for each N of --rows (INSERT ... SELECT
   generate_series on two connections), then times ``store.load`` on random live ids in every
   table, alternating, with the EXPLAIN of the load query;
2. runs ``store.purge_expired()`` (batches of 1000) on the largest table while a reader thread
   keeps calling ``store.load`` on it, and compares the reader's latency before and during the
   purge;
3. reports the largest table's and indexes' sizes per live session after VACUUM and after
   VACUUM FULL.

Everything started here is stopped on exit, on errors and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from types import FrameType
from typing import Any

import psycopg2
import psycopg2.extensions

from pgsession_wsgi import PostgresStore
from pgsession_wsgi.embedded import EmbeddedPostgres, start_embedded

TABLE = "pgsession"
EMBEDDED_SCHEMA = "scale"
MIN_ROWS = 1000  # the smallest table --rows accepts
LOOKUP_ROUNDS = 5
CHUNK = 50_000  # live ids per INSERT statement (twice as many rows): keeps Ctrl-C responsive
TOUCH = timedelta(minutes=5)  # only decides the load's touch_due flag; irrelevant to its cost
USERS = 100_000  # distinct _user_id values, so the user_id index looks like a real one

# One statement per chunk of k: rows alternate live/expired, so both kinds share heap pages as
# they do in a real table, and the purge leaves holes everywhere rather than a truncatable tail.
# The data is a small logged-in session; user_id is filled as PgSession(user_key="_user_id") does.
FILL_SQL = """
INSERT INTO {table} (id, data, user_id, created_at, accessed_at, expires_at)
SELECT sha256(convert_to(v.name, 'UTF8')),
       jsonb_build_object('_user_id', (k %% {users})::text, 'csrf', md5(v.name), 'n', 5),
       (k %% {users})::text, v.expires_at - interval '1 day', v.expires_at - interval '1 hour', v.expires_at
FROM generate_series(%(lo)s, %(hi)s) AS k,
     LATERAL (VALUES ('live-' || k, now() + interval '1 hour' + random() * interval '23 hours'),
                     ('expired-' || k, now() - interval '1 second' - random() * interval '7 days'))
         AS v (name, expires_at)
"""


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: unwind so that every cleanup runs."""


def live_id(k: int) -> bytes:
    """The primary key FILL_SQL gives live session ``k`` (the SHA-256 the store keys rows by)."""
    return hashlib.sha256(f"live-{k}".encode()).digest()


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, round(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Latency:
    """Lookup latencies in microseconds, and how many lookups found no row."""

    label: str
    micros: list[float]
    misses: int = 0

    def row(self) -> list[str]:
        values = sorted(self.micros)
        mean = sum(values) / len(values) if values else float("nan")
        return [
            self.label,
            f"{len(values):,}",
            f"{percentile(values, 50):.0f}",
            f"{percentile(values, 99):.0f}",
            f"{mean:.0f}",
            f"{values[-1] if values else float('nan'):.0f}",
            str(self.misses),
        ]


@dataclass
class Results:
    server: str = ""
    live_rows: int = 0
    fill_seconds: float = 0.0
    fill_rows: int = 0
    lookups: list[Latency] = field(default_factory=list)
    plans: list[tuple[str, str]] = field(default_factory=list)
    purged: int = 0
    purge_seconds: float = 0.0
    reader: list[Latency] = field(default_factory=list)
    largest: int = 0  # live rows of the largest table (purged and measured)
    full_total: int = 0  # the largest table's pg_total_relation_size before the purge
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> relation -> bytes


# --------------------------------------------------------------------------- database


def admin_connect(dsn: str) -> psycopg2.extensions.connection:
    """A plain autocommit connection for setup and measurements, outside the store's pool."""
    conn = psycopg2.connect(dsn, application_name="pgsession-scale")
    conn.autocommit = True
    return conn


def query(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with contextlib.closing(admin_connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []


def tune_embedded(server: EmbeddedPostgres) -> None:
    """Fewer checkpoints during the bulk fill; the throwaway server already runs without fsync."""
    with contextlib.closing(admin_connect(server.dsn)) as conn, conn.cursor() as cur:
        cur.execute("ALTER SYSTEM SET max_wal_size = '4GB'")
        cur.execute("SELECT pg_reload_conf()")


def fill(dsn: str, table: str, live: int, stop: threading.Event) -> int:
    """Insert ``live`` live and as many expired sessions, in chunks on two connections."""

    def chunk(lo: int, hi: int) -> int:
        if stop.is_set():
            return 0
        with contextlib.closing(admin_connect(dsn)) as conn, conn.cursor() as cur:
            # Losing the last commits on a crash does not matter for generated rows.
            cur.execute("SET synchronous_commit = off")
            cur.execute(FILL_SQL.format(table=table, users=USERS), {"lo": lo, "hi": hi})
            return int(cur.rowcount)

    bounds = [(lo, min(lo + CHUNK - 1, live)) for lo in range(1, live + 1, CHUNK)]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="fill") as pool:
        futures = [pool.submit(chunk, lo, hi) for lo, hi in bounds]
        try:
            return sum(f.result() for f in futures)
        except BaseException:
            stop.set()  # queued chunks return at once; running ones finish their statement
            raise


def vacuum(dsn: str, table: str, full: bool = False) -> None:
    """VACUUM (ANALYZE): what autovacuum does after a bulk change, done now so runs compare."""
    with contextlib.closing(admin_connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '256MB'")
        cur.execute(f"VACUUM ({'FULL, ' if full else ''}ANALYZE) {table}")


def relation_sizes(dsn: str, table: str) -> dict[str, int]:
    """Bytes of the heap, of each index, and pg_total_relation_size (adds TOAST, FSM, VM)."""
    sizes = {"heap": int(query(dsn, "SELECT pg_relation_size(%s::regclass)", (table,))[0][0])}
    for name, size in query(
        dsn,
        "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass ORDER BY c.relname",
        (table,),
    ):
        sizes[f"index {name}"] = int(size)
    sizes["total"] = int(query(dsn, "SELECT pg_total_relation_size(%s::regclass)", (table,))[0][0])
    return sizes


def explain_load(dsn: str, store: PostgresStore, id_hash: bytes) -> str:
    """EXPLAIN ANALYZE of the store's own load statement for one live id."""
    sql = store._sql.load  # the exact text load() sends
    with contextlib.closing(admin_connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, {"id": id_hash, "touch": TOUCH})
        return "\n".join(str(row[0]) for row in cur.fetchall())


# --------------------------------------------------------------------------- measurements


def time_lookups(store: PostgresStore, live: int, count: int, result: Latency, seed: int) -> None:
    """``count`` store.load calls on random live ids, one at a time, after a short warmup."""
    rng = random.Random(seed)
    ids = [live_id(rng.randint(1, live)) for _ in range(count + count // 10)]
    warmup, measured = ids[: count // 10], ids[count // 10 :]
    for id_hash in warmup:
        store.load(id_hash, TOUCH)
    clock = time.perf_counter_ns
    for id_hash in measured:
        start = clock()
        row = store.load(id_hash, TOUCH)
        result.micros.append((clock() - start) / 1000)
        if row is None:
            result.misses += 1


def compare_lookups(tables: Sequence[tuple[PostgresStore, int, str]], count: int) -> list[Latency]:
    """Time ``count`` lookups per (store, live rows, label), in alternating rounds.

    Alternating (small, big, small, big, ...) spreads drift in CPU clock and machine load over
    all tables, so what differs between them is the table size.
    """
    results = [Latency(label, []) for _, _, label in tables]
    for round_no in range(LOOKUP_ROUNDS):
        for i, (store, live, _) in enumerate(tables):
            per_round = count // LOOKUP_ROUNDS + (1 if round_no < count % LOOKUP_ROUNDS else 0)
            time_lookups(store, live, per_round, results[i], seed=round_no * 10 + i)
    return results


class Reader(threading.Thread):
    """Calls store.load on random live ids in a loop, recording when each call started."""

    def __init__(self, store: PostgresStore, live: int) -> None:
        super().__init__(name="scale-reader", daemon=True)
        self.store = store
        self.live = live
        self.samples: list[tuple[int, float, bool]] = []  # start ns, micros, found
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        clock = time.perf_counter_ns
        try:
            while not self.stopped.is_set():
                id_hash = live_id(rng.randint(1, self.live))
                start = clock()
                row = self.store.load(id_hash, TOUCH)
                self.samples.append((start, (clock() - start) / 1000, row is not None))
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def window(self, label: str, start: int, end: int) -> Latency:
        """The lookups that started and finished within [start, end] (perf_counter_ns)."""
        inside = [(us, found) for t, us, found in self.samples if t >= start and t + us * 1000 <= end]
        return Latency(label, [us for us, _ in inside], sum(1 for _, found in inside if not found))


def purge_with_reader(store: PostgresStore, live: int, before: float, results: Results) -> None:
    reader = Reader(store, live)
    reader.start()
    try:
        time.sleep(0.5)  # the reader's connection is open and warm before the baseline starts
        baseline_start = time.perf_counter_ns()
        time.sleep(before)
        purge_start = time.perf_counter_ns()
        results.purged = store.purge_expired(1000)
        purge_end = time.perf_counter_ns()
    finally:
        reader.stopped.set()
        reader.join(10)
    if reader.error is not None:
        raise RuntimeError(f"the reader thread failed: {reader.error!r}")
    results.purge_seconds = (purge_end - purge_start) / 1e9
    results.reader = [
        reader.window("before purge", baseline_start, purge_start),
        reader.window("during purge", purge_start, purge_end),
    ]


# --------------------------------------------------------------------------- output


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A plain text table; align has one letter per column, "l" or "r"."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def rows_label(live: int) -> str:
    """How a table of ``live`` live sessions (and as many expired) is named in the output."""
    return f"{live:,} live + {live:,} expired"


def print_summary(r: Results, lookups: int) -> None:
    print()
    print("=" * 78)
    print(f"SUMMARY  {r.server}; {os.cpu_count()} CPUs")
    print("=" * 78)
    rate = r.fill_rows / r.fill_seconds if r.fill_seconds else 0
    print(f"fill: {r.fill_rows:,} rows in {r.fill_seconds:.1f} s ({rate:,.0f} rows/s)")

    print(
        f"\nstore.load latency, {lookups:,} random live ids per table in {LOOKUP_ROUNDS} alternating"
        " rounds, one thread (microseconds)"
    )
    headers = ["table", "lookups", "p50", "p99", "mean", "max", "misses"]
    print(format_table(headers, [x.row() for x in r.lookups], "lrrrrrr"))

    print("\nload query plan:")
    for label, plan in r.plans:
        first = plan.splitlines()[0].split("  (")[0].strip() if plan else "?"
        print(f"  {label}: {first}")

    rate = r.purged / r.purge_seconds if r.purge_seconds else 0
    print(
        f"\npurge_expired(batch 1000): removed {r.purged:,} rows in {r.purge_seconds:.1f} s"
        f" ({rate:,.0f} rows/s)"
    )
    print("concurrent reader, store.load in a loop (microseconds):")
    print(format_table(["phase", *headers[1:]], [x.row() for x in r.reader], "lrrrrrr"))

    stages = list(r.sizes)
    if stages:
        print(f"\nsize on disk per live session ({r.live_rows:,} live sessions):")
        names = list(r.sizes[stages[0]])
        rows = []
        for name in names:
            row = [name]
            for stage in stages:
                size = r.sizes[stage].get(name, 0)
                row += [f"{size / 2**20:,.1f}", f"{size / max(r.live_rows, 1):.0f}"]
            rows.append(row)
        size_headers = ["relation"]
        for stage in stages:
            size_headers += [f"{stage} MiB", "B/live"]
        print(format_table(size_headers, rows, "l" + "r" * (len(size_headers) - 1)))
        if r.full_total and r.largest:
            print(
                f"before the purge: {r.full_total / 2**20:,.1f} MiB total for {2 * r.largest:,} rows"
                f" ({r.full_total / (2 * r.largest):.0f} B/row)"
            )


# --------------------------------------------------------------------------- main


@dataclass
class Options:
    rows: list[int]
    dsn: str | None
    lookups: int
    before: float


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--rows",
        type=lambda text: sorted({int(part) for part in text.split(",") if part.strip()}),
        default=[1_000, 1_000_000],
        help="comma-separated live sessions per table, each with as many expired ones (default 1000,1000000)",
    )
    parser.add_argument(
        "--dsn",
        default=None,
        help="use this PostgreSQL (in a schema of its own, dropped at the end) instead of an embedded one",
    )
    parser.add_argument(
        "--lookups", type=int, default=5000, help="timed lookups per table size (default 5000)"
    )
    parser.add_argument(
        "--before",
        type=float,
        default=3.0,
        help="seconds the reader runs alone before the purge starts (default 3)",
    )
    ns = parser.parse_args(argv)
    if not ns.rows or ns.rows[0] < MIN_ROWS:
        parser.error(f"--rows must be at least {MIN_ROWS}")
    if ns.lookups < 10 or ns.before <= 0:
        parser.error("--lookups must be at least 10 and --before positive")
    return Options(**vars(ns))


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Cleanup must not be cut short by a second Ctrl-C."""
    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def database(opts: Options) -> Iterator[tuple[str, str]]:
    """Yield (dsn, schema): an embedded server's, or --dsn with a fresh schema dropped afterwards."""
    if opts.dsn is None:
        print("starting embedded PostgreSQL ...", flush=True)
        server = start_embedded()
        try:
            tune_embedded(server)
            yield server.dsn, EMBEDDED_SCHEMA
        finally:
            with signals_ignored():
                server.close()
        return
    schema = f"pgsession_scale_{os.getpid()}"
    try:
        yield opts.dsn, schema
    finally:
        with signals_ignored():
            query(opts.dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def run(opts: Options, results: Results) -> None:
    with database(opts) as (dsn, schema):
        version = query(dsn, "SELECT current_setting('server_version'), current_setting('shared_buffers')")
        kind = "embedded" if opts.dsn is None else "--dsn"
        results.server = f"PostgreSQL {version[0][0]} ({kind}, shared_buffers {version[0][1]})"
        print(results.server, flush=True)
        stores: list[PostgresStore] = []
        stop = threading.Event()
        try:
            tables: list[tuple[PostgresStore, int, str]] = []
            for live in opts.rows:
                store = PostgresStore(
                    dsn, f"{TABLE}_{live}", schema, purge_interval=None, statement_timeout=None
                )
                stores.append(store)
                store.create_table()
                print(f"filling {rows_label(live)} sessions ...", flush=True)
                start = time.perf_counter()
                filled = fill(dsn, store.qualified_name, live, stop)
                seconds = time.perf_counter() - start
                results.fill_rows += filled
                results.fill_seconds += seconds
                print(f"  {filled:,} rows in {seconds:.1f} s; VACUUM ANALYZE ...", flush=True)
                vacuum(dsn, store.qualified_name)
                tables.append((store, live, rows_label(live)))
            largest, live, label = tables[-1]
            table = largest.qualified_name
            results.largest = live
            results.full_total = relation_sizes(dsn, table)["total"]

            print(f"{opts.lookups:,} lookups on each of {len(tables)} tables ...", flush=True)
            results.lookups = compare_lookups(tables, opts.lookups)
            for store, rows, name in tables:
                results.plans.append((name, explain_load(dsn, store, live_id(max(1, rows // 2)))))
            print(
                f"\nEXPLAIN (ANALYZE, BUFFERS) of store.load, {label}:\n{results.plans[-1][1]}\n", flush=True
            )

            print(
                f"purge_expired() on {label} with a concurrent reader ({opts.before:g} s alone first) ...",
                flush=True,
            )
            purge_with_reader(largest, live, opts.before, results)
            print(f"  removed {results.purged:,} in {results.purge_seconds:.1f} s", flush=True)

            results.live_rows = int(query(dsn, f"SELECT count(*) FROM {table}")[0][0])
            print("VACUUM, then VACUUM FULL ...", flush=True)
            vacuum(dsn, table)
            results.sizes["after purge+VACUUM"] = relation_sizes(dsn, table)
            vacuum(dsn, table, full=True)
            results.sizes["after VACUUM FULL"] = relation_sizes(dsn, table)
        finally:
            stop.set()
            with signals_ignored():
                for store in stores:
                    store.close()


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)
    results = Results()
    try:
        run(opts, results)
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; everything started here has been stopped", file=sys.stderr)
        return 130
    print_summary(results, opts.lookups)
    return 0


if __name__ == "__main__":
    sys.exit(main())
