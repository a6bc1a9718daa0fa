"""``pgsession-wsgi demo`` in this process, through ``main``: what it prints, what it serves and how
it stops, on a given database and on the private embedded one.

The server runs for real in the test's main thread (werkzeug's ``run_simple``, as the command
runs it); a helper thread browses it, then sends this process SIGINT, the user's Ctrl-C, which the
demo turns into a clean stop. Each run takes a fraction of a second. The same command run as a
child process, as the README shows it, is in test_examples.py.
"""

from __future__ import annotations

import errno
import http.client
import importlib.abc
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pgsession_wsgi.examples.wsgi_app as wsgi_example
import psycopg2
import pytest
from apps.support import Response, free_port, http_get, wsgi_call
from db import sql
from wire import RoundTripCounter

from pgsession_wsgi.cli import main

PASSWORD = "demo-pw-never-printed"


def visits(page: Response) -> int:
    match = re.search(rb"visited this page (\d+) time", page.body)
    assert match, page.body
    return int(match.group(1))


@dataclass
class Run:
    """What one demo run printed and what its browser saw."""

    status: int
    out: list[str]
    err: str
    pages: list[Response] = field(default_factory=list)


Browse = Callable[[int], list[Response]]


def two_visits(port: int) -> list[Response]:
    first = http_get(port, "/")
    return [first, http_get(port, "/", cookie=first.cookie())]


def run_demo(argv: list[str], capsys: pytest.CaptureFixture[str], browse: Browse = two_visits,
             *, port: int | None = None) -> Run:
    """``main(["demo", "--port", PORT, *argv])`` in this thread; once the server answers, ``browse``
    runs in another thread, then SIGINT stops the demo. A failure of ``browse`` fails the test
    after the demo stopped; a demo that never answers, or never stops, is sent SIGINT after a
    minute all the same."""
    port = port or free_port()
    answered = threading.Event()
    returned = threading.Event()
    interrupted = threading.Lock()
    seen: dict[str, Any] = {}

    def ctrl_c() -> None:
        """Once, and only while ``main`` runs (the demo handles SIGINT then, pytest does after)."""
        if not returned.is_set() and interrupted.acquire(blocking=False):
            os.kill(os.getpid(), signal.SIGINT)

    def browser() -> None:
        try:
            deadline = time.monotonic() + 30
            while not returned.is_set() and time.monotonic() < deadline:
                try:
                    http_get(port, "/favicon.ico", timeout=5)  # a 404, no session: not a visit
                except (OSError, http.client.HTTPException):
                    time.sleep(0.02)
                    continue
                answered.set()
                break
            if answered.is_set() and not returned.is_set():
                seen["pages"] = browse(port)
        except BaseException as exc:  # reported by the test, after the demo stopped
            seen["error"] = exc
        finally:
            ctrl_c()

    thread = threading.Thread(target=browser, daemon=True)
    watchdog = threading.Timer(60, ctrl_c)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    thread.start()
    watchdog.start()
    try:
        status = main(["demo", "--port", str(port), *argv])
    finally:
        returned.set()
        watchdog.cancel()
        thread.join(60)
    out, err = capsys.readouterr()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before, (
        "the demo left its signal handlers behind")
    if "error" in seen:
        raise AssertionError(f"browsing the demo failed: {seen['error']!r}\n{out}{err}") from seen["error"]
    assert answered.is_set(), f"the demo never answered on port {port}:\n{out}{err}"
    return Run(status, out.splitlines(), err, seen.get("pages", []))


def tables(dsn: str, schema: str) -> set[str]:
    rows = sql(dsn, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
    return {row[0] for row in rows}


def with_password(dsn: str) -> str:
    """The same DSN carrying a password (trust auth ignores it), to check it is never printed."""
    if "://" in dsn:
        return dsn + ("&" if "?" in dsn else "?") + f"password={PASSWORD}"
    return f"{dsn} password={PASSWORD}"


def described(dsn: str) -> str:
    parts = psycopg2.extensions.parse_dsn(dsn)
    return (f"host {parts['host']}, port {parts.get('port', 5432)}, db {parts['dbname']}, "
            f"user {parts['user']}")


@pytest.fixture
def no_dsn_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("PGSESSION_DSN", "DATABASE_URL", "SECRET_KEY", "PGSESSION_TABLE", "PGSESSION_SCHEMA"):
        monkeypatch.delenv(variable, raising=False)


# -- on a given database ---------------------------------------------------------------------------


def test_demo_serves_the_example_on_the_given_table_and_stops_on_ctrl_c(
        pg_dsn: str, schema: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        no_dsn_variables: None) -> None:
    monkeypatch.setenv("SECRET_KEY", "a-demo-key-kept-across-restarts-0123456789")
    port = free_port()
    table = f"demo_{uuid.uuid4().hex[:12]}"
    run = run_demo(["--app", "wsgi", "--dsn", with_password(pg_dsn), "--schema", schema,
                    "--table", table], capsys, port=port)
    assert run.status == 0, run.err
    assert run.out == [
        f"pgsession-wsgi demo: using PostgreSQL from --dsn ({described(pg_dsn)})",
        f"pgsession-wsgi demo: serving pgsession_wsgi.examples.wsgi_app on http://127.0.0.1:{port}/ "
        f"(sessions in {schema}.{table}); press Ctrl-C to stop",
        "pgsession-wsgi demo: stopped",
    ]
    assert PASSWORD not in "".join(run.out) + run.err and "Traceback" not in run.err
    first, second = run.pages
    assert (first.status, visits(first), second.status, visits(second)) == (200, 1, 200, 2)
    # The sessions are in the table asked for, and the demo made no other table, here or elsewhere.
    assert sql(pg_dsn, "SELECT table_schema, table_name FROM information_schema.tables"
                       " WHERE table_schema = %s OR table_name IN (%s, %s)", (schema, schema, table)) == [
        (schema, table)]
    assert sql(pg_dsn, f'SELECT count(*) FROM "{schema}"."{table}"') == [(1,)]
    # Signed with SECRET_KEY: the same example with that key (the demo restarted) takes the cookie.
    again = wsgi_example.create_app(pg_dsn, os.environ["SECRET_KEY"], table=table, schema=schema)
    try:
        assert visits(wsgi_call(again, "/", first.cookie())) == 3
    finally:
        again.store.close()  # type: ignore[attr-defined]


def test_demo_without_secret_key_signs_with_a_key_of_its_own(
        pg_dsn: str, schema: str, capsys: pytest.CaptureFixture[str], no_dsn_variables: None) -> None:
    run = run_demo(["--app", "wsgi", "--dsn", pg_dsn, "--schema", schema], capsys)
    assert run.status == 0, run.err
    assert [visits(page) for page in run.pages] == [1, 2]
    assert tables(pg_dsn, schema) == {"pgsession"}


def slow_client_then_visits(port: int) -> list[Response]:
    """A browser that opened a connection and sent half a request does not hold up another."""
    with socket.create_connection(("127.0.0.1", port)) as stalled:
        stalled.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the blank line never comes
        return two_visits(port)


def test_demo_serves_several_browsers_at_once(pg_dsn: str, schema: str,
                                             capsys: pytest.CaptureFixture[str],
                                             no_dsn_variables: None) -> None:
    run = run_demo(["--app", "wsgi", "--dsn", pg_dsn, "--schema", schema], capsys,
                   slow_client_then_visits)
    assert run.status == 0, run.err
    assert [visits(page) for page in run.pages] == [1, 2]


def test_demo_serves_the_flask_example_by_default(pg_dsn: str, schema: str,
                                                  capsys: pytest.CaptureFixture[str],
                                                  no_dsn_variables: None) -> None:
    port = free_port()
    run = run_demo(["--dsn", pg_dsn, "--schema", schema], capsys,
                   lambda port: [http_get(port, "/")], port=port)
    assert run.status == 0, run.err
    assert run.out[1].startswith(
        f"pgsession-wsgi demo: serving pgsession_wsgi.examples.flask_app on http://127.0.0.1:{port}/ ")
    [page] = run.pages
    assert page.status == 200 and b"<title>pgsession-wsgi: Flask demo</title>" in page.body


# -- on the private embedded PostgreSQL --------------------------------------------------------------


@pytest.mark.parametrize("database_url", [None, f"postgresql://app:{PASSWORD}@127.0.0.1:1/app"])
def test_demo_without_a_dsn_serves_from_a_private_server_and_deletes_it(
        database_url: str | None, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, no_dsn_variables: None) -> None:
    """DATABASE_URL is an app's own database: the demo says it leaves it alone."""
    if database_url:
        monkeypatch.setenv("DATABASE_URL", database_url)
    run = run_demo(["--app", "wsgi"], capsys)
    assert run.status == 0, run.err
    first, last = run.out[0], run.out[-1]
    found = re.fullmatch(r"pgsession-wsgi demo: no --dsn or PGSESSION_DSN given, using a private "
                         r"embedded PostgreSQL in (\S+) \(deleted when the demo stops(.*)\)", first)
    assert found, first
    data_dir = Path(found[1])
    assert data_dir.name == "data"
    assert found[2] == ('; DATABASE_URL is not used by the demo: pass --dsn "$DATABASE_URL" to serve '
                        'from there' if database_url else "")
    assert run.out[1].startswith("pgsession-wsgi demo: serving pgsession_wsgi.examples.wsgi_app ")
    assert [visits(page) for page in run.pages] == [1, 2]
    assert last == "pgsession-wsgi demo: stopped and deleted the embedded PostgreSQL"
    assert not data_dir.exists()
    assert PASSWORD not in "\n".join(run.out) + run.err


def test_an_embedded_server_that_does_not_start_is_one_line(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        no_dsn_variables: None) -> None:
    """initdb refuses a locale that does not exist: the demo says so, exit 1, nothing served."""
    monkeypatch.setenv("LC_ALL", "xx_XX.no-such-locale")
    status = main(["demo", "--app", "wsgi", "--port", str(free_port())])
    out, err = capsys.readouterr()
    assert (status, out) == (1, "")
    assert err.startswith("pgsession-wsgi demo: error: the embedded PostgreSQL did not start: initdb failed")
    assert "invalid locale settings" in err and "Traceback" not in err


# -- which example, and what is missing -------------------------------------------------------------


def test_demo_without_flask_serves_the_plain_example(pg_dsn: str, schema: str,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    no_dsn_variables: None) -> None:
    monkeypatch.setitem(sys.modules, "flask", None)  # `import flask` fails as if not installed
    monkeypatch.delitem(sys.modules, "pgsession_wsgi.examples.flask_app", raising=False)
    port = free_port()
    run = run_demo(["--dsn", pg_dsn, "--schema", schema], capsys, port=port)
    assert run.status == 0, run.err
    assert run.out[1].startswith(
        f"pgsession-wsgi demo: serving pgsession_wsgi.examples.wsgi_app on http://127.0.0.1:{port}/ ")
    assert [visits(page) for page in run.pages] == [1, 2]


def refused_before_any_database(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The demo's one line, exit 2, before it touches the database (one that would fail with 1)."""
    status = main(["demo", *argv, "--port", str(free_port()), "--dsn", closed_port_dsn()])
    out, err = capsys.readouterr()
    assert (status, out) == (2, ""), out + err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_the_flask_example_without_flask_says_what_to_install(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flask", None)
    monkeypatch.delitem(sys.modules, "pgsession_wsgi.examples.flask_app", raising=False)
    assert refused_before_any_database(capsys, "--app", "flask") == (
        "pgsession-wsgi demo: error: the Flask example needs Flask, which is not installed: "
        "`pip install 'pgsession-wsgi[demo]'` (or `pip install flask`), or serve the plain WSGI "
        "example with --app wsgi\n")


def test_a_broken_flask_install_is_a_missing_flask(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A module of Flask's own missing (flask_login imports flask.signals) asks for Flask too."""
    monkeypatch.setitem(sys.modules, "flask.signals", None)
    monkeypatch.delitem(sys.modules, "pgsession_wsgi.examples.flask_app", raising=False)
    for name in [name for name in sys.modules if name.partition(".")[0] == "flask_login"]:
        monkeypatch.delitem(sys.modules, name)  # imported again, up to flask.signals
    try:
        err = refused_before_any_database(capsys, "--app", "flask")
    finally:  # what that import left half-done goes; monkeypatch puts the real ones back
        for name in [name for name in sys.modules if name.partition(".")[0] == "flask_login"]:
            del sys.modules[name]
    assert err.startswith("pgsession-wsgi demo: error: the Flask example needs Flask, which is not "
                          "installed: "), err


def test_the_flask_example_without_flask_login_names_it(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flask_login", None)
    monkeypatch.delitem(sys.modules, "pgsession_wsgi.examples.flask_app", raising=False)
    assert refused_before_any_database(capsys, "--app", "flask") == (
        "pgsession-wsgi demo: error: the flask example needs the module flask_login, which is not "
        "installed: `pip install 'pgsession-wsgi[demo]'`\n")


class UnnamedMissingModule(importlib.abc.MetaPathFinder):
    """A dependency that raises ModuleNotFoundError by hand, without naming a module."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "flask_login":
            raise ModuleNotFoundError("flask_login needs a module that is not there")
        return None


def test_a_missing_module_that_is_not_named_is_a_question_mark(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "flask_login", raising=False)
    monkeypatch.delitem(sys.modules, "pgsession_wsgi.examples.flask_app", raising=False)
    monkeypatch.setattr(sys, "meta_path", [UnnamedMissingModule(), *sys.meta_path])
    assert refused_before_any_database(capsys, "--app", "flask") == (
        "pgsession-wsgi demo: error: the flask example needs the module ?, which is not installed: "
        "`pip install 'pgsession-wsgi[demo]'`\n")


def test_missing_examples_say_how_to_reinstall(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An install without ``pgsession_wsgi.examples`` (a broken wheel)."""
    monkeypatch.setitem(sys.modules, "pgsession_wsgi.examples", None)
    monkeypatch.delitem(sys.modules, "pgsession_wsgi.examples.wsgi_app", raising=False)
    assert refused_before_any_database(capsys, "--app", "wsgi") == (
        "pgsession-wsgi demo: error: the example apps are not installed "
        "(pgsession_wsgi.examples.wsgi_app is missing): reinstall with `pip install "
        "--force-reinstall 'pgsession-wsgi[demo]'`, or in a source checkout `pip install -e '.[demo]'`\n")


# -- what it says before it starts ------------------------------------------------------------------


@pytest.mark.parametrize("dsn, says", [
    (f"postgresql://someone:{PASSWORD}@127.0.0.1:{{port}}/nodb",
     "host 127.0.0.1, port {port}, db nodb, user someone"),
    (f"postgresql+psycopg2://someone:{PASSWORD}@127.0.0.1:{{port}}/nodb",
     "host 127.0.0.1, port {port}, db nodb, user someone"),
    ("host=127.0.0.1 port={port}", "host 127.0.0.1, port {port}, db (default), user (default)"),
    (f"port={{port}} dbname=nodb user=someone password={PASSWORD}",
     "host local socket, port {port}, db nodb, user someone"),
    ("host=/nonexistent-socket-dir dbname=nodb user=someone",
     "host /nonexistent-socket-dir, port 5432, db nodb, user someone"),
])
def test_demo_names_the_database_then_fails_on_one_that_does_not_answer(
        dsn: str, says: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        no_dsn_variables: None) -> None:
    """The first line says which server, database and user, never the password; then one error."""
    for variable in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        monkeypatch.delenv(variable, raising=False)
    port = free_port()
    monkeypatch.setenv("PGSESSION_DSN", dsn.format(port=port))
    status = main(["demo", "--app", "wsgi", "--port", str(free_port())])
    out, err = capsys.readouterr()
    assert out == f"pgsession-wsgi demo: using PostgreSQL from PGSESSION_DSN ({says.format(port=port)})\n"
    assert status == 1 and err.startswith("pgsession-wsgi demo: error: cannot connect to PostgreSQL")
    assert err.count("\n") == 1 and PASSWORD not in out + err


# -- the port, checked before anything starts ------------------------------------------------------


def closed_port_dsn() -> str:
    """Where nothing listens: a demo that got past the port check would fail there with status 1."""
    return f"postgresql://someone:{PASSWORD}@127.0.0.1:{free_port()}/nodb"


def demo_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a refused demo prints, with status 2 and nothing on stdout."""
    status = main(["demo", "--app", "wsgi", "--dsn", closed_port_dsn(), *argv])
    out, err = capsys.readouterr()
    assert (status, out) == (2, ""), out + err
    assert err.count("\n") == 1 and "Traceback" not in err and PASSWORD not in err, err
    return err


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=IPV6),
                                  pytest.param("[::1]", marks=IPV6)])
def test_demo_on_a_taken_port_is_one_line_before_anything_starts(
        host: str, capsys: pytest.CaptureFixture[str]) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host.strip("[]"), 0), family=family) as held:
        port = held.getsockname()[1]
        err = demo_error(["--host", host, "--port", str(port)], capsys)
    assert err == (f"pgsession-wsgi demo: error: port {port} on {host} is already in use: stop what "
                   "listens there, or pick another port with --port\n")


def test_demo_on_an_address_of_another_machine_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    err = demo_error(["--host", "192.0.2.1", "--port", str(free_port())], capsys)  # TEST-NET-1
    assert err == ("pgsession-wsgi demo: error: --host 192.0.2.1 is not an address of this machine: "
                   "use 127.0.0.1, or 0.0.0.0 for every interface\n")


def test_demo_on_a_host_that_is_no_address_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    err = demo_error(["--host", "a..b", "--port", str(free_port())], capsys)  # not even a name
    assert err == ("pgsession-wsgi demo: error: --host a..b is not an address this machine can listen "
                   "on: give an IP address, such as 127.0.0.1 (this machine only) or 0.0.0.0 (every "
                   "interface)\n")


@IPV6
def test_demo_on_an_address_it_cannot_listen_on_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    """A link-local IPv6 address without its interface: the system's reason, and both ways out."""
    port = free_port()
    err = demo_error(["--host", "fe80::1", "--port", str(port)], capsys)
    assert re.fullmatch(rf"pgsession-wsgi demo: error: cannot listen on port {port} of fe80::1 "
                        r"\([^()]+\): pick another with --port or --host\n", err), err


def test_demo_on_ipv6_where_the_machine_has_none_is_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A kernel without IPv6 still resolves ``::1`` (a literal needs no lookup) but refuses the
    socket itself: the same one line, not a traceback."""
    real_socket = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: object, **kwargs: object) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
        return real_socket(family, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "socket", no_ipv6)
    port = free_port()
    err = demo_error(["--host", "::1", "--port", str(port)], capsys)
    assert re.fullmatch(rf"pgsession-wsgi demo: error: cannot listen on port {port} of ::1 "
                        r"\([^()]+\): pick another with --port or --host\n", err), err


def unprivileged_port_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


@pytest.mark.skipif(unprivileged_port_start() <= 1, reason="every port is open to every user here")
def test_demo_on_a_privileged_port_says_to_pick_another(capsys: pytest.CaptureFixture[str]) -> None:
    """As a user who may not listen below 1024 (as root, for the time of the call, user nobody)."""
    as_root = os.geteuid() == 0
    if as_root:
        os.seteuid(65534)
    try:
        err = demo_error(["--port", "1"], capsys)
    finally:
        if as_root:
            os.seteuid(0)
    assert err == ("pgsession-wsgi demo: error: port 1 needs privileges this user lacks: pick a port "
                   "above 1023 with --port\n")


class TakesThePortOnConnect(RoundTripCounter):
    """A proxy in front of the database that takes ``port`` when the demo first connects: after the
    demo checked the port, before its server listens there (as another program starting then would)."""

    def __init__(self, dsn: str, port: int) -> None:
        self.port_to_take = port
        self.held: socket.socket | None = None
        super().__init__(dsn)

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            if self.held is None:
                self.held = socket.create_server(("127.0.0.1", self.port_to_take))
        super()._serve(client)

    def close(self) -> None:
        super().close()
        if self.held is not None:
            self.held.close()


def test_a_port_taken_after_the_check_is_a_failure(pg_dsn: str, schema: str,
                                                   capsys: pytest.CaptureFixture[str],
                                                   no_dsn_variables: None) -> None:
    """werkzeug says so and exits 1: the demo's status is a failure too, not 0."""
    port = free_port()
    with TakesThePortOnConnect(pg_dsn, port) as proxy:
        status = main(["demo", "--app", "wsgi", "--port", str(port), "--dsn", proxy.dsn,
                       "--schema", schema])
    out, err = capsys.readouterr()
    assert status == 1, out + err
    assert f"Port {port} is in use" in err and "Traceback" not in err
    assert out.splitlines()[-1].startswith("pgsession-wsgi demo: serving ")
