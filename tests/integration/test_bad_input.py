"""Hostile or broken input: cookie headers, configuration, and values JSON cannot hold."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from apps.support import wsgi_call
from db import sql
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import Signer
from wire import RoundTripCounter, statement_kind

from pgsession_wsgi import (
    ConfigurationError,
    PostgresStore,
    SessionError,
    SessionMiddleware,
    get_session,
)
from pgsession_wsgi.cookies import HmacIdSigner, new_session_id

SECRET = "bad-input-secret"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """/read answers the session; /write reads it, then sets a key; /blind only sets a key;
    /bad?kind=... stores a value JSON cannot hold."""
    session = get_session(environ)
    path = environ["PATH_INFO"]
    body = repr(sorted(dict(session).items())) if path in ("/read", "/write") else ""
    if path in ("/write", "/blind"):
        session["seen"] = True
    elif path == "/bad":
        session["fine"] = "kept?"
        session["bad"] = UNSTORABLE[environ["QUERY_STRING"].split("=")[1]]
    elif path == "/login":
        session["user"] = "alice"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]


def id_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


# -- cookie headers thrown at the middleware -------------------------------------------------


@pytest.fixture
def counted(wire_counter: RoundTripCounter, make_store: Callable[..., PostgresStore]) -> Any:
    """The app on a store whose statements ``wire_counter`` sees, with one real session."""
    store = make_store(dsn=wire_counter.dsn)
    middleware = SessionMiddleware(app, store, secret_key=SECRET)
    real = wsgi_call(middleware, "/login").cookie()
    assert real
    return middleware, real


signer = HmacIdSigner(SECRET)
# The same signatures for any bytes (HmacIdSigner.sign takes ASCII ids only); checked to agree.
raw_signer = Signer(SECRET, salt="pgsession-wsgi", key_derivation="hmac",
                    digest_method=hashlib.sha256)
assert raw_signer.sign(b"x" * 43).decode() == signer.sign("x" * 43)
junk_text = st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
cookie_names = st.sampled_from(["session", "Session", "session ", "sess", "a", "", "session\x00"])
malformed_ids = st.one_of(
    st.text(max_size=60),  # any text, possibly non-ASCII: signed with the real key
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
            min_size=43, max_size=43),  # well formed, validly signed, but no such session
    st.just(""), st.just("." * 43), st.just("x" * 5000),
)


@st.composite
def cookie_headers(draw: Any, real: str) -> tuple[str, list[str]]:
    """A Cookie header and the session ids forged into it (validly signed, never issued)."""
    forged: list[str] = []
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["junk", "pair", "forged", "real", "huge", "many", "bad-sig"]))
        if kind == "junk":
            parts.append(draw(junk_text))
        elif kind == "pair":
            parts.append(f"{draw(cookie_names)}={draw(junk_text)}")
        elif kind == "forged":
            session_id = draw(malformed_ids)
            forged.append(session_id)
            # Signed with the real key; a server hands non-ASCII bytes over as latin-1.
            value = raw_signer.sign(session_id.encode("utf-8")).decode("latin-1")
            parts.append(f"session={value}")
        elif kind == "real":
            parts.append(f"session={real}")
        elif kind == "huge":
            parts.append("session=" + "A" * draw(st.integers(4000, 200_000)))
        elif kind == "many":
            parts.extend(f"c{i}=v{i}" for i in range(draw(st.integers(100, 3000))))
        else:  # a real id with a signature made by another key
            other = HmacIdSigner("not-the-secret").sign(new_session_id())
            parts.append(f"session={other}")
    separator = draw(st.sampled_from(["; ", ";", ",", " ; "]))
    return separator.join(parts), forged


@settings(max_examples=150, deadline=None,
          # The fixtures are set up once for all examples on purpose: each example is one
          # request, and the checks compare against the state before it.
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), path=st.sampled_from(["/read", "/write", "/blind"]))
def test_any_cookie_header_gets_a_normal_response_and_no_write_for_a_forged_id(
    counted: Any, wire_counter: RoundTripCounter, data: Any, path: str
) -> None:
    middleware, real = counted
    header, forged = data.draw(cookie_headers(real))
    store: PostgresStore = middleware.store
    dsn = wire_counter.dsn
    before = sql(dsn, f"SELECT count(*) FROM {store.qualified_name}")[0][0]
    wire_counter.reset()

    answer = wsgi_call(middleware, path, cookie_header=header)

    assert answer.status == 200, (answer.status, answer.body)
    if path != "/blind":
        shown = answer.body.decode()
        assert shown in ("[]", "[('user', 'alice')]", "[('seen', True), ('user', 'alice')]")
        if "alice" in shown:
            assert f"session={real}" in header, "a session was served that the cookie didn't name"
    statements = wire_counter.statements
    if path == "/read":
        assert all(statement_kind(s) == "SELECT" for s in statements), statements
    for session_id in forged:
        forged_hex = id_hash(session_id).hex()
        writes = [s for s in statements if forged_hex in s and statement_kind(s) != "SELECT"]
        if path != "/blind":  # a blind write may probe the id with an UPDATE that matches nothing
            assert writes == [], f"a statement wrote for a forged id: {writes}"
        rows = sql(dsn, f"SELECT count(*) FROM {store.qualified_name} WHERE id = %s",
                     (id_hash(session_id),))
        assert rows == [(0,)], "a row exists under a forged id"
    after = sql(dsn, f"SELECT count(*) FROM {store.qualified_name}")[0][0]
    assert after - before in (0, 1)
    new_cookie = answer.cookie()
    if new_cookie:
        assert new_cookie == real or new_cookie.rsplit(".", 1)[0] not in forged


def test_the_right_session_is_found_among_junk_cookies(counted: Any) -> None:
    middleware, real = counted
    header = "a=1; b=%00; c=\"quoted; d=\"; " + "; ".join(f"c{i}=x" for i in range(500)) + f"; session={real}"
    assert wsgi_call(middleware, "/read", cookie_header=header).body == b"[('user', 'alice')]"


# -- configuration errors --------------------------------------------------------------------


HOSTILE_NAMES = [
    'x"; DROP TABLE victim; --',
    "has space",
    "semi;colon",
    "it's",
    "back\\slash",
    'quo"te',
    "Ünïcödé",
    "pgsession); DROP TABLE victim; --",
]


@pytest.fixture
def victim(pg_dsn: str, schema: str) -> Iterator[Callable[[], bool]]:
    """A table an injection would try to drop; call the fixture to see if it survived."""
    sql(pg_dsn, f'CREATE TABLE "{schema}".victim (x int)')
    yield lambda: bool(sql(pg_dsn, "SELECT to_regclass(%s) IS NOT NULL",
                             (f'"{schema}".victim',))[0][0])


def exercise(store: PostgresStore) -> None:
    """Every statement the store has, through the middleware and directly."""
    middleware = SessionMiddleware(app, store, secret_key=SECRET)
    cookie = wsgi_call(middleware, "/login").cookie()
    assert cookie
    assert wsgi_call(middleware, "/write", cookie).status == 200
    assert wsgi_call(middleware, "/read", cookie).body == b"[('seen', True), ('user', 'alice')]"
    assert store.stats()["live"] == 1
    assert store.purge_expired() == 0
    assert store.sessions_for_user("alice") == []
    assert store.revoke_user("nobody") == 0
    assert store.delete(id_hash(cookie.rsplit(".", 1)[0])) is True


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_table_name_is_quoted_never_executed(
    pg_dsn: str, schema: str, make_store: Callable[..., PostgresStore],
    victim: Callable[[], bool], name: str,
) -> None:
    exercise(make_store(table=name))
    assert victim()
    tables = sql(pg_dsn, "SELECT relname FROM pg_class c JOIN pg_namespace n ON"
                           " n.oid = relnamespace WHERE nspname = %s AND relkind = 'r'", (schema,))
    assert sorted(t for (t,) in tables) == sorted([name, "victim"])


@pytest.mark.parametrize("name", HOSTILE_NAMES[:4])
def test_a_hostile_schema_name_is_quoted_never_executed(
    pg_dsn: str, make_store: Callable[..., PostgresStore], victim: Callable[[], bool], name: str,
) -> None:
    hostile = f"{name} {uuid.uuid4().hex[:6]}"
    try:
        exercise(make_store(schema=hostile))
        assert victim()
        assert sql(pg_dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                     (hostile,)) == [(1,)]
    finally:
        sql(pg_dsn, 'DROP SCHEMA IF EXISTS "{}" CASCADE'.format(hostile.replace('"', '""')))


@pytest.mark.parametrize("name", ["", "a\x00b", "x" * 64, "é" * 32])
def test_an_impossible_table_or_schema_name_fails_at_construction(pg_dsn: str, name: str) -> None:
    for option in ("table", "schema"):
        with pytest.raises(ConfigurationError, match=option):
            PostgresStore(pg_dsn, purge_interval=None, **{option: name})


def test_two_long_table_names_in_one_schema_each_get_their_indexes(
    pg_dsn: str, schema: str, make_store: Callable[..., PostgresStore]
) -> None:
    """Index names come from the table name: two tables must not end up sharing (or lacking)
    their indexes because the derived names collide."""
    prefix = "sessions_of_the_application_number_forty_"
    for suffix in ("one", "two"):
        make_store(table=prefix + suffix).create_table()
    indexed = sql(pg_dsn, "SELECT tablename, count(*) FROM pg_indexes WHERE schemaname = %s"
                            " GROUP BY tablename ORDER BY tablename", (schema,))
    assert indexed == [(prefix + "one", 3), (prefix + "two", 3)]  # primary key + 2


@pytest.mark.parametrize("dsn", [
    "mysql://root:hunter2@localhost/db",
    "sqlite:///tmp/sessions.db",
    "redis://:hunter2@localhost:6379/0",
    "http://example.com/",
    "",
    "   ",
    "host=localhost password=hunter2 this is not a dsn",
])
def test_a_dsn_that_is_not_postgresql_fails_at_construction_without_leaking_it(dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="postgresql://") as failure:
        PostgresStore(dsn, purge_interval=None)
    assert "hunter2" not in str(failure.value)


def test_a_sqlalchemy_style_postgresql_url_is_accepted(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn.replace("postgresql://", "postgresql+psycopg2://"),
                          purge_interval=None)
    store.close()


@pytest.mark.parametrize("secret", [None, "", b""])
def test_a_missing_secret_fails_at_construction(
    make_store: Callable[..., PostgresStore], secret: Any
) -> None:
    with pytest.raises(ConfigurationError, match="secret_key"):
        SessionMiddleware(app, make_store(), secret_key=secret)


# -- values JSON cannot hold -----------------------------------------------------------------


UNSTORABLE: dict[str, Any] = {
    "object": object(),
    "set": {1, 2},
    "complex": 1j,
    "nan": float("nan"),
    "inf": float("inf"),
    "nested": {"cart": [1, {"socket": object()}]},
    "int-keys": {1: "one"},
    "function": len,
    "decimal-subclass-in-list": [Decimal("1"), frozenset()],
}


@pytest.mark.parametrize("kind", sorted(UNSTORABLE))
def test_an_unstorable_value_answers_500_naming_the_key_and_leaves_the_session_as_it_was(
    make_store: Callable[..., PostgresStore], caplog: pytest.LogCaptureFixture, kind: str,
) -> None:
    store = make_store()
    middleware = SessionMiddleware(app, store, secret_key=SECRET)
    cookie = wsgi_call(middleware, "/login").cookie()
    assert cookie
    before = sql(store.dsn,
                   f"SELECT data, accessed_at FROM {store.qualified_name}")

    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        answer = wsgi_call(middleware, f"/bad?kind={kind}", cookie)

    assert answer.status == 500
    assert "'bad'" in caplog.text
    assert sql(store.dsn,
                 f"SELECT data, accessed_at FROM {store.qualified_name}") == before


@pytest.mark.parametrize("kind", ["object", "nested", "int-keys"])
def test_an_unstorable_value_in_a_new_session_stores_nothing(
    make_store: Callable[..., PostgresStore], kind: str
) -> None:
    store = make_store()
    store.create_table()
    middleware = SessionMiddleware(app, store, secret_key=SECRET)
    answer = wsgi_call(middleware, f"/bad?kind={kind}")
    assert answer.status == 500
    assert answer.cookie() is None
    assert sql(store.dsn,
                 f"SELECT count(*) FROM {store.qualified_name}") == [(0,)]


def test_saving_an_unstorable_value_raises_session_error_naming_the_key() -> None:
    from pgsession_wsgi import Session

    session = Session()
    session["ok"] = 1
    session["widget"] = []
    session["widget"].append(object())  # changed in place: only the save can find it
    with pytest.raises(SessionError, match="'widget'"):
        session.changes(max_size=None)


def test_the_hostile_names_fixture_really_detects_a_dropped_table(
    pg_dsn: str, schema: str, victim: Callable[[], bool]
) -> None:
    """The injection checks above rely on this: dropping the victim is noticed."""
    assert victim()
    sql(pg_dsn, f'DROP TABLE "{schema}".victim')
    assert not victim()
