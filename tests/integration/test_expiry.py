"""A lifetime per session ("remember me"), on a real PostgreSQL: plain WSGI, Flask, Starlette.

Time never passes by sleeping: a test moves a row's clock back in SQL (``created_at``,
``accessed_at``, ``expires_at`` minus some hours), which is what that much time passing looks
like to the database. Expiries are compared exactly with the row's own timestamps (an insert
or a touch sets ``accessed_at`` and ``expires_at`` from the same ``now()``), never with a window
of wall-clock time.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from apps.asgi_support import MakeAsyncStore, http_client
from db import sql
from flask import Flask
from flask import session as flask_session
from helpers import ClosingClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from webtest import TestApp
from wire import RoundTripCounter

from pgsession_wsgi import ConfigurationError, PostgresStore, SessionMiddleware, get_session
from pgsession_wsgi.asgi import AsyncPostgresStore
from pgsession_wsgi.asgi import SessionMiddleware as AsgiSessionMiddleware
from pgsession_wsgi.cookies import HmacIdSigner, hash_session_id, new_session_id
from pgsession_wsgi.core import KEEP_USER, Insert, Load, LoadedRow, Operation, Write, WriteResult
from pgsession_wsgi.flask import EXTENSION_KEY, PgSession

SECRET = "expiry-secret"
IDLE = timedelta(hours=2)  # the store's default here
MONTH = timedelta(days=30)  # "remember me"

# The table as pgsession-wsgi 0.1.0 made it: no columns for a session's own lifetime.
OLD_TABLE = """
CREATE TABLE {t} (
    id          bytea        PRIMARY KEY,
    data        jsonb        NOT NULL,
    user_id     text,
    created_at  timestamptz  NOT NULL DEFAULT now(),
    accessed_at timestamptz  NOT NULL DEFAULT now(),
    expires_at  timestamptz  NOT NULL
)
"""
UPGRADE = (
    "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS idle_timeout interval,"
    " ADD COLUMN IF NOT EXISTS ends_at timestamptz"
)


# -- a plain WSGI app -----------------------------------------------------------------------


def expiry_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """/login[?remember=1|until=ISO|idle=SECONDS] /remember /remember-after-read /forget /read
    /expiry /regen /browser /set?k=v"""
    session = get_session(environ)
    path = environ["PATH_INFO"]
    query = dict(part.split("=", 1) for part in environ.get("QUERY_STRING", "").split("&") if "=" in part)
    body: Any = "ok"
    if path == "/login":
        session["user"] = "alice"
        if query.get("remember"):
            session.set_expiry(MONTH)
        if "until" in query:
            session.set_expiry(datetime.fromisoformat(query["until"]))
        if "idle" in query:
            session.set_expiry(timedelta(seconds=int(query["idle"])))
    elif path == "/remember":
        session.set_expiry(MONTH)  # without reading the session
    elif path == "/remember-after-read":
        session.get("user")
        session.set_expiry(MONTH)
    elif path == "/forget":
        session.set_expiry(None)
    elif path == "/read":
        body = dict(session)
    elif path == "/expiry":
        body = str(session.expiry)
    elif path == "/regen":
        session.regenerate()
    elif path == "/browser":
        session.permanent = False
    elif path == "/set":
        session.update(query)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


@pytest.fixture
def make_client(make_store: Callable[..., PostgresStore]) -> Callable[..., TestApp]:
    """``make_client(store=None, **middleware_options)``: webtest on expiry_app, 2 hours idle,
    permanent sessions (cookies with Max-Age)."""

    def make(store: PostgresStore | None = None, **options: Any) -> TestApp:
        store = store if store is not None else make_store()
        options = {"secret_key": SECRET, "idle_timeout": IDLE, "permanent": True, **options}
        return TestApp(SessionMiddleware(expiry_app, store, **options))

    return make


def store_of(client: TestApp) -> PostgresStore:
    return client.app.store  # type: ignore[no-any-return]


def session_id(client: TestApp) -> str:
    return str(client.cookies["session"]).split(".")[0]


def max_age(set_cookie: str) -> int | None:
    found = re.search(r"Max-Age=(\d+)", set_cookie)
    return None if found is None else int(found.group(1))


def cookie_of(response: Any) -> str:
    """The one Set-Cookie of a webtest or Flask response."""
    (cookie,) = [value for name, value in response.headers.items() if name.lower() == "set-cookie"]
    return str(cookie)


def row(store: Any, sid: str) -> dict[str, Any]:
    """The row of session ``sid``, with its expiry spelled as the database sees it."""
    (found,) = sql(
        store,
        "SELECT idle_timeout, ends_at, expires_at, expires_at - accessed_at, expires_at - created_at,"
        " expires_at > now() FROM {t} WHERE id = %s",
        (hash_session_id(sid),),
    )
    names = ("idle_timeout", "ends_at", "expires_at", "after_access", "after_creation", "live")
    return dict(zip(names, found))


def age(store: Any, sid: str, delta: timedelta) -> None:
    """Make it look to the database as if ``delta`` had passed since the session was last used:
    every time in the row moves back by it."""
    sql(
        store,
        "UPDATE {t} SET created_at = created_at - %(d)s, accessed_at = accessed_at - %(d)s,"
        " expires_at = expires_at - %(d)s, ends_at = ends_at - %(d)s WHERE id = %(id)s",
        {"d": delta, "id": hash_session_id(sid)},
    )


def future(delta: timedelta) -> datetime:
    # Whole seconds: the ISO text in a query string stays simple, and round-trips exactly.
    return (datetime.now(timezone.utc) + delta).replace(microsecond=0)


# -- the database enforces it ---------------------------------------------------------------


def test_remember_me_is_stored_with_the_row_and_sets_its_expiry(make_client: Callable[..., TestApp]) -> None:
    client = make_client()
    response = client.get("/login?remember=1")
    assert max_age(cookie_of(response)) == MONTH.total_seconds()
    stored = row(store_of(client), session_id(client))
    assert (stored["idle_timeout"], stored["ends_at"]) == (MONTH, None)
    assert stored["after_access"] == MONTH  # not the store's two hours

    other = make_client(store_of(client))
    response = other.get("/login")
    assert max_age(cookie_of(response)) == IDLE.total_seconds()
    stored = row(store_of(other), session_id(other))
    assert (stored["idle_timeout"], stored["ends_at"], stored["after_access"]) == (None, None, IDLE)


def test_a_remembered_session_outlives_the_default_idle_timeout_by_the_database_clock(
    make_client: Callable[..., TestApp],
) -> None:
    remembered, plain = make_client(), make_client()
    remembered.get("/login?remember=1")
    plain.get("/login")
    for client in (remembered, plain):
        age(store_of(client), session_id(client), timedelta(hours=3))
    assert plain.get("/read").json == {}  # two hours idle: gone
    assert remembered.get("/read").json == {"user": "alice"}


def test_use_pushes_the_own_idle_lifetime_forward(make_client: Callable[..., TestApp]) -> None:
    client = make_client()
    client.get("/login?remember=1")
    store, sid = store_of(client), session_id(client)
    age(store, sid, timedelta(days=10))
    before = row(store, sid)
    assert before["after_access"] == MONTH
    response = client.get("/read")  # the touch is due
    after = row(store, sid)
    assert after["after_access"] == MONTH and after["expires_at"] > before["expires_at"]
    assert max_age(cookie_of(response)) == MONTH.total_seconds()  # the cookie rolls with it
    # A write whose touch is due recomputes it the same way (the write statement, not the touch).
    age(store, sid, timedelta(days=10))
    client.get("/set?b=2")
    assert row(store, sid)["after_access"] == MONTH


def test_a_short_own_lifetime_is_touched_as_often_as_a_tenth_of_it(
    make_client: Callable[..., TestApp],
) -> None:
    # touch_interval is 60 s; five minutes of its own make the session due after 30 s.
    short, plain = make_client(), make_client()
    short.get("/login?idle=300")
    plain.get("/login")
    before = {}
    for client in (short, plain):
        age(store_of(client), session_id(client), timedelta(seconds=45))
        before[client] = row(store_of(client), session_id(client))["expires_at"]
        client.get("/read")
    assert row(store_of(short), session_id(short))["expires_at"] > before[short]  # touched
    assert row(store_of(plain), session_id(plain))["expires_at"] == before[plain]  # not yet due


def test_a_fixed_end_is_not_moved_by_use_and_has_no_idle_expiry(make_client: Callable[..., TestApp]) -> None:
    client = make_client()
    end = future(timedelta(days=5))
    response = client.get(f"/login?until={end.isoformat()}")
    store, sid = store_of(client), session_id(client)
    stored = row(store, sid)
    assert (stored["idle_timeout"], stored["ends_at"], stored["expires_at"]) == (None, end, end)
    assert timedelta(days=5) - timedelta(minutes=5) < timedelta(seconds=max_age(cookie_of(response)) or 0)
    assert datetime.fromisoformat(client.get("/expiry").json) == end  # as loaded from the row

    age(store, sid, timedelta(hours=3))  # unused longer than the two hours idle
    sql(store, "UPDATE {t} SET accessed_at = accessed_at - interval '1 day'")  # and the touch due
    assert client.get("/read").json == {"user": "alice"}  # still there: no idle expiry
    touched = row(store, sid)
    assert touched["expires_at"] == touched["ends_at"] == end - timedelta(hours=3)  # not pushed

    # The end itself is what the database goes by: moved to the past, the session is gone.
    sql(store, "UPDATE {t} SET ends_at = now() - interval '1 second', accessed_at = now() - interval '1 day'")
    client.get("/read")  # a touch computes the expiry from ends_at ...
    assert row(store, sid)["live"] is False  # ... which has passed
    assert client.get("/read").json == {}


def test_the_absolute_timeout_caps_a_longer_lifetime(make_client: Callable[..., TestApp]) -> None:
    day = timedelta(days=1)
    client = make_client(absolute_timeout=day)
    response = client.get("/login?remember=1")
    assert max_age(cookie_of(response)) == day.total_seconds()
    store, sid = store_of(client), session_id(client)
    assert row(store, sid)["after_creation"] == day
    age(store, sid, timedelta(hours=12))
    client.get("/read")  # touched: still at most a day after creation
    assert row(store, sid)["after_creation"] == day

    fixed = make_client(store, absolute_timeout=day)
    fixed.get(f"/login?until={future(timedelta(days=5)).isoformat()}")
    assert row(store, session_id(fixed))["after_creation"] == day


def test_none_sets_the_store_default_back(make_client: Callable[..., TestApp]) -> None:
    client = make_client()
    client.get("/login?remember=1")
    response = client.get("/forget")
    assert max_age(cookie_of(response)) == IDLE.total_seconds()
    stored = row(store_of(client), session_id(client))
    assert (stored["idle_timeout"], stored["ends_at"], stored["after_access"]) == (None, None, IDLE)
    assert client.get("/expiry").json == "None"


def test_a_browser_session_keeps_its_server_side_lifetime_without_max_age(
    make_client: Callable[..., TestApp],
) -> None:
    client = make_client()
    client.get("/login?remember=1")
    response = client.get("/browser")
    assert max_age(cookie_of(response)) is None
    assert row(store_of(client), session_id(client))["idle_timeout"] == MONTH


def test_regenerate_keeps_the_lifetime(make_client: Callable[..., TestApp]) -> None:
    client = make_client()
    client.get("/login?remember=1")
    store, old = store_of(client), session_id(client)
    expires_at = row(store, old)["expires_at"]
    response = client.get("/regen")
    new = session_id(client)
    assert new != old and sql(store, "SELECT 1 FROM {t} WHERE id = %s", (hash_session_id(old),)) == []
    stored = row(store, new)
    assert (stored["idle_timeout"], stored["expires_at"]) == (MONTH, expires_at)
    assert max_age(cookie_of(response)) == MONTH.total_seconds()


def test_a_login_that_regenerates_the_id_sets_the_lifetime_in_the_same_statement(
    make_client: Callable[..., TestApp],
    wire_counter: RoundTripCounter,
    make_store: Callable[..., PostgresStore],
) -> None:
    client = make_client(make_store(dsn=wire_counter.dsn), user_key="user")
    client.get("/set?cart=1")  # an anonymous session first
    anonymous = session_id(client)
    wire_counter.reset()
    response = client.get("/login?remember=1")  # a blind write of a new user: a new id
    assert wire_counter.count == 1, wire_counter.statements
    assert session_id(client) != anonymous
    assert row(store_of(client), session_id(client))["idle_timeout"] == MONTH
    assert max_age(cookie_of(response)) == MONTH.total_seconds()


def test_a_session_regenerated_before_its_first_save_keeps_the_lifetime(
    make_store: Callable[..., Any],
) -> None:
    middleware = SessionMiddleware(
        expiry_app, make_store(), secret_key=SECRET, idle_timeout=IDLE, permanent=True
    )
    session = middleware.open_session({})
    session["user"] = "bob"
    session.set_expiry(MONTH)
    session.regenerate()
    headers = dict(middleware.commit(session))
    assert max_age(headers["Set-Cookie"]) == MONTH.total_seconds()
    assert session.id is not None and row(middleware.store, session.id)["idle_timeout"] == MONTH


def test_an_end_past_year_9999_in_utc_is_a_500_in_the_view_that_set_it_and_nothing_is_stored(
    make_client: Callable[..., TestApp], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 20: 23:00 at UTC-5 on the last day of 9999 was stored as year 10000, and then
    neither the session nor its user's session list could be read again."""
    client = make_client(user_key="user")
    store = store_of(client)
    store.create_table()
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        response = client.get("/login?until=9999-12-31T23:00:00-05:00", status=500)
    assert "Set-Cookie" not in response.headers
    assert "year 9999" in caplog.text
    assert sql(store, "SELECT count(*) FROM {t}") == [(0,)]
    assert store.sessions_for_user("alice") == []


# -- concurrent requests --------------------------------------------------------------------


def test_a_new_lifetime_and_a_concurrent_write_to_another_key_are_both_kept(
    make_client: Callable[..., TestApp],
) -> None:
    client = make_client()
    client.get("/login")
    middleware: SessionMiddleware = client.app
    environ = {"HTTP_COOKIE": f"session={client.cookies['session']}"}
    # Two requests of one session, both loaded before either saves; each order of their saves.
    for lifetime, key in ((MONTH, "a"), (None, "b")):
        sets_expiry, writes = middleware.open_session(environ), middleware.open_session(environ)
        assert sets_expiry.get("user") == writes.get("user") == "alice"
        sets_expiry.set_expiry(lifetime)
        writes[key] = "written"
        for session in [sets_expiry, writes] if lifetime else [writes, sets_expiry]:
            middleware.commit(session)
        stored = row(middleware.store, session_id(client))
        assert stored["idle_timeout"] == lifetime
        assert stored["after_access"] == (lifetime or IDLE)
        assert client.get("/read").json[key] == "written"


# -- statements on the wire -----------------------------------------------------------------


def test_a_lifetime_costs_no_statement_of_its_own(
    make_client: Callable[..., TestApp],
    make_store: Callable[..., PostgresStore],
    wire_counter: RoundTripCounter,
) -> None:
    store = make_store(dsn=wire_counter.dsn)
    store.create_table()
    client = make_client(store)

    def statements(path: str) -> int:
        wire_counter.reset()
        client.get(path)
        return wire_counter.count

    assert statements("/login?remember=1") == 1  # a new session: the insert
    assert statements("/none") == 0
    assert statements("/read") == 1  # the load
    assert statements("/remember") == 1  # set without reading: one write
    assert statements("/remember-after-read") == 1  # the load; the same lifetime writes nothing
    assert statements("/forget") == 1  # set without reading: one write
    assert statements("/remember-after-read") == 2  # the load and the write
    age(store, session_id(client), timedelta(days=1))
    assert statements("/read") == 2  # the load and the due touch, as for any session


# -- both stores answer the same --------------------------------------------------------------


def lifetime_operations() -> list[Operation]:
    """Operations a store must answer with the row's own lifetime, in order."""
    id_hash, end = hash_session_id(new_session_id()), future(timedelta(days=5))
    touch = timedelta(seconds=60)
    return [
        Insert(id_hash, '{"a": 1}', None, IDLE, None, None, MONTH, None),
        Load(id_hash, touch),
        # A blind write that sets nothing learns the row's own lifetime from the write itself.
        Write(id_hash, '{"b": 2}', [], False, None, KEEP_USER, IDLE, None, touch, None),
        Write(id_hash, "{}", [], False, None, KEEP_USER, IDLE, None, touch, None, True, None, end),
        Load(id_hash, touch),
    ]


def check_lifetime_answers(answers: list[Any], end: datetime) -> None:
    inserted, loaded, written, set_end, loaded_end = answers
    assert inserted is None
    assert isinstance(loaded, LoadedRow) and (loaded.idle_timeout, loaded.ends_at) == (MONTH, None)
    assert isinstance(written, WriteResult) and (written.idle_timeout, written.ends_at) == (MONTH, None)
    assert isinstance(set_end, WriteResult) and (set_end.idle_timeout, set_end.ends_at) == (None, end)
    assert set_end.touched  # a new lifetime moves the expiry now, due or not
    assert (
        isinstance(loaded_end, LoadedRow)
        and loaded_end.ends_at == end
        and loaded_end.data == {"a": 1, "b": 2}
    )


def test_the_sync_store_answers_with_the_rows_own_lifetime(make_store: Callable[..., PostgresStore]) -> None:
    store = make_store()
    operations = lifetime_operations()
    answers = [store.execute(operation) for operation in operations]
    check_lifetime_answers(answers, operations[3].ends_at)  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_the_async_store_answers_with_the_rows_own_lifetime(make_async_store: MakeAsyncStore) -> None:
    store = make_async_store()
    operations = lifetime_operations()
    answers = [await store.execute(operation) for operation in operations]
    check_lifetime_answers(answers, operations[3].ends_at)  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_both_stores_answer_the_same_through_pgbouncer(
    make_pgbouncer: Callable[[str], Any],
    make_store: Callable[..., PostgresStore],
    make_async_store: MakeAsyncStore,
    pg_dsn: str,
) -> None:
    # The startup options are dropped there: each statement carries SET LOCAL, and the async
    # store binds the new parameters on the client.
    bouncer = make_pgbouncer(pg_dsn)
    store = make_store(dsn=bouncer.dsn)
    operations = lifetime_operations()
    check_lifetime_answers([store.execute(op) for op in operations], operations[3].ends_at)  # type: ignore[union-attr]
    async_store = make_async_store(dsn=bouncer.dsn, table="bounced")
    operations = lifetime_operations()
    answers = [await async_store.execute(op) for op in operations]
    check_lifetime_answers(answers, operations[3].ends_at)  # type: ignore[union-attr]


# -- tables of an older version -------------------------------------------------------------


def old_table(pg_dsn: str, schema: str) -> tuple[str, str]:
    """A 0.1.0 table in ``schema`` holding one live session; its id and its cookie."""
    qualified = f'"{schema}"."pgsession"'
    sql(pg_dsn, OLD_TABLE.format(t=qualified))
    sid = new_session_id()
    sql(
        pg_dsn,
        f"INSERT INTO {qualified} (id, data, expires_at) VALUES (%s, %s, now() + interval '1 hour')",
        (hash_session_id(sid), '{"user": "old"}'),
    )
    return sid, f"session={HmacIdSigner(SECRET).sign(sid)}"


def columns(pg_dsn: str, schema: str) -> set[str]:
    found = sql(
        pg_dsn, "SELECT column_name FROM information_schema.columns WHERE table_schema = %s", (schema,)
    )
    return {name for (name,) in found}


def test_a_table_of_an_older_version_gets_the_columns_and_keeps_its_sessions(
    make_client: Callable[..., TestApp],
    make_store: Callable[..., PostgresStore],
    pg_dsn: str,
    schema: str,
    wire_counter: RoundTripCounter,
) -> None:
    sid, cookie = old_table(pg_dsn, schema)
    client = make_client()
    client.set_cookie("session", cookie.split("=", 1)[1])
    assert client.get("/read").json == {"user": "old"}  # the store upgraded the table first
    assert {"idle_timeout", "ends_at"} <= columns(pg_dsn, schema)
    client.get("/remember")
    assert row(store_of(client), sid)["idle_timeout"] == MONTH
    # An up-to-date table is never altered again (ALTER TABLE waits for an exclusive lock).
    make_store(dsn=wire_counter.dsn).create_table()
    assert not [s for s in wire_counter.statements if "ALTER" in s.upper()], wire_counter.statements


def test_without_create_table_an_older_table_is_refused_with_the_statement_that_upgrades_it(
    make_store: Callable[..., PostgresStore], pg_dsn: str, schema: str
) -> None:
    sid, _ = old_table(pg_dsn, schema)
    store = make_store(create_table=False)
    with pytest.raises(ConfigurationError) as refused:
        store.load(hash_session_id(sid), timedelta(seconds=60))
    message = str(refused.value)
    upgrade = UPGRADE.format(t=store.qualified_name)
    assert f"`{upgrade}`" in message and "idle_timeout, ends_at" in message
    assert "pgsession-wsgi init" in message
    assert not {"idle_timeout", "ends_at"} & columns(pg_dsn, schema)  # nothing was altered
    sql(pg_dsn, upgrade)  # what the message says to run: the same store works, no restart
    assert store.load(hash_session_id(sid), timedelta(seconds=60)) is not None


def test_the_ddl_brings_an_older_table_up_to_date(
    make_store: Callable[..., PostgresStore], pg_dsn: str, schema: str
) -> None:
    sid, _ = old_table(pg_dsn, schema)
    store = make_store(create_table=False)
    assert UPGRADE.format(t=store.qualified_name) in store.ddl()
    sql(pg_dsn, store.ddl())
    assert {"idle_timeout", "ends_at"} <= columns(pg_dsn, schema)
    assert store.load(hash_session_id(sid), timedelta(seconds=60)) is not None


@pytest.mark.anyio
async def test_the_async_store_upgrades_an_older_table_too(
    make_async_store: MakeAsyncStore, pg_dsn: str, schema: str
) -> None:
    sid, _ = old_table(pg_dsn, schema)
    refusing = make_async_store(create_table=False)
    with pytest.raises(ConfigurationError, match=re.escape(UPGRADE.format(t=refusing.qualified_name))):
        await refusing.open()
    assert UPGRADE.format(t=refusing.qualified_name) in refusing.ddl()
    store = make_async_store()
    await store.open()
    assert {"idle_timeout", "ends_at"} <= columns(pg_dsn, schema)
    refusing_no_more = make_async_store(create_table=False)
    await refusing_no_more.open()
    assert await refusing_no_more.execute(Load(hash_session_id(sid), timedelta(seconds=60))) is not None


# -- Flask ----------------------------------------------------------------------------------


@pytest.fixture
def flask_app(pg_dsn: str, schema: str) -> Iterator[Flask]:
    app = Flask("expiry")
    app.test_client_class = ClosingClient
    app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
    PgSession(app)

    @app.route("/login")
    def login() -> str:
        flask_session["user"] = "alice"
        flask_session.permanent = True  # Flask's default is a browser-session cookie
        flask_session.set_expiry(MONTH)  # type: ignore[attr-defined]
        return "ok"

    @app.route("/until/<int:days>")
    def until(days: int) -> str:
        flask_session.set_expiry(future(timedelta(days=days)))  # type: ignore[attr-defined]
        return str(flask_session.expiry)  # type: ignore[attr-defined]

    yield app
    app.extensions[EXTENSION_KEY].store.close()


def test_flask_session_set_expiry(flask_app: Flask) -> None:
    client = flask_app.test_client()
    response = client.get("/login")
    assert max_age(cookie_of(response)) == MONTH.total_seconds()
    store = flask_app.extensions[EXTENSION_KEY].store
    sid = client.get_cookie("session").value.split(".")[0]  # type: ignore[union-attr]
    assert row(store, sid)["idle_timeout"] == MONTH
    response = client.get("/until/3")
    stored = row(store, sid)
    assert stored["idle_timeout"] is None and stored["expires_at"] == stored["ends_at"]
    assert datetime.fromisoformat(response.text) == stored["ends_at"]
    assert timedelta(days=3) - timedelta(minutes=5) < timedelta(seconds=max_age(cookie_of(response)) or 0)


# -- ASGI (Starlette) -----------------------------------------------------------------------


async def remember(request: Request) -> JSONResponse:
    session = request.session
    session["user"] = "alice"
    if "until" in request.query_params:
        session.set_expiry(datetime.fromisoformat(request.query_params["until"]))
    elif "forget" in request.query_params:
        session.set_expiry(None)
    else:
        session.set_expiry(MONTH)
    return JSONResponse(str(session.expiry))


@pytest.mark.anyio
async def test_starlette_request_session_set_expiry(make_async_store: MakeAsyncStore) -> None:
    store: AsyncPostgresStore = make_async_store()
    app = AsgiSessionMiddleware(
        Starlette(routes=[Route("/remember", remember)]),
        store=store,
        secret_key=SECRET,
        idle_timeout=IDLE,
        permanent=True,
    )
    async with http_client(app) as client:
        response = await client.get("/remember")
        assert max_age(response.headers["set-cookie"]) == MONTH.total_seconds()
        sid = str(client.cookies["session"]).split(".")[0]
        assert row(store, sid)["after_access"] == MONTH
        end = future(timedelta(days=5))
        response = await client.get("/remember", params={"until": end.isoformat()})
        stored = row(store, sid)
        assert (stored["idle_timeout"], stored["ends_at"], stored["expires_at"]) == (None, end, end)
        assert timedelta(days=5) - timedelta(minutes=5) < timedelta(
            seconds=max_age(response.headers["set-cookie"]) or 0
        )
        response = await client.get("/remember", params={"forget": "1"})
        assert max_age(response.headers["set-cookie"]) == IDLE.total_seconds()
        assert row(store, sid)["after_access"] == IDLE
        assert isinstance(client, httpx.AsyncClient)
