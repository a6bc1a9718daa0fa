"""Switching from flask-pg-session by changing one import: no command, nobody logged out.

The old table and its rows are written the way flask-pg-session 0.1.0 writes them: its own DDL,
``pickle.dumps`` of the session dict, naive UTC ``expiry`` (NULL for a browser session), the
``created`` default and ``SESSION_KEY_PREFIX`` + uuid4 ids. ``FlaskPgSession`` then runs on the
same database with nothing run first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import pickle
import secrets
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2.extensions
import pytest
from apps.support import free_port
from db import sql
from flask import Flask, session
from helpers import ClosingClient, add_count_route, close_extension_stores, wait_for
from legacy_rows import (
    LEGACY_SECRET,
    LEGACY_TABLE,
    RunsCommand,
    add_login_required_view,
    create_legacy_table,
    naive_utc,
    q,
    signed,
    write_row,
)
from wire import RoundTripCounter

from pgsession_wsgi import ConfigurationError, LegacyTableError, SessionError, StoreUnavailable
from pgsession_wsgi.core import Load
from pgsession_wsgi.defaults import DEFAULT_MAX_SIZE
from pgsession_wsgi.flask import EXTENSION_KEY, FlaskPgSession, PgSession
from pgsession_wsgi.flask_pg_session import (
    LegacyFallbackStore,
    choose_tables,
    migrate_flask_pg_session,
)

SECRET = LEGACY_SECRET
OLD = LEGACY_TABLE
NEW = "flask_sessions_v2"
MONTH = dt.timedelta(days=31)


def old_ids(dsn: str, schema: str, table: str = OLD) -> list[str]:
    return [row[0] for row in sql(dsn, f"SELECT session_id FROM {q(schema)}.{q(table)} ORDER BY 1")]


def new_rows(dsn: str, schema: str, table: str = NEW) -> dict[bytes, tuple[Any, ...]]:
    rows = sql(dsn, f"SELECT id, data, user_id, created_at, expires_at FROM {q(schema)}.{q(table)}")
    return {bytes(row[0]): row[1:] for row in rows}


def key(session_id: str, prefix: str = "") -> bytes:
    """The new table's key: SHA-256 of the id, with the prefix and a NUL before it if any."""
    text = f"{prefix}\x00{session_id}" if prefix else session_id
    return hashlib.sha256(text.encode()).digest()


@pytest.fixture
def make_app(pg_dsn: str, schema: str) -> Iterator[Callable[..., Flask]]:
    """``make_app(**config)``: a Flask app with only the import changed, in this test's schema."""
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = Flask(f"switched{len(made)}")
        app.test_client_class = ClosingClient
        app.config.update(SECRET_KEY=SECRET, SQLALCHEMY_DATABASE_URI=pg_dsn, SESSION_PG_SCHEMA=schema)
        app.config.update(config)
        FlaskPgSession(app)
        made.append(app)

        @app.route("/dump")
        def dump() -> dict[str, Any]:
            return {key: repr(value) for key, value in session.items()}

        add_count_route(app, "/bump")
        return app

    yield make
    close_extension_stores(made)


def get(app: Flask, cookie: str | None, path: str = "/dump") -> Any:
    client = app.test_client()
    if cookie is not None:
        client.set_cookie("session", cookie)
    return client.get(path)


# -- a logged-in user keeps the session -------------------------------------------------------------


@pytest.mark.parametrize("use_signer", [True, False], ids=["signed", "unsigned"])
def test_a_logged_in_user_keeps_the_session_after_switching_the_import(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask], use_signer: bool
) -> None:
    create_legacy_table(pg_dsn, schema)
    sid, other = str(uuid.uuid4()), str(uuid.uuid4())
    data = {"_permanent": True, "_user_id": "42", "_fresh": True, "_id": "f" * 128, "cart": [1, 2]}
    write_row(pg_dsn, schema, sid, data, naive_utc(dt.timedelta(days=20)))
    write_row(pg_dsn, schema, other, {"_user_id": "7"}, naive_utc(MONTH))
    sql(pg_dsn, f"UPDATE {q(schema)}.{OLD} SET created = '2026-01-01 10:00:00' WHERE session_id = %s", (sid,))

    app = make_app(SESSION_USE_SIGNER=use_signer)
    add_login_required_view(app)

    cookie = signed(sid) if use_signer else sid
    assert get(app, None, "/me").status_code == 401
    client = app.test_client()
    client.set_cookie("session", cookie)
    response = client.get("/me")
    assert response.text == "42"
    # The old table lost that row, the new one has it, keyed by the id's hash, nothing reset.
    assert old_ids(pg_dsn, schema) == [other]
    stored, user_id, created, expires = new_rows(pg_dsn, schema)[key(sid)]
    # Flask-Login's session protection marks it not fresh (the test client is not the browser
    # that made _id): its own rule, the rest is as flask-pg-session stored it.
    data["_fresh"] = False
    assert stored == data and user_id == "42"
    assert created == dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc)
    remaining = expires - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=19, hours=23) < remaining <= dt.timedelta(days=20)
    # The same cookie keeps working from the new table.
    assert client.get("/me").text == "42"
    assert client.get("/dump").json == {k: repr(v) for k, v in data.items()}
    assert client.get("/bump").text == "1"
    assert new_rows(pg_dsn, schema)[key(sid)][0]["n"] == 1
    assert len(new_rows(pg_dsn, schema)) == 1


def test_a_browser_session_gets_the_apps_lifetime(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask]
) -> None:
    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    write_row(pg_dsn, schema, sid, {"_permanent": False, "cart": [3]}, None)  # NULL expiry
    app = make_app(PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=5))
    assert get(app, sid).json == {"_permanent": "False", "cart": "[3]"}
    _, _, _, expires = new_rows(pg_dsn, schema)[key(sid)]
    remaining = expires - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(hours=4, minutes=59) < remaining <= dt.timedelta(hours=5)


# -- what it costs --------------------------------------------------------------------------------


def statements_for(app: Flask, counter: RoundTripCounter, cookie: str | None, path: str = "/dump") -> int:
    counter.reset()
    response = get(app, cookie, path)
    assert response.status_code == 200
    return counter.count


def test_a_moved_session_costs_what_any_session_costs(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask], wire_counter: RoundTripCounter
) -> None:
    create_legacy_table(pg_dsn, schema)
    sid, expired, chosen = str(uuid.uuid4()), str(uuid.uuid4()), secrets.token_urlsafe(32)
    write_row(pg_dsn, schema, sid, {"n": 5}, naive_utc(MONTH))
    write_row(pg_dsn, schema, expired, {"n": 6}, naive_utc(-dt.timedelta(hours=1)))
    write_row(pg_dsn, schema, chosen, {"n": 7}, naive_utc(MONTH))
    app = make_app(SQLALCHEMY_DATABASE_URI=wire_counter.dsn)
    client = app.test_client()
    assert client.get("/bump").text == "1"  # a session of the new table's own
    native = client.get_cookie("session").value  # type: ignore[union-attr]

    baseline = statements_for(app, wire_counter, native)
    assert baseline == 1, wire_counter.statements
    # The first request: the miss, the look into the old table, the move.
    assert statements_for(app, wire_counter, sid) == 3, wire_counter.statements
    assert "DELETE FROM" in wire_counter.statements[2] and "INSERT INTO" in wire_counter.statements[2]
    # From then on, exactly what a session of the new table costs.
    assert statements_for(app, wire_counter, sid) == baseline, wire_counter.statements
    assert get(app, sid).json == {"n": "5"}
    # No row in either table: one statement more than today, and a fresh session.
    assert statements_for(app, wire_counter, str(uuid.uuid4())) == baseline + 1
    assert statements_for(app, wire_counter, expired) == baseline + 1  # expired: not live, not moved
    assert get(app, expired).json == {}
    # An id flask-pg-session never issues is never looked up there.
    assert statements_for(app, wire_counter, chosen) == baseline
    assert get(app, chosen).json == {}
    assert sorted(old_ids(pg_dsn, schema)) == sorted([expired, chosen])


# -- concurrency ----------------------------------------------------------------------------------


@pytest.mark.parametrize("slow_convert", [False, True], ids=["as-is", "all-look-before-any-moves"])
def test_concurrent_first_requests_move_the_session_exactly_once(
    pg_dsn: str,
    schema: str,
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    slow_convert: bool,
) -> None:
    threads_per_session = 6
    create_legacy_table(pg_dsn, schema)
    sessions = {str(uuid.uuid4()): {"_user_id": str(n), "cart": list(range(n))} for n in range(1, 4)}
    for sid, data in sessions.items():
        write_row(pg_dsn, schema, sid, data, naive_utc(MONTH))
    if slow_convert:
        # Every request reads the old row before any moves it: all but one lose the move.
        real = LegacyFallbackStore._convert
        barrier = threading.Barrier(threads_per_session * len(sessions), timeout=20)

        def convert_after_everyone_looked(self: LegacyFallbackStore, *args: Any) -> Any:
            barrier.wait()
            return real(self, *args)

        monkeypatch.setattr(LegacyFallbackStore, "_convert", convert_after_everyone_looked)
    app = make_app(SESSION_PG_MAX_DB_CONN=threads_per_session * len(sessions), SESSION_USE_SIGNER=True)
    start = threading.Barrier(threads_per_session * len(sessions), timeout=20)
    seen: list[tuple[str, Any]] = []
    errors: list[BaseException] = []

    def request(sid: str) -> None:
        try:
            client = app.test_client()
            client.set_cookie("session", signed(sid))
            start.wait()
            response = client.get("/dump")
            seen.append((sid, response.json))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    workers = [
        threading.Thread(target=request, args=(sid,)) for sid in sessions for _ in range(threads_per_session)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert errors == []
    assert len(seen) == len(workers)
    for sid, got in seen:  # every request saw the session, none a fresh one
        assert got == {k: repr(v) for k, v in sessions[sid].items()}, sid
    rows = new_rows(pg_dsn, schema)
    assert set(rows) == {key(sid) for sid in sessions}  # exactly one row each
    for sid, data in sessions.items():
        assert rows[key(sid)][0] == data
    assert old_ids(pg_dsn, schema) == []


# -- rows that cannot be read safely ------------------------------------------------------------


def bad_rows(marker: Path) -> dict[str, tuple[Any, bytes | None]]:
    """name -> (data, raw payload): each must be refused, never served."""
    return {
        "global": ({"x": RunsCommand(marker)}, None),
        "garbage": (None, b"\x80\x04 not a pickle at all"),
        "not-a-dict": ([1, 2, 3], None),
        "set": ({"tags": {1, 2}}, None),
        "int-key": ({1: "one"}, None),
        "too-big": ({"s": "x" * DEFAULT_MAX_SIZE}, None),
        "odd-user-id": ({"_user_id": 4.5}, None),
    }


@pytest.mark.parametrize("name", list(bad_rows(Path("unused"))))
def test_an_unreadable_row_is_refused_with_one_log_line_and_never_served(
    pg_dsn: str,
    schema: str,
    make_app: Callable[..., Flask],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    marker = tmp_path / "executed"
    data, raw = bad_rows(marker)[name]
    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    write_row(pg_dsn, schema, sid, data, naive_utc(MONTH), raw=raw)
    (payload_before,) = sql(pg_dsn, f"SELECT data FROM {q(schema)}.{OLD}")
    app = make_app()
    client = app.test_client()
    client.set_cookie("session", sid)

    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        response = client.get("/bump")

    assert response.text == "1"  # a fresh session, nothing of the old row
    new_cookie = client.get_cookie("session").value  # type: ignore[union-attr]
    assert new_cookie != sid
    assert not marker.exists()  # the pickle was refused, never run
    lines = [r for r in caplog.records if r.name == "pgsession_wsgi"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    message = lines[0].getMessage()
    assert lines[0].levelno == logging.WARNING
    assert key(sid).hex()[:12] in message and sid not in message
    assert "\n" not in message
    # Refused rows stay in the old table, untouched; the new table has only the fresh session.
    assert sql(pg_dsn, f"SELECT data FROM {q(schema)}.{OLD}") == [payload_before]
    assert list(new_rows(pg_dsn, schema)) == [hashlib.sha256(new_cookie.encode()).digest()]


@pytest.mark.parametrize(
    "data, reason",
    [
        (None, "the row has no data (NULL)"),
        ([1, 2, 3], "the pickled data is a builtins.list, not a dict; not converted"),
        ({1: "one"}, "a session key is a int, not a str"),
        ({"s": "x" * DEFAULT_MAX_SIZE}, f"the data would encode to more than max_size ({DEFAULT_MAX_SIZE} "),
    ],
    ids=["null", "not-a-dict", "int-key", "too-big"],
)
def test_a_refused_rows_log_line_says_why(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture, data: Any,
    reason: str,
) -> None:
    """The reason the pickle could not be read, or its data stored, is the one in the line; a row
    with no data at all (NULL) is refused as any unreadable row (LegacyFallbackStore._convert
    mutants 12, 21, 36)."""
    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    write_row(pg_dsn, schema, sid, data, naive_utc(MONTH))
    if data is None:
        sql(pg_dsn, f"UPDATE {q(schema)}.{OLD} SET data = NULL")
    client = make_app().test_client()
    client.set_cookie("session", sid)

    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        assert client.get("/bump").text == "1"  # a fresh session

    [line] = [r.getMessage() for r in caplog.records if r.name == "pgsession_wsgi"]
    assert line.startswith(f"flask-pg-session session {key(sid).hex()[:12]} not moved ({reason}"), line
    assert old_ids(pg_dsn, schema) == [sid]


#: docs/flask-pg-session.md: "a session over 256 KiB as JSON (or a pickle over 1 MiB)" is not
#: moved: the pickle cap is four times the app's max_size, the default here.
PICKLE_CAP = 4 * DEFAULT_MAX_SIZE


def padded_pickle(data: dict[str, Any], size: int) -> bytes:
    """A valid pickle of ``data`` exactly ``size`` bytes long: a string pushed and popped first.

    Its session is small (the JSON is far under max_size): only the pickle's own size is big.
    """
    body = pickle.dumps(data, protocol=2)[2:]
    padding = size - len(b"\x80\x02X") - 4 - len(b"0") - len(body)
    payload = b"\x80\x02X" + struct.pack("<I", padding) + b"p" * padding + b"0" + body
    assert len(payload) == size and pickle.loads(payload) == data  # noqa: S301
    return payload


@pytest.mark.parametrize("size", [PICKLE_CAP, PICKLE_CAP + 1], ids=["at-the-cap", "one-byte-over"])
def test_a_pickle_over_four_times_max_size_is_not_read(
    pg_dsn: str,
    schema: str,
    make_app: Callable[..., Flask],
    caplog: pytest.LogCaptureFixture,
    size: int,
) -> None:
    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    data = {"_user_id": "42", "cart": [1, 2]}
    payload = padded_pickle(data, size)
    write_row(pg_dsn, schema, sid, None, naive_utc(MONTH), raw=payload)
    app = make_app()
    add_login_required_view(app)
    client = app.test_client()
    client.set_cookie("session", sid)

    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        dump = client.get("/dump").json
        me = client.get("/me")

    if size <= PICKLE_CAP:  # moved: the user is still logged in, the old row is gone
        assert me.text == "42"
        assert dump == {"_user_id": "'42'", "cart": "[1, 2]"}
        assert old_ids(pg_dsn, schema) == []
        stored, user_id, *_ = new_rows(pg_dsn, schema)[key(sid)]
        assert {k: stored[k] for k in data} == data and user_id == "42"
        return
    # Refused unread: logged out, a fresh session, and the old row exactly as it was.
    assert me.status_code == 401
    assert dump == {}
    assert client.get("/bump").text == "1"
    assert client.get_cookie("session").value != sid  # type: ignore[union-attr]
    assert [bytes(row[0]) for row in sql(pg_dsn, f"SELECT data FROM {q(schema)}.{OLD}")] == [payload]
    assert key(sid) not in new_rows(pg_dsn, schema)
    warnings = [r.getMessage() for r in caplog.records if r.name == "pgsession_wsgi"]
    assert warnings and all(key(sid).hex()[:12] in line for line in warnings)
    assert f"{size} bytes, over {PICKLE_CAP}" in warnings[0]
    # The one trace of it: which session (by label), why, and where its row stays.
    assert warnings[0].startswith(f"flask-pg-session session {key(sid).hex()[:12]} not moved (")
    assert warnings[0].endswith(
        f'); the request gets a new session and the old row is left in "{schema}"."{OLD}"'
    )


@pytest.mark.parametrize(
    "server_time_zone",
    [None, "Etc/GMT+12", "Pacific/Kiritimati"],  # the server's own, UTC-12, UTC+14
    ids=["server-default", "utc-minus-12", "utc-plus-14"],
)
def test_an_expired_old_row_gives_a_fresh_session_and_stays_where_it_is(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask], server_time_zone: str | None
) -> None:
    create_legacy_table(pg_dsn, schema)
    expired, live = str(uuid.uuid4()), str(uuid.uuid4())
    # flask-pg-session's naive UTC expiry, an hour ago (and, to compare, a live row).
    write_row(
        pg_dsn, schema, expired, {"_user_id": "13", "secret": "expired"}, naive_utc(-dt.timedelta(hours=1))
    )
    write_row(pg_dsn, schema, live, {"_user_id": "14"}, naive_utc(dt.timedelta(hours=1)))
    (payload_before,) = sql(pg_dsn, f"SELECT data FROM {q(schema)}.{OLD} WHERE session_id = %s", (expired,))
    dsn = pg_dsn
    if server_time_zone is not None:  # expiry is naive UTC: read as local time it would shift
        dsn = psycopg2.extensions.make_dsn(pg_dsn, options=f"-c TimeZone={server_time_zone}")
    app = make_app(SQLALCHEMY_DATABASE_URI=dsn)
    add_login_required_view(app)
    client = app.test_client()
    client.set_cookie("session", expired)

    assert client.get("/me").status_code == 401  # not logged in as the expired row's user
    assert client.get("/dump").json == {}
    assert client.get("/bump").text == "1"  # a fresh session...
    fresh = client.get_cookie("session").value  # type: ignore[union-attr]
    assert fresh != expired  # ...under a new id
    assert get(app, expired).json == {}  # the expired id still opens nothing
    assert get(app, live, "/me").text == "14"  # while a live row moves
    # The expired row was neither moved nor deleted; nothing of it is in the new table.
    rows = new_rows(pg_dsn, schema)
    assert set(rows) == {key(live), hashlib.sha256(fresh.encode()).digest()}
    assert all("secret" not in stored for stored, *_ in rows.values())
    assert old_ids(pg_dsn, schema) == [expired]
    assert sql(pg_dsn, f"SELECT data FROM {q(schema)}.{OLD}") == [payload_before]


@pytest.mark.parametrize("use_signer", [False, True], ids=["unsigned", "signed"])
def test_an_id_flask_pg_session_never_issued_is_never_moved_nor_reused(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask], use_signer: bool
) -> None:
    # flask-pg-session stored sessions under whatever id a client sent (fixation): an attacker
    # plants a cookie, the victim logs in under it. Only its own uuid4 ids are trusted.
    create_legacy_table(pg_dsn, schema)
    chosen = secrets.token_urlsafe(32)  # 43 url-safe characters: a cookie the app accepts
    write_row(pg_dsn, schema, chosen, {"_user_id": "victim", "secret": "planted"}, naive_utc(MONTH))
    (payload_before,) = sql(pg_dsn, f"SELECT data FROM {q(schema)}.{OLD}")
    app = make_app(SESSION_USE_SIGNER=use_signer)
    add_login_required_view(app)
    cookie = signed(chosen) if use_signer else chosen
    client = app.test_client()
    client.set_cookie("session", cookie)

    assert client.get("/me").status_code == 401
    assert client.get("/dump").json == {}
    assert client.get("/bump").text == "1"
    fresh = client.get_cookie("session").value  # type: ignore[union-attr]
    assert fresh != cookie and chosen not in fresh  # the new session is not under the chosen id
    assert get(app, cookie).json == {}  # and the chosen id still opens nothing
    assert get(app, cookie, "/me").status_code == 401
    rows = new_rows(pg_dsn, schema)
    assert key(chosen) not in rows and len(rows) == 1
    assert all("secret" not in stored for stored, *_ in rows.values())
    assert sql(pg_dsn, f"SELECT data FROM {q(schema)}.{OLD}") == [payload_before]


@pytest.mark.parametrize("use_signer", [False, True], ids=["unsigned", "signed"])
def test_a_uuid4_the_client_chose_creates_no_session_under_it(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask], use_signer: bool
) -> None:
    # Shaped like an id flask-pg-session issues, but no row has it: looked up, found in neither
    # table, and the session the request starts gets an id of its own.
    create_legacy_table(pg_dsn, schema)
    chosen = str(uuid.uuid4())
    app = make_app(SESSION_USE_SIGNER=use_signer)
    cookie = signed(chosen) if use_signer else chosen
    client = app.test_client()
    client.set_cookie("session", cookie)

    assert client.get("/bump").text == "1"
    fresh = client.get_cookie("session").value  # type: ignore[union-attr]
    assert fresh != cookie and chosen not in fresh
    assert client.get("/bump").text == "2"  # the new id carries the session
    assert get(app, cookie).json == {}  # the chosen one opens nothing
    rows = new_rows(pg_dsn, schema)
    assert key(chosen) not in rows and len(rows) == 1
    assert old_ids(pg_dsn, schema) == []


def test_a_session_holding_only_the_permanent_flag_is_not_moved(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    write_row(pg_dsn, schema, sid, {"_permanent": True}, naive_utc(MONTH))
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        assert get(make_app(), sid).json == {}
    assert [r for r in caplog.records if r.name == "pgsession_wsgi"] == []
    assert new_rows(pg_dsn, schema) == {}


# -- SESSION_KEY_PREFIX ---------------------------------------------------------------------------


def test_two_apps_with_different_prefixes_cannot_read_each_others_sessions(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask]
) -> None:
    create_legacy_table(pg_dsn, schema, "shared")
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    write_row(pg_dsn, schema, "a:" + mine, {"app": "a"}, naive_utc(MONTH), "shared")
    write_row(pg_dsn, schema, "b:" + theirs, {"app": "b"}, naive_utc(MONTH), "shared")
    # The same secret and unsigned cookies: only the prefix keeps the apps apart.
    a = make_app(SESSION_PG_TABLE="shared", SESSION_KEY_PREFIX="a:")
    b = make_app(SESSION_PG_TABLE="shared", SESSION_KEY_PREFIX="b:")
    assert a.extensions[EXTENSION_KEY].store.table == b.extensions[EXTENSION_KEY].store.table == "shared_v2"

    # B never reads (nor moves) A's old row, and the other way round.
    assert get(b, mine).json == {}
    assert get(a, theirs).json == {}
    assert old_ids(pg_dsn, schema, "shared") == ["a:" + mine, "b:" + theirs]
    # Each reads its own, which moves into the shared new table under a prefixed key.
    assert get(a, mine).json == {"app": "'a'"}
    assert get(b, theirs).json == {"app": "'b'"}
    rows = new_rows(pg_dsn, schema, "shared_v2")
    assert set(rows) == {key(mine, "a:"), key(theirs, "b:")}
    # Once moved, still each its own.
    assert get(b, mine).json == {}
    assert get(a, theirs).json == {}
    assert get(a, mine).json == {"app": "'a'"}
    # New sessions too: A's fresh cookie opens nothing in B.
    client = a.test_client()
    client.get("/bump")
    fresh = client.get_cookie("session").value  # type: ignore[union-attr]
    assert get(b, fresh).json == {}
    assert get(a, fresh).json == {"n": "1"}


# -- the command, still there for moving everything at once ----------------------------------------


def test_the_command_moves_the_rest_into_the_running_apps_table(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask], wire_counter: RoundTripCounter
) -> None:
    create_legacy_table(pg_dsn, schema)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    for n, sid in enumerate(ids):
        write_row(pg_dsn, schema, "app:" + sid, {"_user_id": str(n), "n": n}, naive_utc(MONTH))
    refused, theirs = str(uuid.uuid4()), "other:" + str(uuid.uuid4())
    write_row(pg_dsn, schema, "app:" + refused, {"tags": {1}}, naive_utc(MONTH))
    write_row(pg_dsn, schema, theirs, {"n": 9}, naive_utc(MONTH))
    app = make_app(SESSION_KEY_PREFIX="app:", SQLALCHEMY_DATABASE_URI=wire_counter.dsn)
    assert get(app, ids[0]).json == {"_user_id": "'0'", "n": "0"}  # moved by the app itself

    report = migrate_flask_pg_session(pg_dsn, schema=schema, key_prefix="app:", into=NEW, batch_size=2)

    assert report.migrated == 4
    assert report.moved_into == f'"{schema}"."{NEW}"'
    assert report.other_prefix == 1
    assert [label for label, _ in report.refused] == [key(refused, "app:").hex()[:12]]
    assert sorted(old_ids(pg_dsn, schema)) == sorted(["app:" + refused, theirs])  # what was not moved
    rows = new_rows(pg_dsn, schema)
    # The user column, scoped to the prefix as the app's own saves scope it.
    assert {rows[key(sid, "app:")][1] for sid in ids} == {f"app:\x1f{n}" for n in range(5)}
    # The running app finds every one in its own table, at the usual cost.
    for n, sid in enumerate(ids):
        wire_counter.reset()
        assert get(app, sid).json == {"_user_id": repr(str(n)), "n": repr(n)}
        assert wire_counter.count == 1, wire_counter.statements


def test_the_cli_moves_into_the_table_and_converts_in_place_only_when_no_app_moved_yet(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask], capsys: pytest.CaptureFixture[str]
) -> None:
    from pgsession_wsgi import cli

    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    write_row(pg_dsn, schema, sid, {"_user_id": "5"}, naive_utc(MONTH))
    app = make_app()  # creates flask_sessions_v2 next to the old table
    base = ["migrate-flask-pg-session", "--dsn", pg_dsn, "--schema", schema, "--quiet"]
    assert cli.main(base) == 2  # in place would rename the old table under the running app
    assert "--into flask_sessions_v2" in capsys.readouterr().err
    assert cli.main([*base, "--into", NEW]) == 0
    out = capsys.readouterr().out
    assert "migrated 1 session(s)" in out and NEW in out
    assert old_ids(pg_dsn, schema) == []
    assert new_rows(pg_dsn, schema)[key(sid)][1] == "5"
    assert get(app, sid).json == {"_user_id": "'5'"}


def test_the_app_reads_what_the_command_converted_in_place(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask]
) -> None:
    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    write_row(pg_dsn, schema, "app:" + sid, {"_user_id": "3"}, naive_utc(MONTH))
    report = migrate_flask_pg_session(pg_dsn, schema=schema, key_prefix="app:")
    assert report.migrated == 1 and report.moved_into is None
    rows = new_rows(pg_dsn, schema, OLD)  # converted in place: the new table has the old name
    assert rows[key(sid, "app:")][1] == "app:\x1f3"  # the user, scoped to the prefix
    app = make_app(SESSION_KEY_PREFIX="app:")
    assert app.extensions[EXTENSION_KEY].store.table == OLD
    assert not isinstance(app.extensions[EXTENSION_KEY].store, LegacyFallbackStore)
    assert get(app, sid).json == {"_user_id": "'3'"}
    assert get(make_app(SESSION_KEY_PREFIX="other:"), sid).json == {}


# -- which table ------------------------------------------------------------------------------------


def test_which_tables_the_app_picks(pg_dsn: str, schema: str, make_store: Callable[..., Any]) -> None:
    assert choose_tables(pg_dsn, OLD, schema) == (OLD, None)  # an empty database: the name as configured
    assert choose_tables(pg_dsn, OLD, schema, "mine") == ("mine", None)
    create_legacy_table(pg_dsn, schema)
    assert choose_tables(pg_dsn, OLD, schema) == (NEW, OLD)
    assert choose_tables(pg_dsn, OLD, schema, "mine") == ("mine", OLD)
    make_store(table=NEW).create_table()
    sql(pg_dsn, f"DROP TABLE {q(schema)}.{OLD}")  # the old table, dropped once empty
    assert choose_tables(pg_dsn, OLD, schema) == (NEW, None)
    # A stranger's table under the old name (a jsonb "data" but no bytea "id") is not taken for
    # ours: the name as configured, which the store then refuses by name.
    sql(pg_dsn, f"CREATE TABLE {q(schema)}.{OLD} (data jsonb, note text)")
    assert choose_tables(pg_dsn, OLD, schema) == (OLD, None)
    sql(pg_dsn, f"DROP TABLE {q(schema)}.{OLD}")
    make_store(table=OLD).create_table()  # ours under the old name and _v2 too: ambiguous
    with pytest.raises(ConfigurationError, match="PGSESSION_TABLE"):
        choose_tables(pg_dsn, OLD, schema)
    assert choose_tables(pg_dsn, OLD, schema, NEW) == (NEW, None)


def test_choosing_the_tables_refuses_a_bad_name_before_connecting_and_names_an_unreachable_server(
    pg_dsn: str,
) -> None:
    """choose_tables' refusals name what is wrong, and libpq's reason when the server cannot be
    reached (fallback.choose_tables mutants 2, 5, 6, 8, 11, 12; _layouts 17, 18)."""
    nowhere = f"host=127.0.0.1 port={free_port()} dbname=none user=postgres"
    with pytest.raises(ConfigurationError) as bad_table:
        choose_tables(nowhere, "", "public")
    assert str(bad_table.value) == "the table name must be a non-empty string without NUL characters"
    with pytest.raises(ConfigurationError) as bad_schema:
        choose_tables(nowhere, OLD, "x" * 64)
    assert str(bad_schema.value) == (
        f"the schema name {'x' * 64!r} is longer than PostgreSQL's 63-byte limit: choose a shorter one"
    )
    with pytest.raises(StoreUnavailable) as unreachable:
        choose_tables(nowhere, OLD, "public")
    assert str(unreachable.value).startswith("cannot connect to PostgreSQL (connection to server at ")
    assert "Connection refused" in str(unreachable.value)


def test_the_fallback_store_refuses_options_it_cannot_work_with(pg_dsn: str, schema: str) -> None:
    """Exact messages, the smallest values taken, and no key prefix unless given
    (LegacyFallbackStore.__init__ mutants 1-8, 10-13, 15-17, 39, 42, 43)."""
    def make(**options: Any) -> LegacyFallbackStore:
        options = {"legacy_table": OLD, **options}
        return LegacyFallbackStore(pg_dsn, NEW, schema, purge_interval=None, **options)

    for options, message in [
        ({"lifetime": dt.timedelta(0)}, "lifetime must be positive, not datetime.timedelta(0)"),
        ({"max_size": 0}, "max_size must be a positive number of bytes, not 0"),
        ({"key_prefix": "app\x00"}, "key_prefix cannot hold a NUL character: choose another prefix"),
        ({"legacy_table": NEW}, f"the pgsession-wsgi table and flask-pg-session's table are both {NEW!r}: "
                                "give the new table another name"),
        ({"legacy_table": "o" * 64},
         f"the table name {'o' * 64!r} is longer than PostgreSQL's 63-byte limit: choose a shorter one"),
    ]:
        with pytest.raises(ConfigurationError) as refused:
            make(**options)
        assert str(refused.value) == message
    store = make(lifetime=dt.timedelta(seconds=1), max_size=1)
    try:
        assert (store.key_prefix, store.legacy_table) == ("", OLD)
    finally:
        store.close()


def test_the_fallback_store_takes_the_stores_options_and_caps_a_moved_session_by_absolute(
    pg_dsn: str, schema: str
) -> None:
    """The other options go to the store (create_table=False: a missing table is named, not made);
    a moved session ends at its creation plus ``absolute`` (LegacyFallbackStore.__init__ mutants
    24, 25, 29)."""
    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    write_row(pg_dsn, schema, sid, {"n": 1}, naive_utc(MONTH))
    options: dict[str, Any] = {"legacy_table": OLD, "purge_interval": None, "absolute": dt.timedelta(hours=1)}
    unready = LegacyFallbackStore(pg_dsn, NEW, schema, create_table=False, **options)
    try:
        with pytest.raises(SessionError, match="does not exist"):
            unready.execute(Load(key(sid), dt.timedelta(seconds=60), sid))
    finally:
        unready.close()
    store = LegacyFallbackStore(pg_dsn, NEW, schema, **options)
    try:
        assert store.execute(Load(key(sid), dt.timedelta(seconds=60), sid)).data == {"n": 1}
    finally:
        store.close()
    [(_, _, created_at, expires_at)] = new_rows(pg_dsn, schema).values()
    assert expires_at == created_at + dt.timedelta(hours=1)


def test_pgsession_on_the_old_table_still_names_the_command(pg_dsn: str, schema: str) -> None:
    create_legacy_table(pg_dsn, schema)
    app = Flask(__name__)
    app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema, PGSESSION_TABLE=OLD)
    with pytest.raises(LegacyTableError, match="migrate-flask-pg-session"):
        PgSession(app)
    assert EXTENSION_KEY not in app.extensions


# -- the core's side: generic, and no id in a log ------------------------------------------------


def test_a_load_carries_the_cookies_id_but_never_prints_it() -> None:
    from pgsession_wsgi.core import Load

    sid = str(uuid.uuid4())
    load = Load(key(sid), dt.timedelta(seconds=60), sid)
    assert load.session_id == sid
    assert sid not in repr(load)
    assert load == Load(key(sid), dt.timedelta(seconds=60))


def test_a_prefixed_core_refuses_an_id_holding_the_separator() -> None:
    from helpers import core_options

    from pgsession_wsgi.core import SessionCore
    from pgsession_wsgi.session import SessionState

    class Bare:
        def sign(self, session_id: str) -> str:
            return session_id

        def unsign(self, value: str) -> tuple[str, bool] | None:
            return value.replace("~", "\x00"), False

    options = {**core_options(), "signer": Bare(), "key_prefix": "a"}
    core = SessionCore.configure(None, **options)
    state = SessionState("session=b~" + "c" * 43)  # the id would hold the separator: refused
    assert core.wants_load(state) is False
    ok = SessionState("session=" + "c" * 43)
    assert core.wants_load(ok) is True and ok.session_id == "a\x00" + "c" * 43
    with pytest.raises(ConfigurationError, match="NUL"):
        SessionCore.configure(None, **{**options, "key_prefix": "a\x00b"})


# -- the move itself: a row rewritten meanwhile, a row that cannot be read back, a lost connection ---


def test_a_row_flask_pg_session_rewrote_after_the_look_is_moved_as_rewritten(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The move deletes the old row only if it still holds the pickle that was read: a row an old
    worker rewrote meanwhile is read again, never replaced by what it held before."""
    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    write_row(pg_dsn, schema, sid, {"cart": [1]}, naive_utc(MONTH))
    real = LegacyFallbackStore._convert
    calls: list[int] = []

    def rewritten_after_the_look(self: LegacyFallbackStore, *args: Any) -> Any:
        if not calls:  # flask-pg-session writes the session again between the look and the move
            write_row(pg_dsn, schema, sid, {"cart": [1, 2]}, naive_utc(MONTH))
        calls.append(1)
        return real(self, *args)

    monkeypatch.setattr(LegacyFallbackStore, "_convert", rewritten_after_the_look)
    assert get(make_app(), sid).json == {"cart": "[1, 2]"}
    assert len(calls) == 2  # the first move found the row changed: it was looked at again
    assert new_rows(pg_dsn, schema)[key(sid)][0] == {"cart": [1, 2]}
    assert old_ids(pg_dsn, schema) == []


def test_a_moved_row_that_cannot_be_read_back_is_a_500_naming_the_error(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """A trigger of someone else's rewrites the inserted row into JSON the codec never writes (a
    5000-digit number): the move's answer is refused as the store's own load refuses such a row."""
    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    write_row(pg_dsn, schema, sid, {"cart": [1]}, naive_utc(MONTH))
    app = make_app()
    assert get(app, None).status_code == 200  # the new table is made
    sql(
        pg_dsn,
        f"CREATE FUNCTION {q(schema)}.widen() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN NEW.data := jsonb_build_object('n', repeat('9', 5000)::numeric); RETURN NEW; END $$",
    )
    sql(
        pg_dsn,
        f"CREATE TRIGGER widen BEFORE INSERT ON {q(schema)}.{q(NEW)}"
        f" FOR EACH ROW EXECUTE FUNCTION {q(schema)}.widen()",
    )
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        assert get(app, sid).status_code == 500
    assert "a stored session could not be decoded (ValueError)" in caplog.text


def end_the_connection_waiting_on(dsn: str, relation: str, locker: Any, ended: list[Any], who: str) -> None:
    """Once a connection waits on the lock ``locker`` holds on ``relation``, the server ends it (as
    a restart or a failover would; what ``pg_terminate_backend`` answered goes into ``ended``);
    then the lock is let go."""
    waiting = "SELECT pid FROM pg_locks WHERE relation = to_regclass(%s) AND NOT granted"
    try:
        wait_for(lambda: sql(dsn, waiting, (relation,)), f"{who} to wait on the lock")
        ((pid,),) = sql(dsn, waiting, (relation,))
        ended.extend(sql(dsn, "SELECT pg_terminate_backend(%s, 10000)", (pid,)))
    finally:
        locker.rollback()
        locker.close()


def test_a_connection_lost_during_the_move_is_a_503_and_the_move_is_not_repeated(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The move inserts: like the store's own inserts it is not run again on another connection
    (it may have been applied). The request is a 503; the next one moves the session."""
    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    write_row(pg_dsn, schema, sid, {"cart": [1]}, naive_utc(MONTH))
    app = make_app()
    assert get(app, None).status_code == 200  # the new table is made
    target = f"{q(schema)}.{q(NEW)}"
    real = LegacyFallbackStore._convert
    calls: list[int] = []
    ended: list[Any] = []

    def lock_before_the_move(self: LegacyFallbackStore, *args: Any) -> Any:
        if not calls:
            locker = psycopg2.connect(pg_dsn)
            with locker.cursor() as cur:
                cur.execute(f"LOCK TABLE {target} IN ACCESS EXCLUSIVE MODE")
            # The move waits on the lock; the server then ends its connection (a restart, a failover).
            ending = (pg_dsn, target, locker, ended, "the move")
            thread = threading.Thread(target=end_the_connection_waiting_on, args=ending)
            thread.start()
            threads.append(thread)
        calls.append(1)
        return real(self, *args)

    threads: list[threading.Thread] = []
    monkeypatch.setattr(LegacyFallbackStore, "_convert", lock_before_the_move)
    assert get(app, sid).status_code == 503
    threads[0].join(60)
    assert ended == [(True,)]
    assert old_ids(pg_dsn, schema) == [sid] and key(sid) not in new_rows(pg_dsn, schema)
    assert get(app, sid).json == {"cart": "[1]"}
    assert old_ids(pg_dsn, schema) == []


def test_a_connection_lost_during_the_look_is_retried_on_a_fresh_one(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask]
) -> None:
    """The look only reads: like the store's own loads it runs again when its connection breaks."""
    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    write_row(pg_dsn, schema, sid, {"cart": [1]}, naive_utc(MONTH))
    app = make_app()
    assert get(app, None).status_code == 200  # the new table is made
    old = f"{q(schema)}.{OLD}"
    locker = psycopg2.connect(pg_dsn)
    ended: list[Any] = []

    with locker.cursor() as cur:
        cur.execute(f"LOCK TABLE {old} IN ACCESS EXCLUSIVE MODE")
    thread = threading.Thread(
        target=end_the_connection_waiting_on, args=(pg_dsn, old, locker, ended, "the look")
    )
    thread.start()
    try:
        assert get(app, sid).json == {"cart": "[1]"}
    finally:
        thread.join(60)
    assert ended == [(True,)]
    assert old_ids(pg_dsn, schema) == []


def test_a_row_rewritten_at_every_look_is_given_up_after_the_second(
    pg_dsn: str, schema: str, make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The move is tried twice at most: a row that changes under every try leaves the request with
    a fresh session and stays in the old table (as it was last written)."""
    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    write_row(pg_dsn, schema, sid, {"n": 0}, naive_utc(MONTH))
    real = LegacyFallbackStore._convert
    calls: list[int] = []

    def rewritten_after_each_look(self: LegacyFallbackStore, *args: Any) -> Any:
        calls.append(1)
        write_row(pg_dsn, schema, sid, {"n": len(calls)}, naive_utc(MONTH))
        return real(self, *args)

    monkeypatch.setattr(LegacyFallbackStore, "_convert", rewritten_after_each_look)
    app = make_app()
    client = app.test_client()
    client.set_cookie("session", sid)
    assert client.get("/bump").text == "1"  # a fresh session
    assert len(calls) == 2
    assert old_ids(pg_dsn, schema) == [sid] and key(sid) not in new_rows(pg_dsn, schema)


def test_a_session_moved_by_someone_else_after_the_look_is_read_at_once(
    pg_dsn: str,
    schema: str,
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    wire_counter: RoundTripCounter,
) -> None:
    """The command (or another request) moves the session between this request's look and its
    move: the move finds nothing, and the session is read from the new table with one statement
    more, not looked for again."""
    create_legacy_table(pg_dsn, schema)
    sid = str(uuid.uuid4())
    write_row(pg_dsn, schema, sid, {"n": 5}, naive_utc(MONTH))
    app = make_app(SQLALCHEMY_DATABASE_URI=wire_counter.dsn)
    assert get(app, None).status_code == 200  # the new table is made
    real = LegacyFallbackStore._convert

    def moved_by_the_command_meanwhile(self: LegacyFallbackStore, *args: Any) -> Any:
        assert migrate_flask_pg_session(pg_dsn, schema=schema, into=NEW).migrated == 1
        return real(self, *args)

    monkeypatch.setattr(LegacyFallbackStore, "_convert", moved_by_the_command_meanwhile)
    # The miss, the look, the move that finds nothing, the load of the moved row.
    assert statements_for(app, wire_counter, sid) == 4, wire_counter.statements
    assert get(app, sid).json == {"n": "5"}
    assert old_ids(pg_dsn, schema) == []
