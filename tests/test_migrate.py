"""migrate_flask_pg_session: a real flask-pg-session table, converted, then served to the same cookies.

Rows are written the way flask-pg-session 0.1.0 writes them: its exact DDL, ``pickle.dumps`` of a
plain dict (default protocol), naive UTC ``expiry`` (NULL for non-permanent sessions), the
``created`` default, and ``SESSION_KEY_PREFIX`` + uuid4 ids.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import re
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from flask import Flask, session
from helpers import ClosingClient, sql
from itsdangerous import Signer
from markupsafe import Markup

from pgsession_wsgi import ConfigurationError, legacy
from pgsession_wsgi.flask import EXTENSION_KEY, FlaskPgSession
from pgsession_wsgi.legacy import MigrationReport, NothingToMigrate, migrate_flask_pg_session

SECRET = "legacy-secret"


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_legacy_table(dsn: str, schema: str, table: str = "flask_sessions") -> None:
    """flask-pg-session's own DDL (flask_pg_session/_queries.py), names quoted as it quotes them."""
    target = f"{q(schema)}.{q(table)}"
    sql(dsn, f"CREATE SCHEMA IF NOT EXISTS {q(schema)}")
    sql(
        dsn,
        f"CREATE TABLE IF NOT EXISTS {target} ("
        " session_id VARCHAR(255) NOT NULL PRIMARY KEY,"
        " created TIMESTAMP WITHOUT TIME ZONE DEFAULT (NOW() AT TIME ZONE 'utc'),"
        " data BYTEA, expiry TIMESTAMP WITHOUT TIME ZONE)",
    )
    sql(dsn, f"CREATE UNIQUE INDEX IF NOT EXISTS {q('uq_' + table + '_session_id')} ON {target} (session_id)")
    sql(dsn, f"CREATE INDEX IF NOT EXISTS {q(table + '_expiry_idx')} ON {target} (expiry)")


def naive_utc(delta: dt.timedelta) -> dt.datetime:
    """What flask-pg-session stores: now(UTC) + lifetime, tzinfo stripped."""
    return (dt.datetime.now(dt.timezone.utc) + delta).replace(tzinfo=None)


def write_row(
    dsn: str,
    schema: str,
    session_id: str,
    data: Any,
    expiry: dt.datetime | None,
    table: str = "flask_sessions",
    *,
    raw: bytes | None = None,
) -> None:
    """flask-pg-session's upsert: pickle.dumps(dict(session)), naive UTC expiry."""
    payload = raw if raw is not None else pickle.dumps(data)
    sql(
        dsn,
        f"INSERT INTO {q(schema)}.{q(table)} (session_id, data, expiry) VALUES (%s, %s, %s)"
        " ON CONFLICT (session_id) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry",
        (session_id, psycopg2.Binary(payload), expiry),
    )


class _RunsCommand:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (os.system, (f"touch {self.path}",))


def signed(session_id: str) -> str:
    return Signer(SECRET, salt="flask-session", key_derivation="hmac").sign(session_id).decode()


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

        @app.route("/bump")
        def bump() -> str:
            session["n"] = session.get("n", 0) + 1
            return str(session["n"])

        return app

    yield make
    for app in made:
        app.extensions[EXTENSION_KEY].store.close()


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
    write_row(pg_dsn, schema, ids["evil"], {"x": _RunsCommand(marker)}, naive_utc(month))
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
    assert any("client-chosen" in reason for reason in reasons.values())

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
    flask_login = pytest.importorskip("flask_login")
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
    manager = flask_login.LoginManager(app)

    class User(flask_login.UserMixin):  # type: ignore[name-defined,misc]
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    manager.user_loader(User)

    @app.route("/me")
    @flask_login.login_required
    def me() -> str:
        return str(flask_login.current_user.get_id())

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
    real_insert = legacy._insert_batch
    calls: list[int] = []

    def insert_then_fail(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        real_insert(*args)

    monkeypatch.setattr(legacy, "_insert_batch", insert_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        migrate_flask_pg_session(pg_dsn, schema=schema, batch_size=2)
    assert len(calls) == 2  # one batch really went in before the failure
    assert _tables(pg_dsn, schema) == {"flask_sessions"}
    assert sql(pg_dsn, f"SELECT count(*) FROM {q(schema)}.flask_sessions") == [(5,)]
    monkeypatch.undo()
    assert migrate_flask_pg_session(pg_dsn, schema=schema, batch_size=2).migrated == 5


def test_an_existing_renamed_table_stops_the_migration(pg_dsn: str, schema: str) -> None:
    create_legacy_table(pg_dsn, schema)
    sql(pg_dsn, f"CREATE TABLE {q(schema)}.flask_sessions_flask_pg_session_old (x int)")
    with pytest.raises(ConfigurationError, match="already exists"):
        migrate_flask_pg_session(pg_dsn, schema=schema)
    assert _tables(pg_dsn, schema) == {"flask_sessions", "flask_sessions_flask_pg_session_old"}


def test_the_app_refuses_to_start_on_the_old_table_then_starts_after(pg_dsn: str, schema: str) -> None:
    create_legacy_table(pg_dsn, schema)
    app = Flask(__name__)
    app.test_client_class = ClosingClient
    app.config.update(SECRET_KEY=SECRET, SQLALCHEMY_DATABASE_URI=pg_dsn, SESSION_PG_SCHEMA=schema)
    with pytest.raises(ConfigurationError, match="migrate-flask-pg-session"):
        FlaskPgSession(app)
    migrate_flask_pg_session(pg_dsn, schema=schema)
    ext = FlaskPgSession(app)
    ext.store.close()


def test_the_cli_command(pg_dsn: str, schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    cli = pytest.importorskip("pgsession_wsgi.cli")
    create_legacy_table(pg_dsn, schema)
    write_row(pg_dsn, schema, str(uuid.uuid4()), {"n": 1}, naive_utc(dt.timedelta(days=1)))
    write_row(pg_dsn, schema, str(uuid.uuid4()), {"s": {1}}, naive_utc(dt.timedelta(days=1)))
    status = cli.main(["migrate-flask-pg-session", "--dsn", pg_dsn, "--schema", schema])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "migrated 1 session" in out and "refused 1 row" in out
    assert "flask_sessions_flask_pg_session_old" in out
