"""migrate_flask_pg_session: a real flask-pg-session table, converted, then served to the same cookies.

Rows are written the way flask-pg-session 0.1.0 writes them: its exact DDL, ``pickle.dumps`` of a
plain dict (default protocol), naive UTC ``expiry`` (NULL for non-permanent sessions), the
``created`` default, and ``SESSION_KEY_PREFIX`` + uuid4 ids.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import pickle
import re
import secrets
import subprocess
import sys
import threading
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from apps.support import free_port
from db import sql
from flask import Flask, session
from helpers import ClosingClient, add_count_route, close_extension_stores, wait_for
from legacy_rows import (
    LEGACY_SECRET,
    RunsCommand,
    add_login_required_view,
    create_legacy_table,
    naive_utc,
    q,
    signed,
    write_row,
)
from markupsafe import Markup
from wire import RoundTripCounter

from pgsession_wsgi import ConfigurationError, StoreUnavailable
from pgsession_wsgi.codec import decode_value
from pgsession_wsgi.flask import FlaskPgSession
from pgsession_wsgi.flask_pg_session import (
    MigrationReport,
    MigrationStopped,
    NothingToMigrate,
    migrate_flask_pg_session,
)
from pgsession_wsgi.flask_pg_session import _migrate_rows as migrate_rows
from pgsession_wsgi.sql import lock_key

SECRET = LEGACY_SECRET


@pytest.fixture
def shim_apps(pg_dsn: str, schema: str) -> Iterator[Callable[..., Flask]]:
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = Flask(f"migrated{len(made)}")
        app.test_client_class = ClosingClient
        app.config.update(
            SECRET_KEY=SECRET,
            SQLALCHEMY_DATABASE_URI=pg_dsn,
            SESSION_PG_SCHEMA=schema,
            SESSION_USE_SIGNER=True,
        )
        app.config.update(config)
        FlaskPgSession(app)
        made.append(app)

        @app.route("/dump")
        def dump() -> dict[str, Any]:
            return {"repr": {k: repr(v) for k, v in session.items()}, "permanent": session.permanent}

        add_count_route(app, "/bump")
        return app

    yield make
    close_extension_stores(made)


# -- the whole path --------------------------------------------------------------------------------


def test_migrates_live_sessions_and_serves_the_same_cookies(
    pg_dsn: str, schema: str, tmp_path: Path, shim_apps: Callable[..., Flask]
) -> None:
    create_legacy_table(pg_dsn, schema)
    month = dt.timedelta(days=31)
    ids = {
        name: str(uuid.uuid4())
        for name in ("user", "flash", "types", "browser", "expired", "empty", "evil", "setval", "intkey")
    }
    user = {
        "_permanent": True,
        "_user_id": "42",
        "_fresh": True,
        "_id": "f" * 128,
        "_remember": "set",
        "n": 3,
    }
    types = {
        "_permanent": True,
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        "naive": dt.datetime(2026, 1, 2, 3, 4, 5),
        "day": dt.date(2026, 1, 2),
        "at": dt.time(12, 30),
        "uid": uuid.UUID(int=7),
        "price": Decimal("19.99"),
        "blob": b"\x00\xffbytes",
        "pair": (1, "two"),
        "nested": {"deep": {"x": "y"}, "list": [1, 2.5, None, True]},  # jsonb sorts keys
        "html": Markup("<i>hi</i>"),
    }
    write_row(pg_dsn, schema, ids["user"], user, naive_utc(dt.timedelta(days=20)))
    write_row(
        pg_dsn,
        schema,
        ids["flash"],
        {"_permanent": True, "_flashes": [("info", Markup("<b>saved</b>"))]},
        naive_utc(month),
    )
    write_row(pg_dsn, schema, ids["types"], types, naive_utc(month))
    write_row(pg_dsn, schema, ids["browser"], {"_permanent": False, "cart": [1, 2]}, None)
    write_row(pg_dsn, schema, ids["expired"], {"_permanent": True, "n": 1}, naive_utc(-dt.timedelta(hours=1)))
    write_row(pg_dsn, schema, ids["empty"], {"_permanent": True}, naive_utc(month))
    marker = tmp_path / "executed"
    write_row(pg_dsn, schema, ids["evil"], {"x": RunsCommand(marker)}, naive_utc(month))
    write_row(pg_dsn, schema, ids["setval"], {"tags": {1, 2}}, naive_utc(month))
    write_row(pg_dsn, schema, ids["intkey"], {1: "one"}, naive_utc(month))
    write_row(pg_dsn, schema, "chosen-by-the-client", {"n": 1}, naive_utc(month))
    sql(
        pg_dsn,
        f"UPDATE {q(schema)}.flask_sessions SET created = '2026-01-01 10:00:00' WHERE session_id = %s",
        (ids["user"],),
    )

    # A connection in a far-off time zone: expiry is naive UTC and must be read as UTC.
    far_off = psycopg2.extensions.make_dsn(pg_dsn, options="-c TimeZone=Pacific/Kiritimati")
    report = migrate_flask_pg_session(far_off, schema=schema, lifetime=dt.timedelta(hours=5))

    assert isinstance(report, MigrationReport)
    assert report.migrated == 4  # user, flash, types, browser
    assert report.skipped_empty == 1
    assert report.renamed_to == f'"{schema}"."flask_sessions_flask_pg_session_old"'
    assert not marker.exists()  # the pickle was refused, never run
    reasons = dict(report.refused)
    assert len(report.refused) == 4
    for label, _ in report.refused:
        assert re.fullmatch(r"[0-9a-f]{12}", label)
    text = " ".join(reason for _, reason in report.refused) + repr(report)
    assert not any(session_id in text for session_id in ids.values())
    assert any("system" in reason for reason in reasons.values())
    assert any("builtins.set" in reason for reason in reasons.values())
    assert any("not a str" in reason for reason in reasons.values())
    assert any("not a uuid4" in reason for reason in reasons.values())

    # The old table is kept, renamed, with every row; the new one has the pgsession layout.
    old = sql(pg_dsn, f"SELECT count(*) FROM {report.renamed_to}")
    assert old == [(10,)]
    columns = dict(
        sql(
            pg_dsn,
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'flask_sessions'",
            (schema,),
        )
    )
    assert columns["id"] == "bytea" and columns["data"] == "jsonb"
    assert columns["expires_at"] == "timestamp with time zone"
    rows = sql(pg_dsn, f"SELECT data, created_at, expires_at - now() FROM {q(schema)}.flask_sessions")
    assert len(rows) == 4
    by_user = {row[0].get("_user_id"): row for row in rows}
    data, created, remaining = by_user["42"]
    assert data == user  # stored as JSON: no pickle left
    assert created == dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc)
    assert dt.timedelta(days=19, hours=23) < remaining <= dt.timedelta(days=20)
    (browser_remaining,) = [r[2] for r in rows if r[0].get("cart")]
    assert dt.timedelta(hours=4, minutes=59) < browser_remaining <= dt.timedelta(hours=5)

    # The same cookies, served by the drop-in: nobody is logged out.
    app = shim_apps()
    client = app.test_client()

    def dump(session_id: str) -> dict[str, Any]:
        client.set_cookie("session", signed(session_id))
        result: dict[str, Any] = client.get("/dump").json
        return result

    assert dump(ids["user"]) == {"repr": {k: repr(v) for k, v in user.items()}, "permanent": True}
    got = dump(ids["types"])
    assert got["permanent"] is True
    for key, value in types.items():
        assert got["repr"][key] == repr(value), key
    assert dump(ids["flash"])["repr"]["_flashes"] == repr([("info", Markup("<b>saved</b>"))])
    assert dump(ids["browser"]) == {"repr": {"_permanent": "False", "cart": "[1, 2]"}, "permanent": False}
    for gone in ("expired", "empty", "evil", "setval", "intkey"):
        assert dump(ids[gone])["repr"] == {}
    # And they keep working: a write goes to the migrated row.
    client.set_cookie("session", signed(ids["user"]))
    assert client.get("/bump").text == "4"
    assert client.get("/bump").text == "5"


def test_flask_login_user_stays_logged_in(pg_dsn: str, schema: str, shim_apps: Callable[..., Flask]) -> None:
    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    write_row(
        pg_dsn,
        schema,
        sid,
        {"_permanent": True, "_user_id": "42", "_fresh": True},
        naive_utc(dt.timedelta(days=3)),
    )
    assert migrate_flask_pg_session(pg_dsn, schema=schema).migrated == 1
    app = shim_apps(SESSION_USE_SIGNER=False)
    add_login_required_view(app)

    client = app.test_client()
    assert client.get("/me").status_code == 401
    client.set_cookie("session", sid)  # unsigned: the bare uuid4
    assert client.get("/me").text == "42"


def test_key_prefix_selects_rows_and_is_not_part_of_the_cookie(
    pg_dsn: str, schema: str, shim_apps: Callable[..., Flask]
) -> None:
    create_legacy_table(pg_dsn, schema, "shared")
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    write_row(pg_dsn, schema, "app:" + mine, {"n": 1}, naive_utc(dt.timedelta(days=1)), "shared")
    write_row(pg_dsn, schema, "other:" + theirs, {"n": 2}, naive_utc(dt.timedelta(days=1)), "shared")
    report = migrate_flask_pg_session(pg_dsn, "shared", schema, key_prefix="app:")
    assert (report.migrated, report.other_prefix, report.refused) == (1, 1, [])
    app = shim_apps(SESSION_PG_TABLE="shared", SESSION_KEY_PREFIX="app:")
    client = app.test_client()
    client.set_cookie("session", signed(mine))
    assert client.get("/bump").text == "2"


def test_odd_table_and_schema_names_are_quoted(pg_dsn: str, schema: str) -> None:
    odd_schema, odd_table = f'{schema} "x"; --', 'Flask "Sessions"'
    create_legacy_table(pg_dsn, odd_schema, odd_table)
    try:
        write_row(pg_dsn, odd_schema, str(uuid.uuid4()), {"n": 1}, naive_utc(dt.timedelta(days=1)), odd_table)
        report = migrate_flask_pg_session(pg_dsn, odd_table, odd_schema)
        assert report.migrated == 1
        assert sql(pg_dsn, f"SELECT data FROM {q(odd_schema)}.{q(odd_table)}") == [({"n": 1},)]
    finally:
        sql(pg_dsn, f"DROP SCHEMA {q(odd_schema)} CASCADE")


@pytest.mark.parametrize("into", [None, 'Flask "Sessions" 100%(p)s v2'], ids=["in-place", "into"])
def test_names_with_percent_signs_are_counted_and_moved(pg_dsn: str, schema: str, into: str | None) -> None:
    """A % in a name is data, not a placeholder, in every statement: the count for on_batch too."""
    odd_schema, odd_table = f"{schema} 50%", 'Flask "Sessions" 100%(p)s'
    create_legacy_table(pg_dsn, odd_schema, odd_table)
    try:
        stored = ["app:" + str(uuid.uuid4()) for _ in range(3)] + ["other:" + str(uuid.uuid4())]
        # Written here: legacy_rows.write_row puts the names in a statement with parameters as they are.
        target = f"{q(odd_schema)}.{q(odd_table)}".replace("%", "%%")
        insert = f"INSERT INTO {target} (session_id, data, expiry) VALUES (%s, %s, %s)"
        with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
            for sid in stored:
                cur.execute(insert, (sid, pickle.dumps({"n": 1}), naive_utc(dt.timedelta(days=1))))
        conn.close()
        calls: list[tuple[int, int]] = []
        report = migrate_flask_pg_session(pg_dsn, odd_table, odd_schema, key_prefix="app:", batch_size=2,
                                          into=into, on_batch=lambda done, total: calls.append((done, total)))
        assert calls == [(0, 3), (2, 3), (3, 3)]
        assert (report.migrated, report.other_prefix) == (3, 1)
        new_table = odd_table if into is None else into
        assert sql(pg_dsn, f"SELECT count(*) FROM {q(odd_schema)}.{q(new_table)}") == [(3,)]
    finally:
        sql(pg_dsn, f"DROP SCHEMA {q(odd_schema)} CASCADE")


# -- refusals and failures -------------------------------------------------------------------------


def test_nothing_to_migrate(pg_dsn: str, schema: str, make_store: Callable[..., Any]) -> None:
    with pytest.raises(NothingToMigrate, match="there is no table"):
        migrate_flask_pg_session(pg_dsn, "flask_sessions", schema)
    make_store(table="flask_sessions").create_table()
    with pytest.raises(NothingToMigrate, match="already a pgsession-wsgi table"):
        migrate_flask_pg_session(pg_dsn, "flask_sessions", schema)
    sql(pg_dsn, f"CREATE TABLE {q(schema)}.other (id int, payload text)")
    with pytest.raises(ConfigurationError, match="not a flask-pg-session table"):
        migrate_flask_pg_session(pg_dsn, "other", schema)


def test_migrating_twice_says_nothing_to_migrate(pg_dsn: str, schema: str) -> None:
    create_legacy_table(pg_dsn, schema)
    write_row(pg_dsn, schema, str(uuid.uuid4()), {"n": 1}, naive_utc(dt.timedelta(days=1)))
    assert migrate_flask_pg_session(pg_dsn, schema=schema).migrated == 1
    with pytest.raises(NothingToMigrate):
        migrate_flask_pg_session(pg_dsn, schema=schema)


def _tables(dsn: str, schema: str) -> set[str]:
    rows = sql(dsn, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
    return {row[0] for row in rows}


def test_a_failure_rolls_everything_back(pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    create_legacy_table(pg_dsn, schema)
    for _ in range(5):
        write_row(pg_dsn, schema, str(uuid.uuid4()), {"n": 1}, naive_utc(dt.timedelta(days=1)))
    real_insert = migrate_rows._insert_batch
    calls: list[int] = []

    def insert_then_fail(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        real_insert(*args)

    monkeypatch.setattr(migrate_rows, "_insert_batch", insert_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        migrate_flask_pg_session(pg_dsn, schema=schema, batch_size=2)
    assert len(calls) == 2  # one batch really went in before the failure
    assert _tables(pg_dsn, schema) == {"flask_sessions"}
    assert sql(pg_dsn, f"SELECT count(*) FROM {q(schema)}.flask_sessions") == [(5,)]
    monkeypatch.undo()
    assert migrate_flask_pg_session(pg_dsn, schema=schema, batch_size=2).migrated == 5


def test_large_rows_are_inserted_in_smaller_batches(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rows may be up to max_size each: a batch is sent once it holds _MAX_BATCH_CHARS of JSON.
    create_legacy_table(pg_dsn, schema)
    for size in (10, 20, 30):
        write_row(pg_dsn, schema, str(uuid.uuid4()), {"s": "x" * size}, naive_utc(dt.timedelta(days=1)))
    real_insert = migrate_rows._insert_batch
    batches: list[int] = []

    def counting_insert(cur: Any, insert: str, template: str, rows: list[tuple[Any, ...]]) -> None:
        batches.append(len(rows))
        real_insert(cur, insert, template, rows)

    monkeypatch.setattr(migrate_rows, "_insert_batch", counting_insert)
    monkeypatch.setattr(migrate_rows, "_MAX_BATCH_CHARS", 40)
    assert migrate_flask_pg_session(pg_dsn, schema=schema).migrated == 3
    assert sorted(batches) == [1, 2]  # each row is under 40 characters (18, 28, 38), any two over
    assert sql(pg_dsn, f"SELECT count(*) FROM {q(schema)}.flask_sessions") == [(3,)]


def test_an_existing_renamed_table_stops_the_migration(pg_dsn: str, schema: str) -> None:
    create_legacy_table(pg_dsn, schema)
    sql(pg_dsn, f"CREATE TABLE {q(schema)}.flask_sessions_flask_pg_session_old (x int)")
    with pytest.raises(ConfigurationError, match="already exists"):
        migrate_flask_pg_session(pg_dsn, schema=schema)
    assert _tables(pg_dsn, schema) == {"flask_sessions", "flask_sessions_flask_pg_session_old"}


def test_the_app_starts_on_the_old_table_and_then_conversion_in_place_is_refused(
    pg_dsn: str, schema: str
) -> None:
    # No command first: the app stores sessions next to the old table, which it leaves alone.
    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    write_row(pg_dsn, schema, sid, {"n": 1}, naive_utc(dt.timedelta(days=1)))
    app = Flask(__name__)
    app.test_client_class = ClosingClient
    app.config.update(SECRET_KEY=SECRET, SQLALCHEMY_DATABASE_URI=pg_dsn, SESSION_PG_SCHEMA=schema)
    ext = FlaskPgSession(app)
    try:
        assert ext.store.table == "flask_sessions_v2"
        assert _tables(pg_dsn, schema) == {"flask_sessions", "flask_sessions_v2"}
        # Renaming the old table under the running app would break it: the move is the way.
        with pytest.raises(ConfigurationError, match="--into flask_sessions_v2"):
            migrate_flask_pg_session(pg_dsn, schema=schema)
        assert _tables(pg_dsn, schema) == {"flask_sessions", "flask_sessions_v2"}
        assert sql(pg_dsn, f"SELECT count(*) FROM {q(schema)}.flask_sessions") == [(1,)]
    finally:
        ext.store.close()


def test_the_cli_command(pg_dsn: str, schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    from pgsession_wsgi import cli

    create_legacy_table(pg_dsn, schema)
    write_row(pg_dsn, schema, str(uuid.uuid4()), {"n": 1}, naive_utc(dt.timedelta(days=1)))
    write_row(pg_dsn, schema, str(uuid.uuid4()), {"s": {1}}, naive_utc(dt.timedelta(days=1)))
    status = cli.main(["migrate-flask-pg-session", "--dsn", pg_dsn, "--schema", schema])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "migrated 1 session" in out and "refused 1 row" in out
    assert "flask_sessions_flask_pg_session_old" in out


# -- one bad row refuses that row only ---------------------------------------------------------------


def label(session_id: str) -> str:
    """The report's name for a row: a hash prefix, never the id."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:12]


def deep_list_pickle(levels: int) -> bytes:
    """``{"deep": [[[...]]]}`` nested ``levels`` deep; pickle.dumps itself recurses too deep."""
    return b"\x80\x04}\x8c\x04deep" + b"]" * levels + b"a" * (levels - 1) + b"s."


def expansion_bomb(levels: int) -> tuple[dict[str, Any], int]:
    """A session of ``levels`` lists each holding the one below twice, and its JSON size.

    The pickle keeps one copy of each level (about 5 bytes a level); the JSON, which has no
    references, holds 2**levels copies of the innermost list.
    """
    node: list[Any] = []
    size = len("[]")
    for _ in range(levels):
        node = [node, node]
        size = 2 * size + len("[,]")
    return {"bomb": node}, size + len('{"bomb":}')


def new_rows(dsn: str, schema: str) -> dict[bytes, Any]:
    rows = sql(dsn, f"SELECT id, data FROM {q(schema)}.flask_sessions")
    return {bytes(row_id): data for row_id, data in rows}


def write_bad_rows(dsn: str, schema: str) -> dict[str, str]:
    """One live row of each kind that used to stop the migration; name -> session id."""
    ids = {
        name: str(uuid.uuid4())
        for name in ("deep", "bigint", "surrogate_key", "nul_key", "bomb", "good", "good_too")
    }
    month = naive_utc(dt.timedelta(days=31))
    write_row(dsn, schema, ids["deep"], None, month, raw=deep_list_pickle(50_000))
    write_row(dsn, schema, ids["bigint"], {"n": 10**5000 - 1}, month)  # 5,000 digits
    write_row(dsn, schema, ids["surrogate_key"], {"\ud800": 1, "n": 2}, month)
    write_row(dsn, schema, ids["nul_key"], {"a\x00b": 1}, month)
    write_row(dsn, schema, ids["bomb"], expansion_bomb(22)[0], month)
    write_row(dsn, schema, ids["good"], {"_user_id": "7", "cart": [1, 2]}, month)
    write_row(dsn, schema, ids["good_too"], {"n": 1}, None)
    return ids


def test_each_bad_row_is_refused_alone_and_the_others_migrate(pg_dsn: str, schema: str) -> None:
    create_legacy_table(pg_dsn, schema)
    ids = write_bad_rows(pg_dsn, schema)
    # A real pickle: plain pickle.loads (what flask-pg-session runs) reads 50,000 levels.
    value, depth = pickle.loads(deep_list_pickle(50_000))["deep"], 1
    while value:
        value, depth = value[0], depth + 1
    assert depth == 50_000
    surrogate_value = str(uuid.uuid4())
    write_row(pg_dsn, schema, surrogate_value, {"s": "a\udfffb"}, naive_utc(dt.timedelta(days=1)))

    report = migrate_flask_pg_session(pg_dsn, schema=schema)

    rows = new_rows(pg_dsn, schema)
    assert rows[hashlib.sha256(ids["good"].encode()).digest()] == {"_user_id": "7", "cart": [1, 2]}
    assert rows[hashlib.sha256(ids["good_too"].encode()).digest()] == {"n": 1}
    reasons = dict(report.refused)
    bad = ("deep", "bigint", "surrogate_key", "nul_key", "bomb")
    assert set(reasons) - {label(surrogate_value)} == {label(ids[name]) for name in bad}
    for name in bad:
        reason = reasons[label(ids[name])]
        assert reason and "\n" not in reason and len(reason) <= 200, (name, reason)
    assert "surrogate" in reasons[label(ids["surrogate_key"])]
    assert "NUL" in reasons[label(ids["nul_key"])]
    assert "max_size" in reasons[label(ids["bomb"])]
    # A lone surrogate in a value: stored losslessly by the codec, or refused with a reason.
    stored = rows.get(hashlib.sha256(surrogate_value.encode()).digest())
    if stored is None:
        assert "surrogate" in reasons[label(surrogate_value)]
    else:
        assert decode_value(stored["s"]) == "a\udfffb"
    assert report.migrated == len(rows) == 2 + (stored is not None)


@pytest.mark.parametrize("table, renamed", [
    ("flask_sessions", "flask_sessions_flask_pg_session_old"),
    ("t" * 50, "t" * 42 + "_flask_pg_session_old"),  # cut to 63 bytes
    ("a" + "é" * 25, "a" + "é" * 20 + "_flask_pg_session_old"),  # 62: byte 42 is inside an é
], ids=["default", "50-characters", "cut-inside-a-character"])
def test_the_renamed_table_keeps_its_primary_key_under_its_new_name(
    pg_dsn: str, schema: str, table: str, renamed: str
) -> None:
    """The old table's name is cut to fit its suffix in 63 bytes, never inside a character; its
    key follows it (cut to fit "_pkey" too), so the new table's key gets the plain name
    (migrate._rename mutants 22, 30, 40, 45, 46; _renamed 6, 10, 11, 14, 15)."""
    create_legacy_table(pg_dsn, schema, table)
    write_row(pg_dsn, schema, str(uuid.uuid4()), {"n": 1}, naive_utc(dt.timedelta(days=1)), table)
    report = migrate_flask_pg_session(pg_dsn, table=table, schema=schema)
    assert report.migrated == 1
    assert report.renamed_to == f'"{schema}"."{renamed}"'
    keys = sql(pg_dsn, "SELECT c.relname, k.conname FROM pg_constraint k JOIN pg_class c"
                       " ON c.oid = k.conrelid WHERE k.contype = 'p' AND c.relnamespace = %s::regnamespace",
               (f'"{schema}"',))
    assert dict(keys) == {table: f"{table}_pkey", renamed: renamed.encode()[:58].decode() + "_pkey"}


def test_the_report_counts_each_empty_row_and_names_a_user_id_it_cannot_store(
    pg_dsn: str, schema: str
) -> None:
    """Two rows holding only the permanent flag are two skipped, a user id that is no str or int
    is refused under the row's label with why, and without a prefix no row is another app's
    (migrate._json_to_write mutant 6, _RowConverter.convert 44-47, _count_other_prefix 2)."""
    create_legacy_table(pg_dsn, schema)
    empty, also_empty, odd = (str(uuid.uuid4()) for _ in range(3))
    for sid in (empty, also_empty):
        write_row(pg_dsn, schema, sid, {"_permanent": True}, naive_utc(dt.timedelta(days=1)))
    write_row(pg_dsn, schema, odd, {"_user_id": 4.5}, naive_utc(dt.timedelta(days=1)))
    report = migrate_flask_pg_session(pg_dsn, schema=schema)
    assert (report.migrated, report.skipped_empty, report.other_prefix) == (0, 2, 0)
    why = ("the session value under user_key '_user_id' is a builtins.float; user ids must be str, int or "
           "UUID: store the user's id in one of those types")
    assert report.refused == [(label(odd), why)]


def short_binunicode(text: str) -> bytes:
    encoded = text.encode()
    return b"\x8c" + bytes([len(encoded)]) + encoded


def test_a_refusals_reason_is_one_printable_line_of_at_most_200_characters(pg_dsn: str, schema: str) -> None:
    """A pickled name is the client's text: a control character is shown escaped, a backslash as
    itself, the line cut at 197 characters and "..."; a short reason is given whole (fallback
    short_reason mutants 4-9, 12-18; 14 at exactly 200)."""
    create_legacy_table(pg_dsn, schema)
    module = "ev\\il\x07" + "m" * 240  # STACK_GLOBAL of a long module name with a BEL in it
    named = str(uuid.uuid4())
    write_row(pg_dsn, schema, named, None, naive_utc(dt.timedelta(days=1)),
              raw=b"\x80\x04" + short_binunicode(module) + short_binunicode("f") + b"\x93.")
    listed = str(uuid.uuid4())
    write_row(pg_dsn, schema, listed, [1, 2], naive_utc(dt.timedelta(days=1)))
    exact = str(uuid.uuid4())  # a reason of exactly 200 characters, given whole
    write_row(pg_dsn, schema, exact, None, naive_utc(dt.timedelta(days=1)),
              raw=b"\x80\x04" + short_binunicode("m" * 21) + short_binunicode("f") + b"\x93.")
    reasons = dict(migrate_flask_pg_session(pg_dsn, schema=schema).refused)
    start = "refused to unpickle ev\\il\\x07"
    assert reasons[label(named)] == start + "m" * (197 - len(start)) + "..."
    assert reasons[label(listed)] == "the pickled data is a builtins.list, not a dict; not converted"
    assert reasons[label(exact)].startswith("refused to unpickle " + "m" * 21 + ".f: only plain data types")
    assert reasons[label(exact)].endswith("; the row was not converted") and len(reasons[label(exact)]) == 200


def test_an_expansion_bomb_is_refused_without_being_built(pg_dsn: str, schema: str) -> None:
    create_legacy_table(pg_dsn, schema)
    bomb, expanded = expansion_bomb(22)
    payload = pickle.dumps(bomb)
    assert len(payload) < 200 and expanded > 20_000_000  # 200 bytes that mean 20 MB of JSON
    sid = str(uuid.uuid4())
    write_row(pg_dsn, schema, sid, None, None, raw=payload)
    write_row(pg_dsn, schema, str(uuid.uuid4()), {"n": 1}, None)

    tracemalloc.start()
    try:
        report = migrate_flask_pg_session(pg_dsn, schema=schema)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert report.migrated == 1
    assert [lbl for lbl, _ in report.refused] == [label(sid)]
    assert "more than max_size (262144 bytes)" in report.refused[0][1]
    # Building it would take the 20 MB of JSON and far more in Python lists.
    assert peak < expanded // 10, peak


def test_max_size_bounds_the_real_encoded_size(pg_dsn: str, schema: str) -> None:
    create_legacy_table(pg_dsn, schema)
    month = naive_utc(dt.timedelta(days=31))
    ids = {name: str(uuid.uuid4()) for name in ("exact", "over", "wide", "shared")}
    write_row(pg_dsn, schema, ids["exact"], {"s": "x" * 992}, month)  # {"s":"x..."}: 1,000 bytes
    write_row(pg_dsn, schema, ids["over"], {"s": "x" * 993}, month)
    # 600 characters, 1,200 bytes in UTF-8: only the real encoding shows it is too large.
    write_row(pg_dsn, schema, ids["wide"], {"s": "é" * 600}, month)
    # Shared references count once per use: 6 uses of 200 characters.
    text = "y" * 200
    write_row(pg_dsn, schema, ids["shared"], {"l": [text, text, text, text, text, text]}, month)

    report = migrate_flask_pg_session(pg_dsn, schema=schema, max_size=1000)

    assert report.migrated == 1
    assert list(new_rows(pg_dsn, schema).values()) == [{"s": "x" * 992}]
    reasons = dict(report.refused)
    assert set(reasons) == {label(ids[name]) for name in ("over", "wide", "shared")}
    assert "encodes to 1001 bytes, more than max_size (1000 bytes)" in reasons[label(ids["over"])]
    assert "encodes to 1208 bytes" in reasons[label(ids["wide"])]
    assert "more than max_size (1000 bytes)" in reasons[label(ids["shared"])]
    with pytest.raises(ConfigurationError, match="max_size"):
        migrate_flask_pg_session(pg_dsn, schema=schema, max_size=0)


def test_only_uuid4_ids_are_carried_over(pg_dsn: str, schema: str) -> None:
    create_legacy_table(pg_dsn, schema)
    month = naive_utc(dt.timedelta(days=31))
    issued = str(uuid.uuid4())
    chosen = [
        secrets.token_urlsafe(32),  # 43 characters: the shape pgsession-wsgi issues, not this table
        "A" * 43,
        str(uuid.uuid1()),
        str(uuid.uuid4()).upper(),
        "{" + str(uuid.uuid4()) + "}",
        str(uuid.uuid4()) + "\n",
    ]
    for session_id in [issued, *chosen]:
        write_row(pg_dsn, schema, session_id, {"_user_id": "1"}, month)

    report = migrate_flask_pg_session(pg_dsn, schema=schema)

    assert report.migrated == 1
    assert list(new_rows(pg_dsn, schema)) == [hashlib.sha256(issued.encode()).digest()]
    reasons = dict(report.refused)
    assert set(reasons) == {label(session_id) for session_id in chosen}
    assert all("not a uuid4" in reason for reason in reasons.values())


def test_the_cli_refuses_bad_rows_without_a_traceback(pg_dsn: str, schema: str) -> None:
    """The installed command, in its own process: a crash there would not be caught by pytest."""
    create_legacy_table(pg_dsn, schema)
    ids = write_bad_rows(pg_dsn, schema)
    month = naive_utc(dt.timedelta(days=31))
    # Hashing this key while unpickling would overflow the C stack (a segmentation fault).
    ids["deep_tuple_key"] = str(uuid.uuid4())
    write_row(
        pg_dsn,
        schema,
        ids["deep_tuple_key"],
        None,
        month,
        raw=b"\x80\x04})" + b"\x85" * 2_000_000 + b"K\x01s.",
    )
    ids["chosen"] = secrets.token_urlsafe(32)
    write_row(pg_dsn, schema, ids["chosen"], {"n": 1}, month)

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgsession_wsgi",
            "migrate-flask-pg-session",
            "--dsn",
            pg_dsn,
            "--schema",
            schema,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )

    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Traceback" not in output and done.stderr == ""
    assert "migrated 2 session(s)" in done.stdout
    assert "refused 7 row(s)" in done.stdout
    for name, session_id in ids.items():
        assert session_id not in output
        if not name.startswith("good"):
            assert f"\n  {label(session_id)}: " in done.stdout, name
    assert len(done.stdout.splitlines()) < 20


def test_the_cli_max_size_option(pg_dsn: str, schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    from pgsession_wsgi import cli

    create_legacy_table(pg_dsn, schema)
    small, large = str(uuid.uuid4()), str(uuid.uuid4())
    write_row(pg_dsn, schema, small, {"s": "x" * 100}, naive_utc(dt.timedelta(days=1)))
    write_row(pg_dsn, schema, large, {"s": "x" * 300}, naive_utc(dt.timedelta(days=1)))
    assert cli.main(["migrate-flask-pg-session", "--dsn", pg_dsn, "--schema", schema, "--max-size", "0"]) == 2
    assert "--max-size must be a positive number" in capsys.readouterr().err
    status = cli.main(["migrate-flask-pg-session", "--dsn", pg_dsn, "--schema", schema, "--max-size", "200"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "migrated 1 session" in out and "refused 1 row" in out
    assert f"  {label(large)}: " in out and "max_size (200 bytes)" in out


# -- moving into a running app's table (into=...) -----------------------------------------------------

NEW_TABLE = "flask_sessions_v2"
DAY = dt.timedelta(days=1)


def moved_keys(dsn: str, schema: str, table: str = NEW_TABLE) -> set[bytes]:
    return {bytes(row[0]) for row in sql(dsn, f"SELECT id FROM {q(schema)}.{q(table)}")}


def prefixed_key(session_id: str, prefix: str) -> bytes:
    """The key the app looks a cookie's id up by under a SESSION_KEY_PREFIX."""
    return hashlib.sha256(f"{prefix}\x00{session_id}".encode()).digest()


def stored_ids(dsn: str, schema: str, table: str = "flask_sessions") -> set[str]:
    return {row[0] for row in sql(dsn, f"SELECT session_id FROM {q(schema)}.{q(table)}")}


def test_a_stopped_move_keeps_what_moved_and_each_batch_is_reported(pg_dsn: str, schema: str) -> None:
    """on_batch with ``into``: called before the first row and after each batch with the rows
    handled so far (moved, refused or empty) of the live ones under the prefix; a stop raises
    MigrationStopped naming both tables, and what moved stays moved."""
    create_legacy_table(pg_dsn, schema)
    ids = sorted(str(uuid.uuid4()) for _ in range(5))  # read in id order: ids[4] comes last
    for sid in ids[:4]:
        write_row(pg_dsn, schema, "app:" + sid, {"n": sid}, naive_utc(DAY))
    write_row(pg_dsn, schema, "app:" + ids[4], {"_permanent": True}, naive_utc(DAY))  # empty
    refused = "zzz-not-a-uuid4"  # after every uuid: the last row read
    write_row(pg_dsn, schema, "app:" + refused, {"n": 0}, naive_utc(DAY))
    write_row(pg_dsn, schema, "other:" + str(uuid.uuid4()), {"n": 0}, naive_utc(DAY))
    write_row(pg_dsn, schema, "app:" + str(uuid.uuid4()), {"n": 0}, naive_utc(-DAY))  # expired
    old, new = f'"{schema}"."flask_sessions"', f'"{schema}"."{NEW_TABLE}"'
    calls: list[tuple[int, int]] = []

    def stop_after_one_batch(done: int, total: int) -> bool:
        calls.append((done, total))
        return done == 0

    with pytest.raises(MigrationStopped) as stopped:
        migrate_flask_pg_session(pg_dsn, schema=schema, key_prefix="app:", into=NEW_TABLE, batch_size=2,
                                 on_batch=stop_after_one_batch)
    assert calls == [(0, 6), (2, 6)]
    assert (stopped.value.done, stopped.value.total, stopped.value.table) == (2, 6, old)
    assert str(stopped.value) == (
        f"the move was stopped after 2 of 6 row(s): the sessions moved so far are in {new}, where the "
        f"app finds them; the others are still in {old}, run it again to move them"
    )
    assert moved_keys(pg_dsn, schema) == {prefixed_key(sid, "app:") for sid in ids[:2]}
    assert "app:" + ids[0] not in stored_ids(pg_dsn, schema)

    # Again, three rows a batch: the rest of the sessions move; the last batch holds only the
    # refused row, and is reported all the same.
    calls.clear()
    report = migrate_flask_pg_session(pg_dsn, schema=schema, key_prefix="app:", into=NEW_TABLE, batch_size=3,
                                      on_batch=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 4), (3, 4), (4, 4)]
    assert (report.migrated, report.skipped_empty, report.other_prefix) == (2, 1, 1)
    assert [name for name, _ in report.refused] == [prefixed_key(refused, "app:").hex()[:12]]
    assert (report.renamed_to, report.moved_into) == (old, new)
    assert moved_keys(pg_dsn, schema) == {prefixed_key(sid, "app:") for sid in ids[:4]}

    # What stays (the empty and the refused row) is handled again, one row a batch: a report
    # after each, none twice.
    calls.clear()
    report = migrate_flask_pg_session(pg_dsn, schema=schema, key_prefix="app:", into=NEW_TABLE, batch_size=1,
                                      on_batch=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 2), (1, 2), (2, 2)]
    assert (report.migrated, report.skipped_empty, len(report.refused)) == (0, 1, 1)


def test_a_move_sends_large_rows_in_smaller_batches(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in place: a batch goes once it holds _MAX_BATCH_CHARS of JSON (40 here), and on_batch
    sees each one; the batch after a large one starts from nothing."""
    create_legacy_table(pg_dsn, schema)
    ids = sorted(str(uuid.uuid4()) for _ in range(8))
    # JSON sizes, in the order read: 19+20 stay under 40, +8 goes over; 20+20 is exactly 40;
    # 19+20 under again, +8 over. {"s":""} is 8 characters.
    for sid, size in zip(ids, (19, 20, 8, 20, 20, 19, 20, 8)):
        write_row(pg_dsn, schema, sid, {"s": "x" * (size - 8)}, naive_utc(DAY))
    write_row(pg_dsn, schema, "zzz-not-a-uuid4", {"n": 0}, naive_utc(DAY))  # refused, read last
    monkeypatch.setattr(migrate_rows, "_MAX_BATCH_CHARS", 40)
    calls: list[tuple[int, int]] = []
    report = migrate_flask_pg_session(pg_dsn, schema=schema, into=NEW_TABLE, batch_size=100,
                                      on_batch=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 9), (3, 9), (5, 9), (8, 9), (9, 9)]
    assert (report.migrated, len(report.refused)) == (8, 1)
    assert len(moved_keys(pg_dsn, schema)) == 8


@pytest.mark.parametrize("into", [NEW_TABLE, None], ids=["move", "in-place"])
def test_a_refused_row_adds_nothing_to_a_moves_batch(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch, into: str | None
) -> None:
    """A row refused between two others queues no JSON: 19 + 20 characters stay under 40 with it
    between them, and the batch goes with the 8 after (migrate._move_rows mutant 43 and
    _copy_rows mutant 32, which counted the refused row as one character)."""
    create_legacy_table(pg_dsn, schema)
    ids = sorted(str(uuid.uuid4()) for _ in range(4))
    for sid, data in zip(ids, ({"s": "x" * 11}, {1: "one"}, {"s": "x" * 12}, {"s": ""})):
        write_row(pg_dsn, schema, sid, data, naive_utc(DAY))
    monkeypatch.setattr(migrate_rows, "_MAX_BATCH_CHARS", 40)
    calls: list[tuple[int, int]] = []
    report = migrate_flask_pg_session(pg_dsn, schema=schema, into=into, batch_size=100,
                                      on_batch=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 4), (4, 4)]
    assert (report.migrated, len(report.refused)) == (3, 1)


def test_a_move_reads_and_moves_batch_size_rows_a_statement(
    pg_dsn: str, schema: str, wire_counter: RoundTripCounter
) -> None:
    create_legacy_table(pg_dsn, schema)
    for _ in range(5):
        write_row(pg_dsn, schema, str(uuid.uuid4()), {"n": 1}, naive_utc(DAY))
    wire_counter.reset()
    report = migrate_flask_pg_session(wire_counter.dsn, schema=schema, into=NEW_TABLE, batch_size=2)
    assert report.migrated == 5
    reads = [text for text in wire_counter.statements if "ORDER BY session_id LIMIT" in text]
    assert [text.rsplit(" ", 1)[1] for text in reads] == ["2", "2", "2"], reads  # 2, 2, then 1 row
    moves = [text for text in wire_counter.statements if text.startswith("WITH src AS")]
    assert len(moves) == 3, wire_counter.statements


def test_in_place_a_batch_is_one_read_of_batch_size_rows_and_one_insert(
    pg_dsn: str, schema: str, wire_counter: RoundTripCounter
) -> None:
    """101 rows in batches of 101: every read asks for 101, and the batch goes in one INSERT, not
    in execute_values' pages of 100 (migrate._copy_rows mutant 46, _insert_batch mutant 10)."""
    create_legacy_table(pg_dsn, schema)
    sql(pg_dsn, f"INSERT INTO {q(schema)}.flask_sessions (session_id, data, expiry)"
                " SELECT gen_random_uuid()::text, %s, %s FROM generate_series(1, 101)",
        (psycopg2.Binary(pickle.dumps({"n": 1})), naive_utc(DAY)))
    wire_counter.reset()
    report = migrate_flask_pg_session(wire_counter.dsn, schema=schema, batch_size=101)
    assert report.migrated == 101
    reads = [text for text in wire_counter.statements if "ORDER BY session_id LIMIT" in text]
    assert reads and all(text.rsplit(" ", 1)[1] == "101" for text in reads), reads
    inserts = [text for text in wire_counter.statements if text.startswith("INSERT INTO")]
    assert len(inserts) == 1, [text[:80] for text in inserts]


def test_a_move_into_an_unlogged_table_takes_it_as_it_is(
    pg_dsn: str, schema: str, make_store: Callable[..., Any]
) -> None:
    """The app's table may be UNLOGGED (PGSESSION_UNLOGGED): the move neither refuses nor converts it."""
    create_legacy_table(pg_dsn, schema)
    write_row(pg_dsn, schema, str(uuid.uuid4()), {"n": 1}, naive_utc(DAY))
    make_store(table=NEW_TABLE, unlogged=True).create_table()
    assert migrate_flask_pg_session(pg_dsn, schema=schema, into=NEW_TABLE).migrated == 1
    persistence = sql(pg_dsn, "SELECT relpersistence FROM pg_class WHERE oid = to_regclass(%s)",
                      (f'"{schema}"."{NEW_TABLE}"',))
    assert persistence == [("u",)]


def test_a_move_with_nothing_to_move_says_so_and_creates_nothing(
    pg_dsn: str, schema: str, make_store: Callable[..., Any]
) -> None:
    with pytest.raises(NothingToMigrate) as missing:
        migrate_flask_pg_session(pg_dsn, schema=schema, into=NEW_TABLE)
    assert str(missing.value) == f'there is no table "{schema}"."flask_sessions": nothing to move'
    assert _tables(pg_dsn, schema) == set()
    make_store(table="flask_sessions").create_table()
    with pytest.raises(NothingToMigrate) as ours:
        migrate_flask_pg_session(pg_dsn, schema=schema, into=NEW_TABLE)
    assert str(ours.value) == (
        f'"{schema}"."flask_sessions" is already a pgsession-wsgi table: nothing to move'
    )
    assert _tables(pg_dsn, schema) == {"flask_sessions"}


def test_a_move_into_the_old_table_itself_is_refused(pg_dsn: str, schema: str) -> None:
    create_legacy_table(pg_dsn, schema)
    with pytest.raises(ConfigurationError) as refused:
        migrate_flask_pg_session(pg_dsn, schema=schema, into="flask_sessions")
    assert str(refused.value) == (
        "into='flask_sessions' is the flask-pg-session table itself; to convert it in place leave "
        "into out (no --into)"
    )
    assert _tables(pg_dsn, schema) == {"flask_sessions"}


@pytest.mark.parametrize("into", [None, NEW_TABLE], ids=["in-place", "into"])
def test_a_bad_schema_or_table_name_is_named(pg_dsn: str, into: str | None) -> None:
    with pytest.raises(ConfigurationError) as bad_schema:
        migrate_flask_pg_session(pg_dsn, schema="", into=into)
    assert str(bad_schema.value) == "the schema name must be a non-empty string without NUL characters"
    with pytest.raises(ConfigurationError) as bad_table:
        migrate_flask_pg_session(pg_dsn, "flask\x00sessions", into=into)
    assert str(bad_table.value) == "the table name must be a non-empty string without NUL characters"


def test_a_stopped_conversion_in_place_names_the_table_it_left_as_it_was(pg_dsn: str, schema: str) -> None:
    """Rolled back: the message names flask-pg-session's table, still there (migrate_flask_pg_session
    mutant 145)."""
    create_legacy_table(pg_dsn, schema)
    write_row(pg_dsn, schema, str(uuid.uuid4()), {"n": 1}, naive_utc(DAY))
    with pytest.raises(MigrationStopped) as stopped:
        migrate_flask_pg_session(pg_dsn, schema=schema, on_batch=lambda done, total: False)
    old = f'"{schema}"."flask_sessions"'
    assert (stopped.value.done, stopped.value.total, stopped.value.table) == (0, 1, old)
    assert str(stopped.value) == (
        f"the migration was stopped after 0 of 1 row(s) and rolled back: nothing changed, {old} is "
        "still the flask-pg-session table; run it again to start over"
    )
    assert _tables(pg_dsn, schema) == {"flask_sessions"}


def test_a_conversion_waits_for_the_tables_lock_an_app_setting_it_up_holds(pg_dsn: str, schema: str) -> None:
    """It takes the same advisory lock as the app's table setup (lock_key of the schema and the
    table), so it waits for one under way (migrate_flask_pg_session mutants 100, 101)."""
    create_legacy_table(pg_dsn, schema)
    write_row(pg_dsn, schema, str(uuid.uuid4()), {"n": 1}, naive_utc(DAY))
    key = lock_key(schema, "flask_sessions")
    holder = psycopg2.connect(pg_dsn)
    result: list[Any] = []
    try:
        with holder.cursor() as cur:  # an app's setup, in its transaction
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        worker = threading.Thread(
            target=lambda: result.append(migrate_flask_pg_session(pg_dsn, schema=schema))
        )
        worker.start()
        waiting = ("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                   " WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = %s"
                   " AND l.classid::bigint = %s AND l.objid::bigint = %s")
        params = ("pgsession-wsgi migrate", (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)
        wait_for(lambda: sql(pg_dsn, waiting, params) == [(1,)], "the migration waits for the lock")
        assert result == []
    finally:
        holder.rollback()  # the setup ends
        holder.close()
    worker.join(60)
    assert [report.migrated for report in result] == [1]


def test_the_size_estimate_refuses_what_is_sure_to_be_too_big_and_never_what_fits(
    pg_dsn: str, schema: str
) -> None:
    """Each kind of value counts towards the estimate that refuses a row before encoding it, and
    the estimate never passes the real size: rows exactly at max_size move (convert._estimate_exceeds
    mutants 2, 7, 8, 13, 15, 18, 19, 21-23, 27, 30, 34, 37, 38)."""
    big = {"str": "x" * 2000, "bytes": b"x" * 2000, "int": 10**1500, "decimal": Decimal("1" * 1500),
           "dict": {str(i): 0 for i in range(300)}, "list": [0] * 600, "markup": Markup("x" * 2000)}
    tight = {"eights": [8] * 10, "zeros": [0] * 10}  # '{"n":[8,8,8,8,8,8,8,8,8,8]}': 27 bytes
    for table, rows in (("big", big), ("tight", tight), ("empty_key", {"empty": ""})):
        create_legacy_table(pg_dsn, schema, table)
        for value in rows.values():
            write_row(pg_dsn, schema, str(uuid.uuid4()),
                      {"": ""} if table == "empty_key" else {"n" if table == "tight" else "a": value},
                      naive_utc(DAY), table)
    report = migrate_flask_pg_session(pg_dsn, "big", schema, max_size=1000)
    assert report.migrated == 0 and len(report.refused) == len(big)
    assert {reason for _, reason in report.refused} == {
        "the data would encode to more than max_size (1000 bytes); not converted"}
    report = migrate_flask_pg_session(pg_dsn, "tight", schema, max_size=27)
    assert (report.migrated, report.refused) == (2, [])
    report = migrate_flask_pg_session(pg_dsn, "empty_key", schema, max_size=4)  # '{"":""}' is 7
    assert [reason for _, reason in report.refused] == [
        "the data encodes to 7 bytes, more than max_size (4 bytes)"]


def test_a_session_key_the_new_table_cannot_hold_is_refused_with_what_is_wrong(
    pg_dsn: str, schema: str
) -> None:
    """The reasons whole (convert._encode_row_or_raise mutants 8, 11, 13, 17, 18)."""
    create_legacy_table(pg_dsn, schema)
    keys = {1: "a session key is a int, not a str", "a\x00": "a session key contains a NUL character",
            "\udfff": "a session key contains a lone surrogate (not valid UTF-8)"}
    labels = {}
    for key in keys:
        sid = str(uuid.uuid4())
        labels[label(sid)] = keys[key]
        write_row(pg_dsn, schema, sid, {key: 1}, naive_utc(DAY))
    assert dict(migrate_flask_pg_session(pg_dsn, schema=schema).refused) == labels


def test_options_it_cannot_work_with_are_refused_with_what_is_wrong(pg_dsn: str) -> None:
    """Exact messages, before any connection (migrate_flask_pg_session mutants 2, 4, 7-9, 13, 15-18)."""
    for options, message in [
        ({"lifetime": dt.timedelta(0)}, "lifetime must be positive, not datetime.timedelta(0)"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"key_prefix": "app\x00"}, "key_prefix cannot hold a NUL character"),
    ]:
        with pytest.raises(ConfigurationError) as refused:
            migrate_flask_pg_session(pg_dsn, **options)
        assert str(refused.value) == message


def test_in_place_with_the_apps_v2_table_there_says_to_move_into_it(pg_dsn: str, schema: str) -> None:
    """The whole message (migrate_flask_pg_session mutants 129, 130)."""
    create_legacy_table(pg_dsn, schema)
    sql(pg_dsn, f"CREATE TABLE {q(schema)}.{NEW_TABLE} (id bytea)")
    with pytest.raises(ConfigurationError) as refused:
        migrate_flask_pg_session(pg_dsn, schema=schema)
    assert str(refused.value) == (
        f'"{schema}"."{NEW_TABLE}" exists: FlaskPgSession already moves this table\'s sessions into it; '
        f"move the rest there with `--into {NEW_TABLE}` (into=...) instead of converting the table in place"
    )


@pytest.mark.parametrize("columns", ["session_id text, data jsonb, expiry timestamp",
                                     "id bytea, data bytea, expiry timestamp"])
def test_a_table_with_only_part_of_the_new_layout_is_named_with_its_columns(
    pg_dsn: str, schema: str, columns: str
) -> None:
    """Only an id bytea and a data jsonb together are a pgsession-wsgi table; anything else not
    flask-pg-session's is named with its columns (migrate._check_legacy_table mutants 8, 31)."""
    sql(pg_dsn, f"CREATE TABLE {q(schema)}.flask_sessions ({columns})")
    with pytest.raises(ConfigurationError) as refused:
        migrate_flask_pg_session(pg_dsn, schema=schema)
    names = ", ".join(sorted(column.split()[0] for column in columns.split(", ")))
    assert str(refused.value) == (
        f'"{schema}"."flask_sessions" is not a flask-pg-session table (columns: {names}); '
        "check --table and --schema"
    )


def test_the_migration_names_itself_to_the_server_and_says_why_it_cannot_connect(
    pg_dsn: str, schema: str
) -> None:
    """Its connection's application_name, seen in pg_stat_activity while it runs, and libpq's
    reason when it cannot connect (migrate._connect mutants 7, 8, 17)."""
    create_legacy_table(pg_dsn, schema)
    write_row(pg_dsn, schema, str(uuid.uuid4()), {"n": 1}, naive_utc(DAY))
    seen: list[Any] = []

    def on_batch(done: int, total: int) -> None:
        seen.extend(sql(pg_dsn, "SELECT application_name FROM pg_stat_activity WHERE query LIKE %s",
                        ("%flask_sessions%",)))

    migrate_flask_pg_session(pg_dsn, schema=schema, on_batch=on_batch)
    assert ("pgsession-wsgi migrate",) in seen
    nowhere = f"host=127.0.0.1 port={free_port()} dbname=none user=postgres"
    with pytest.raises(StoreUnavailable) as refused:
        migrate_flask_pg_session(nowhere, schema=schema)
    assert str(refused.value).startswith("cannot connect to PostgreSQL (connection to server at ")
    assert "Connection refused" in str(refused.value)


@pytest.mark.parametrize("into", [None, NEW_TABLE], ids=["in-place", "into"])
def test_a_batch_sent_for_its_size_at_the_last_row_is_reported_once(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch, into: str | None
) -> None:
    create_legacy_table(pg_dsn, schema)
    for size in (19, 20, 8):  # 47 characters of JSON: over 40 at the last row
        write_row(pg_dsn, schema, str(uuid.uuid4()), {"s": "x" * (size - 8)}, naive_utc(DAY))
    monkeypatch.setattr(migrate_rows, "_MAX_BATCH_CHARS", 40)
    calls: list[tuple[int, int]] = []
    report = migrate_flask_pg_session(pg_dsn, schema=schema, into=into, batch_size=100,
                                      on_batch=lambda done, total: calls.append((done, total)))
    assert report.migrated == 3
    assert calls == [(0, 3), (3, 3)]


def test_a_move_gives_a_browser_session_the_lifetime_and_keeps_other_expiries(
    pg_dsn: str, schema: str
) -> None:
    """A row flask-pg-session stored without expiry (a browser session) moves with
    ``now() + lifetime``, as in place; a row with an expiry keeps it."""
    create_legacy_table(pg_dsn, schema)
    browser, permanent = str(uuid.uuid4()), str(uuid.uuid4())
    write_row(pg_dsn, schema, browser, {"n": 1}, None)
    expiry = naive_utc(dt.timedelta(days=3)).replace(microsecond=0)
    write_row(pg_dsn, schema, permanent, {"n": 2}, expiry)
    report = migrate_flask_pg_session(pg_dsn, schema=schema, into=NEW_TABLE, lifetime=dt.timedelta(hours=5))
    assert report.migrated == 2
    assert stored_ids(pg_dsn, schema) == set()
    rows = sql(pg_dsn, f"SELECT id, expires_at, expires_at - now() FROM {q(schema)}.{q(NEW_TABLE)}")
    moved = {bytes(key): (expires, remaining) for key, expires, remaining in rows}
    assert set(moved) == {hashlib.sha256(sid.encode()).digest() for sid in (browser, permanent)}
    _, remaining = moved[hashlib.sha256(browser.encode()).digest()]
    assert dt.timedelta(hours=4, minutes=59) < remaining <= dt.timedelta(hours=5)
    expires, _ = moved[hashlib.sha256(permanent.encode()).digest()]
    assert expires == expiry.replace(tzinfo=dt.timezone.utc)
