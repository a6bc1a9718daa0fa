"""The app's own work per request, in CPU instructions: a measure the machine's load cannot move.

    python benchmarks/instructions.py [--variants none,floor,pgsession-wsgi] [--routes read,write,none]
    python benchmarks/instructions.py --asgi [--variants none,asgi-floor,pgsession-asgi-starlette]

Throughput (run.py) and CPU time (cost.py) vary from run to run on a shared machine; the number of
instructions a process executes does not. This runs the same Flask app as the other benchmarks
(benchmarks/app.py), in process, one request at a time, under ``valgrind --tool=callgrind``, and
prints the instructions per request of each variant and route: Flask, the session library and the
driver, in this process only (PostgreSQL's and Redis's own work is not counted, nor is time spent
waiting). Each figure is the difference between two runs of ``--requests`` and ``--requests`` +
``--extra`` requests, divided by ``--extra``, so start-up and imports cancel out.

Needs valgrind on PATH (Debian: ``apt-get install valgrind``); starts its own embedded PostgreSQL
like the other benchmarks, and uses the Redis on 127.0.0.1:``--redis-port`` (or starts one) for
``flask-session-redis``. A variant and route take about 30 s (valgrind runs Python about 50x
slower); the variants run one after another.

The Django variants (``django-none``, ``django-db``, ``django-cache-redis``, ``django-pgsession``,
issue 26) are benchmarks/django_app.py's, the same routes; each is built once outside valgrind
first (``migrate``, our table), and the table adds their instructions over ``django-none``'s.

With ``--asgi`` the apps are benchmarks/asgi_app.py's, called in process as cost_asgi.py calls them
(their lifespan runs, one request at a time, uvloop's loop): each variant against the ASGI floor of
its durability (``asgi-floor``, ``asgi-floor-async``, ``asgi-floor-unlogged``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import django_app  # noqa: E402
import run  # noqa: E402
from app import VARIANTS  # noqa: E402
from django_app import DJANGO_VARIANTS  # noqa: E402

DEFAULT_VARIANTS = ("none", "floor-unlogged", "pgsession-wsgi-unlogged", "floor", "pgsession-wsgi")
DEFAULT_ASGI_VARIANTS = ("none", "asgi-floor", "pgsession-asgi-starlette")
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def serve_requests(variant: str, route: str, requests: int) -> None:
    """The child: build the variant's app, log in, warm up, then answer ``requests`` requests."""
    import cost

    if variant in DJANGO_VARIANTS:  # django_app.py's (prepared by the parent: migrate, table)
        flask_app = django_app.create_app(variant)
        cookie = django_app.login_cookie(flask_app) if variant != "django-none" else None
    else:
        from app import create_app

        flask_app = create_app(variant)
        floor = flask_app.extensions.get("bench_floor")
        if floor is not None:
            floor.create_table()
        cookie = cost._login(flask_app) if variant != "none" else None
    environ_for = cost._environ_builder()
    environs = [environ_for(f"/{route}", cookie) for _ in range(requests + 100)]
    for environ in environs:  # the first 100 warm up: connections, prepared statements, caches
        body = flask_app(environ, cost._start_response)
        b"".join(body)
        close = getattr(body, "close", None)
        if close is not None:
            close()


def serve_asgi_requests(variant: str, route: str, requests: int) -> None:
    """The ``--asgi`` child: the same, for one of asgi_app's apps, called in process."""
    import asyncio
    import secrets

    import cost_asgi
    import uvloop
    from asgi_app import ASGI_NO_SESSION_VARIANTS, _prepare, create_app

    async def serve() -> None:
        await _prepare(variant)
        app = create_app(variant)
        async with cost_asgi._Lifespan(app) as lifespan:
            cookies: list[str | None]
            if route == "anon":  # /none without a cookie
                cookies = [None]
            elif variant in ASGI_NO_SESSION_VARIANTS:
                cookies = [f"session={secrets.token_urlsafe(66)}"]
            else:
                cookies = list(await cost_asgi._login(app, lifespan.state, 1))
            path = "/none" if route == "anon" else f"/{route}"
            # The first 100 warm up: connections, prepared statements, caches.
            await cost_asgi._drive(app, lifespan.state, path, cookies, requests + 100, 1)

    uvloop.install()
    asyncio.run(serve())


def count(variant: str, route: str, requests: int, env: dict[str, str], child: str = "--child") -> int:
    """Instructions of one child process serving ``requests`` requests, start-up included."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        child,
        variant,
        route,
        str(requests),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise run.VariantFailed(f"{variant} /{route} under valgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--child"]:
        serve_requests(argv[1], argv[2], int(argv[3]))
        return 0
    if argv[:1] == ["--child-asgi"]:
        serve_asgi_requests(argv[1], argv[2], int(argv[3]))
        return 0
    asgi = "--asgi" in argv
    if asgi:
        from asgi_app import ASGI_VARIANTS
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--asgi", action="store_true", help="benchmarks/asgi_app.py's apps instead")
    parser.add_argument(
        "--variants",
        type=run._csv(ASGI_VARIANTS if asgi else VARIANTS + DJANGO_VARIANTS),
        default=list(DEFAULT_ASGI_VARIANTS if asgi else DEFAULT_VARIANTS),
    )
    routes = ("read", "write", "none", "anon") if asgi else ("read", "write", "none")
    parser.add_argument(
        "--routes",
        type=run._csv(routes),
        default=["read", "write", "none"],
        help=f"from {','.join(routes)} (anon: /none without a cookie, with --asgi)",
    )
    parser.add_argument("--requests", type=int, default=100, help="requests of the shorter run")
    parser.add_argument("--extra", type=int, default=500, help="requests the longer run adds")
    parser.add_argument("--redis-port", type=int, default=6379)
    ns = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not on PATH (Debian: apt-get install valgrind)")

    workdir = Path(tempfile.mkdtemp(prefix="pgsession-instructions-"))
    stack = contextlib.ExitStack()
    per_request: dict[tuple[str, str], float] = {}
    try:
        pg = run.start_services(workdir, stack, ns.variants, ns.redis_port)
        env = dict(os.environ)
        env["BENCH_PG_DSN"] = pg.uri
        env["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{ns.redis_port}/0"
        for variant in ns.variants:
            if variant in DJANGO_VARIANTS:
                # migrate and our table, outside valgrind: else the shorter run alone pays for them
                try:
                    django_app.prepare_in_child(variant, env)
                except RuntimeError as exc:
                    raise run.VariantFailed(str(exc)) from None
            for route in ns.routes:
                print(f"{variant} /{route} ...", flush=True)
                child = "--child-asgi" if asgi else "--child"
                short = count(variant, route, ns.requests, env, child)
                long = count(variant, route, ns.requests + ns.extra, env, child)
                per_request[(variant, route)] = (long - short) / ns.extra
    finally:
        stack.close()
        shutil.rmtree(workdir, ignore_errors=True)

    rows = []
    floor_name = "asgi-floor" if asgi else "floor"
    # The Django variants (issue 26) also show what the session adds to Django without one.
    django = any(v in DJANGO_VARIANTS for v in ns.variants)
    for route in ns.routes:
        for variant in ns.variants:
            value = per_request[(variant, route)]
            # Each variant against the floor of its own durability (the unlogged ones against
            # the unlogged floor): the same statements, so the same driver work.
            durability = next((d for d in ("-unlogged", "-async") if variant.endswith(d)), "")
            base = per_request.get((floor_name + durability, route))
            ratio = f"{value / base:.3f}" if base else "-"
            rows.append([variant, f"/{route}", f"{value / 1000:,.0f}k", ratio])
            if django:
                none = per_request.get(("django-none", route))
                added = variant in DJANGO_VARIANTS and none is not None
                rows[-1].append(f"{(value - none) / 1000:+,.0f}k" if added else "-")
    print()
    print(
        f"instructions per request in the app's process (callgrind), {ns.extra} requests"
        " after the first ones; PostgreSQL's own work is not counted"
    )
    headers = ["variant", "route", "instructions", "vs floor"]
    if django:
        headers.append("over django-none")
    print(run._format_table(headers, rows, "llrrr" if django else "llrr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
