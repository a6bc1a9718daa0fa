"""Long jobs on the command line (issue 12): ``cleanup`` and ``migrate-flask-pg-session`` show their
progress, stop between batches on SIGINT and SIGTERM with nothing half-done, and ``stats --json``
is one JSON object. Against a real PostgreSQL, in-process through ``main`` and as the installed
console script (under a pseudo-terminal for the terminal display).

The signal tests are not timed: the child writes a progress line after every batch to a pipe the
test does not read until it has sent the signal, so the child blocks on a full pipe long before it
could finish, and the signal always lands between batches of a job still under way.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pty
import re
import select
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg2
import pytest
from db import sql
from wire import RoundTripCounter

from pgsession_wsgi import PostgresStore
from pgsession_wsgi import store_steps as store_module  # where the purge reads EXACT_COUNT_LIMIT
from pgsession_wsgi.cli import STATS_JSON_KEYS, main
from pgsession_wsgi.flask_pg_session import MigrationStopped, migrate_flask_pg_session
from pgsession_wsgi.sql import Statements, guard

SCRIPT = str(Path(sys.executable).with_name("pgsession-wsgi"))
ERASE = "\x1b[K"


def fill(store: PostgresStore, *, expired: int, live: int = 0) -> None:
    """``expired`` rows an hour past their expiry and ``live`` rows good for an hour (new ids
    at each call)."""
    for count, offset in ((expired, "- interval '1 hour'"), (live, "+ interval '1 hour'")):
        prefix = uuid.uuid4().hex
        if count:
            sql(store, "INSERT INTO {t} (id, data, expires_at)"
                       f" SELECT sha256(('{prefix}' || i)::bytea), '{{}}', now() {offset}"
                       " FROM generate_series(1, %s) i", (count,))


def expired_count(store: PostgresStore) -> int:
    return int(sql(store, "SELECT count(*) FROM {t} WHERE expires_at <= now()")[0][0])


def live_ids(store: PostgresStore) -> set[bytes]:
    return {bytes(row[0]) for row in sql(store, "SELECT id FROM {t} WHERE expires_at > now()")}


@pytest.fixture
def store(make_store: Callable[..., PostgresStore]) -> PostgresStore:
    made = make_store()
    made.create_table()
    return made


def create_legacy_table(dsn: str, schema: str, *, rows: int = 0) -> str:
    """flask-pg-session's table, with ``rows`` live rows of ``{"n": 1}`` under uuid4 ids."""
    table = f'"{schema}".flask_sessions'
    sql(dsn, f"CREATE TABLE {table} (session_id VARCHAR(255) NOT NULL PRIMARY KEY,"
             " created TIMESTAMP DEFAULT (NOW() AT TIME ZONE 'utc'), data BYTEA, expiry TIMESTAMP)")
    if rows:
        sql(dsn, f"INSERT INTO {table} (session_id, data, expiry) SELECT gen_random_uuid()::text, %s,"
                 " now() AT TIME ZONE 'utc' + interval '1 day' FROM generate_series(1, %s)",
            (psycopg2.Binary(pickle.dumps({"n": 1})), rows))
    return table


def tables(dsn: str, schema: str) -> set[str]:
    rows = sql(dsn, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
    return {row[0] for row in rows}


def start(*args: str, **popen: object) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGSESSION_")}
    options: dict[str, object] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    options.update(popen)
    return subprocess.Popen([SCRIPT, *args], env=env, **options)  # type: ignore[call-overload]


def signal_after_first_line(child: subprocess.Popen[str], signum: int) -> tuple[str, str]:
    """Wait for the first progress line, send ``signum``, then read everything (stdout, stderr)."""
    try:
        assert child.stderr is not None
        # Byte by byte from the descriptor: communicate() reads the descriptor too, so whatever a
        # buffered readline() took beyond the first line would be lost to it.
        line = b""
        while not line.endswith(b"\n") and (byte := os.read(child.stderr.fileno(), 1)):
            line += byte
        first = line.decode()
        child.send_signal(signum)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return out, first + err


# -- cleanup ----------------------------------------------------------------------------------------


def test_cleanup_off_a_terminal_prints_a_line_per_batch_then_the_summary(
        pg_dsn: str, schema: str, store: PostgresStore, capsys: pytest.CaptureFixture[str]) -> None:
    fill(store, expired=55, live=3)
    status = main(["cleanup", "--dsn", pg_dsn, "--schema", schema, "--batch-size", "10",
                   "--progress-interval", "0"])
    out, err = capsys.readouterr()
    assert status == 0
    assert out == f"pgsession-wsgi cleanup: removed 55 expired session(s) from {schema}.pgsession\n"
    lines = err.splitlines()
    assert [int(re.match(r"pgsession-wsgi cleanup: (\d+) of ~55 expired rows removed \(", line)[1])
            for line in lines] == [10, 20, 30, 40, 50, 55]
    assert "left)" in lines[0] and "left" not in lines[-1]  # nothing left at the end
    assert expired_count(store) == 0 and len(live_ids(store)) == 3


def test_cleanup_quiet_prints_only_the_summary(
        pg_dsn: str, schema: str, store: PostgresStore, capsys: pytest.CaptureFixture[str]) -> None:
    fill(store, expired=25)
    status = main(["cleanup", "--dsn", pg_dsn, "--schema", schema, "--batch-size", "10",
                   "--progress-interval", "0", "--quiet"])
    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    assert "removed 25 expired session(s)" in out


def test_a_negative_progress_interval_is_a_usage_error(
        pg_dsn: str, schema: str, store: PostgresStore, capsys: pytest.CaptureFixture[str]) -> None:
    fill(store, expired=1)
    status = main(["cleanup", "--dsn", pg_dsn, "--schema", schema, "--progress-interval", "-1"])
    assert status == 2 and "--progress-interval" in capsys.readouterr().err
    assert expired_count(store) == 1


def test_cleanup_on_a_terminal_redraws_one_line_and_erases_it(
        pg_dsn: str, schema: str, store: PostgresStore) -> None:
    fill(store, expired=30)
    primary, secondary = pty.openpty()
    child = start("cleanup", "--dsn", pg_dsn, "--schema", schema, "--batch-size", "10",
                  stderr=secondary)
    os.close(secondary)
    terminal = b""
    try:
        while select.select([primary], [], [], 60)[0]:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            terminal += chunk
        out, _ = child.communicate(timeout=60)
    finally:
        os.close(primary)
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0
    text = terminal.decode()
    # Drawn at once (before the first batch), redrawn in place, never a new line, erased at the end.
    assert text.startswith("\rpgsession-wsgi cleanup: 0 of ~30 expired rows removed" + ERASE)
    assert text.endswith("\r" + ERASE) and "\n" not in text
    assert "removed 30 expired session(s)" in out
    assert expired_count(store) == 0


def test_ctrl_c_stops_the_cleanup_between_batches_with_nothing_half_done(
        pg_dsn: str, schema: str, store: PostgresStore) -> None:
    fill(store, expired=10000, live=7)
    live_before = live_ids(store)
    child = start("cleanup", "--dsn", pg_dsn, "--schema", schema, "--batch-size", "5",
                  "--progress-interval", "0")
    out, err = signal_after_first_line(child, signal.SIGINT)
    assert child.returncode == 130, err
    assert out == ""  # no success summary
    stopped = re.search(r"stopped after (\d+) of ~10000 expired rows removed from (\S+); nothing is "
                        r"half-done \(each batch is its own transaction\); run it again to continue", err)
    assert stopped is not None, err
    removed = int(stopped[1])
    assert stopped[2] == f"{schema}.pgsession"
    assert 0 < removed < 10000 and removed % 5 == 0  # whole batches only
    progress = [int(n) for n in re.findall(r"cleanup: (\d+) of ~10000", err)]
    assert progress == list(range(5, removed + 1, 5))  # a line per batch, the last one the stop's
    # What it says is gone is gone, the rest is intact, and the live rows were never touched.
    assert expired_count(store) == 10000 - removed
    assert live_ids(store) == live_before
    # Running it again continues.
    assert main(["cleanup", "--dsn", pg_dsn, "--schema", schema, "--quiet"]) == 0
    assert expired_count(store) == 0 and live_ids(store) == live_before


class SignallingStderr(io.StringIO):
    """stderr off a terminal that runs one step of ``plan`` at each progress line written, e.g.
    sends this process a signal: it lands while the job is under way, between two batches."""

    def __init__(self, *plan: Callable[[], object]) -> None:
        super().__init__()
        self.plan = list(plan)

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.plan:
            self.plan.pop(0)()
        return written


def send(*signals: int) -> Callable[[], object]:
    """A step sending ``signals`` one after the other (each handled before the next is sent)."""
    return lambda: [signal.raise_signal(signum) for signum in signals]


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_in_process_stops_the_cleanup_after_the_batch_under_way(
        signum: int, status: int, pg_dsn: str, schema: str, store: PostgresStore,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` called from Python: the same stop, and the caller's handlers are back afterwards."""
    fill(store, expired=10)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    stderr = SignallingStderr(send(signum))
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(["cleanup", "--dsn", pg_dsn, "--schema", schema, "--batch-size", "2",
                 "--progress-interval", "0"]) == status
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert capsys.readouterr().out == ""
    progress, stopped = stderr.getvalue().splitlines()
    assert progress.startswith("pgsession-wsgi cleanup: 2 of ~10 expired rows removed (")
    assert [stopped] == [
        f"pgsession-wsgi cleanup: stopped after 2 of ~10 expired rows removed from {schema}.pgsession; "
        "nothing is half-done (each batch is its own transaction); run it again to continue",
    ]
    assert expired_count(store) == 8


def test_a_stop_after_more_rows_than_counted_says_no_total(
        pg_dsn: str, schema: str, store: PostgresStore, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows that expire during the job are removed too: past the count, "of ~N" would be wrong."""
    fill(store, expired=2)
    stderr = SignallingStderr(lambda: fill(store, expired=4), lambda: None, send(signal.SIGINT))
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(["cleanup", "--dsn", pg_dsn, "--schema", schema, "--batch-size", "1",
                 "--progress-interval", "0"]) == 130
    assert capsys.readouterr().out == ""
    assert stderr.getvalue().splitlines()[-1] == (
        f"pgsession-wsgi cleanup: stopped after 3 expired rows removed from {schema}.pgsession; nothing is "
        "half-done (each batch is its own transaction); run it again to continue")
    assert expired_count(store) == 3


def test_a_stop_right_at_the_count_gives_it(
        pg_dsn: str, schema: str, store: PostgresStore, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    fill(store, expired=4)
    stderr = SignallingStderr(lambda: fill(store, expired=1), send(signal.SIGINT))
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(["cleanup", "--dsn", pg_dsn, "--schema", schema, "--batch-size", "2",
                 "--progress-interval", "0"]) == 130
    assert stderr.getvalue().splitlines()[-1].startswith(
        f"pgsession-wsgi cleanup: stopped after 4 of ~4 expired rows removed from {schema}.pgsession; ")
    assert expired_count(store) == 1


def test_a_second_signal_stops_the_cleanup_at_once(
        pg_dsn: str, schema: str, store: PostgresStore, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit 130 whichever signals came, with no summary; the batches done stay done."""
    fill(store, expired=10)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    stderr = SignallingStderr(send(signal.SIGTERM, signal.SIGTERM))
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(["cleanup", "--dsn", pg_dsn, "--schema", schema, "--batch-size", "2",
                 "--progress-interval", "0"]) == 130
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert capsys.readouterr().out == ""
    assert "stopped after" not in stderr.getvalue()
    assert expired_count(store) == 8


def test_a_signal_in_process_rolls_the_migration_back(pg_dsn: str, schema: str,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    create_legacy_table(pg_dsn, schema, rows=5)
    stderr = SignallingStderr(send(signal.SIGTERM))
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(["migrate-flask-pg-session", "--dsn", pg_dsn, "--schema", schema, "--batch-size", "2",
                 "--progress-interval", "0"]) == 143
    assert capsys.readouterr().out == ""
    progress, stopped = stderr.getvalue().splitlines()
    assert progress.startswith("pgsession-wsgi migrate-flask-pg-session: 2 of 5 rows handled (")
    assert stopped.startswith("pgsession-wsgi migrate-flask-pg-session: the migration was stopped after "
                              "2 of 5 row(s) and rolled back: nothing changed, "), stopped
    assert tables(pg_dsn, schema) == {"flask_sessions"}


# -- the library's callback -------------------------------------------------------------------------


def test_purge_reports_each_batch_and_stops_when_told(store: PostgresStore) -> None:
    fill(store, expired=25, live=2)
    calls: list[tuple[int, int]] = []

    def on_batch(removed: int, expected: int) -> bool:
        calls.append((removed, expected))
        return removed < 20

    assert store.purge_expired(batch_size=10, on_batch=on_batch) == 20
    assert calls == [(0, 25), (10, 25), (20, 25)]
    assert expired_count(store) == 5
    calls.clear()
    assert store.purge_expired(batch_size=10, on_batch=lambda r, e: calls.append((r, e))) == 5
    assert calls == [(0, 5), (5, 5)]  # None (no return) means go on
    assert len(live_ids(store)) == 2


def test_purge_stopped_before_the_first_batch_removes_nothing(store: PostgresStore) -> None:
    fill(store, expired=3)
    assert store.purge_expired(on_batch=lambda removed, expected: False) == 0
    assert expired_count(store) == 3


def test_many_expired_rows_are_estimated_from_a_sample(
        store: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past EXACT_COUNT_LIMIT the count is a page sample; on a table this small the sample is
    every page, so the estimate is exact (the live rows are not counted)."""
    fill(store, expired=300, live=100)
    monkeypatch.setattr(store_module, "EXACT_COUNT_LIMIT", 50)
    expected: list[int] = []
    store.purge_expired(batch_size=1000, on_batch=lambda removed, total: expected.append(total))
    assert set(expected) == {300}


def test_the_count_costs_nothing_without_a_callback_and_samples_only_past_the_limit(
        make_store: Callable[..., PostgresStore], wire_counter: RoundTripCounter,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store(dsn=wire_counter.dsn)
    store.create_table()

    def purge_and_see(**options: object) -> list[str]:
        fill(store, expired=300, live=10)
        wire_counter.reset()
        store.purge_expired(batch_size=1000, **options)  # type: ignore[arg-type]
        return wire_counter.statements

    assert not any("count(*) FROM (SELECT 1" in text for text in purge_and_see())
    below = purge_and_see(on_batch=lambda removed, total: None)
    assert any("count(*) FROM (SELECT 1" in text for text in below)
    assert not any("TABLESAMPLE" in text for text in below)  # exact: no sample below the limit
    monkeypatch.setattr(store_module, "EXACT_COUNT_LIMIT", 50)
    assert any("TABLESAMPLE" in text for text in purge_and_see(on_batch=lambda removed, total: None))


def test_the_estimate_statements_run_with_the_pgbouncer_guard(pg_dsn: str, schema: str,
                                                              store: PostgresStore) -> None:
    fill(store, expired=4, live=1)
    statements = Statements(schema, "pgsession", guard({"statement_timeout": "5000"}))
    conn = psycopg2.connect(pg_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statements.expired_count, {"cap": 3})
            assert cur.fetchone() == (3,)
            cur.execute(statements.expired_sample, {"pages": 2000, "name": store.qualified_name})
            assert cur.fetchone() == (4,)
    finally:
        conn.close()


# -- stats --json -----------------------------------------------------------------------------------


def test_stats_json_is_one_object_with_the_documented_keys(
        pg_dsn: str, schema: str, store: PostgresStore, capsys: pytest.CaptureFixture[str]) -> None:
    fill(store, expired=2, live=3)
    sql(store, "UPDATE {t} SET user_id = 'u' || (get_byte(id, 0) % 2) WHERE expires_at > now()")
    status = main(["stats", "--json", "--dsn", pg_dsn, "--schema", schema])
    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    assert out.count("\n") == 1
    stats = json.loads(out)
    assert list(stats) == list(STATS_JSON_KEYS) == ["schema", "table", "live", "expired", "users",
                                                    "total_bytes"]
    users = len({row[0] for row in sql(store, "SELECT user_id FROM {t} WHERE user_id IS NOT NULL")})
    assert stats["schema"] == schema and stats["table"] == "pgsession"
    assert (stats["live"], stats["expired"], stats["users"]) == (3, 2, users)
    assert isinstance(stats["total_bytes"], int) and stats["total_bytes"] > 0


# -- migrate-flask-pg-session -------------------------------------------------------------------------


def test_migrate_off_a_terminal_prints_a_line_per_batch(
        pg_dsn: str, schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    table = create_legacy_table(pg_dsn, schema, rows=5)
    sql(pg_dsn, f"INSERT INTO {table} (session_id, data, expiry) VALUES"
                " (gen_random_uuid()::text, %s, NULL), (gen_random_uuid()::text, %s, NULL),"
                " (gen_random_uuid()::text, %s, now() AT TIME ZONE 'utc' - interval '1 day')",
        (b"not a pickle", pickle.dumps({"_permanent": True}), pickle.dumps({"n": 1})))
    status = main(["migrate-flask-pg-session", "--dsn", pg_dsn, "--schema", schema,
                   "--batch-size", "3", "--progress-interval", "0"])
    out, err = capsys.readouterr()
    assert status == 0, err
    # 7 live rows (5 converted, 1 refused, 1 empty) are handled; the expired one is not counted.
    assert [line.split(" (")[0] for line in err.splitlines()] == [
        f"pgsession-wsgi migrate-flask-pg-session: {n} of 7 rows handled" for n in (3, 6, 7)]
    assert "migrated 5 session(s)" in out and "refused 1 row(s)" in out


def test_sigterm_stops_the_migration_and_rolls_it_all_back(pg_dsn: str, schema: str) -> None:
    create_legacy_table(pg_dsn, schema, rows=5000)
    child = start("migrate-flask-pg-session", "--dsn", pg_dsn, "--schema", schema,
                  "--batch-size", "2", "--progress-interval", "0")
    out, err = signal_after_first_line(child, signal.SIGTERM)
    assert child.returncode == 143, err
    assert out == ""
    stopped = re.search(r"migrate-flask-pg-session: the migration was stopped after (\d+) of 5000 "
                        r"row\(s\) and rolled back: nothing changed, .*flask_sessions.* is still the "
                        r"flask-pg-session table; run it again to start over", err)
    assert stopped is not None, err
    assert 0 < int(stopped[1]) < 5000
    # Nothing half-done: the old table as it was, no new one, no renamed one.
    assert tables(pg_dsn, schema) == {"flask_sessions"}
    assert sql(pg_dsn, f'SELECT count(*) FROM "{schema}".flask_sessions') == [(5000,)]
    assert {row[0] for row in sql(pg_dsn, "SELECT column_name FROM information_schema.columns"
                                          " WHERE table_schema = %s", (schema,))} == {
        "session_id", "created", "data", "expiry"}
    # Running it again does the whole job.
    result = subprocess.run([SCRIPT, "migrate-flask-pg-session", "--dsn", pg_dsn, "--schema", schema,
                             "--quiet"], capture_output=True, text=True, timeout=120, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    assert "migrated 5000 session(s)" in result.stdout


def test_migration_callback_sees_every_batch_and_a_stop_rolls_back(pg_dsn: str, schema: str) -> None:
    create_legacy_table(pg_dsn, schema, rows=10)
    calls: list[tuple[int, int]] = []

    def stop_after_two_batches(done: int, total: int) -> bool:
        calls.append((done, total))
        return len(calls) < 3

    with pytest.raises(MigrationStopped) as stopped:
        migrate_flask_pg_session(pg_dsn, schema=schema, batch_size=4, on_batch=stop_after_two_batches)
    assert calls == [(0, 10), (4, 10), (8, 10)]
    assert (stopped.value.done, stopped.value.total) == (8, 10)
    assert "rolled back" in str(stopped.value) and "run it again" in str(stopped.value)
    assert tables(pg_dsn, schema) == {"flask_sessions"}
    calls.clear()
    report = migrate_flask_pg_session(pg_dsn, schema=schema, batch_size=4,
                                      on_batch=lambda done, total: calls.append((done, total)))
    assert report.migrated == 10
    assert calls == [(0, 10), (4, 10), (8, 10), (10, 10)]
