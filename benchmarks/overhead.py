"""In-process cost per request of pgsession-wsgi's SessionMiddleware, without any HTTP server.

    python benchmarks/overhead.py [--dsn URI] [--requests 2000] [--repeat 5]

A plain WSGI app is called through webtest (lint off) once bare and once wrapped in
SessionMiddleware with a PostgresStore, for each route. For every route it prints the wall and
CPU (this process only: time.process_time) microseconds per request, best of --repeat rounds, and
the middleware's extra cost over the bare app. The database time shows in wall time only; the CPU
column is what the middleware costs the application's own process.

Routes (same meaning as benchmarks/app.py): /login (no cookie: a new session and an INSERT each
time), /read, /write (one session, sent as a cookie), /none (a cookie is sent but the session is
never touched, so the middleware must not touch the database).

The database: --dsn, else $PGSESSION_DSN, else postgresql://postgres@127.0.0.1:5432/test. The
table pgsession_bench_overhead is created there and dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Callable

from webtest import TestApp

from pgsession_wsgi import PostgresStore, SessionMiddleware, get_session

ROUTES = ("login", "read", "write", "none")
TABLE = "pgsession_bench_overhead"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"

StartResponse = Callable[..., Any]


def session_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The benchmark routes as a plain WSGI app; the session comes from the middleware."""
    path = environ.get("PATH_INFO", "/")
    body = "no session"
    if path == "/login":
        session = get_session(environ)
        session["user_id"] = "user-42"
        session["counter"] = 0
        body = "logged in"
    elif path == "/read":
        body = f"user_id={get_session(environ).get('user_id')}"
    elif path == "/write":
        session = get_session(environ)
        session["counter"] = int(session.get("counter", 0)) + 1
        body = f"counter={session['counter']}"
    data = body.encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))],
    )
    return [data]


def bare_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The same responses with no session at all: the baseline."""
    path = environ.get("PATH_INFO", "/")
    body = {"/login": "logged in", "/read": "user_id=user-42", "/write": "counter=1"}
    data = body.get(path, "no session").encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))],
    )
    return [data]


@dataclass
class Timing:
    wall_us: float
    cpu_us: float


def _measure(call: Callable[[], object], requests: int, repeat: int) -> Timing:
    """Best-of-`repeat` microseconds per call (wall and CPU), after a warmup round."""
    for _ in range(max(50, requests // 10)):
        call()
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(repeat):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(requests):
            call()
        walls.append((time.perf_counter() - wall0) / requests * 1e6)
        cpus.append((time.process_time() - cpu0) / requests * 1e6)
    # The minimum is the run least disturbed by the rest of the machine.
    return Timing(min(walls), min(cpus))


def _request(client: TestApp, path: str, cookie: str | None) -> Callable[[], object]:
    headers = {"Cookie": cookie} if cookie else {}

    def call() -> object:
        client.cookiejar.clear()  # only the explicit Cookie header counts
        return client.get(path, headers=headers, status=200)

    return call


def _login_cookie(client: TestApp) -> str:
    client.cookiejar.clear()
    response = client.get("/login", status=200)
    value: str | None = response.headers.get("Set-Cookie")
    if not value:
        raise SystemExit("/login set no cookie")
    cookie = value.split(";", 1)[0]
    read = client.get("/read", headers={"Cookie": cookie}, status=200)
    if "user_id=user-42" not in read.text:
        raise SystemExit(f"the session does not survive: /read answered {read.text!r}")
    return cookie


def _drop_table(dsn: str) -> None:
    import psycopg2

    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS public."{TABLE}"')


def run(dsn: str, routes: Sequence[str], requests: int, repeat: int) -> list[list[str]]:
    store = PostgresStore(dsn, table=TABLE, purge_interval=None)
    try:
        wrapped = SessionMiddleware(session_app, store, secret_key="overhead-benchmark-key")
        with_session = TestApp(wrapped, lint=False)
        bare = TestApp(bare_app, lint=False)
        cookie = _login_cookie(with_session)
        rows: list[list[str]] = []
        for route in routes:
            # /login is measured without a cookie: every request makes a new session.
            route_cookie = None if route == "login" else cookie
            base = _measure(_request(bare, f"/{route}", route_cookie), requests, repeat)
            timed = _measure(_request(with_session, f"/{route}", route_cookie), requests, repeat)
            rows.append(
                [
                    f"/{route}",
                    f"{base.wall_us:.1f}",
                    f"{timed.wall_us:.1f}",
                    f"{timed.cpu_us:.1f}",
                    f"{timed.wall_us - base.wall_us:.1f}",
                    f"{timed.cpu_us - base.cpu_us:.1f}",
                ]
            )
            print(f"  /{route} done", flush=True)
        return rows
    finally:
        store.close()
        _drop_table(dsn)


def _format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGSESSION_DSN", DEFAULT_DSN),
        help="PostgreSQL URI (default $PGSESSION_DSN or %(default)s)",
    )
    parser.add_argument(
        "--routes",
        default=",".join(ROUTES),
        help=f"comma-separated from {','.join(ROUTES)} (default all)",
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the best one counts")
    args = parser.parse_args(argv)
    routes = [r.strip().lstrip("/") for r in args.routes.split(",") if r.strip()]
    unknown = [r for r in routes if r not in ROUTES]
    if unknown or not routes:
        parser.error(f"unknown route(s) {unknown}; choose from {', '.join(ROUTES)}")
    if args.requests < 1 or args.repeat < 1:
        parser.error("--requests and --repeat must be positive")

    rows = run(args.dsn, routes, args.requests, args.repeat)
    print()
    print(
        f"microseconds per request, best of {args.repeat} rounds of {args.requests} requests"
        f" (webtest, no HTTP server)"
    )
    headers = ["route", "bare wall", "pgsession wall", "pgsession cpu", "+wall", "+cpu"]
    print(_format_table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
