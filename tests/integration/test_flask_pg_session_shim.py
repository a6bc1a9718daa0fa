"""pgsession_wsgi.flask.FlaskPgSession: a drop-in for flask-pg-session 0.1.0, against a real PostgreSQL.

Cookies are built exactly as flask-pg-session builds them (itsdangerous Signer, salt
"flask-session", HMAC key derivation, SHA-1) and, where the package is installed, by the package
itself.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import string
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg2
import psycopg2.extras
import pytest
from db import sql
from flask import Flask, session
from flask.testing import FlaskClient
from helpers import ClosingClient, add_count_route, wait_for
from itsdangerous import Signer
from itsdangerous.encoding import base64_decode
from legacy_rows import create_legacy_table
from webtest import TestApp

from pgsession_wsgi import ConfigurationError, LegacyTableError, SessionError
from pgsession_wsgi import pool as pool_module
from pgsession_wsgi.flask import EXTENSION_KEY, EnvironSessionInterface, FlaskPgSession
from pgsession_wsgi.flask_pg_session import FlaskPgSessionSigner


def legacy_signer(secret: str) -> Signer:
    return Signer(secret, salt="flask-session", key_derivation="hmac")


def h(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def insert_row(
    dsn: str, schema: str, session_id: str, data: dict[str, Any], table: str = "flask_sessions"
) -> None:
    """A live session in our table, as the migration leaves it."""
    sql(
        dsn,
        f'INSERT INTO "{schema}"."{table}" (id, data, expires_at)'
        " VALUES (%s, %s::jsonb, now() + interval '1 day')",
        (h(session_id), psycopg2.extras.Json(data)),
    )


@pytest.fixture
def make_app(pg_dsn: str, schema: str) -> Iterator[Callable[..., Flask]]:
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = Flask(f"shim{len(made)}")
        app.test_client_class = ClosingClient
        app.config.update(
            SECRET_KEY="legacy-secret", SQLALCHEMY_DATABASE_URI=pg_dsn, SESSION_PG_SCHEMA=schema
        )
        app.config.update(config)
        FlaskPgSession(app)
        made.append(app)
        add_count_route(app)

        @app.route("/read")
        def read() -> dict[str, Any]:
            return {"data": dict(session), "permanent": session.permanent}

        @app.route("/touch")
        def touch() -> str:
            return str(len(session))

        return app

    yield make
    for app in made:
        app.extensions[EXTENSION_KEY].store.close()


def stored(dsn: str, schema: str, table: str = "flask_sessions") -> list[Any]:
    return [r[0] for r in sql(dsn, f'SELECT data FROM "{schema}"."{table}" ORDER BY created_at')]


# -- construction and config --------------------------------------------------------------------


def test_same_construction_and_defaults(pg_dsn: str, schema: str) -> None:
    app = Flask(__name__)
    app.test_client_class = ClosingClient
    app.config.update(SECRET_KEY="k", SQLALCHEMY_DATABASE_URI=pg_dsn, SESSION_PG_SCHEMA=schema)
    ext = FlaskPgSession()
    interface = ext.init_app(app)
    try:
        assert isinstance(interface, EnvironSessionInterface)
        assert app.session_interface is interface
        store = ext.store
        assert (store.table, store.schema) == ("flask_sessions", schema)
        # Seam: the pool size shows nowhere public short of exhausting the pool (as the wait test does).
        assert store._pool.max_connections == 10  # SESSION_PG_MAX_DB_CONN default
        assert store.purge_interval is not None  # SESSION_AUTODELETE_EXPIRED default True
        middleware = app.extensions[EXTENSION_KEY]
        assert middleware.policy.permanent is True  # SESSION_PERMANENT default True
        assert isinstance(middleware.signer, FlaskPgSessionSigner)
        assert middleware.signer.use_signer is False  # SESSION_USE_SIGNER default False
        # The positional form, as in flask-pg-session.
        other = Flask("other")
        other.test_client_class = ClosingClient
        other.config.update(
            app.config,
            SESSION_PG_TABLE="other_sessions",
            SESSION_PG_MAX_DB_CONN=2,
            SESSION_AUTODELETE_EXPIRED=False,
            SESSION_PERMANENT=False,
        )
        second = FlaskPgSession(other)
        assert second.store.table == "other_sessions"
        assert second.store._pool.max_connections == 2
        assert second.store.purge_interval is None
        assert other.extensions[EXTENSION_KEY].policy.permanent is False
        second.store.close()
    finally:
        ext.store.close()


def test_missing_database_uri_names_the_key() -> None:
    """The whole message (FlaskPgSession._settings mutants 18, 20-23)."""
    app = Flask(__name__)
    app.test_client_class = ClosingClient
    app.config["SECRET_KEY"] = "k"
    with pytest.raises(ConfigurationError) as refused:
        FlaskPgSession(app)
    assert str(refused.value) == (
        "SQLALCHEMY_DATABASE_URI is not set: FlaskPgSession stores sessions in that PostgreSQL database; "
        "set it to postgresql://user:password@host:5432/dbname"
    )


def test_the_store_commits_synchronously_and_takes_pgsession_unlogged_and_create_table(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str
) -> None:
    """synchronous_commit is left as the server has it (not turned off), read on the store's
    connection through its one seam, ``_run`` (no public call shows a connection's settings);
    PGSESSION_UNLOGGED makes the table UNLOGGED,
    also the ``_v2`` one beside flask-pg-session's table; PGSESSION_CREATE_TABLE = False makes
    none (FlaskPgSession._settings mutants 48, 55, 69, 70, 98; _make_store mutant 57)."""
    def persistence(table: str) -> str:
        return str(sql(pg_dsn, "SELECT relpersistence FROM pg_class WHERE oid = to_regclass(%s)",
                       (f'"{schema}"."{table}"',))[0][0])

    store = make_app(PGSESSION_UNLOGGED=True).extensions[EXTENSION_KEY].store
    show = store._run(lambda cur: (cur.execute("SHOW synchronous_commit"), cur.fetchone())[1], retry=False)
    assert show == tuple(sql(pg_dsn, "SHOW synchronous_commit")[0])  # the server's own: not set to off
    assert persistence("flask_sessions") == "u"
    create_legacy_table(pg_dsn, schema, "old_sessions")
    store = make_app(SESSION_PG_TABLE="old_sessions", PGSESSION_UNLOGGED=True).extensions[EXTENSION_KEY].store
    assert (type(store).__name__, store.table) == ("LegacyFallbackStore", "old_sessions_v2")
    assert persistence("old_sessions_v2") == "u"
    with pytest.raises(SessionError, match="does not exist"):
        make_app(SESSION_PG_TABLE="never_made", PGSESSION_CREATE_TABLE=False)


def test_signer_without_secret_key_names_the_key(pg_dsn: str, schema: str) -> None:
    app = Flask(__name__)
    app.test_client_class = ClosingClient
    app.config.update(SQLALCHEMY_DATABASE_URI=pg_dsn, SESSION_PG_SCHEMA=schema, SESSION_USE_SIGNER=True)
    with pytest.raises(ConfigurationError) as refused:
        FlaskPgSession(app)
    assert str(refused.value) == (  # whole (FlaskPgSessionSigner.__init__ mutants 7, 9-11)
        "SESSION_USE_SIGNER is on but SECRET_KEY is not set: set app.config['SECRET_KEY'] "
        "(the same value as before, so existing cookies stay valid)"
    )


def test_unsigned_mode_needs_no_secret_key(make_app: Callable[..., Flask]) -> None:
    client = make_app(SECRET_KEY=None).test_client()
    assert [client.get("/count").text for _ in range(2)] == ["1", "2"]


def test_sqlalchemy_driver_urls_are_accepted(make_app: Callable[..., Flask], pg_dsn: str) -> None:
    if not pg_dsn.startswith("postgresql://"):
        pytest.skip("needs a URL-style PGSESSION_TEST_DSN")
    uri = "postgresql+psycopg2://" + pg_dsn.removeprefix("postgresql://")
    assert make_app(SQLALCHEMY_DATABASE_URI=uri).test_client().get("/count").text == "1"


# -- cookies stay valid ---------------------------------------------------------------------------


def test_signed_legacy_cookie_stays_valid(make_app: Callable[..., Flask], pg_dsn: str, schema: str) -> None:
    app = make_app(SESSION_USE_SIGNER=True)
    sid = str(uuid.uuid4())
    insert_row(pg_dsn, schema, sid, {"_permanent": True, "_user_id": "42", "n": 5})
    client = app.test_client()
    client.set_cookie("session", legacy_signer("legacy-secret").sign(sid).decode())
    assert client.get("/read").json == {
        "data": {"_permanent": True, "_user_id": "42", "n": 5},
        "permanent": True,
    }
    response = client.get("/count")
    assert response.text == "6"
    # The cookie keeps flask-pg-session's format: it is still the same signed id.
    assert client.get_cookie("session").value == legacy_signer("legacy-secret").sign(sid).decode()  # type: ignore[union-attr]


def test_a_cookie_signed_with_a_key_in_secret_key_fallbacks_stays_valid(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str
) -> None:
    """A rotated SECRET_KEY: cookies signed with the old one, now in SECRET_KEY_FALLBACKS, are
    still read (FlaskPgSession._settings mutants 32, 41)."""
    app = make_app(SESSION_USE_SIGNER=True, SECRET_KEY="new-secret", SECRET_KEY_FALLBACKS=["legacy-secret"])
    sid = str(uuid.uuid4())
    insert_row(pg_dsn, schema, sid, {"n": 5})
    client = app.test_client()
    client.set_cookie("session", legacy_signer("legacy-secret").sign(sid).decode())
    assert client.get("/read").json["data"] == {"n": 5}


def test_unsigned_only_an_issued_id_shape_is_a_cookie_and_it_is_never_re_signed(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str
) -> None:
    """Without SESSION_USE_SIGNER a cookie is read only if it is shaped like an id
    flask-pg-session or pgsession-wsgi issues, even when a row exists under its hash; a valid one
    needs no new cookie (FlaskPgSessionSigner.unsign mutants 3, 4)."""
    client = make_app().test_client()  # makes the table
    insert_row(pg_dsn, schema, "chosen-by-a-client", {"n": 5})
    client.set_cookie("session", "chosen-by-a-client")
    assert client.get("/read").json["data"] == {}
    sid = str(uuid.uuid4())
    assert FlaskPgSessionSigner(None, use_signer=False).unsign(sid) == (sid, False)


def test_new_signed_cookies_use_the_flask_pg_session_signer(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str
) -> None:
    client = make_app(SESSION_USE_SIGNER=True).test_client()
    client.get("/count")
    value = client.get_cookie("session").value  # type: ignore[union-attr]
    session_id = legacy_signer("legacy-secret").unsign(value).decode()
    assert len(session_id) == 43  # our 256-bit ids, not uuid4
    assert sql(pg_dsn, f'SELECT data FROM "{schema}".flask_sessions WHERE id = %s', (h(session_id),)) == [
        ({"n": 1},)
    ]


def signature_variants(cookie: str) -> list[str]:
    """Every other spelling of the cookie's signature that decodes to the same bytes.

    27 base64 characters carry 162 bits for a 160-bit HMAC-SHA1, so the last character's two
    low bits are ignored by the decoder: four texts, one signature.
    """
    session_id, signature = cookie.split(".")
    raw = base64_decode(signature)
    alphabet = string.ascii_letters + string.digits + "-_"
    return [
        f"{session_id}.{signature[:-1]}{char}"
        for char in alphabet
        if char != signature[-1] and base64_decode(signature[:-1] + char) == raw
    ]


@pytest.mark.parametrize("session_id", [str(uuid.uuid4()), secrets.token_urlsafe(32)], ids=["uuid4", "token"])
def test_only_the_exact_signature_text_is_accepted(session_id: str) -> None:
    signer = FlaskPgSessionSigner("current", ["older", "oldest"])
    genuine = legacy_signer("current").sign(session_id).decode()
    assert signer.sign(session_id) == genuine
    assert signer.unsign(genuine) == (session_id, False)
    for key in ("older", "oldest"):  # fallback keys verify, and ask for a cookie under the new key
        old_cookie = legacy_signer(key).sign(session_id).decode()
        assert signer.unsign(old_cookie) == (session_id, True)
        variants = signature_variants(old_cookie)
        assert len(variants) == 3
        assert [signer.unsign(variant) for variant in variants] == [None] * 3
    variants = signature_variants(genuine)
    assert len(variants) == 3
    for variant in variants:
        # itsdangerous itself takes each of them: the shim must not.
        assert legacy_signer("current").unsign(variant).decode() == session_id
        assert signer.unsign(variant) is None
    assert FlaskPgSessionSigner("another").unsign(genuine) is None


def test_a_variant_signature_gets_a_new_session(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str
) -> None:
    app = make_app(SESSION_USE_SIGNER=True)
    sid = str(uuid.uuid4())
    insert_row(pg_dsn, schema, sid, {"n": 5})
    genuine = legacy_signer("legacy-secret").sign(sid).decode()
    for variant in signature_variants(genuine):
        client = app.test_client()
        client.set_cookie("session", variant)
        assert client.get("/count").text == "1"
        assert client.get_cookie("session").value not in (variant, genuine)  # type: ignore[union-attr]
    client = app.test_client()
    client.set_cookie("session", genuine)
    assert client.get("/count").text == "6"


def test_bad_signature_gets_a_new_session(make_app: Callable[..., Flask], pg_dsn: str, schema: str) -> None:
    app = make_app(SESSION_USE_SIGNER=True)
    sid = str(uuid.uuid4())
    insert_row(pg_dsn, schema, sid, {"n": 5})
    client = app.test_client()
    client.set_cookie("session", legacy_signer("another-secret").sign(sid).decode())
    assert client.get("/count").text == "1"
    # A bare (unsigned) id is refused when signing is on.
    client = app.test_client()
    client.set_cookie("session", sid)
    assert client.get("/count").text == "1"


def test_unsigned_legacy_cookie_stays_valid(make_app: Callable[..., Flask], pg_dsn: str, schema: str) -> None:
    app = make_app()
    sid = str(uuid.uuid4())
    insert_row(pg_dsn, schema, sid, {"_permanent": True, "n": 9})
    web = TestApp(app)
    web.set_cookie("session", sid)
    assert web.get("/count").text == "10"
    assert web.cookies["session"].strip('"') == sid  # unsigned stays unsigned


def test_unsigned_unknown_id_is_never_reused(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str
) -> None:
    # flask-pg-session stored the session under whatever id the client chose (fixation).
    web = TestApp(make_app())
    chosen = str(uuid.uuid4())
    web.set_cookie("session", chosen)
    assert web.get("/count").text == "1"
    issued = web.cookies["session"]
    assert issued != chosen and len(issued) == 43
    assert sql(pg_dsn, f'SELECT count(*) FROM "{schema}".flask_sessions WHERE id = %s', (h(chosen),)) == [
        (0,)
    ]
    for junk in ("evil", "x" * 300, chosen.upper(), chosen + ".sig"):
        other = TestApp(web.app)
        other.set_cookie("session", junk)
        assert other.get("/count").text == "1"
        assert other.cookies["session"] != junk


def test_cookie_from_the_real_flask_pg_session_package(pg_dsn: str, schema: str) -> None:
    """The real package writes a session; with only the import changed the shim serves its cookie."""
    import flask_pg_session

    config = dict(
        SECRET_KEY="legacy-secret",
        SQLALCHEMY_DATABASE_URI=pg_dsn,
        SESSION_PG_SCHEMA=schema,
        SESSION_USE_SIGNER=True,
        SESSION_AUTODELETE_EXPIRED=False,
    )
    old = Flask("old")
    old.test_client_class = ClosingClient
    old.config.update(config)
    legacy = flask_pg_session.FlaskPgSession(old)

    @old.route("/login")
    def login() -> str:
        session["_user_id"] = "7"
        return "ok"

    old_client = old.test_client()
    old_client.get("/login")
    cookie = old_client.get_cookie("session").value  # type: ignore[union-attr]
    legacy.pool.closeall()

    new = Flask("new")
    new.test_client_class = ClosingClient
    new.config.update(config)
    ext = FlaskPgSession(new)  # no command first
    try:

        @new.route("/me")
        def me() -> str:
            return str(session.get("_user_id"))

        client = new.test_client()
        client.set_cookie("session", cookie)
        assert client.get("/me").text == "7"
        assert sql(pg_dsn, f'SELECT count(*) FROM "{schema}".flask_sessions') == [(0,)]
        assert sql(pg_dsn, f'SELECT user_id FROM "{schema}".flask_sessions_v2') == [("7",)]
    finally:
        ext.store.close()


# -- permanence ---------------------------------------------------------------------------------


def test_session_permanent_default_follows_session_permanent(make_app: Callable[..., Flask]) -> None:
    lifetime = timedelta(hours=3)
    permanent = make_app(PERMANENT_SESSION_LIFETIME=lifetime).test_client()
    header = permanent.get("/count").headers["Set-Cookie"]
    assert "Max-Age=10800" in header and "Expires=" in header
    assert permanent.get("/read").json["permanent"] is True
    browser = make_app(SESSION_PERMANENT=False).test_client()
    header = browser.get("/count").headers["Set-Cookie"]
    assert "Max-Age" not in header and "Expires" not in header
    assert browser.get("/read").json["permanent"] is False


# -- the defects that are not carried over ------------------------------------------------------


def test_no_pickle_and_expiry_in_timestamptz_by_the_database_clock(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str
) -> None:
    make_app(PERMANENT_SESSION_LIFETIME=timedelta(hours=1)).test_client().get("/count")
    types = dict(
        sql(
            pg_dsn,
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'flask_sessions'",
            (schema,),
        )
    )
    assert types["data"] == "jsonb" and types["expires_at"] == "timestamp with time zone"
    assert "session_id" not in types  # the id itself is never stored, only its hash
    ((data, remaining),) = sql(pg_dsn, f'SELECT data, expires_at - now() FROM "{schema}".flask_sessions')
    assert data == {"n": 1}
    assert timedelta(minutes=59) < remaining <= timedelta(hours=1)


def test_empty_sessions_are_not_stored(make_app: Callable[..., Flask], pg_dsn: str, schema: str) -> None:
    # flask-pg-session writes `_permanent` into every session it saves.
    client = make_app().test_client()
    response = client.get("/touch")
    assert response.text == "0" and "Set-Cookie" not in response.headers
    assert stored(pg_dsn, schema) == []


def waiting_in_the_pool(thread: threading.Thread) -> bool:
    """Whether ``thread`` is blocked in the store's pool, waiting for a connection to come back.

    The pool publishes no count of its waiters, so the thread's own stack tells: innermost a
    ``threading.Condition.wait`` called from pgsession_wsgi/pool.py, which waits there only once
    every connection is out and no other may be opened.
    """
    frame = sys._current_frames().get(thread.ident or 0)
    if frame is None or (frame.f_code.co_filename, frame.f_code.co_name) != (threading.__file__, "wait"):
        return False
    return frame.f_back is not None and frame.f_back.f_code.co_filename == pool_module.__file__


def test_a_full_pool_waits_instead_of_failing(
    make_app: Callable[..., Flask], pg_dsn: str, schema: str
) -> None:
    """SESSION_PG_MAX_DB_CONN=1: while one request holds the only connection, another request
    waits for it (no 503, no second connection), then is served with its own data."""
    app = make_app(SESSION_PG_MAX_DB_CONN=1)
    first, second = app.test_client(), app.test_client()
    assert first.get("/count").text == "1"
    assert second.get("/count").text == "1"
    first_id = first.get_cookie("session").value  # type: ignore[union-attr]
    answers: dict[str, tuple[int, str]] = {}

    def bump(name: str, client: FlaskClient) -> None:
        response = client.get("/count")
        answers[name] = (response.status_code, response.text)

    locker = psycopg2.connect(pg_dsn)
    holder = threading.Thread(target=bump, args=("first", first))
    waiter = threading.Thread(target=bump, args=("second", second))
    try:
        with locker.cursor() as cur:  # the first request's write waits for this row lock...
            cur.execute(f'SELECT 1 FROM "{schema}".flask_sessions WHERE id = %s FOR UPDATE', (h(first_id),))
            assert cur.rowcount == 1
        holder.start()
        blocked = "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
        wait_for(  # ...holding the pool's only connection meanwhile
            lambda: sql(pg_dsn, blocked, (locker.get_backend_pid(),)) == [(1,)],
            "the first request's write waits for the row lock",
        )
        waiter.start()
        wait_for(
            lambda: waiting_in_the_pool(waiter) or "second" in answers,
            "the second request waits for a connection (or answers)",
        )
        assert answers == {}  # the second is waiting for the connection, not answered with a 503
    finally:
        locker.rollback()
        locker.close()
    holder.join(30)
    waiter.join(30)
    assert answers == {"first": (200, "2"), "second": (200, "2")}
    assert stored(pg_dsn, schema) == [{"n": 2}, {"n": 2}]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_safety(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    client = app.test_client()
    assert client.get("/count").text == "1"  # the parent holds a pooled connection now
    pid = os.fork()
    if pid == 0:  # the child: its own connections, the parent's left alone
        status = 1
        try:
            status = 0 if client.get("/count").text == "2" else 3
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.get("/count").text == "3"  # the parent's connection still works


def test_storing_into_the_legacy_table_itself_fails_at_start_with_the_command(
    pg_dsn: str, schema: str
) -> None:
    # FlaskPgSession stores next to the old table; told to store in it, it says how to convert it.
    sql(
        pg_dsn,
        f'CREATE TABLE "{schema}".flask_sessions (session_id varchar(255) PRIMARY KEY,'
        " created timestamp DEFAULT (now() AT TIME ZONE 'utc'), data bytea, expiry timestamp)",
    )
    app = Flask(__name__)
    app.test_client_class = ClosingClient
    app.config.update(
        SQLALCHEMY_DATABASE_URI=pg_dsn,
        SESSION_PG_SCHEMA=schema,
        SESSION_KEY_PREFIX="app:",
        PGSESSION_TABLE="flask_sessions",
    )
    with pytest.raises(ConfigurationError) as caught:
        FlaskPgSession(app)
    message = str(caught.value)
    assert "pgsession-wsgi migrate-flask-pg-session --dsn ..." in message
    assert f"--table flask_sessions --schema {schema}" in message
    assert "--key-prefix app:" in message
    # The table is named as without a prefix (flask._Extension._create_table mutant 6).
    assert message.startswith(f'the table "{schema}"."flask_sessions" has the flask-pg-session layout')
    assert isinstance(caught.value, LegacyTableError)
    assert caught.value.table == f'"{schema}"."flask_sessions"'
    assert EXTENSION_KEY not in app.extensions
