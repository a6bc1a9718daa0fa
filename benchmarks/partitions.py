"""A plain session table against a hash-partitioned one (``partitions=N``) at millions of rows.

    python benchmarks/partitions.py [--rows 10000000] [--partitions 16] [--statements 5000] [--dsn URI]

On a private embedded PostgreSQL (started and removed here, its data on disk), or in a schema of
its own on --dsn (dropped at the end), two session tables are made by PostgresStore.create_table(),
one plain and one with ``partitions=N``, and each is filled with --rows live and as many expired
sessions (scale.py's rows: a small logged-in session, live and expired rows sharing pages). Then:

1. ``store.load`` and ``store.write`` (the common write: one key changed) on random live ids, one
   at a time, the two tables in alternating rounds: p50 and p99 in microseconds;
2. ``store.purge_expired()`` (batches of 1000) on each table: seconds and rows per second (the
   partitioned one purges one partition at a time);
3. the size on disk of each table's heap and indexes (over every partition), after VACUUM.

Timings vary with what else the machine runs; the two tables are measured alike, alternating.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import (  # noqa: E402
    TOUCH,
    Interrupted,
    Latency,
    _raise_interrupted,
    admin_connect,
    fill,
    format_table,
    live_id,
    query,
    tune_embedded,
)

from pgsession_wsgi import PostgresStore  # noqa: E402
from pgsession_wsgi.embedded import start_embedded  # noqa: E402

ROUNDS = 5
IDLE = timedelta(days=1)


def tree_sizes(dsn: str, table: str) -> dict[str, int]:
    """Heap, indexes and total bytes of ``table`` and of its partitions, if it has any."""
    members = "(SELECT relid FROM pg_partition_tree(%s::regclass) UNION SELECT %s::regclass)"
    heap, indexes, total = query(
        dsn,
        f"SELECT sum(pg_table_size(r)), sum(pg_indexes_size(r)), sum(pg_total_relation_size(r))"
        f" FROM {members} AS m (r)",
        (table, table),
    )[0]
    return {"heap": int(heap), "indexes": int(indexes), "total": int(total)}


def drop_indexes(dsn: str, table: str) -> list[str]:
    """Drop ``table``'s indexes, its primary key too; the statements that make them again.

    Filling tens of millions of rows is several times faster without them; indexes built after
    are compact (as after a REINDEX), where the store's own inserts leave them partly empty.
    """
    key = query(
        dsn,
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'p'",
        (table,),
    )
    others = query(
        dsn,
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
        "WHERE indrelid = %s::regclass AND NOT indisprimary",
        (table,),
    )
    for name, _ in others:
        query(dsn, f"DROP INDEX {name}")
    for name, _ in key:
        query(dsn, f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    # A partitioned table's index is shown "ON ONLY" the parent; built again over every partition.
    return [f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {text}' for name, text in key] + [
        text.replace(" ON ONLY ", " ON ", 1) for _, text in others
    ]


def build_indexes(dsn: str, statements: list[str]) -> None:
    with contextlib.closing(admin_connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '1GB'")
        for statement in statements:
            cur.execute(statement)


def time_statements(
    store: PostgresStore, live: int, count: int, seed: int
) -> tuple[list[float], list[float]]:
    """``count`` loads and as many writes on random live ids: their latencies in microseconds."""
    rng = random.Random(seed)
    ids = [live_id(rng.randint(1, live)) for _ in range(count)]
    for id_hash in ids[: count // 10]:  # warm up
        store.load(id_hash, TOUCH)
    clock = time.perf_counter_ns
    loads, writes = [], []
    for id_hash in ids:
        start = clock()
        store.load(id_hash, TOUCH)
        loads.append((clock() - start) / 1000)
        start = clock()
        store.write(
            id_hash,
            '{"n": 6}',
            [],
            replace=False,
            new_hash=None,
            idle=IDLE,
            absolute=None,
            touch_interval=TOUCH,
        )
        writes.append((clock() - start) / 1000)
    return loads, writes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, default=10_000_000, help="live sessions per table (as many expired)"
    )
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--statements", type=int, default=5000, help="timed loads and writes per table")
    parser.add_argument("--dsn", default=None, help="a PostgreSQL to use instead of an embedded one")
    parser.add_argument(
        "--index-after-fill",
        action="store_true",
        help="drop the table's indexes for the fill and build them after (faster; compact indexes)",
    )
    opts = parser.parse_args(argv)
    # Also SIGINT: a job started in the background of a script ignores it otherwise.
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _raise_interrupted)
    try:
        return _run(opts)
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; everything started here has been stopped", file=sys.stderr)
        return 130


def _run(opts: argparse.Namespace) -> int:
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        if opts.dsn is None:
            workdir = Path(stack.enter_context(_tempdir()))
            server = stack.enter_context(start_embedded(workdir / "data"))
            tune_embedded(server)
            dsn, schema = server.dsn, "bench"
        else:
            dsn, schema = opts.dsn, f"bench_partitions_{random.randrange(10**8)}"
            stack.callback(query, dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        version = query(dsn, "SHOW server_version")[0][0]
        tables = {"plain": None, f"{opts.partitions} partitions": opts.partitions}
        stores: dict[str, PostgresStore] = {}
        for label, partitions in tables.items():
            name = "plain" if partitions is None else "partitioned"
            store = PostgresStore(
                dsn,
                name,
                schema,
                purge_interval=None,
                partitions=partitions,
                max_connections=2,
                statement_timeout=None,
            )
            stack.callback(store.close)
            store.create_table()
            qualified = f'"{schema}"."{name}"'
            started = time.perf_counter()
            rebuild = drop_indexes(dsn, qualified) if opts.index_after_fill else []
            rows = fill(dsn, qualified, opts.rows, stop)
            filled = time.perf_counter()
            build_indexes(dsn, rebuild)
            print(
                f"{label}: {rows:,} rows in {filled - started:.0f} s"
                + (f", indexes built in {time.perf_counter() - filled:.0f} s" if rebuild else ""),
                flush=True,
            )
            with contextlib.closing(admin_connect(dsn)) as conn, conn.cursor() as cur:
                cur.execute("SET maintenance_work_mem = '256MB'")
                cur.execute(f'VACUUM (ANALYZE) "{schema}"."{name}"')
            stores[label] = store

        latencies = {label: ([], []) for label in stores}
        per_round = opts.statements // ROUNDS
        for round_no in range(ROUNDS):
            for index, (label, store) in enumerate(stores.items()):
                loads, writes = time_statements(store, opts.rows, per_round, seed=round_no * 10 + index)
                latencies[label][0].extend(loads)
                latencies[label][1].extend(writes)

        # Each result as soon as it is measured: at tens of millions of rows the purges take an
        # hour or more, and an interrupted run still tells what it measured before them.
        print(f"\nPostgreSQL {version}; {opts.rows:,} live + {opts.rows:,} expired sessions per table")
        rows = []
        for label in stores:
            for kind, values in zip(("load", "write"), latencies[label]):
                rows.append(Latency(f"{label} {kind}", values).row())
        headers = ["statement", "count", "p50 us", "p99 us", "mean", "max", "misses"]
        print(format_table(headers, rows, "lrrrrrr"), flush=True)
        sizes = {label: tree_sizes(dsn, f'"{schema}"."{s.table}"') for label, s in stores.items()}
        for label, size in sizes.items():
            mib = {part: f"{value / 2**20:,.0f}" for part, value in size.items()}
            print(f"{label}: heap {mib['heap']} MiB, indexes {mib['indexes']} MiB", flush=True)
        purges = {}
        for label, store in stores.items():
            started = time.perf_counter()
            removed = store.purge_expired(1000)
            purges[label] = (removed, time.perf_counter() - started)
            print(f"{label}: purged {removed:,} in {purges[label][1]:.1f} s", flush=True)

    print()
    rows = []
    for label in stores:
        removed, seconds = purges[label]
        size = sizes[label]
        rows.append(
            [
                label,
                f"{removed:,}",
                f"{seconds:.1f}",
                f"{removed / seconds:,.0f}",
                f"{size['heap'] / 2**20:,.0f}",
                f"{size['indexes'] / 2**20:,.0f}",
                f"{size['total'] / 2**20:,.0f}",
            ]
        )
    headers = ["table", "purged", "purge s", "rows/s", "heap MiB", "indexes MiB", "total MiB"]
    print(format_table(headers, rows, "lrrrrrr"))
    return 0


@contextlib.contextmanager
def _tempdir() -> object:
    import shutil
    import tempfile

    # On disk (millions of rows do not belong in /dev/shm), passable by the server's OS user.
    path = tempfile.mkdtemp(prefix="pgsession-partitions-", dir="/var/tmp")
    Path(path).chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
