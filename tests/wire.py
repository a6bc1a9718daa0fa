"""Wire-level test helpers: a statement-counting proxy, a connection-cutting one and a PgBouncer.

``RoundTripCounter`` proves claims such as "a save is one round trip" by counting what the client
really sends, not what the code says it sends. ``CuttingProxy`` breaks connections that still look
healthy, as a network cut does. ``PgBouncer`` proves the store works behind transaction pooling
(no session state kept between statements).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg2.extensions

__all__ = [
    "PGBOUNCER_INSTALL_HINT",
    "CuttingProxy",
    "PgBouncer",
    "RoundTripCounter",
    "backend_address",
    "find_pgbouncer",
    "statement_kind",
]

PGBOUNCER_INSTALL_HINT = "Debian: apt-get install pgbouncer"

# Startup-phase request codes (the int32 after the length in an untyped first packet).
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


# What each of the store's prepared statements (pgsession_<kind>_<hash>) runs.
_PREPARED_COMMANDS = {
    "load": "SELECT",
    "insert": "INSERT",
    "write": "UPDATE",
    "merge": "UPDATE",
    "touch": "UPDATE",
    "delete": "DELETE",
}


def statement_kind(text: str) -> str:
    """The SQL command a counted statement runs (``SELECT``, ``UPDATE``...), whether it was sent
    as text, as ``PREPARE ... AS <statement>; EXECUTE ...``, as ``EXECUTE pgsession_<kind>_...``
    of the store's prepared statements or by that name alone (executed by name, as psycopg 3
    does); a ``SET LOCAL ...;`` guard in front is skipped."""
    rest = text.strip()
    if rest.startswith("pgsession_"):
        return _PREPARED_COMMANDS.get(rest.split("_")[1], rest)
    while rest.upper().startswith("SET LOCAL") and ";" in rest:
        rest = rest.split(";", 1)[1].strip()
    word = rest.split(None, 1)[0].upper() if rest else ""
    if word == "PREPARE":
        return statement_kind(rest.split(" AS ", 1)[1])
    if word == "EXECUTE":
        name = rest.split(None, 2)[1].split("(", 1)[0]
        if name.startswith("pgsession_"):
            return _PREPARED_COMMANDS.get(name.split("_")[1], word)
    return word


def backend_address(dsn: str) -> tuple[str, int]:
    """The (host, port) a DSN points at; a host starting with / is a unix socket directory."""
    params = psycopg2.extensions.parse_dsn(dsn)
    host = (params.get("host") or params.get("hostaddr") or "").split(",")[0]
    if not host:
        raise ValueError(f"the DSN names no host; give host= (a name or a socket dir): {dsn!r}")
    return host, int(str(params.get("port") or 5432).split(",")[0])


def _proxied_dsn(dsn: str, port: int) -> str:
    params = psycopg2.extensions.parse_dsn(dsn)
    params.pop("hostaddr", None)
    params.update(host="127.0.0.1", port=str(port), sslmode="disable")
    return psycopg2.extensions.make_dsn(**params)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly n bytes; b"" when the peer hung up first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return b""
        buf += chunk
    return bytes(buf)


def _hang_up(*socks: socket.socket) -> None:
    # shutdown() (unlike close()) wakes a thread blocked in recv() on the same socket.
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


def pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy bytes one way until either side closes, then hang up both."""
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        _hang_up(src, dst)


class RoundTripCounter:
    """A TCP proxy on 127.0.0.1 in front of a PostgreSQL server that counts statements sent.

    Every simple query ('Q') and every extended-protocol execute ('E') counts as one statement,
    whether its text was parsed just before ('P') or it runs a statement prepared earlier by name
    ('B' names it); the count is taken before the message is forwarded, so it is final once the
    client has its answer.
    Bytes pass through unchanged both ways; SSL and GSS encryption requests are refused ('N').
    """

    def __init__(self, dsn: str) -> None:
        host, port = backend_address(dsn)
        self._unix = host.startswith("/")
        self._target: str | tuple[str, int] = (
            os.path.join(host, f".s.PGSQL.{port}") if self._unix else (host, port)
        )
        self._family = socket.AF_UNIX if self._unix else socket.getaddrinfo(host, port)[0][0]
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # lets the accept loop notice close()
        self.port: int = self._listener.getsockname()[1]
        self.dsn: str = _proxied_dsn(dsn, self.port)
        self._lock = threading.Lock()
        self._count = 0
        self._statements: list[str] = []
        self.connections = 0  # client connections accepted so far
        self._live: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True, name="wire-accept")
        self._acceptor.start()

    @property
    def count(self) -> int:
        """Statements ('Q' and 'E' messages) sent by clients since creation or reset()."""
        with self._lock:
            return self._count

    @property
    def statements(self) -> list[str]:
        """The SQL text of the counted statements, in order (a statement prepared earlier: its
        name): for assertion messages and debugging."""
        with self._lock:
            return list(self._statements)

    def reset(self) -> None:
        """Start counting from zero (e.g. after a test's setup)."""
        with self._lock:
            self._count = 0
            self._statements.clear()

    def close(self) -> None:
        """Stop accepting, cut every proxied connection, and wait for the threads to end."""
        self._closed = True
        self._acceptor.join(5)
        self._listener.close()
        with self._lock:
            live = list(self._live)
            threads = list(self._threads)
        _hang_up(*live)
        for t in threads:
            t.join(5)

    def __enter__(self) -> RoundTripCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            t = threading.Thread(target=self._serve, args=(client,), daemon=True, name="wire-conn")
            with self._lock:
                self.connections += 1
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(t)
            t.start()

    def _serve(self, client: socket.socket) -> None:
        server = socket.socket(self._family, socket.SOCK_STREAM)
        with self._lock:
            self._live.update((client, server))
        backward = threading.Thread(target=pump, args=(server, client), daemon=True)
        try:
            server.connect(self._target)
            if not self._closed:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if not self._unix:
                    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                backward.start()
                self._client_to_server(client, server)
        except OSError:
            pass  # either side went away: hang up on both, as a real network failure would
        finally:
            _hang_up(client, server)
            if backward.is_alive():
                backward.join()
            with self._lock:
                self._live.difference_update((client, server))
            client.close()
            server.close()

    def _client_to_server(self, client: socket.socket, server: socket.socket) -> None:
        while True:  # startup phase: untyped packets (length, then a request code)
            head = _recv_exact(client, 8)
            if not head:
                return
            length, code = struct.unpack("!ii", head)
            body = _recv_exact(client, length - 8)
            if length > 8 and not body:
                return
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                client.sendall(b"N")  # no encryption: the client goes on in plain text
                continue
            server.sendall(head + body)
            if code == _CANCEL_REQUEST:
                return  # the server closes a cancel connection itself
            break
        parsed = bound = b""  # the text of the last Parse, and of the statement the last Bind named
        while True:  # then typed messages: 1 type byte, int32 length (counting itself), body
            head = _recv_exact(client, 5)
            if not head:
                return
            kind, length = head[:1], struct.unpack("!i", head[1:])[0]
            body = _recv_exact(client, length - 4)
            if length > 4 and not body:
                return
            if kind == b"Q":  # query\0
                self._record(body.split(b"\0")[0])
            elif kind == b"P":  # statement-name\0 query\0 parameter types
                parsed = body.split(b"\0")[1]
            elif kind == b"B":  # portal\0 statement-name\0 ...: the unnamed one is the last parsed
                name = body.split(b"\0")[1]
                bound = name or parsed
            elif kind == b"E":
                self._record(bound)
            server.sendall(head + body)

    def _record(self, text: bytes) -> None:
        with self._lock:
            self._count += 1
            self._statements.append(text.decode("utf-8", "replace"))


class CuttingProxy:
    """A TCP proxy to PostgreSQL that can doom the connections it has: each then hangs up on both
    sides at the next message its client sends. Until then a doomed connection looks healthy (its
    socket has nothing to read), so only the statement finds out, as after a network cut."""

    def __init__(self, dsn: str) -> None:
        host, port = backend_address(dsn)
        self._target: Any = os.path.join(host, f".s.PGSQL.{port}") if host.startswith("/") else (host, port)
        self._family = socket.AF_UNIX if host.startswith("/") else socket.AF_INET
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        params = psycopg2.extensions.parse_dsn(dsn)
        params.update(host="127.0.0.1", port=str(self._listener.getsockname()[1]), sslmode="disable")
        self.dsn = psycopg2.extensions.make_dsn(**params)
        self._live: list[socket.socket] = []  # client sockets, in accept order
        self._doomed: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def doom(self) -> int:
        """Doom every connection open now (not those made later); how many there were."""
        self._doomed.update(self._live)
        return len(self._live)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            server = socket.socket(self._family, socket.SOCK_STREAM)
            try:
                server.connect(self._target)
            except OSError:
                client.close()
                continue
            self._live.append(client)
            threading.Thread(target=pump, args=(server, client), daemon=True).start()
            threading.Thread(target=self._forward, args=(client, server), daemon=True).start()

    def _forward(self, client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                if client in self._doomed:
                    break
                server.sendall(chunk)
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(ValueError):
            self._live.remove(client)

    def close(self) -> None:
        self._closed = True
        self._thread.join(5)
        self._listener.close()
        self.doom()
        for sock in list(self._live):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_pgbouncer(executable: str = "pgbouncer") -> str | None:
    """The path of the pgbouncer program, or None; Debian installs it in /usr/sbin, off a user's PATH."""
    return shutil.which(executable) or shutil.which(executable, path="/usr/sbin:/sbin")


def _unprivileged_user(host: str) -> str:
    """PgBouncer refuses to run as root: the user to switch to (-u) when we are root.

    For a unix-socket backend, the owner of the socket directory: an embedded server's is 0700,
    so only its own (non-root) user can reach the socket.
    """
    if host.startswith("/"):
        owner = os.stat(host).st_uid
        if owner != 0:
            return pwd.getpwuid(owner).pw_name
    for name in ("postgres", "embedded_postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user to run pgbouncer as (tried postgres, nobody)")


class PgBouncer:
    """PgBouncer in transaction pooling mode on a free 127.0.0.1 port, in front of ``backend_dsn``.

    Trust authentication, a config and log in a temporary directory; ``dsn`` is the backend DSN
    pointed at PgBouncer (database, user and other parameters kept).
    """

    def __init__(self, backend_dsn: str, executable: str = "pgbouncer", pool_size: int = 20) -> None:
        binary = find_pgbouncer(executable)
        if binary is None:
            raise RuntimeError(f"pgbouncer is not installed ({PGBOUNCER_INSTALL_HINT})")
        host, port = backend_address(backend_dsn)
        user = psycopg2.extensions.parse_dsn(backend_dsn).get("user") or "postgres"
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.log_file = self.dir / "pgbouncer.log"
        users = {user, "postgres"}
        (self.dir / "users.txt").write_text("".join(f'"{u}" ""\n' for u in sorted(users)))
        config = self.dir / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'users.txt'}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 500\n"
            f"default_pool_size = {pool_size}\n"
            "ignore_startup_parameters = extra_float_digits, options, application_name\n"
            f"logfile = {self.log_file}\n"
        )
        cmd = [binary, str(config)]
        if os.geteuid() == 0:
            entry = pwd.getpwnam(_unprivileged_user(host))
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            cmd[1:1] = ["-u", entry.pw_name]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=self.dir)
        self.dsn: str = _proxied_dsn(backend_dsn, self.port)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited ({self._proc.returncode}):\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    msg = f"pgbouncer did not start listening:\n{self.log()}"
                    raise RuntimeError(msg) from None
                time.sleep(0.02)

    def log(self) -> str:
        """PgBouncer's log so far, for failure messages."""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop PgBouncer at once (SIGTERM) and delete its directory."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
