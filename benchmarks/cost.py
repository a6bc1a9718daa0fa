"""Where a request's time goes, per variant: the app's own CPU and the database's, in process.

    python benchmarks/cost.py [--variants ...] [--routes read,write,none] [--requests 2000] [--rounds 5]

The wrk runs (run.py) give throughput on a machine where wrk, gunicorn and PostgreSQL share the
cores, which is noisy. This takes the same Flask app (benchmarks/app.py) for each variant and
calls it in this process, one request at a time, as a WSGI server would (no HTTP, no threads):

- ``wall``: microseconds per request, database round trips included;
- ``cpu``: this process's CPU microseconds per request: Flask, the session library, the driver;
- ``db``: the database's own time per request (``pg_stat_statements``: execution, plus planning
  where it happens), for the PostgreSQL variants;
- ``+cpu``: ``cpu`` over the ``none`` variant's on the same route: what the session costs the app.

The Django variants (benchmarks/django_app.py, issue 26) are measured the same way, each in a
process of its own (Django's settings are the process's) that stays up for all the rounds; their
``+cpu`` is over ``django-none``'s. ``--stub-store`` leaves them as they are.

The variants run interleaved, ``--rounds`` times, and the best round is kept (the least
disturbed). It starts its own embedded PostgreSQL (with ``pg_stat_statements`` tracking
planning) and uses the Redis on 127.0.0.1:``--redis-port`` (or starts one), as run.py does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
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
from app import PG_VARIANTS, VARIANTS  # noqa: E402
from django_app import DJANGO_PG_VARIANTS, DJANGO_VARIANTS  # noqa: E402

DEFAULT_VARIANTS = (
    "none",
    "floor",
    "pgsession-wsgi",
    "pgsession-wsgi-noprep",
    "floor-unlogged",
    "pgsession-wsgi-unlogged",
    "flask-session-redis",
)


@dataclass
class Cost:
    variant: str
    route: str
    wall_us: float
    cpu_us: float
    db_us: float | None


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    if not status.startswith("200"):
        raise run.VariantFailed(f"answered {status}")
    return lambda data: None


def _call(flask_app: Any, environ_for: Any, path: str, cookie: str | None) -> bytes:
    environ = environ_for(path, cookie)
    body = flask_app(environ, _start_response)
    try:
        return b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def _environ_builder() -> Any:
    from werkzeug.test import EnvironBuilder

    def environ_for(path: str, cookie: str | None) -> dict[str, Any]:
        headers = {"Cookie": cookie} if cookie else {}
        return EnvironBuilder(path=path, base_url="http://127.0.0.1/", headers=headers).get_environ()

    return environ_for


def _login(flask_app: Any) -> str | None:
    client = flask_app.test_client()
    answer = client.get("/login")
    cookies = [v for k, v in answer.headers.items() if k.lower() == "set-cookie"]
    return cookies[0].split(";", 1)[0] if cookies else None


def _db_micros(pg: run.EmbeddedPostgres) -> float:
    rows = pg._query(
        "SELECT coalesce(sum(s.total_exec_time + s.total_plan_time), 0) FROM pg_stat_statements s"
        " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s",
        (run.BENCH_DB,),
    )
    return float(rows[0][0]) * 1000


def measure(
    flask_app: Any, cookie: str | None, route: str, requests: int, pg: run.EmbeddedPostgres | None
) -> tuple[float, float, float | None]:
    environ_for = _environ_builder()
    environs = [environ_for(f"/{route}", cookie) for _ in range(requests)]
    for _ in range(min(200, requests)):  # warm: connections, prepared statements, caches
        _call(flask_app, environ_for, f"/{route}", cookie)
    if pg is not None:
        pg.reset_statements()
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    for environ in environs:
        body = flask_app(environ, _start_response)
        b"".join(body)
        close = getattr(body, "close", None)
        if close is not None:
            close()
    wall = (time.perf_counter() - start_wall) / requests * 1e6
    cpu = (time.process_time() - start_cpu) / requests * 1e6
    db = _db_micros(pg) / requests if pg is not None else None
    return wall, cpu, db


def _stub(flask_app: Any) -> None:
    """Make the app's store answer at once with a small logged-in session (after the login)."""
    from pgsession_wsgi.core import LoadedRow, WriteResult

    row = {"user_id": "user-42", "counter": 0, "_permanent": True}
    floor = flask_app.extensions.get("bench_floor")
    if floor is not None:
        floor.load = lambda key: dict(row)
        floor.merge = lambda key, changed: None
    middleware = flask_app.extensions.get("pgsession_wsgi")
    if middleware is not None:
        store = middleware.store
        store.load = lambda id_hash, touch: LoadedRow(dict(row), False)
        store.write = lambda *args, **kwargs: WriteResult(True, False, True)


def serve_django(variant: str, requests: int) -> None:
    """The child of one Django variant (Django's settings are the process's): builds the app,
    logs in, then measures each route named on stdin and answers ``[wall, cpu, db]`` in JSON."""
    import django_app

    wsgi_app = django_app.create_app(variant)
    cookie = django_app.login_cookie(wsgi_app) if variant != "django-none" else None
    pg = None
    if variant in DJANGO_PG_VARIANTS:  # pg_stat_statements through the parent's admin URI
        pg = run.EmbeddedPostgres(Path(os.devnull))
        pg.admin_uri = os.environ["BENCH_PG_ADMIN_URI"]
    for line in sys.stdin:
        print(json.dumps(measure(wsgi_app, cookie, line.strip(), requests, pg)), flush=True)


class _DjangoChild:
    """A Django variant measured in its own process, kept for all rounds (they stay interleaved)."""

    def __init__(self, variant: str, requests: int, env: dict[str, str]) -> None:
        self.variant = variant
        command = [sys.executable, str(Path(__file__).resolve()), "--child-django", variant, str(requests)]
        self.proc = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def measure(self, route: str) -> tuple[float, float, float | None]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(route + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise run.VariantFailed(f"{self.variant}: its process ended ({self.proc.wait()})")
        wall, cpu, db = json.loads(answer)
        return wall, cpu, db

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--child-django"]:
        serve_django(argv[1], int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--variants", type=run._csv(VARIANTS + DJANGO_VARIANTS), default=list(DEFAULT_VARIANTS)
    )
    parser.add_argument(
        "--routes", type=run._csv(("read", "write", "none")), default=["read", "write", "none"]
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument(
        "--stub-store",
        action="store_true",
        help="answer the PostgreSQL variants' loads and writes at once, without the database or"
        " the driver: only the session layer's own Python is timed",
    )
    ns = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="pgsession-cost-"))
    stack = contextlib.ExitStack()
    best: dict[tuple[str, str], Cost] = {}
    try:
        pg = run.start_services(workdir, stack, ns.variants, ns.redis_port)
        pg._query("ALTER SYSTEM SET pg_stat_statements.track_planning = on")
        pg._query("SELECT pg_reload_conf()")
        os.environ["BENCH_PG_DSN"] = pg.uri
        os.environ["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{ns.redis_port}/0"
        import app as bench_app

        apps: dict[str, tuple[Any, str | None]] = {}
        children: dict[str, _DjangoChild] = {}
        child_env = {**os.environ, "BENCH_PG_ADMIN_URI": pg.admin_uri}
        for variant in ns.variants:
            if variant in DJANGO_VARIANTS:  # issue 26: one process per variant (--stub-store: not)
                try:
                    import django_app

                    django_app.prepare_in_child(variant, child_env)
                except RuntimeError as exc:
                    raise run.VariantFailed(str(exc)) from None
                children[variant] = _DjangoChild(variant, ns.requests, child_env)
                stack.callback(children[variant].close)
                continue
            flask_app = bench_app.create_app(variant)
            floor = flask_app.extensions.get("bench_floor")
            if floor is not None:
                floor.create_table()
            apps[variant] = (flask_app, _login(flask_app) if variant != "none" else None)
            if ns.stub_store:
                _stub(flask_app)
        for round_number in range(1, ns.rounds + 1):
            print(f"round {round_number} of {ns.rounds}", flush=True)
            for variant in ns.variants:
                for route in ns.routes:
                    if variant in children:
                        wall, cpu, db = children[variant].measure(route)
                    else:
                        flask_app, cookie = apps[variant]
                        uses_pg = pg if variant in PG_VARIANTS else None
                        wall, cpu, db = measure(flask_app, cookie, route, ns.requests, uses_pg)
                    known = best.get((variant, route))
                    if known is None or wall < known.wall_us:
                        best[(variant, route)] = Cost(variant, route, wall, cpu, db)
    finally:
        stack.close()
        shutil.rmtree(workdir, ignore_errors=True)

    rows = []
    for (variant, route), cost in best.items():
        base = best.get(("django-none" if variant in DJANGO_VARIANTS else "none", route))
        rows.append(
            [
                variant,
                f"/{route}",
                f"{cost.wall_us:.1f}",
                f"{cost.cpu_us:.1f}",
                f"{cost.db_us:.1f}" if cost.db_us is not None else "-",
                f"{cost.cpu_us - base.cpu_us:.1f}" if base else "-",
            ]
        )
    rows.sort(key=lambda r: (r[1], ns.variants.index(r[0])))
    print()
    print(
        f"microseconds per request, in process, one at a time; best of {ns.rounds} interleaved rounds"
        f" of {ns.requests} requests; {os.cpu_count()} CPUs"
    )
    print(run._format_table(["variant", "route", "wall", "cpu", "db", "+cpu"], rows, "llrrrr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
