"""Where an ASGI request's CPU goes, per variant: the app's own and its store's server's, in process.

    python benchmarks/cost_asgi.py [--variants ...] [--routes read,none,anon,skip]
                                   [--requests 2000] [--rounds 5]

The wrk runs (run_asgi.py) measure throughput on a machine where wrk, uvicorn and the store share
two cores with whatever else runs, and single runs of one variant varied by 3x there. This takes
the same apps (benchmarks/asgi_app.py) and calls each in this process, one request at a time, as
uvicorn would once it has parsed the HTTP request (no sockets, no HTTP, no concurrency; the
app's lifespan runs, so stores and pools open as under uvicorn):

- ``wall``: microseconds per request, the store's round trips included;
- ``cpu``: this process's CPU microseconds per request: the framework, the session layer, the
  driver;
- ``server``: the store's server's CPU microseconds per request: the embedded PostgreSQL's
  processes (from /proc) or Redis's own counters (``INFO cpu``);
- ``total``: ``cpu`` + ``server``, what one request costs the machine besides the HTTP server
  and the client, which cost about the same in every variant.

On a machine whose cores are saturated (as in the wrk runs) throughput follows the CPU a request
costs, so the ratio of two variants' ``total`` bounds their throughput ratio: the HTTP server's
and wrk's constant share brings the real ratio closer to 1. Routes as in run_asgi.py: ``anon`` is
``/none`` without a cookie, ``skip`` is ``/skip`` (excluded from the session on the Litestar
apps) with the cookie. The variants run interleaved, ``--rounds`` times, and each figure is the
median round's. It starts its own embedded PostgreSQL and uses the Redis on
127.0.0.1:``--redis-port`` (or starts one), as run_asgi.py does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import run  # noqa: E402
from asgi_app import ASGI_NO_SESSION_VARIANTS, ASGI_PG_VARIANTS, ASGI_REDIS_VARIANTS, ASGI_VARIANTS  # noqa: E402

DEFAULT_VARIANTS = (
    "litestar-none",
    "litestar-redis",
    "advanced-alchemy",
    "pgsession-litestar",
    "pgsession-asgi-litestar",
)
ROUTES = ("read", "write", "none", "anon", "skip")
DEFAULT_ROUTES = ("read", "none", "anon", "skip")


@dataclass
class Cost:
    variant: str
    route: str
    wall_us: float
    cpu_us: float
    server_us: float | None

    @property
    def total_us(self) -> float:
        return self.cpu_us + (self.server_us or 0.0)


# --------------------------------------------------------------------------- the store's CPU


def _postgres_cpu_seconds(postmaster_pid: int) -> float:
    """CPU seconds of the postmaster and its live children (backends, WAL writer, ...), from the
    scheduler's nanosecond counters (/proc's tick counts are too coarse for one request)."""
    total_ns = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            pid, ppid = int(entry.name), int(stat.rsplit(")", 1)[1].split()[1])
            if pid == postmaster_pid or ppid == postmaster_pid:
                total_ns += int(Path(entry.path, "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a process that ended meanwhile
    return total_ns / 1e9


def _redis_cpu_seconds(port: int) -> float:
    import redis

    client = redis.Redis(host=run.HOST, port=port)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# --------------------------------------------------------------------------- ASGI in process


class _Lifespan:
    """Runs an app's lifespan: startup on enter, shutdown on exit."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.state: dict[str, Any] = {}
        self.task: asyncio.Task[None] | None = None

    async def _expect(self, event: str) -> None:
        message = await asyncio.wait_for(self.outbox.get(), timeout=60)
        if message["type"] != f"lifespan.{event}.complete":
            raise RuntimeError(f"lifespan {event} failed: {message.get('message', message)}")

    async def __aenter__(self) -> _Lifespan:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.3"}, "state": self.state}
        self.task = asyncio.ensure_future(self.app(scope, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        await self._expect("startup")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self._expect("shutdown")
        assert self.task is not None
        await self.task


async def _request(
    app: Any, state: dict[str, Any], path: str, cookie: str | None
) -> tuple[int, list[Any], bytes]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"cost_asgi"), (b"accept", b"*/*")]
    if cookie:
        headers.append((b"cookie", cookie.encode("latin-1")))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": dict(state),
    }
    answer: dict[str, Any] = {"status": 0, "headers": [], "body": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["headers"] = message.get("headers", [])
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer["status"], answer["headers"], answer["body"]


async def _login(app: Any, state: dict[str, Any], count: int) -> list[str]:
    """``count`` sessions, each checked as run.py checks them (``/read`` sees the user id)."""
    cookies = []
    for _ in range(count):
        status, headers, _ = await _request(app, state, "/login", None)
        set_cookie = [v.decode("latin-1") for k, v in headers if k.lower() == b"set-cookie"]
        if status != 200 or not set_cookie:
            raise run.VariantFailed(f"/login answered {status} with no cookie")
        cookie = set_cookie[0].split(";", 1)[0].strip()
        status, _, body = await _request(app, state, "/read", cookie)
        if status != 200 or b"user_id=user-42" not in body:
            raise run.VariantFailed(f"the session does not survive: /read answered {status} {body!r}")
        cookies.append(cookie)
    return cookies


async def _drive(
    app: Any, state: dict[str, Any], path: str, cookies: Sequence[str | None], requests: int, concurrency: int
) -> None:
    """``requests`` requests, ``concurrency`` of them in flight at a time (each client its own loop)."""

    async def client(number: int) -> None:
        for i in range(number, requests, concurrency):
            status, _, _ = await _request(app, state, path, cookies[i % len(cookies)])
            if status != 200:
                raise run.VariantFailed(f"{path} answered {status}")

    await asyncio.gather(*(client(number) for number in range(concurrency)))


async def _measure_variant(
    variant: str, routes: Sequence[str], requests: int, server_cpu: Any, sessions: int, concurrency: int
) -> list[Cost]:
    from asgi_app import create_app

    app = create_app(variant)
    costs = []
    async with _Lifespan(app) as lifespan:
        if variant in ASGI_NO_SESSION_VARIANTS:
            cookies = [f"session={secrets.token_urlsafe(66)}" for _ in range(sessions)]
        else:
            cookies = await _login(app, lifespan.state, sessions)
        for route in routes:
            path = "/none" if route == "anon" else f"/{route}"
            route_cookies: list[str | None] = [None] if route == "anon" else list(cookies)
            # Warm up: pools, prepared statements, caches.
            await _drive(app, lifespan.state, path, route_cookies, min(200, requests), concurrency)
            server_before = server_cpu() if server_cpu is not None else 0.0
            cpu_before, wall_before = time.process_time(), time.perf_counter()
            await _drive(app, lifespan.state, path, route_cookies, requests, concurrency)
            wall = time.perf_counter() - wall_before
            cpu = time.process_time() - cpu_before
            server = server_cpu() - server_before if server_cpu is not None else None
            costs.append(
                Cost(
                    variant,
                    route,
                    wall / requests * 1e6,
                    cpu / requests * 1e6,
                    None if server is None else server / requests * 1e6,
                )
            )
    return costs


# --------------------------------------------------------------------------- report


def _median_costs(runs: Sequence[Cost]) -> list[Cost]:
    """Per (variant, route), the median of each figure over the rounds, in first-seen order."""
    groups: dict[tuple[str, str], list[Cost]] = {}
    for cost in runs:
        groups.setdefault((cost.variant, cost.route), []).append(cost)
    medians = []
    for (variant, route), group in groups.items():
        servers = [c.server_us for c in group if c.server_us is not None]
        medians.append(
            Cost(
                variant,
                route,
                statistics.median(c.wall_us for c in group),
                statistics.median(c.cpu_us for c in group),
                statistics.median(servers) if servers else None,
            )
        )
    return medians


def print_report(runs: Sequence[Cost], rounds: int, requests: int, concurrency: int) -> None:
    costs = _median_costs(runs)
    by_key = {(c.variant, c.route): c for c in costs}
    rows = []
    for c in costs:
        base = by_key.get(("litestar-none", c.route))
        rows.append(
            [
                c.variant,
                {"anon": "/none (no cookie)", "skip": "/skip (excluded)"}.get(c.route, f"/{c.route}"),
                f"{c.wall_us:.0f}",
                f"{c.cpu_us:.0f}",
                "-" if c.server_us is None else f"{c.server_us:.0f}",
                f"{c.total_us:.0f}",
                f"{c.cpu_us - base.cpu_us:+.0f}" if base else "-",
            ]
        )
    print()
    print(
        f"median of {rounds} interleaved rounds, {requests} requests per route and round,"
        f" {concurrency} at a time;"
        f" {os.cpu_count()} CPUs"
    )
    headers = ["variant", "route", "wall us", "cpu us", "server us", "total us", "cpu vs litestar-none"]
    print(run._format_table(headers, rows, "llrrrrr"))


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", type=run._csv(ASGI_VARIANTS), default=list(DEFAULT_VARIANTS))
    parser.add_argument("--routes", type=run._csv(ROUTES), default=list(DEFAULT_ROUTES))
    parser.add_argument("--requests", type=int, default=2000, help="per route and round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; median (default 5)")
    parser.add_argument("--sessions", type=int, default=16, help="sessions the requests take turns on")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="requests in flight at once (default 1; 8 is what each uvicorn worker sees in run_asgi.py)",
    )
    parser.add_argument("--redis-port", type=int, default=6379)
    return parser.parse_args(argv)


async def _main(opts: argparse.Namespace, pg: run.EmbeddedPostgres | None) -> list[Cost]:
    postmaster = int((pg.pgdata / "postmaster.pid").read_text().split()[0]) if pg is not None else 0
    runs: list[Cost] = []
    for round_number in range(1, opts.rounds + 1):
        print(f"round {round_number} of {opts.rounds}", flush=True)
        for variant in opts.variants:
            os.environ.update(run._variant_env(variant, pg, opts.redis_port))
            server_cpu: Any = None
            if variant in ASGI_PG_VARIANTS:
                server_cpu = lambda: _postgres_cpu_seconds(postmaster)  # noqa: E731
            elif variant in ASGI_REDIS_VARIANTS:
                server_cpu = lambda: _redis_cpu_seconds(opts.redis_port)  # noqa: E731
            if variant in ASGI_PG_VARIANTS:
                from asgi_app import _prepare

                await _prepare(variant)
            costs = await _measure_variant(
                variant, opts.routes, opts.requests, server_cpu, opts.sessions, opts.concurrency
            )
            for cost in costs:
                runs.append(cost)
                server = "-" if cost.server_us is None else f"{cost.server_us:.0f}"
                print(
                    f"  {variant:<24} /{cost.route:<5} wall {cost.wall_us:6.0f} us  cpu {cost.cpu_us:5.0f} us"
                    f"  server {server:>4} us",
                    flush=True,
                )
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pgsession-cost-asgi-"))
    try:
        with contextlib.ExitStack() as stack:
            pg = None
            if any(v in ASGI_PG_VARIANTS for v in opts.variants):
                pg = run.EmbeddedPostgres(workdir)
                stack.callback(pg.stop)
                pg.start()
            if any(v in ASGI_REDIS_VARIANTS for v in opts.variants):
                run._ensure_redis(opts.redis_port, workdir, stack)
            try:
                import uvloop

                runner = uvloop.run
            except ImportError:
                runner = asyncio.run
            runs = runner(_main(opts, pg))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_report(runs, opts.rounds, opts.requests, opts.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
