"""The audit's hardening points (issue 9): user ids, names, max_size, bad values, caches, fixation.

Every test runs the real middleware against the real database and would fail on 0.1.0.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from apps.support import wsgi_call
from db import sql
from helpers import ClosingClient

from pgsession_wsgi import PostgresStore, SessionError, SessionMiddleware, get_session
from pgsession_wsgi.cli import main as cli_main
from pgsession_wsgi.codec import MAX_DEPTH, decode_value, dumps, encode_value
from pgsession_wsgi.cookies import hash_session_id

SECRET = "hardening-secret-long-enough-not-to-be-warned-about"


def nested(depth: int, leaf: Any = 1, kind: type = list) -> Any:
    value = leaf
    for _ in range(depth):
        value = kind([value]) if kind in (list, tuple) else {"k": value}
    return value


# The value to store comes from a registry, so the routes stay plain strings.
VALUES: dict[str, Any] = {}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """/read: the session as repr; /put?name=key: session[key] = VALUES[name]; /put-key?name=
    stores 1 under the key VALUES[name]; /user?name=: the user key; /cache?cc=...: a Cache-Control."""
    session = get_session(environ)
    path = environ["PATH_INFO"]
    query = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
    headers = [("Content-Type", "text/plain")]
    body = b""
    if path == "/read":
        body = repr(sorted(dict(session).items())).encode("utf-8", "backslashreplace")
    elif path == "/put":
        session[query.get("key", "v")] = VALUES[query["name"]]
    elif path == "/put-key":
        session[VALUES[query["name"]]] = 1
    elif path == "/user":
        session["uid"] = VALUES[query["name"]]
    elif path == "/login-as":  # ?blind=1: without reading the session first
        if not query.get("blind"):
            session.get("uid")
        session["uid"] = query["who"]
    elif path == "/cache":
        session["x"] = query.get("x", "1")
        if "cc" in query:
            headers.append(("Cache-Control", query["cc"].replace("+", " ")))
    start_response("200 OK", headers)
    return [body]


@pytest.fixture
def store(make_store: Callable[..., PostgresStore]) -> PostgresStore:
    store = make_store()
    store.create_table()
    return store


def middleware(store: PostgresStore, **options: Any) -> SessionMiddleware:
    options.setdefault("secret_key", SECRET)
    return SessionMiddleware(app, store, **options)


def rows(store: PostgresStore) -> list[tuple[Any, ...]]:
    dsn = store.dsn
    return sql(dsn, f"SELECT data, user_id FROM {store.qualified_name}")


# -- 1. user ids ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user", [uuid.UUID("12345678-1234-5678-1234-567812345678"), 42, "alice"], ids=["uuid", "int", "str"]
)
def test_user_ids_of_str_int_and_uuid_are_found_and_revoked(store: PostgresStore, user: Any) -> None:
    VALUES["user"] = user
    mw = middleware(store, user_key="uid")
    cookie = wsgi_call(mw, "/user?name=user").cookie()
    assert cookie
    assert [row[1] for row in rows(store)] == [str(user)]
    assert len(store.sessions_for_user(user)) == 1
    assert len(store.sessions_for_user(str(user))) == 1  # the text form a CLI user types
    assert store.revoke_user(user) == 1
    assert wsgi_call(mw, "/read", cookie).body == b"[]"


def test_cli_revoke_finds_a_uuid_user(store: PostgresStore, capsys: pytest.CaptureFixture[str]) -> None:
    user = uuid.uuid4()
    VALUES["user"] = user
    mw = middleware(store, user_key="uid")
    wsgi_call(mw, "/user?name=user")
    dsn = store.dsn
    status = cli_main(
        ["revoke", "--dsn", dsn, "--schema", store.schema, "--table", store.table, "--user", str(user)]
    )
    assert status == 0
    assert "removed 1 session(s)" in capsys.readouterr().out
    assert rows(store) == []


@pytest.mark.parametrize(
    "value", [Decimal("1"), (1, 2), True, 1.5], ids=["decimal", "tuple", "bool", "float"]
)
def test_other_user_id_types_are_refused_at_save_naming_the_key(
    store: PostgresStore, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    VALUES["user"] = value
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        response = wsgi_call(middleware(store, user_key="uid"), "/user?name=user")
    assert response.status == 500
    assert rows(store) == []
    assert "'uid'" in caplog.text and "str, int or UUID" in caplog.text


def test_lookups_refuse_other_user_id_types(store: PostgresStore) -> None:
    with pytest.raises(SessionError, match="str, int or UUID"):
        store.sessions_for_user(True)
    with pytest.raises(SessionError, match="str, int or UUID"):
        store.revoke_user(Decimal("42"))


# -- 2. names are data ----------------------------------------------------------------------

HOSTILE_NAMES = ["100%sessions", "x%(id)s", "it's", 'quote"d', "back\\slash'", "%s%%"]


@pytest.mark.parametrize("table", HOSTILE_NAMES)
def test_any_table_name_works_through_the_whole_lifecycle(
    make_store: Callable[..., PostgresStore], table: str
) -> None:
    store = make_store(table=table)
    mw = middleware(store, user_key="uid")
    cookie = wsgi_call(mw, "/login-as?who=bob").cookie()
    assert cookie
    assert wsgi_call(mw, "/read", cookie).body == b"[('uid', 'bob')]"
    assert store.stats()["live"] == 1 and store.stats()["total_bytes"] > 0
    assert len(store.sessions_for_user("bob")) == 1
    assert store.revoke_user("bob") == 1
    assert store.purge_expired() == 0
    dsn = store.dsn
    found = sql(dsn, "SELECT relname FROM pg_class WHERE oid = to_regclass(%s)", (store.qualified_name,))
    assert found == [(table,)]


@pytest.mark.parametrize("schema_name", ["s%chema", "s%(id)s'"])
def test_any_schema_name_works(
    make_store: Callable[..., PostgresStore], pg_dsn: str, schema_name: str
) -> None:
    store = make_store(schema=schema_name)
    try:
        mw = middleware(store)
        cookie = wsgi_call(mw, "/login-as?who=carol").cookie()
        assert wsgi_call(mw, "/read", cookie).body == b"[('uid', 'carol')]"
        assert store.stats()["live"] == 1
    finally:
        store.close()
        sql(pg_dsn, f"DROP SCHEMA IF EXISTS {store.qualified_name.rsplit('.', 1)[0]} CASCADE")


def test_stats_binds_the_table_name_even_without_standard_conforming_strings(
    make_store: Callable[..., PostgresStore],
) -> None:
    """With standard_conforming_strings=off a backslash escapes a quote inside a string literal:
    a name pasted into one ends the literal early. Bound as a parameter, it cannot."""
    store = make_store(table="t\\'); SELECT 1; --", max_connections=1)
    store.create_table()
    with store._pool.connection() as conn, conn.cursor() as cur:
        cur.execute("SET standard_conforming_strings = off")
    stats = store.stats()
    assert stats["live"] == 0 and stats["total_bytes"] > 0


# -- 3. max_size holds for the stored row ---------------------------------------------------


def test_blind_writes_cannot_grow_a_row_past_max_size(store: PostgresStore) -> None:
    VALUES["kilobyte"] = "x" * 1000
    mw = middleware(store, max_size=4096)
    cookie = wsgi_call(mw, "/put?name=kilobyte&key=k0").cookie()
    statuses = [wsgi_call(mw, f"/put?name=kilobyte&key=k{i}", cookie).status for i in range(1, 19)]
    assert 500 in statuses and statuses[:2] == [200, 200]
    assert all(status == 500 for status in statuses[statuses.index(500) :])
    ((data, _),) = rows(store)
    assert len(json.dumps(data, separators=(", ", ": "))) <= 4096
    # The session is not stuck: removing a key and writing a small one still work.
    VALUES["small"] = "s"
    assert wsgi_call(mw, "/put?name=small&key=k0", cookie).status == 200
    assert "'k0', 's'" in wsgi_call(mw, "/read", cookie).body.decode()


def test_concurrent_writes_cannot_pass_max_size_together(store: PostgresStore) -> None:
    VALUES["big"] = "y" * 1500
    mw = middleware(store, max_size=4096)
    cookie = wsgi_call(mw, "/put?name=big&key=first").cookie()
    statuses: list[int] = []
    barrier = threading.Barrier(6)

    def write(i: int) -> None:
        barrier.wait()
        statuses.append(wsgi_call(mw, f"/put?name=big&key=w{i}", cookie).status)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ((data, _),) = rows(store)
    assert statuses.count(200) == len(data) - 1 == 1  # room for exactly one more 1.5 KB key
    assert statuses.count(500) == 5


def test_too_large_write_error_comes_from_the_database_measure(store: PostgresStore) -> None:
    """A blind write whose keys alone fit, but whose merge does not, raises SessionTooLarge."""
    from pgsession_wsgi import SessionTooLarge

    VALUES["big"] = "z" * 3000
    mw = middleware(store, max_size=4096)
    cookie = wsgi_call(mw, "/put?name=big&key=a").cookie()
    session_id = mw.signer.unsign(str(cookie))
    assert session_id is not None
    with pytest.raises(SessionTooLarge) as raised:
        store.write(
            hash_session_id(session_id[0]),
            dumps({"b": "z" * 3000}),
            [],
            replace=False,
            new_hash=None,
            idle=mw.policy.idle_timeout,
            absolute=None,
            touch_interval=mw.policy.touch_interval,
            max_size=4096,
        )
    assert raised.value.limit == 4096 and raised.value.size > 6000


# -- 4. bad values: a clear error naming the key, and nothing unreadable is stored ----------


@pytest.mark.parametrize(
    "name, value",
    [
        ("tuple-200", nested(200, kind=tuple)),
        ("dict-475", nested(475, kind=dict)),
        ("list-2000", nested(2000)),
        ("int-5000-digits", 10**5000),
        ("self-containing", None),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_unstorable_values_are_a_500_naming_the_key(
    store: PostgresStore, name: str, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    if name == "self-containing":
        value = []
        value.append(value)
    VALUES[name] = value
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        response = wsgi_call(middleware(store), f"/put?name={name}&key=danger")
    assert response.status == 500
    assert rows(store) == []
    records = [r for r in caplog.records if r.name == "pgsession_wsgi"]
    assert len(records) == 1 and "'danger'" in records[0].getMessage() and records[0].exc_info is None


@pytest.mark.parametrize("key", ["nul\x00key", "lone\ud800surrogate"])
def test_keys_jsonb_cannot_hold_are_a_500_naming_the_key(
    store: PostgresStore, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    VALUES["key"] = key
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        response = wsgi_call(middleware(store), "/put-key?name=key")
    assert response.status == 500
    assert repr(key) in caplog.text
    assert rows(store) == []


def test_lone_surrogates_and_nul_in_values_round_trip(store: PostgresStore) -> None:
    VALUES["odd"] = ["a\ud800b", "nul\x00", "\udfff"]
    mw = middleware(store)
    cookie = wsgi_call(mw, "/put?name=odd&key=odd").cookie()
    body = wsgi_call(mw, "/read", cookie).body.decode()
    assert (
        body
        == repr([("odd", ["a\ud800b", "nul\x00", "\udfff"])]).encode("utf-8", "backslashreplace").decode()
    )


def test_depth_limit_is_exact() -> None:
    assert decode_value(json.loads(dumps(encode_value(nested(MAX_DEPTH))))) == nested(MAX_DEPTH)
    with pytest.raises(ValueError, match="nested deeper"):
        encode_value(nested(MAX_DEPTH + 1))


@pytest.mark.parametrize(
    "stored",
    [
        json.dumps({"v": nested(475, kind=dict)}),  # deep JSON written by something else
        '{"v": {" u": "not-a-uuid"}}',  # a tag with a payload its decoder refuses
        '{"v": {" dt": 5}}',
        '{"v": ' + "9" * 5000 + "}",  # a number Python will not turn into an int
    ],
    ids=["deep", "bad-uuid", "bad-datetime", "huge-number"],
)
def test_a_row_that_cannot_be_decoded_is_a_500_with_one_log_line(
    store: PostgresStore, stored: str, caplog: pytest.LogCaptureFixture
) -> None:
    mw = middleware(store)
    cookie = wsgi_call(mw, "/login-as?who=dave").cookie()
    assert cookie
    session_id = mw.signer.unsign(cookie)
    assert session_id is not None
    dsn = store.dsn
    sql(
        dsn,
        f"UPDATE {store.qualified_name} SET data = %s::jsonb WHERE id = %s",
        (stored, psycopg2.Binary(hash_session_id(session_id[0]))),
    )
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        response = wsgi_call(mw, "/read", cookie)  # raises if anything escapes the middleware
    assert response.status == 500
    records = [r for r in caplog.records if r.name == "pgsession_wsgi"]
    assert len(records) == 1 and records[0].exc_info is None
    assert "could not be decoded" in records[0].getMessage()
    assert session_id[0] not in caplog.text


# -- 7. shared caches -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        (None, "private"),
        ("public, max-age=600", "private, max-age=600"),
        ("max-age=60, PUBLIC", "private, max-age=60"),
        ("private, max-age=60", "private, max-age=60"),
        ("no-store", "no-store"),
    ],
)
def test_a_response_setting_the_cookie_is_private(
    store: PostgresStore, given: str | None, expected: str
) -> None:
    path = "/cache" + (f"?cc={given.replace(' ', '+')}" if given else "")
    response = wsgi_call(middleware(store), path)
    assert response.cookie()
    assert response.header_all("Cache-Control") == [expected]


def test_a_response_without_a_cookie_keeps_its_cache_control(store: PostgresStore) -> None:
    mw = middleware(store)
    cookie = wsgi_call(mw, "/cache?x=1").cookie()
    response = wsgi_call(mw, "/cache?x=1&cc=public,+max-age=600", cookie)  # nothing changes
    assert response.cookie() is None
    assert response.header_all("Cache-Control") == ["public, max-age=600"]


# -- 10. fixation through a planted cookie --------------------------------------------------


@pytest.mark.parametrize("blind", ["", "1"], ids=["read-first", "blind-write"])
def test_a_login_on_a_planted_session_gets_a_new_id(store: PostgresStore, blind: str) -> None:
    mw = middleware(store, user_key="uid")
    planted = wsgi_call(mw, "/cache?x=attacker").cookie()  # issued to the attacker
    assert planted
    response = wsgi_call(mw, f"/login-as?who=victim&blind={blind}", planted)  # the victim logs in
    fresh = response.cookie()
    assert fresh and fresh != planted
    assert wsgi_call(mw, "/read", planted).body == b"[]"  # the attacker's copy is worthless
    assert wsgi_call(mw, "/read", fresh).body == b"[('uid', 'victim'), ('x', 'attacker')]"


def test_another_user_logging_in_gets_a_new_id_but_the_same_user_does_not(store: PostgresStore) -> None:
    mw = middleware(store, user_key="uid")
    first = wsgi_call(mw, "/login-as?who=erin").cookie()
    assert wsgi_call(mw, "/login-as?who=erin", first).cookie() is None  # unchanged: same id
    second = wsgi_call(mw, "/login-as?who=frank", first).cookie()
    assert second and second != first
    assert wsgi_call(mw, "/read", first).body == b"[]"


def test_regeneration_on_user_change_can_be_turned_off(store: PostgresStore) -> None:
    mw = middleware(store, user_key="uid", regenerate_on_user_change=False)
    planted = wsgi_call(mw, "/cache?x=attacker").cookie()
    assert wsgi_call(mw, "/login-as?who=victim", planted).cookie() is None
    assert wsgi_call(mw, "/read", planted).body == b"[('uid', 'victim'), ('x', 'attacker')]"


def stream_login(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    """Logs a user in only while the body streams: too late for a new cookie."""
    session = get_session(environ)
    session["x"] = "before"
    start_response("200 OK", [("Content-Type", "text/plain")])

    def body() -> Any:
        yield b"a"
        session["uid"] = "late"
        yield b"b"

    return body()


def test_a_login_while_streaming_is_not_saved_under_the_old_id(
    store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    mw = middleware(store, user_key="uid")
    cookie = wsgi_call(mw, "/cache?x=1").cookie()
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        response = SessionMiddleware(stream_login, store, secret_key=SECRET, user_key="uid")
        assert wsgi_call(response, "/", cookie).body == b"ab"
    assert "was not saved" in caplog.text
    assert wsgi_call(mw, "/read", cookie).body == b"[('x', 'before')]"
    assert store.sessions_for_user("late") == []


@pytest.mark.parametrize("user_key", ["default", None])
def test_flask_login_on_the_drop_in_regenerates_without_any_call(
    pg_dsn: str, schema: str, user_key: str | None
) -> None:
    """An app moved over with FlaskPgSession calls login_user() and nothing else."""
    import flask
    import flask_login

    from pgsession_wsgi.flask import EXTENSION_KEY, FlaskPgSession

    app = flask.Flask("drop_in")
    app.test_client_class = ClosingClient  # closes every response, as a server does
    app.config.update(SECRET_KEY="s", SQLALCHEMY_DATABASE_URI=pg_dsn, SESSION_PG_SCHEMA=schema)
    if user_key is None:
        app.config["PGSESSION_USER_KEY"] = None
    FlaskPgSession(app)
    manager = flask_login.LoginManager(app)

    class User(flask_login.UserMixin):  # type: ignore[misc]
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    manager.user_loader(lambda user_id: User(user_id))

    @app.route("/visit")
    def visit() -> str:
        flask.session["seen"] = True
        return "ok"

    @app.route("/login")
    def login() -> str:
        flask_login.login_user(User("7"))
        return "in"

    @app.route("/me")
    def me() -> str:
        return str(flask_login.current_user.get_id())

    store = app.extensions[EXTENSION_KEY].store
    try:
        attacker = app.test_client()
        attacker.get("/visit")
        planted = attacker.get_cookie("session").value  # type: ignore[union-attr]
        victim = app.test_client()
        victim.set_cookie("session", planted)
        victim.get("/login")
        after = victim.get_cookie("session").value  # type: ignore[union-attr]
        assert victim.get("/me").text == "7"
        if user_key is None:  # turned off: the planted id is the victim's
            assert after == planted and attacker.get("/me").text == "7"
            assert store.sessions_for_user("7") == []
        else:
            assert after != planted and attacker.get("/me").text == "None"
            assert len(store.sessions_for_user("7")) == 1
    finally:
        store.close()
