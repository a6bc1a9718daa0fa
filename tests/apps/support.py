"""Helpers shared by the reliability tests: direct WSGI calls, a real gunicorn, a silent proxy."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2.extensions
from werkzeug.http import parse_cookie
from werkzeug.test import create_environ
from wire import pump

APPS_DIR = Path(__file__).resolve().parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


class Response:
    """What a WSGI app answered: status code, headers and the joined body."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def cookie(self, name: str = "session") -> str | None:
        """The value this response sets for ``name`` ("" when it expires it), None if untouched."""
        for header in self.header_all("Set-Cookie"):
            first = header.split(";", 1)[0]
            if first.split("=", 1)[0] == name:
                return parse_cookie(first).get(name, "")
        return None

    def json(self) -> Any:
        return json.loads(self.body)


def wsgi_call(
    app: Any, path: str, cookie: str | None = None, *, cookie_header: str | None = None
) -> Response:
    """Call ``app`` in this thread the way a WSGI server would, closing the body afterwards."""
    query = ""
    if "?" in path:
        path, query = path.split("?", 1)
    environ = create_environ(path=path, query_string=query)
    if cookie is not None:
        environ["HTTP_COOKIE"] = f"session={cookie}"
    if cookie_header is not None:
        environ["HTTP_COOKIE"] = cookie_header
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured["status"] = int(status.split()[0])
        captured["headers"] = list(headers)
        return lambda data: None

    body = app(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return Response(captured["status"], captured["headers"], data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str, cookie: str | None = None, timeout: float = 10.0) -> Response:
    """One GET to 127.0.0.1:port on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Cookie": f"session={cookie}"} if cookie else {})
        answer = conn.getresponse()
        return Response(answer.status, answer.getheaders(), answer.read())
    finally:
        conn.close()


class Gunicorn:
    """A running gunicorn; ``port``, ``log()``, ``alive``."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def wait_ready(self, path: str = "/ping", timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise AssertionError(f"gunicorn exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if http_get(self.port, path, timeout=2).status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"gunicorn did not answer {path}:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the whole process group (master and workers), by force if it lingers."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        else:  # the master is gone; make sure no orphaned worker of its group lingers
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


@contextmanager
def gunicorn(app: str, env: dict[str, str], tmp_path: Path, *args: str) -> Iterator[Gunicorn]:
    """Start ``gunicorn app`` on a free 127.0.0.1 port in its own process group; always stopped."""
    port = free_port()
    log_path = tmp_path / f"gunicorn-{port}.log"
    cmd = [
        GUNICORN,
        "--bind",
        f"127.0.0.1:{port}",
        "--chdir",
        str(APPS_DIR),
        "--graceful-timeout",
        "2",
        "--log-level",
        "info",
        *args,
        app,
    ]
    full_env = {**os.environ, **env, "PYTHONPATH": str(APPS_DIR.parent.parent)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
    server = Gunicorn(proc, port, log_path)
    try:
        yield server
    finally:
        server.stop()


class SwitchProxy:
    """A TCP proxy on 127.0.0.1 to a PostgreSQL server that can go silent.

    Forwarding, it passes bytes both ways. Silent (``silent = True``), it accepts new connections
    and never answers them, like a server that hangs or a network that drops packets.
    """

    def __init__(self, dsn: str) -> None:
        params = psycopg2.extensions.parse_dsn(dsn)
        host, port = params.get("host", ""), int(params.get("port") or 5432)
        self._target: Any = os.path.join(host, f".s.PGSQL.{port}") if host.startswith("/") else (host, port)
        self._family = socket.AF_UNIX if host.startswith("/") else socket.AF_INET
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._listener.settimeout(0.1)
        params.update(host="127.0.0.1", port=str(self._listener.getsockname()[1]), sslmode="disable")
        self.dsn = psycopg2.extensions.make_dsn(**params)
        self.silent = False
        self._closed = False
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            self._socks.append(client)
            if self.silent:
                continue
            server = socket.socket(self._family, socket.SOCK_STREAM)
            self._socks.append(server)
            try:
                server.connect(self._target)
            except OSError:
                client.close()
                continue
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=pump, args=(src, dst), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._thread.join(5)
        self._listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
