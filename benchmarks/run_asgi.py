"""Serve benchmarks/asgi_app.py under uvicorn with each ASGI session variant and drive it with wrk.

    python benchmarks/run_asgi.py [--variants ...] [--routes ...] [--rounds 3] [--duration 8]
                                  [--warmup 2] [--connections 16] [--threads 2] [--workers 2]

The ASGI counterpart of benchmarks/run.py, built from its pieces: the same private embedded
PostgreSQL with pg_stat_statements (statements per request), the same Redis handling, the same
wrk script and settings, the same login check and interleaved rounds (median run reported).
Only the server differs: uvicorn (``--workers`` processes, uvloop and httptools for every variant)
instead of gunicorn. Route ``anon`` is ``/none`` requested without any cookie (the "untouched"
target); ``none`` is ``/none`` with the session cookie, as in run.py; ``skip`` is ``/skip`` with
the session cookie, a route the Litestar apps exclude from the session (``skip_session=True``).
The variants without a session send a random cookie of a session cookie's length instead.

Besides throughput it reports the CPU each request cost during the measured runs, by process:
uvicorn's workers, the store's server (the embedded PostgreSQL's processes, or Redis) and wrk. On a
shared machine throughput varies a lot between runs; CPU per request much less, and it says
whose CPU a difference is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import run  # noqa: E402  (run.py's helpers: PostgreSQL, Redis, wrk, tables)
from asgi_app import (  # noqa: E402
    ASGI_NO_SESSION_VARIANTS,
    ASGI_PG_VARIANTS,
    ASGI_REDIS_VARIANTS,
    ASGI_VARIANTS,
)
from run import EmbeddedPostgres, Report, RouteResult, VariantFailed  # noqa: E402

ROUTES = ("read", "write", "none", "anon", "skip", "login")
DEFAULT_ROUTES = ("read", "write", "none", "anon", "skip")

# (label, ours, baseline, route, at least): the issues' targets. Issue 24: the ASGI middleware on
# Starlette against the ASGI floor (benchmarks/asgi_floor.py) at each durability and against
# starsessions on Redis; issue 23: the native Litestar integration (pgsession_wsgi.litestar),
# against Litestar's own server-side sessions and advanced-alchemy's backend on the same framework.
TARGETS = (
    ("read >= 0.95x the ASGI floor", "pgsession-asgi-starlette", "asgi-floor", "read", 0.95),
    ("read >= 1.1x starsessions on Redis", "pgsession-asgi-starlette", "starsessions-redis", "read", 1.1),
    ("write >= 0.95x the floor, durable", "pgsession-asgi-starlette", "asgi-floor", "write", 0.95),
    (
        "write >= 0.95x the floor, synchronous_commit off",
        "pgsession-asgi-starlette-async",
        "asgi-floor-async",
        "write",
        0.95,
    ),
    (
        "write >= 0.95x the floor, unlogged",
        "pgsession-asgi-starlette-unlogged",
        "asgi-floor-unlogged",
        "write",
        0.95,
    ),
    (
        "write, unlogged >= 0.9x starsessions on Redis",
        "pgsession-asgi-starlette-unlogged",
        "starsessions-redis",
        "write",
        0.9,
    ),
    ("untouched (no cookie) >= 0.97x no session", "pgsession-asgi-starlette", "none", "anon", 0.97),
    (
        "excluded route (exclude_paths), with cookie >= 0.97x no session",
        "pgsession-asgi-starlette",
        "none",
        "skip",
        0.97,
    ),
    (
        "native Litestar: read >= 1.0x Litestar's Redis sessions",
        "pgsession-litestar",
        "litestar-redis",
        "read",
        1.0,
    ),
    ("native Litestar: read >= 5x advanced-alchemy", "pgsession-litestar", "advanced-alchemy", "read", 5.0),
    (
        "native Litestar: excluded route, with cookie >= 0.97x no session",
        "pgsession-litestar",
        "litestar-none",
        "skip",
        0.97,
    ),
)
_NOPREP = "pgsession-asgi-starlette-noprep"
# The same comparisons for our other front ends, printed for information.
EXTRA_RATIOS = (
    (
        "read, ASGI middleware on Litestar vs starsessions",
        "pgsession-asgi-litestar",
        "starsessions-redis",
        "read",
    ),
    ("untouched route, with cookie (a SELECT: autoload)", "pgsession-asgi-starlette", "none", "none"),
    ("lever: prepared statements, read", "pgsession-asgi-starlette", _NOPREP, "read"),
    ("lever: prepared statements, write", "pgsession-asgi-starlette", _NOPREP, "write"),
    ("the floor's read vs starsessions on Redis", "asgi-floor", "starsessions-redis", "read"),
    ("the floor's write vs starsessions on Redis, durable", "asgi-floor", "starsessions-redis", "write"),
    ("read, Starlette front end vs advanced-alchemy", "pgsession-asgi-starlette", "advanced-alchemy", "read"),
    (
        "read, ASGI middleware on Litestar vs advanced-alchemy",
        "pgsession-asgi-litestar",
        "advanced-alchemy",
        "read",
    ),
    (
        "untouched, ASGI middleware on Litestar vs Litestar without session",
        "pgsession-asgi-litestar",
        "litestar-none",
        "anon",
    ),
    (
        "untouched, native Litestar vs Litestar without session",
        "pgsession-litestar",
        "litestar-none",
        "anon",
    ),
    (
        "read, ASGI middleware on Litestar vs Litestar's Redis sessions",
        "pgsession-asgi-litestar",
        "litestar-redis",
        "read",
    ),
    (
        "read, native Litestar vs ASGI middleware on Litestar",
        "pgsession-litestar",
        "pgsession-asgi-litestar",
        "read",
    ),
)


@dataclass
class CpuCost:
    """CPU microseconds per request in one measured run, by process."""

    variant: str
    route: str
    app_us: float  # uvicorn (master and workers)
    server_us: float | None  # the embedded PostgreSQL, or Redis; None without a store
    wrk_us: float

    @property
    def total_us(self) -> float:
        return self.app_us + (self.server_us or 0.0) + self.wrk_us


CPU_COSTS: list[CpuCost] = []


def _process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def _cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds the live ``pids`` ran, from the scheduler's nanosecond counters."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    return total / 1e9


def _redis_cpu_seconds(port: int) -> float:
    import redis

    client = redis.Redis(host=run.HOST, port=port)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _children_cpu_seconds() -> float:
    """CPU seconds of this process's waited-for children (wrk, run by subprocess.run)."""
    times = os.times()
    return times.children_user + times.children_system


@dataclass
class AsgiOptions:
    variants: list[str]
    routes: list[str]
    duration: float
    warmup: float
    connections: int
    threads: int
    workers: int
    redis_port: int
    keep_tmp: bool
    rounds: int
    json_path: Path | None

    def run_options(self) -> run.Options:
        """The fields run.py's helpers (wrk) read."""
        return run.Options(
            variants=self.variants,
            routes=self.routes,
            duration=self.duration,
            warmup=self.warmup,
            connections=self.connections,
            threads=self.threads,
            workers=self.workers,
            worker_threads=1,
            redis_port=self.redis_port,
            keep_tmp=self.keep_tmp,
            json_path=self.json_path,
            rounds=self.rounds,
        )


@contextlib.contextmanager
def _uvicorn(
    variant: str, env: dict[str, str], opts: AsgiOptions, workdir: Path
) -> Iterator[tuple[int, int]]:
    """Build the app once (tables), then serve it under uvicorn; yields the port and its pid."""
    log = workdir / f"asgi-{variant}.log"
    build = subprocess.run(
        [sys.executable, str(BENCH_DIR / "asgi_app.py")],
        cwd=BENCH_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if build.returncode != 0:
        last = (build.stderr or build.stdout).strip().splitlines()[-8:]
        raise VariantFailed("app does not build:\n" + "\n".join(last))

    port = run._free_port()
    command = [
        sys.executable, "-m", "uvicorn",
        "--app-dir", str(BENCH_DIR),
        "--host", run.HOST,
        "--port", str(port),
        "--workers", str(opts.workers),
        "--loop", "uvloop",
        "--http", "httptools",
        "--lifespan", "on",
        "--no-access-log",
        "--log-level", "warning",
        "asgi_app:app",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise VariantFailed(f"uvicorn exited with {proc.returncode}:\n{run._tail(log)}")
            with contextlib.suppress(OSError):
                status, _, _ = run._http_get(port, "/none", timeout=2.0)
                if status == 200:
                    break
            if time.monotonic() > deadline:
                raise VariantFailed(f"uvicorn did not answer within 60 s:\n{run._tail(log)}")
            time.sleep(0.2)
        # With several workers the first answer comes from one of them: give the others
        # (their lifespan startup: pools) a moment too.
        time.sleep(1.0)
        yield port, proc.pid
    finally:
        run._stop_group(proc)


def _run_variant(
    variant: str,
    opts: AsgiOptions,
    pg: EmbeddedPostgres | None,
    workdir: Path,
    report: Report,
    round_number: int = 1,
) -> None:
    env = run._variant_env(variant, pg, opts.redis_port)
    wrk_opts = opts.run_options()
    server_cpu: Any = None
    if pg is not None:
        postmaster = int((pg.pgdata / "postmaster.pid").read_text().split()[0])
        server_cpu = lambda: _cpu_seconds(_process_tree(postmaster))  # noqa: E731
    elif variant in ASGI_REDIS_VARIANTS:
        server_cpu = lambda: _redis_cpu_seconds(opts.redis_port)  # noqa: E731
    with _uvicorn(variant, env, opts, workdir) as (port, uvicorn_pid):
        if variant in ASGI_NO_SESSION_VARIANTS:
            # No session, but a Cookie header as long as a logged-in browser's (run.py's rule),
            # so that the baseline parses what the other variants parse.
            cookies = [f"session={secrets.token_urlsafe(66)}" for _ in range(opts.connections)]
        else:
            cookies = run._login_cookies(port, opts.connections)
        for route in opts.routes:
            path, route_cookies = ("none", []) if route == "anon" else (route, cookies)
            if opts.warmup > 0:
                run._wrk(port, path, opts.warmup, route_cookies, wrk_opts)
            time.sleep(0.3)  # let requests abandoned by the warmup finish
            if pg is not None:
                pg.reset_statements()
            app_pids = _process_tree(uvicorn_pid)
            before = (_cpu_seconds(app_pids), server_cpu() if server_cpu else 0.0, _children_cpu_seconds())
            raw = run._wrk(port, path, opts.duration, route_cookies, wrk_opts)
            after = (_cpu_seconds(app_pids), server_cpu() if server_cpu else 0.0, _children_cpu_seconds())
            if raw["requests"]:
                per_request = [(b - a) / raw["requests"] * 1e6 for a, b in zip(before, after)]
                CPU_COSTS.append(
                    CpuCost(
                        variant,
                        route,
                        per_request[0],
                        per_request[1] if server_cpu else None,
                        per_request[2],
                    )
                )
            statements = None
            if pg is not None:
                time.sleep(0.3)  # count the statements of requests still in flight at the end
                statements = pg.statements()
            result = RouteResult(
                variant=variant,
                route=route,
                requests=raw["requests"],
                seconds=raw["duration_us"] / 1e6,
                p50_ms=raw["p50_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                non2xx=raw["non2xx"],
                socket_errors=raw["socket_errors"],
                statements=statements,
                round=round_number,
            )
            report.results.append(result)
            print(
                f"  {variant:<26} /{route:<6} {result.rps:9.0f} req/s"
                f"  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms"
                f"  errors {result.errors}",
                flush=True,
            )


def _route_label(route: str) -> str:
    return {"anon": "/none (no cookie)", "skip": "/skip (excluded)"}.get(route, f"/{route}")


def print_report(report: Report, opts: AsgiOptions) -> None:
    results = run.median_runs(report.results)
    by_key = {(r.variant, r.route): r for r in results}
    if results:
        rows = [
            [
                r.variant,
                _route_label(r.route),
                f"{r.rps:.0f}",
                f"{r.p50_ms:.2f}",
                f"{r.p99_ms:.2f}",
                str(r.errors),
                run._ratio(r.rps, by_key.get(("none", r.route))),
                run._ratio(r.rps, by_key.get(("litestar-none", r.route))),
                run._ratio(r.rps, by_key.get(("starsessions-redis", r.route))),
            ]
            for r in results
        ]
        print()
        if opts.rounds > 1:
            print(f"median run of {opts.rounds} interleaved rounds")
        print(
            f"uvicorn {opts.workers} workers (uvloop, httptools); wrk {opts.threads} threads,"
            f" {opts.connections} connections, {opts.duration:g} s per run after"
            f" {opts.warmup:g} s warmup; {os.cpu_count()} CPUs"
        )
        headers = [
            "variant", "route", "req/s", "p50 ms", "p99 ms", "errors",
            "vs none", "vs litestar-none", "vs starsessions",
        ]  # fmt: skip
        print(run._format_table(headers, rows, "llrrrrrrr"))

    pg_rows = []
    for r in results:
        if r.statements is None:
            continue
        per_request = r.statements_per_request()
        detail = ", ".join(f"{kind} {n:.2f}" for kind, n in sorted(per_request.items()))
        pg_rows.append(
            [r.variant, _route_label(r.route), f"{sum(per_request.values()):.2f}", detail or "none"]
        )
    if pg_rows:
        print()
        print("PostgreSQL statements per request (pg_stat_statements calls / wrk requests):")
        print(run._format_table(["variant", "route", "stmts/req", "by kind"], pg_rows, "llrl"))

    cpu_rows = []
    for variant, route in dict.fromkeys((c.variant, c.route) for c in CPU_COSTS):
        runs = [c for c in CPU_COSTS if (c.variant, c.route) == (variant, route)]
        servers = [c.server_us for c in runs if c.server_us is not None]
        app_us = statistics.median(c.app_us for c in runs)
        server_us = statistics.median(servers) if servers else None
        wrk_us = statistics.median(c.wrk_us for c in runs)
        total = statistics.median(c.total_us for c in runs)
        cpu_rows.append(
            [
                variant,
                _route_label(route),
                f"{app_us:.0f}",
                "-" if server_us is None else f"{server_us:.0f}",
                f"{wrk_us:.0f}",
                f"{total:.0f}",
            ]
        )
    if cpu_rows:
        print()
        print("CPU microseconds per request during the measured runs (median over the rounds):")
        print(
            run._format_table(
                ["variant", "route", "uvicorn", "store server", "wrk", "total"], cpu_rows, "llrrrr"
            )
        )

    target_rows = []
    for label, ours, base, route, at_least in TARGETS:
        a, b = by_key.get((ours, route)), by_key.get((base, route))
        if a is None or b is None or not b.rps:
            target_rows.append([label, f"{ours} / {base}", "-", "not measured"])
            continue
        ratio = a.rps / b.rps
        verdict = "met" if ratio >= at_least else "missed"
        target_rows.append([label, f"{ours} / {base}", f"{a.rps:.0f} / {b.rps:.0f} = {ratio:.2f}x", verdict])
    for label, ours, base, route in EXTRA_RATIOS:
        a, b = by_key.get((ours, route)), by_key.get((base, route))
        if a is not None and b is not None and b.rps:
            target_rows.append(
                [label, f"{ours} / {base}", f"{a.rps:.0f} / {b.rps:.0f} = {a.rps / b.rps:.2f}x", "(info)"]
            )
    print()
    print("Targets (issues 23 and 24):")
    print(run._format_table(["target", "variants", "measured", ""], target_rows, "llrl"))

    for variant, reason in report.failures.items():
        print(f"\nFAILED {variant}: {reason}")


def parse_args(argv: Sequence[str] | None = None) -> AsgiOptions:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variants",
        type=run._csv(ASGI_VARIANTS),
        default=list(ASGI_VARIANTS),
        help=f"comma-separated, default all: {','.join(ASGI_VARIANTS)}",
    )
    parser.add_argument(
        "--routes",
        type=run._csv(ROUTES),
        default=list(DEFAULT_ROUTES),
        help=f"comma-separated from {','.join(ROUTES)}; default {','.join(DEFAULT_ROUTES)}"
        " (anon: /none without a cookie; skip: /skip, excluded from the session, with the cookie)",
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured run (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warmup before each (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections = sessions (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    parser.add_argument("--redis-port", type=int, default=6379, help="Redis on 127.0.0.1 (default 6379)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; median (default 3)")
    parser.add_argument("--json", type=Path, default=None, dest="json_path", help="also write JSON here")
    parser.add_argument("--keep-tmp", action="store_true", help="keep uvicorn logs and PostgreSQL data")
    ns = parser.parse_args(argv)
    if ns.connections < ns.threads:
        parser.error("--connections must be at least --threads")
    if ns.duration < 1:
        parser.error("--duration must be at least 1 second")
    return AsgiOptions(**vars(ns))


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not on PATH (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, run._raise_interrupted)

    report = Report()
    workdir = Path(tempfile.mkdtemp(prefix="pgsession-bench-asgi-"))
    stack = contextlib.ExitStack()
    interrupted = False
    try:
        pg: EmbeddedPostgres | None = None
        if any(v in ASGI_PG_VARIANTS for v in opts.variants):
            print("starting embedded PostgreSQL ...", flush=True)
            pg = EmbeddedPostgres(workdir)
            stack.callback(pg.stop)
            try:
                pg.start()
            except Exception as exc:  # report it, go on with the other variants
                for variant in opts.variants:
                    if variant in ASGI_PG_VARIANTS:
                        report.failures[variant] = f"embedded PostgreSQL did not start: {exc!r}"
                print(f"  embedded PostgreSQL did not start: {exc!r}", flush=True)
        for round_number in range(1, opts.rounds + 1):
            if opts.rounds > 1:
                print(f"round {round_number} of {opts.rounds}", flush=True)
            for variant in opts.variants:
                if variant in report.failures:
                    continue
                print(f"{variant}:", flush=True)
                try:
                    if variant in ASGI_REDIS_VARIANTS:
                        run._ensure_redis(opts.redis_port, workdir, stack)
                    pg_or_none = pg if variant in ASGI_PG_VARIANTS else None
                    _run_variant(variant, opts, pg_or_none, workdir, report, round_number)
                except (VariantFailed, OSError, subprocess.SubprocessError, ValueError) as exc:
                    report.failures[variant] = str(exc)
                    print(f"  failed: {str(exc).splitlines()[0]}", flush=True)
    except (KeyboardInterrupt, run.Interrupted):
        interrupted = True
        print("\ninterrupted; stopping everything", file=sys.stderr)
    finally:
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            stack.close()
        finally:
            if opts.keep_tmp:
                print(f"temporary files kept in {workdir}", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    print_report(report, opts)
    if opts.json_path is not None:
        run._write_json(report, opts.json_path)
        data = json.loads(opts.json_path.read_text())
        data["cpu_per_request_us"] = [asdict(c) for c in CPU_COSTS]
        opts.json_path.write_text(json.dumps(data, indent=2) + "\n")
    if interrupted:
        return 130
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
