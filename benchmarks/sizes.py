"""How the cost of a request grows with the session's size: throughput, and bytes sent per write.

    python benchmarks/sizes.py [--sizes 100,1000,10000,100000] [--rounds 3] [--duration 5]
                               [--variants pgsession-wsgi,floor,flask-session-redis]
                               [--chart benchmarks/sizes.png] [--json sizes.json]

Every session holds a user id, a counter and a value of N random bytes (``/login?size=N``); /read
reads the user id, /write increments the counter. For each size and variant it serves the Flask
app under gunicorn and drives /read and /write with wrk, as run.py does (the same embedded
PostgreSQL, Redis and helpers; the sizes and variants interleave within each round, the median
run is reported). Then, in this process and off the timed runs, it sends 50 /read and 50 /write
requests per variant and size through a byte-counting proxy in front of the store (PostgreSQL or
Redis): the bytes each request sends to its store, which shows what a per-key merge saves.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import run  # noqa: E402
from app import PG_VARIANTS, VARIANTS  # noqa: E402
from byteproxy import ByteProxy  # noqa: E402

DEFAULT_SIZES = (100, 1_000, 10_000, 100_000)
DEFAULT_VARIANTS = ("pgsession-wsgi", "floor", "flask-session-redis")
BYTE_REQUESTS = 50


@dataclass
class Sent:
    """Bytes sent to the store per request, by route."""

    variant: str
    size: int
    read: float
    write: float


def _csv_ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of sizes: {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("sizes must be whole numbers of bytes, at least 0")
    return values


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, run.Options]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", type=_csv_ints, default=list(DEFAULT_SIZES), help="bytes, comma-separated")
    parser.add_argument(
        "--variants", type=run._csv(VARIANTS), default=list(DEFAULT_VARIANTS), help="comma-separated"
    )
    parser.add_argument("--routes", type=run._csv(("read", "write")), default=["read", "write"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-threads", type=int, default=4)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--json", type=Path, default=None, dest="json_path")
    parser.add_argument("--chart", default=str(BENCH_DIR / "sizes.png"), help="the PNG to draw ('' for none)")
    parser.add_argument("--no-bytes", action="store_true", help="skip the bytes-per-request measurement")
    ns = parser.parse_args(argv)
    opts = run.Options(
        variants=ns.variants,
        routes=ns.routes,
        duration=ns.duration,
        warmup=ns.warmup,
        connections=ns.connections,
        threads=ns.threads,
        workers=ns.workers,
        worker_threads=ns.worker_threads,
        redis_port=ns.redis_port,
        keep_tmp=False,
        json_path=None,
        rounds=ns.rounds,
    )
    return ns, opts


# --------------------------------------------------------------------------- bytes per request


@contextlib.contextmanager
def _proxied_env(variant: str, pg: run.EmbeddedPostgres | None, redis_port: int) -> Iterator[ByteProxy]:
    """Point the app's store at a byte-counting proxy (through the environment app.py reads)."""
    import psycopg2.extensions

    saved = {k: os.environ.get(k) for k in ("BENCH_VARIANT", "BENCH_PG_DSN", "BENCH_REDIS_URL")}
    if variant in PG_VARIANTS:
        assert pg is not None
        params = psycopg2.extensions.parse_dsn(pg.uri)
        target: Any = os.path.join(params["host"], f".s.PGSQL.{params.get('port', '5432')}")
    else:
        target = ("127.0.0.1", redis_port)
    proxy = ByteProxy(target)
    try:
        os.environ["BENCH_VARIANT"] = variant
        if pg is not None:
            params = psycopg2.extensions.parse_dsn(pg.uri)
            params.update(host="127.0.0.1", port=str(proxy.port), sslmode="disable")
            os.environ["BENCH_PG_DSN"] = psycopg2.extensions.make_dsn(**params)
        os.environ["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{proxy.port}/0"
        yield proxy
    finally:
        proxy.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _close_app(flask_app: Any) -> None:
    """Close what the app opened (its store's pool, its Redis client)."""
    middleware = flask_app.extensions.get("pgsession_wsgi")
    if middleware is not None:
        middleware.store.close()
    floor = flask_app.extensions.get("bench_floor")
    if floor is not None:
        floor.pool.closeall()
    redis = flask_app.config.get("SESSION_REDIS")
    if redis is not None:
        redis.close()


def measure_sent(variant: str, size: int, pg: run.EmbeddedPostgres | None, redis_port: int) -> Sent:
    """Bytes sent to the store per /read and per /write, after a login and a warm-up."""
    import app as bench_app

    if variant == "none":
        return Sent(variant, size, 0.0, 0.0)
    with _proxied_env(variant, pg, redis_port) as proxy:
        flask_app = bench_app.create_app(variant)
        try:
            client = flask_app.test_client()
            login = client.get(f"/login?size={size}" if size else "/login")
            if login.status_code != 200:
                raise run.VariantFailed(f"/login answered {login.status_code}")
            per_route = {}
            for route in ("read", "write"):
                for _ in range(5):  # prepares what a store prepares, warms every connection
                    client.get(f"/{route}")
                proxy.reset()
                for _ in range(BYTE_REQUESTS):
                    answer = client.get(f"/{route}")
                    if answer.status_code != 200:
                        raise run.VariantFailed(f"/{route} answered {answer.status_code}")
                per_route[route] = proxy.sent / BYTE_REQUESTS
        finally:
            _close_app(flask_app)
    return Sent(variant, size, per_route["read"], per_route["write"])


# --------------------------------------------------------------------------- report


def print_report(results: Sequence[run.RouteResult], sent: Sequence[Sent], ns: argparse.Namespace) -> None:
    by_key = {(r.variant, r.route): r for r in run.median_runs(results)}
    sent_by = {(s.variant, s.size): s for s in sent}
    rows = []
    for size in ns.sizes:
        for variant in ns.variants:
            row = [f"{size:,}", variant]
            for route in ns.routes:
                r = by_key.get((f"{variant}@{size}", route))
                row.append(f"{r.rps:.0f}" if r else "-")
                redis = by_key.get((f"flask-session-redis@{size}", route))
                floor = by_key.get((f"floor@{size}", route))
                row.append(f"{r.rps / redis.rps:.2f}" if r and redis and redis.rps else "-")
                row.append(f"{r.rps / floor.rps:.2f}" if r and floor and floor.rps else "-")
            s = sent_by.get((variant, size))
            row += [f"{s.read:,.0f}", f"{s.write:,.0f}"] if s else ["-", "-"]
            rows.append(row)
    headers = ["size B", "variant"]
    for route in ns.routes:
        headers += [f"/{route} req/s", "vs redis", "vs floor"]
    headers += ["B sent/read", "B sent/write"]
    print()
    print(
        f"median run of {ns.rounds} interleaved rounds; gunicorn {ns.workers}x{ns.worker_threads},"
        f" wrk {ns.connections} connections, {ns.duration:g} s runs; {os.cpu_count()} CPUs"
    )
    print(run._format_table(headers, rows, "rl" + "r" * (len(headers) - 2)))


def draw(results: Sequence[run.RouteResult], sent: Sequence[Sent], ns: argparse.Namespace) -> None:
    from charts import size_chart

    throughput: dict[str, dict[str, dict[int, float]]] = {}
    for r in run.median_runs(results):
        variant, _, size = r.variant.rpartition("@")
        throughput.setdefault(r.route, {}).setdefault(variant, {})[int(size)] = r.rps
    bytes_sent: dict[str, dict[int, float]] = {}
    for s in sent:
        if s.write:
            bytes_sent.setdefault(s.variant, {})[s.size] = s.write
    note = (
        f"median of {ns.rounds} interleaved rounds, {ns.duration:g} s runs; gunicorn {ns.workers}x"
        f"{ns.worker_threads}, wrk {ns.connections} connections; {os.cpu_count()} CPUs"
    )
    if size_chart(throughput, bytes_sent, Path(ns.chart), note):
        print(f"\nchart written to {ns.chart}")


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ns, opts = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not on PATH (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, run._raise_interrupted)
    report = run.Report()
    sent: list[Sent] = []
    workdir = Path(tempfile.mkdtemp(prefix="pgsession-sizes-"))
    stack = contextlib.ExitStack()
    interrupted = False
    try:
        pg: run.EmbeddedPostgres | None = None
        if any(v in PG_VARIANTS for v in opts.variants):
            print("starting embedded PostgreSQL ...", flush=True)
            pg = run.EmbeddedPostgres(workdir)
            stack.callback(pg.stop)
            pg.start()
        if "flask-session-redis" in opts.variants:
            run._ensure_redis(opts.redis_port, workdir, stack)
        for round_number in range(1, opts.rounds + 1):
            print(f"round {round_number} of {opts.rounds}", flush=True)
            for size in ns.sizes:
                for variant in opts.variants:
                    label = f"{variant}@{size}"
                    if label in report.failures:
                        continue
                    print(f"{label}:", flush=True)
                    sized = run.Options(**{**vars(opts), "size": size})
                    before = len(report.results)
                    try:
                        uses_pg = pg if variant in PG_VARIANTS else None
                        run._run_variant(variant, sized, uses_pg, workdir, report, round_number)
                    except (run.VariantFailed, OSError, subprocess.SubprocessError, ValueError) as exc:
                        report.failures[label] = str(exc)
                        print(f"  failed: {str(exc).splitlines()[0]}", flush=True)
                    for result in report.results[before:]:
                        result.variant = label
        if not ns.no_bytes:
            print("bytes sent to the store per request (in process, through a counting proxy) ...")
            for size in ns.sizes:
                for variant in opts.variants:
                    try:
                        sent.append(measure_sent(variant, size, pg, opts.redis_port))
                    except Exception as exc:  # report it, measure the others
                        print(f"  {variant}@{size}: {exc!r}", flush=True)
    except (KeyboardInterrupt, run.Interrupted):
        interrupted = True
        print("\ninterrupted; stopping everything", file=sys.stderr)
    finally:
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            stack.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    print_report(report.results, sent, ns)
    for label, reason in report.failures.items():
        print(f"\nFAILED {label}: {reason}")
    if ns.json_path is not None:
        ns.json_path.write_text(
            json.dumps(
                {
                    "results": [
                        {
                            "variant": r.variant,
                            "route": r.route,
                            "rps": r.rps,
                            "round": r.round,
                            "p50_ms": r.p50_ms,
                            "p99_ms": r.p99_ms,
                            "errors": r.errors,
                        }
                        for r in report.results
                    ],
                    "bytes_sent": [vars(s) for s in sent],
                    "failures": report.failures,
                },
                indent=2,
            )
            + "\n"
        )
    if ns.chart and report.results:
        draw(report.results, sent, ns)
    if interrupted:
        return 130
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
