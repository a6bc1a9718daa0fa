"""An app whose database role has only SELECT, INSERT, UPDATE and DELETE on the session table.

The owner runs ``pgsession-wsgi init --grant ROLE`` once; the WSGI, Flask and ASGI apps then run
under ROLE (no CREATE on any schema, not the table's owner) with their default options and with
``create_table=False``. Without the table or the grants, the app stops at start-up with one line
naming the command or the GRANTs, never a 500 on every request (issue 21, point 1).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg2
import psycopg2.extensions
import pytest
from apps.asgi_apps import starlette_app
from apps.asgi_support import http_client
from apps.support import wsgi_call
from flask import Flask, session
from helpers import ClosingClient, close_extension_stores

from pgsession_wsgi import (
    ConfigurationError,
    PostgresStore,
    PrivilegeError,
    SessionError,
    SessionMiddleware,
    get_session,
)
from pgsession_wsgi._store.exchange import DriverErrors, converse
from pgsession_wsgi.async_store import AsyncPostgresStore
from pgsession_wsgi.cli import main as cli_main
from pgsession_wsgi.flask import PgSession
from pgsession_wsgi.sql import grant_statements
from pgsession_wsgi.store_steps import StoreSteps

SECRET = "least-privilege-secret-0123456789abcdef"


@pytest.fixture
def role(pg_dsn: str) -> Iterator[str]:
    """A login role with no privileges at all; dropped (with what was granted to it) after."""
    name = f"app_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(pg_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE ROLE "{name}" LOGIN')
        yield name
        with conn.cursor() as cur:
            cur.execute(f'DROP OWNED BY "{name}"')
            cur.execute(f'DROP ROLE "{name}"')
    finally:
        conn.close()


def as_role(dsn: str, role: str) -> str:
    """The same database, connecting as ``role`` (trust authentication here)."""
    params = psycopg2.extensions.parse_dsn(dsn)
    params["user"] = role
    params.pop("password", None)
    return psycopg2.extensions.make_dsn(**params)


def init(pg_dsn: str, schema: str, *extra: str) -> int:
    return cli_main(["init", "--dsn", pg_dsn, "--schema", schema, "--table", "sessions", *extra])


def counter(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    session = get_session(environ)
    path = environ["PATH_INFO"]
    if path == "/login":
        session["uid"] = "alice"
    elif path == "/logout":
        session.invalidate()
    else:
        session["n"] = session.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(session.get("n")).encode()]


@pytest.mark.parametrize("create_table", [True, False], ids=["default", "create_table=False"])
def test_the_wsgi_app_runs_under_a_role_with_only_the_granted_privileges(
    pg_dsn: str, schema: str, role: str, create_table: bool
) -> None:
    assert init(pg_dsn, schema, "--grant", role) == 0
    dsn = as_role(pg_dsn, role)
    store = PostgresStore(dsn, "sessions", schema, purge_interval=None, create_table=create_table)
    try:
        app = SessionMiddleware(counter, store, secret_key=SECRET, user_key="uid")
        cookie = wsgi_call(app, "/login").cookie()
        assert wsgi_call(app, "/", cookie).body == b"1"
        assert wsgi_call(app, "/", cookie).body == b"2"
        # Everything an app or a cron job does besides requests works with these grants too.
        assert len(store.sessions_for_user("alice")) == 1
        assert store.purge_expired() == 0
        assert store.stats()["live"] == 1
        assert store.revoke_user("alice") == 1
        assert wsgi_call(app, "/", cookie).body == b"1"  # a new session: the old one was revoked
    finally:
        store.close()


def test_without_the_table_a_role_without_create_is_told_both_ways_out(
    pg_dsn: str, schema: str, role: str
) -> None:
    store = PostgresStore(as_role(pg_dsn, role), "sessions", schema, purge_interval=None)
    try:
        with pytest.raises(PrivilegeError) as raised:
            store.create_table()
    finally:
        store.close()
    message = str(raised.value)
    assert "permission denied for schema" in message
    assert f"pgsession-wsgi init --dsn ... --schema {schema} --table sessions --grant {role}" in message
    assert f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{schema}"."sessions" TO "{role}"' in message
    assert raised.value.role == role


def test_a_role_without_the_grants_is_told_which_it_needs(pg_dsn: str, schema: str, role: str) -> None:
    assert init(pg_dsn, schema) == 0  # the table exists, but nothing is granted to the role
    owner = psycopg2.connect(pg_dsn)
    owner.autocommit = True
    with owner, owner.cursor() as cur:
        cur.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
    owner.close()
    store = PostgresStore(as_role(pg_dsn, role), "sessions", schema, purge_interval=None)
    try:
        app = SessionMiddleware(counter, store, secret_key=SECRET)
        with pytest.raises(PrivilegeError, match="permission denied for table sessions") as raised:
            store.sessions_for_user("alice")
        grant = f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{schema}"."sessions" TO "{role}"'
        assert grant in str(raised.value)
        assert wsgi_call(app, "/").status == 500
    finally:
        store.close()


@pytest.mark.parametrize("driver", [psycopg2, psycopg], ids=["psycopg2", "psycopg"])
def test_a_role_that_cannot_be_asked_for_is_told_the_grants_for_a_placeholder(driver: Any) -> None:
    """The connection broke between the refused statement and ``SELECT current_user``: the
    message still names both ways out, with APP_ROLE to replace. Driven without a database, as
    the store's steps can be: a ``send`` of the test's own answers each statement."""
    steps = StoreSteps(
        "app", "sessions", {}, statement_timeout=None, unlogged=False, create=True,
        store_class="PostgresStore", errors=DriverErrors(driver),
    )  # fmt: skip

    def connection_lost(link: Any, statement: Any) -> Any:
        raise driver.OperationalError("server closed the connection unexpectedly")

    role = converse(steps.current_role(), connection_lost, None)
    assert role is None
    refused = steps.refused(driver.errors.InsufficientPrivilege("permission denied for table sessions"), role)
    assert refused.role is None
    assert str(refused) == (
        "the session store failed: permission denied for table sessions. The role 'APP_ROLE' needs "
        "the session table made for it: run `pgsession-wsgi init --dsn ... --schema app --table "
        "sessions --grant APP_ROLE` once as the table's owner (it creates the table and grants "
        "what the role needs), or run yourself: " + "; ".join(grant_statements("app", "sessions", "APP_ROLE"))
    )


def test_init_sql_prints_the_grants(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["init", "--sql", "--schema", "app", "--table", "s", "--grant", "web", "--grant", 'od"d']
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert 'GRANT USAGE ON SCHEMA "app" TO "web";\n' in out
    assert 'GRANT SELECT, INSERT, UPDATE, DELETE ON "app"."s" TO "od""d";\n' in out


def test_init_grant_says_what_it_granted_to_each_role(
    pg_dsn: str, schema: str, role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line for the table, then one per role granted (cli._cmd_init mutant 50)."""
    assert init(pg_dsn, schema, "--grant", role) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == (
        f"pgsession-wsgi init: the session table {schema}.sessions and its indexes are ready\n"
        f"granted '{role}' USAGE on its schema and SELECT, INSERT, UPDATE, DELETE on the table\n"
    )


# -- create_table=False and no table: refused at start-up -----------------------------------------


def test_a_sync_store_without_its_table_names_the_command(
    pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(pg_dsn, "sessions", schema, purge_interval=None, create_table=False)
    try:
        with pytest.raises(SessionError, match="does not exist: create it once as its owner with") as raised:
            store.check_table()
        assert f"`pgsession-wsgi init --dsn ... --schema {schema} --table sessions`" in str(raised.value)
        # A request says the same, once per request, and works as soon as the table is made.
        app = SessionMiddleware(counter, store, secret_key=SECRET)
        with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
            assert wsgi_call(app, "/").status == 500
        assert any("pgsession-wsgi init" in record.getMessage() for record in caplog.records)
        assert init(pg_dsn, schema) == 0
        assert wsgi_call(app, "/").body == b"1"
    finally:
        store.close()


async def test_an_async_store_without_its_table_stops_at_open(pg_dsn: str, schema: str) -> None:
    store = AsyncPostgresStore(pg_dsn, "sessions", schema, purge_interval=None, create_table=False)
    try:
        with pytest.raises(SessionError, match="pgsession-wsgi init --dsn ... --schema"):
            await store.open()
    finally:
        await store.close()


# -- Flask ----------------------------------------------------------------------------------------


@pytest.fixture
def make_flask() -> Iterator[Callable[..., Flask]]:
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = Flask(f"least{len(made)}")
        app.test_client_class = ClosingClient
        app.config.update(SECRET_KEY=SECRET, PGSESSION_TABLE="sessions", **config)
        PgSession(app)
        made.append(app)

        @app.route("/")
        def count() -> str:
            session["n"] = session.get("n", 0) + 1
            return str(session["n"])

        return app

    yield make
    close_extension_stores(made)


@pytest.mark.parametrize(
    "create_table", [None, False, "false", "0"], ids=["unset", "False", "'false'", "'0'"]
)
def test_flask_runs_under_the_role(
    pg_dsn: str, schema: str, role: str, make_flask: Callable[..., Flask], create_table: Any
) -> None:
    assert init(pg_dsn, schema, "--grant", role) == 0
    app = make_flask(
        PGSESSION_DSN=as_role(pg_dsn, role), PGSESSION_SCHEMA=schema, PGSESSION_CREATE_TABLE=create_table
    )
    client = app.test_client()
    assert [client.get("/").text for _ in range(3)] == ["1", "2", "3"]


def test_flask_without_the_table_stops_at_setup_naming_the_command(
    pg_dsn: str, schema: str, make_flask: Callable[..., Flask]
) -> None:
    with pytest.raises(SessionError, match=f"pgsession-wsgi init --dsn ... --schema {schema}"):
        make_flask(PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema, PGSESSION_CREATE_TABLE=False)


def test_flask_without_create_privilege_stops_at_setup_naming_the_grants(
    pg_dsn: str, schema: str, role: str, make_flask: Callable[..., Flask]
) -> None:
    with pytest.raises(PrivilegeError, match=f"--grant {role}"):
        make_flask(PGSESSION_DSN=as_role(pg_dsn, role), PGSESSION_SCHEMA=schema)


@pytest.mark.parametrize("create_table", [True, False], ids=["default", "create_table=False"])
def test_flask_with_the_table_but_not_the_grants_stops_at_setup_naming_them(
    pg_dsn: str, schema: str, role: str, make_flask: Callable[..., Flask], create_table: bool
) -> None:
    """The table is there, the role may use its schema but not the table: refused at start-up
    (not a 500 on every request), with the GRANT that is missing."""
    assert init(pg_dsn, schema) == 0
    owner = psycopg2.connect(pg_dsn)
    owner.autocommit = True
    with owner, owner.cursor() as cur:
        cur.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        cur.execute(f'GRANT SELECT, INSERT, UPDATE ON "{schema}"."sessions" TO "{role}"')  # no DELETE
    owner.close()
    with pytest.raises(PrivilegeError, match="permission denied for table sessions") as raised:
        make_flask(
            PGSESSION_DSN=as_role(pg_dsn, role), PGSESSION_SCHEMA=schema, PGSESSION_CREATE_TABLE=create_table
        )
    assert f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{schema}"."sessions" TO "{role}"' in str(raised.value)
    assert f"--grant {role}" in str(raised.value)
    assert raised.value.role == role


def test_a_flag_spelled_otherwise_is_refused_naming_the_key(
    pg_dsn: str, schema: str, make_flask: Callable[..., Flask]
) -> None:
    with pytest.raises(ConfigurationError, match="PGSESSION_CREATE_TABLE must be True or False"):
        make_flask(PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema, PGSESSION_CREATE_TABLE="nope")


# -- ASGI -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("create_table", [True, False], ids=["default", "create_table=False"])
async def test_the_asgi_app_runs_under_the_role(
    pg_dsn: str, schema: str, role: str, create_table: bool
) -> None:
    assert init(pg_dsn, schema, "--grant", role) == 0
    store = AsyncPostgresStore(
        as_role(pg_dsn, role), "sessions", schema, purge_interval=None, create_table=create_table
    )
    app = starlette_app(store)
    try:
        await store.open()
        async with http_client(app) as client:
            assert [(await client.get("/inc")).json() for _ in range(3)] == [1, 2, 3]
            assert (await client.get("/login?user=alice")).status_code == 200
        assert await store.stats() == {**await store.stats(), "live": 1}
    finally:
        await store.close()


async def test_the_asgi_app_without_create_privilege_stops_at_startup(
    pg_dsn: str, schema: str, role: str
) -> None:
    store = AsyncPostgresStore(as_role(pg_dsn, role), "sessions", schema, purge_interval=None)
    try:
        with pytest.raises(PrivilegeError, match="permission denied for schema"):
            await store.open()
    finally:
        await store.close()


async def test_the_asgi_store_with_the_table_but_not_the_grants_stops_at_open(
    pg_dsn: str, schema: str, role: str
) -> None:
    assert init(pg_dsn, schema) == 0
    owner = psycopg2.connect(pg_dsn)
    owner.autocommit = True
    with owner, owner.cursor() as cur:
        cur.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        cur.execute(f'GRANT SELECT ON "{schema}"."sessions" TO "{role}"')
    owner.close()
    dsn = as_role(pg_dsn, role)
    store = AsyncPostgresStore(dsn, "sessions", schema, purge_interval=None, create_table=False)
    try:
        with pytest.raises(PrivilegeError, match="permission denied for table sessions") as raised:
            await store.open()
        grant = f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{schema}"."sessions" TO "{role}"'
        assert grant in str(raised.value)
    finally:
        await store.close()
