"""A primary and its streaming-replication standby, each an embedded PostgreSQL of the test's own.

``start_pair()`` starts the primary, makes the standby's data directory from it with
``pg_basebackup -R`` (run as the server runs: :meth:`EmbeddedPostgres.run_program`), starts the
standby on a socket directory of its own, and, with ``synchronous=True``, names the standby in the
primary's ``synchronous_standby_names``: a commit is acknowledged only once the standby has it, so
nothing a client was told is written can be lost when the primary dies.

Both servers keep fsync and ``synchronous_commit`` on (``throwaway=False``): the embedded
throwaway setting turns ``synchronous_commit`` off, which would acknowledge commits before the
standby has them. Their directories are temporary all the same (on /dev/shm when it has room, where
a flush costs next to nothing) and go with :meth:`ReplicatedPair.close`.

Each server is reached through its own socket directory; :meth:`ReplicatedPair.dsn` lists both,
for libpq to try in turn (``host=/dirA,/dirB``: a host starting with ``/`` is a socket directory).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2

# The module's own helpers, so the standby's directories are made as the primary's are (the
# server's user, mode 0700; /dev/shm when roomy).
from pgsession_wsgi.embedded import EmbeddedPostgres, _hand_over, _scratch_parent

STANDBY_NAME = "standby1"
PORT = 5432  # names the socket file only; no TCP


def _new_server(prefix: str) -> tuple[Path, EmbeddedPostgres]:
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=_scratch_parent()))
    _hand_over(base)
    return base, EmbeddedPostgres(base / "data", base, throwaway=False, remove=(base,))


def sql(server: EmbeddedPostgres, text: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on ``server`` (autocommit); its rows, or [] if it returns none."""
    conn = psycopg2.connect(server.dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(text, params)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


class ReplicatedPair:
    """A running primary and standby; :meth:`close` stops both and deletes their files."""

    def __init__(self, primary: EmbeddedPostgres, standby: EmbeddedPostgres) -> None:
        self.primary = primary
        self.standby = standby

    def dsn(self, *, read_write: bool = True, **params: str) -> str:
        """A libpq key=value DSN listing the primary's socket directory, then the standby's.

        :param read_write: add ``target_session_attrs=read-write``: libpq skips a server in
            recovery (a standby) and goes on to the next host.
        :param params: more parameters, e.g. ``connect_timeout="2"``.
        """
        hosts = f"{self.primary.socket_dir},{self.standby.socket_dir}"
        words = [f"host={hosts}", f"port={PORT},{PORT}", "user=postgres", "dbname=postgres"]
        if read_write:
            words.append("target_session_attrs=read-write")
        words += [f"{key}={value}" for key, value in params.items()]
        return " ".join(words)

    def crash_primary(self) -> None:
        """``pg_ctl stop -m immediate``: every process of the primary quits at once, as in a
        crash (no checkpoint, no goodbye to clients: their sockets just close)."""
        pg_ctl = ("pg_ctl", "-D", str(self.primary.data_dir))
        self.primary.run_program(*pg_ctl, "-m", "immediate", "-w", "-t", "60", "stop")

    def promote(self) -> None:
        """``pg_ctl promote`` on the standby, waiting until it accepts writes."""
        self.standby.run_program("pg_ctl", "-D", str(self.standby.data_dir), "-w", "-t", "60", "promote")

    def close(self) -> None:
        for server in (self.standby, self.primary):
            server.close()


def start_standby(primary: EmbeddedPostgres, name: str = STANDBY_NAME) -> EmbeddedPostgres:
    """A hot standby of the running ``primary``, streaming from it as ``application_name=name``."""
    base, standby = _new_server("pgsession-standby-")
    try:
        primary.run_program(
            "pg_basebackup", "-D", str(standby.data_dir), "-R", "-X", "stream", "-c", "fast",
            "-h", str(primary.socket_dir), "-p", str(PORT), "-U", "postgres", "--no-sync",
        )  # fmt: skip
        # -R wrote primary_conninfo and standby.signal; a later line of the file wins, so this
        # one adds the application_name the primary's synchronous_standby_names matches.
        conninfo = f"host={primary.socket_dir} port={PORT} user=postgres application_name={name}"
        with open(standby.data_dir / "postgresql.auto.conf", "a") as conf:
            conf.write(f"primary_conninfo = '{conninfo}'\nhot_standby = on\n")
        standby.start()
    except BaseException:
        standby.close()
        raise
    return standby


def start_pair(*, synchronous: bool = True) -> ReplicatedPair:
    """A primary and a streaming standby, both running; with ``synchronous``, every commit on the
    primary waits until the standby has flushed it."""
    _, primary = _new_server("pgsession-primary-")
    standby = None
    try:
        primary.start()
        standby = start_standby(primary)
        streaming = f"SELECT 1 FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}'"
        wait_until(lambda: sql(primary, streaming), "the standby streams from the primary")
        if synchronous:
            sql(primary, f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
            sql(primary, "SELECT pg_reload_conf()")
            sync = f"{streaming} AND sync_state = 'sync'"
            wait_until(lambda: sql(primary, sync), "the standby is synchronous")
    except BaseException:
        if standby is not None:
            standby.close()
        primary.close()
        raise
    return ReplicatedPair(primary, standby)
