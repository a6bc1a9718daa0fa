"""``PgSession(app, store=...)``: the Flask and Quart extensions on the app's own database setup
(issue 12, point 3) instead of a DSN of their own.

All on the real test database: plain SQLAlchemy engines and Flask-SQLAlchemy on
``postgresql+psycopg2``, psycopg_pool for Quart. The requests cost the statements they cost with
the DSN store, an app factory's apps each get their own store, the DSN store's config keys are
refused next to a store, and the app's store stays the app's (never closed by the extension).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from db import engine_url, sql
from flask import Flask, session
from flask_sqlalchemy import SQLAlchemy
from helpers import ClosingClient, add_count_route, close_extension_stores
from psycopg_pool import AsyncConnectionPool
from quart import Quart
from quart import session as quart_session
from wire import RoundTripCounter

from pgsession_wsgi import ConfigurationError, PostgresStore, StoreUnavailable
from pgsession_wsgi.async_store import AsyncPostgresStore
from pgsession_wsgi.flask import EXTENSION_KEY, STORE_KEYS, FlaskPgSession, PgSession
from pgsession_wsgi.quart import STORE_KEYS as QUART_STORE_KEYS
from pgsession_wsgi.quart import PgSession as QuartPgSession
from pgsession_wsgi.quart import PgSessionInterface
from pgsession_wsgi.sqlalchemy import session_table

SECRET = "own-store-secret"
# The same requests for every app: (path, statements it costs on any store).
REQUESTS = [("/nothing", 0), ("/count", 1), ("/read", 1), ("/count", 2), ("/logout", 1), ("/read", 0)]


def rows(dsn: str, table: str) -> list[Any]:
    return [data for (data,) in sql(dsn, f"SELECT data FROM {table} ORDER BY created_at")]


def exists(dsn: str, table: str) -> bool:
    return sql(dsn, "SELECT to_regclass(%s) IS NOT NULL", (table,)) == [(True,)]


def flask_app(name: str, **config: Any) -> Flask:
    app = Flask(name)
    app.test_client_class = ClosingClient
    app.config.update(SECRET_KEY=SECRET, **config)

    @app.route("/nothing")
    def nothing() -> str:
        return "no session here"

    add_count_route(app)

    @app.route("/read")
    def read() -> dict[str, Any]:
        return dict(session)

    @app.route("/logout")
    def logout() -> str:
        session.invalidate()  # type: ignore[attr-defined]
        return "bye"

    return app


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    """Apps to close the stores of after the test (the extension never closes an app's store)."""
    made: list[Flask] = []
    yield made
    close_extension_stores(made)


# -- the same requests, the same statements -------------------------------------------------------


def test_a_store_on_the_apps_engine_costs_what_the_dsn_store_costs(
    wire_counter: RoundTripCounter, make_engine: Callable[[str], sa.Engine], schema: str, apps: list[Flask]
) -> None:
    by_dsn = flask_app("by_dsn", PGSESSION_DSN=wire_counter.dsn, PGSESSION_SCHEMA=schema)
    PgSession(by_dsn)
    store = PostgresStore.from_engine(make_engine(wire_counter.dsn), "by_engine", schema, purge_interval=None)
    by_engine = flask_app("by_engine")
    PgSession(by_engine, store=store)
    apps.extend([by_dsn, by_engine])
    assert by_engine.extensions[EXTENSION_KEY].store is store
    costs: dict[str, list[tuple[str, int]]] = {}
    for app in (by_dsn, by_engine):
        client = app.test_client()
        costs[app.name] = []
        for path, _ in REQUESTS:
            wire_counter.reset()
            assert client.get(path).status_code == 200
            costs[app.name].append((path, wire_counter.count))
    assert costs["by_dsn"] == costs["by_engine"] == REQUESTS, wire_counter.statements
    # The engine store's statements carry their settings (SET LOCAL) in the same message.
    wire_counter.reset()
    by_engine.test_client().get("/count")
    assert [text.startswith("SET LOCAL statement_timeout") for text in wire_counter.statements] == [True]


def test_the_session_lives_in_the_stores_table_and_the_table_is_created_at_init_app(
    pg_dsn: str, make_engine: Callable[[str], sa.Engine], schema: str, apps: list[Flask]
) -> None:
    store = PostgresStore.from_engine(make_engine(pg_dsn), "web_sessions", schema, purge_interval=None)
    app = flask_app("app")
    ext = PgSession(store=store)
    ext.init_app(app)
    apps.append(app)
    assert exists(pg_dsn, store.qualified_name)  # at init_app: a wrong table fails at start
    client = app.test_client()
    assert [client.get("/count").text for _ in range(3)] == ["1", "2", "3"]
    assert rows(pg_dsn, store.qualified_name) == [{"n": 3}]
    assert ext.store is store


# -- app factories: one extension, many apps, each its own store ------------------------------------


def test_an_app_factory_gives_each_app_a_store_on_its_own_flask_sqlalchemy_engine(
    pg_dsn: str, schema: str, apps: list[Flask]
) -> None:
    db = SQLAlchemy()
    made: list[PostgresStore] = []

    def store_for(app: Flask) -> PostgresStore:
        # db.engine needs an app context: PgSession calls this inside app.app_context().
        table = app.config["SESSIONS_TABLE"]
        store = PostgresStore.from_engine(db.engine, table, schema, purge_interval=None)
        made.append(store)
        return store

    sessions = PgSession(store=store_for)

    def create_app(name: str) -> Flask:
        url = engine_url(pg_dsn).render_as_string(hide_password=False)
        # SQLALCHEMY_DATABASE_URI is the app's, next to a store: not refused, not used by PgSession.
        app = flask_app(name, SQLALCHEMY_DATABASE_URI=url, SESSIONS_TABLE=f"{name}_sessions")
        db.init_app(app)
        sessions.init_app(app)
        apps.append(app)
        return app

    first, second = create_app("first"), create_app("second")
    try:
        assert [sessions.get_middleware(app).store for app in (first, second)] == made
        assert made[0] is not made[1]
        for app, store in zip((first, second), made):
            with app.app_context():
                assert store._pool.engine is db.engine  # type: ignore[attr-defined]
        with first.app_context():
            first_engine = db.engine
        with second.app_context():
            assert db.engine is not first_engine
        one, other = first.test_client(), second.test_client()
        assert [one.get("/count").text, one.get("/count").text, other.get("/count").text] == ["1", "2", "1"]
        assert rows(pg_dsn, made[0].qualified_name) == [{"n": 2}]
        assert rows(pg_dsn, made[1].qualified_name) == [{"n": 1}]
    finally:
        for app in (first, second):
            with app.app_context():
                db.engine.dispose()


def test_one_store_instance_serves_every_app_the_extension_sets_up(
    pg_dsn: str, make_engine: Callable[[str], sa.Engine], schema: str, apps: list[Flask]
) -> None:
    store = PostgresStore.from_engine(make_engine(pg_dsn), schema=schema, purge_interval=None)
    ext = PgSession(store=store)
    shared = [flask_app("a"), flask_app("b")]
    for app in shared:
        ext.init_app(app)
    apps.append(shared[0])  # one close is enough: it is one store
    assert [ext.get_middleware(app).store for app in shared] == [store, store]


# -- the DSN store's keys next to a store ------------------------------------------------------


@pytest.mark.parametrize("key", STORE_KEYS)
def test_a_dsn_store_key_next_to_a_store_is_refused_before_the_store_is_made(key: str) -> None:
    called: list[Flask] = []
    app = flask_app("app", **{key: "x"})
    with pytest.raises(ConfigurationError, match=f"^{key} is set, but PgSession was given the app's own"):
        PgSession(app, store=lambda app: called.append(app))  # type: ignore[arg-type,func-returns-value]
    assert called == [] and EXTENSION_KEY not in app.extensions


def test_every_key_set_is_named_and_none_counts_as_unset(
    pg_dsn: str, make_engine: Callable[[str], sa.Engine], schema: str, apps: list[Flask]
) -> None:
    store = PostgresStore.from_engine(make_engine(pg_dsn), schema=schema, purge_interval=None)
    app = flask_app("app", PGSESSION_DSN=pg_dsn, PGSESSION_TABLE="t", PGSESSION_MAX_CONNECTIONS=3)
    with pytest.raises(ConfigurationError) as refused:
        PgSession(app, store=store)
    message = str(refused.value)
    assert "PGSESSION_DSN, PGSESSION_MAX_CONNECTIONS, PGSESSION_TABLE are set" in message
    # The example whole (flask.PgSession._settings mutant 11).
    example = "(e.g. PostgresStore.from_engine(engine, table=...))"
    assert f"to the store you build {example} and remove them" in message
    fine = flask_app("fine", PGSESSION_DSN=None, SQLALCHEMY_DATABASE_URI="postgresql://elsewhere/db")
    PgSession(fine, store=store)
    apps.append(fine)
    assert fine.extensions[EXTENSION_KEY].store is store


def test_without_a_store_the_dsn_is_still_required() -> None:
    with pytest.raises(ConfigurationError, match="PGSESSION_DSN is not set"):
        PgSession(flask_app("app"))


def test_what_is_not_a_store_is_refused(pg_dsn: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        PgSession(store=pg_dsn)  # type: ignore[arg-type]
    assert str(refused.value) == (  # the example whole (flask.PgSession.__init__ mutants 3, 7-9)
        "PgSession(store=...) takes a PostgresStore (e.g. PostgresStore.from_engine(engine)) "
        "or a callable app -> PostgresStore, not str"
    )
    with pytest.raises(ConfigurationError, match="not AsyncPostgresStore"):
        PgSession(store=AsyncPostgresStore(pg_dsn))  # type: ignore[arg-type]
    app = flask_app("app")
    with pytest.raises(ConfigurationError, match="returned str, not a PostgresStore") as info:
        PgSession(app, store=lambda app: pg_dsn)  # type: ignore[arg-type,return-value]
    # It says what to return (flask.PgSession._make_store mutants 11, 15).
    assert str(info.value).endswith(": return e.g. PostgresStore.from_engine(db.engine)")
    assert EXTENSION_KEY not in app.extensions
    with pytest.raises(TypeError):
        FlaskPgSession(store=pg_dsn)  # type: ignore[call-arg]  # it picks and moves tables itself


# -- the store stays the app's ----------------------------------------------------------------


def test_a_failed_setup_leaves_the_apps_store_open(
    pg_dsn: str, make_engine: Callable[[str], sa.Engine], schema: str
) -> None:
    store = PostgresStore.from_engine(make_engine(pg_dsn), schema=schema, purge_interval=None)
    try:
        app = flask_app("app", SESSION_COOKIE_SAMESITE="Sometimes")  # refused by the middleware
        with pytest.raises(ConfigurationError, match="cookie_samesite must be"):
            PgSession(app, store=store)
        assert store.stats()["live"] == 0  # still usable: not closed
    finally:
        store.close()


def test_a_store_that_does_not_create_its_table_is_left_to_the_apps_migrations(
    pg_dsn: str, make_engine: Callable[[str], sa.Engine], schema: str, apps: list[Flask]
) -> None:
    engine = make_engine(pg_dsn)
    store = PostgresStore.from_engine(engine, schema=schema, create_table=False, purge_interval=None)
    app = flask_app("app")
    PgSession(app, store=store)
    apps.append(app)
    assert not exists(pg_dsn, store.qualified_name)  # init_app did not create it
    metadata = sa.MetaData()
    session_table(metadata, schema=schema)
    metadata.create_all(engine)  # what the app's Alembic migration does
    client = app.test_client()
    assert [client.get("/count").text for _ in range(2)] == ["1", "2"]
    assert rows(pg_dsn, store.qualified_name) == [{"n": 2}]


# -- Quart: the same shape, with an AsyncPostgresStore ------------------------------------------


def quart_app(name: str, **config: Any) -> Quart:
    app = Quart(name)
    app.config.update(SECRET_KEY=SECRET, **config)

    @app.route("/nothing")
    async def nothing() -> str:
        return "no session here"

    @app.route("/count")
    async def count() -> str:
        quart_session["n"] = quart_session.get("n", 0) + 1
        return str(quart_session["n"])

    @app.route("/read")
    async def read() -> dict[str, Any]:
        return dict(quart_session)

    @app.route("/logout")
    async def logout() -> str:
        quart_session.invalidate()  # type: ignore[attr-defined]
        return "bye"

    return app


def quart_store(app: Quart) -> AsyncPostgresStore:
    interface = app.extensions[EXTENSION_KEY]
    assert isinstance(interface, PgSessionInterface)
    return interface.store


@pytest.mark.anyio
async def test_quart_on_the_apps_pool_costs_what_the_dsn_store_costs_and_is_left_to_the_app(
    wire_counter: RoundTripCounter, schema: str
) -> None:
    by_dsn = quart_app("by_dsn", PGSESSION_DSN=wire_counter.dsn, PGSESSION_SCHEMA=schema)
    QuartPgSession(by_dsn)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(wire_counter.dsn, min_size=1, max_size=2, open=False)
    store = AsyncPostgresStore.from_pool(pool, "by_pool", schema, purge_interval=None)
    by_pool = quart_app("by_pool")
    called: list[Quart] = []

    def store_for(app: Quart) -> AsyncPostgresStore:
        called.append(app)
        return store

    QuartPgSession(by_pool, store=store_for)
    assert called == [by_pool] and quart_store(by_pool) is store
    await pool.open()
    try:
        costs: dict[str, list[tuple[str, int]]] = {}
        for app in (by_dsn, by_pool):
            # Serving starts and stops: the DSN store opens and closes with it; the app's is not
            # touched (it opens at its first use).
            async with app.test_app():
                await quart_store(app).open()  # the table, before counting
                client = app.test_client()
                costs[app.name] = []
                for path, _ in REQUESTS:
                    wire_counter.reset()
                    assert (await client.get(path)).status_code == 200
                    costs[app.name].append((path, wire_counter.count))
        # Quart loads a session with a valid cookie before the view: the logout reads it first.
        quart_costs = [(path, 2 if path == "/logout" else count) for path, count in REQUESTS]
        assert costs["by_dsn"] == costs["by_pool"] == quart_costs, wire_counter.statements
        with pytest.raises(StoreUnavailable, match="closed"):
            await quart_store(by_dsn).stats()  # after serving, the DSN store was closed
        assert (await store.stats())["live"] == 0  # the app's store is still open
    finally:
        await store.close()
        await pool.close()


@pytest.mark.anyio
async def test_quart_refuses_the_dsn_store_keys_and_what_is_not_an_async_store(pg_dsn: str) -> None:
    app = quart_app("app", PGSESSION_SCHEMA="elsewhere")
    with pytest.raises(ConfigurationError, match="PGSESSION_SCHEMA is set, but PgSession") as raised:
        QuartPgSession(app, store=AsyncPostgresStore(pg_dsn))
    assert "(e.g. AsyncPostgresStore.from_pool(pool, table=...))" in str(raised.value)  # what to build
    assert EXTENSION_KEY not in app.extensions
    app = quart_app("prepared", PGSESSION_PREPARED_STATEMENTS=False)
    with pytest.raises(ConfigurationError, match="PGSESSION_PREPARED_STATEMENTS is set, but PgSession"):
        QuartPgSession(app, store=AsyncPostgresStore(pg_dsn))
    assert "PGSESSION_PREPARED_STATEMENTS" in QUART_STORE_KEYS
    sync_store = PostgresStore(pg_dsn)
    with pytest.raises(ConfigurationError) as raised:
        QuartPgSession(store=sync_store)  # type: ignore[arg-type]
    assert str(raised.value) == (
        "PgSession(store=...) takes an AsyncPostgresStore (e.g. AsyncPostgresStore.from_pool(pool)) "
        "or a callable app -> AsyncPostgresStore, not PostgresStore"
    )
    sync_store.close()
    with pytest.raises(ConfigurationError) as raised:
        QuartPgSession(quart_app("other"), store=lambda app: None)  # type: ignore[arg-type,return-value]
    assert str(raised.value) == (
        "the store callable given to PgSession returned NoneType, not an AsyncPostgresStore: "
        "return e.g. AsyncPostgresStore.from_pool(pool)"
    )


@pytest.mark.anyio
async def test_quart_takes_the_apps_store_itself_not_only_a_callable(pg_dsn: str, schema: str) -> None:
    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    app = quart_app("given")
    QuartPgSession(app, store=store)
    try:
        assert quart_store(app) is store
        client = app.test_client()
        assert [await (await client.get("/count")).get_data(as_text=True) for _ in range(2)] == ["1", "2"]
    finally:
        await store.close()
