"""The user's DSN wins: what it (or libpq's PG* variables) names is what the store connects with.

Every store test runs against the real database and reads the settings back from a connection the
store opens as it opens its pooled ones, once with a ``postgresql://`` URL and once with a
``key=value`` DSN; what the store then sends with each statement is read on the wire. The parts
(options parsing, connect arguments) without a server are in tests/unit/test_dsn.py.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

import psycopg2
import psycopg2.extensions
import pytest
from apps.support import free_port
from wire import RoundTripCounter

from pgsession_wsgi.async_store import AsyncPostgresStore
from pgsession_wsgi.errors import ConfigurationError, SessionError, StoreUnavailable
from pgsession_wsgi.legacy import NothingToMigrate, migrate_flask_pg_session
from pgsession_wsgi.store import PostgresStore

# Parameters the store has defaults for; stripped from the test DSN so "silent" really is silent.
STORE_PARAMETERS = (
    "application_name",
    "options",
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
)
LIBPQ_VARIABLES = ("PGAPPNAME", "PGCONNECT_TIMEOUT", "PGOPTIONS")


@pytest.fixture(autouse=True)
def _no_libpq_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own PGAPPNAME or PGOPTIONS must not decide these tests."""
    for name in LIBPQ_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def as_url(parts: dict[str, str]) -> str:
    """A ``postgresql://user@host:port/db?...`` URL; a unix-socket host goes in the query."""
    params = dict(parts)
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", "")
    host = params.pop("host", "")
    port = params.pop("port", "")
    dbname = params.pop("dbname", "")
    auth = user + (":" + quote(password, safe="") if password else "") + ("@" if user or password else "")
    netloc = auth
    if host.startswith("/") or "," in host:
        params["host"] = host
        if port:
            params["port"] = port
    else:
        netloc += host + (f":{port}" if port else "")
    query = urlencode(params, quote_via=quote)
    return f"postgresql://{netloc}/{quote(dbname, safe='')}" + (f"?{query}" if query else "")


@pytest.fixture(params=["url", "key=value"])
def make_dsn(request: pytest.FixtureRequest, pg_dsn: str) -> Callable[..., str]:
    """``make_dsn(**params)``: the test database's DSN with these parameters, in one form or the other."""
    base = psycopg2.extensions.parse_dsn(pg_dsn)
    for name in STORE_PARAMETERS:
        base.pop(name, None)

    def make(**params: str) -> str:
        parts = {**base, **params}
        if request.param == "url":
            dsn = as_url(parts)
            assert dsn.startswith("postgresql://")
        else:
            dsn = psycopg2.extensions.make_dsn(**parts)
            assert "://" not in dsn
        assert psycopg2.extensions.parse_dsn(dsn) == parts  # the form says exactly what we asked
        return dsn

    return make


def connection_facts(store: PostgresStore, *settings: str) -> dict[str, Any]:
    """Read the parameters and settings of a connection the store opens as it opens its pooled
    ones (``connect_unpooled``: the same arguments, the same first-connection check)."""
    store.create_table()
    conn = store.connect_unpooled()
    try:
        with conn.cursor() as cur:
            facts: dict[str, Any] = dict(conn.get_dsn_parameters())
            cur.execute("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            facts["pg_stat_activity.application_name"] = cur.fetchone()[0]  # type: ignore[index]
            for name in ("application_name", *settings):
                cur.execute(f"SHOW {name}")
                facts[f"SHOW {name}"] = cur.fetchone()[0]  # type: ignore[index]
    finally:
        conn.close()
    return facts


def through(counter: RoundTripCounter) -> dict[str, str]:
    """The host and port parameters that point a DSN at ``counter``."""
    return {"host": "127.0.0.1", "port": str(counter.port)}


def statements_sent(store: PostgresStore, counter: RoundTripCounter) -> list[str]:
    """What an insert, a load and the stats send once the store's first connection is checked."""
    store.create_table()
    counter.reset()
    id_hash = os.urandom(32)
    store.insert(id_hash, "{}", None, timedelta(minutes=5), None)
    store.load(id_hash, timedelta(minutes=1))
    store.stats()
    return counter.statements


def timeout_message(store: PostgresStore, pg_dsn: str) -> str:
    """The error of a store statement that outlasts the statement timeout (it waits for a row lock)."""
    id_hash = os.urandom(32)
    store.insert(id_hash, "{}", None, timedelta(minutes=5), None)
    locker = psycopg2.connect(pg_dsn)
    try:
        with locker.cursor() as cur:
            cur.execute(f"SELECT 1 FROM {store.qualified_name} WHERE id = %s FOR UPDATE", (id_hash,))
        with pytest.raises(StoreUnavailable) as caught:
            store.delete(id_hash)
        return str(caught.value)
    finally:
        locker.rollback()
        locker.close()


# -- through a real store ------------------------------------------------------------------------


def test_the_dsns_connection_parameters_win(
    make_store: Callable[..., PostgresStore], make_dsn: Callable[..., str]
) -> None:
    dsn = make_dsn(
        application_name="shop",
        connect_timeout="7",
        keepalives="1",
        keepalives_idle="42",
        keepalives_interval="3",
        keepalives_count="9",
        sslmode="disable",
    )
    facts = connection_facts(make_store(dsn=dsn, connect_timeout=5))
    assert facts["SHOW application_name"] == "shop"
    assert facts["pg_stat_activity.application_name"] == "shop"
    assert facts["application_name"] == "shop"
    assert facts["connect_timeout"] == "7"
    assert (facts["keepalives_idle"], facts["keepalives_interval"], facts["keepalives_count"]) == (
        "42",
        "3",
        "9",
    )
    assert facts["sslmode"] == "disable"


def test_dsn_options_apply_with_the_stores_settings_and_defaults_fill_the_rest(
    make_store: Callable[..., PostgresStore],
    make_dsn: Callable[..., str],
    schema: str,
    wire_counter: RoundTripCounter,
    pg_dsn: str,
) -> None:
    dsn = make_dsn(**through(wire_counter), options=f"-c search_path={schema},public -c work_mem=5MB")
    store = make_store(dsn=dsn, statement_timeout=0.5, synchronous_commit=False)
    facts = connection_facts(store, "search_path", "work_mem", "statement_timeout", "synchronous_commit")
    assert facts["SHOW search_path"] == f"{schema},public"
    assert facts["SHOW work_mem"] == "5MB"
    assert facts["SHOW statement_timeout"] == "500ms"
    assert facts["SHOW synchronous_commit"] == "off"
    # Found kept at the first connection: nothing is set again with each statement...
    sent = statements_sent(store, wire_counter)
    assert not [s for s in sent if "SET LOCAL" in s], sent
    # ...and the timeout is the store's own, which its error names.
    assert timeout_message(store, pg_dsn).startswith(
        "a session statement ran longer than statement_timeout=0.5s;"
    )
    # Where the DSN is silent, the store's own values.
    assert facts["SHOW application_name"] == "pgsession-wsgi"
    assert facts["connect_timeout"] == "5"
    assert (facts["keepalives"], facts["keepalives_idle"], facts["keepalives_count"]) == ("1", "10", "3")


@pytest.mark.parametrize(
    "options",
    [
        "-c statement_timeout=10s",
        "-cstatement_timeout=10s",
        "--statement-timeout=10s",
        "-c STATEMENT_TIMEOUT=10s",
    ],
)
def test_a_dsn_statement_timeout_wins_and_is_not_reapplied(
    make_store: Callable[..., PostgresStore],
    make_dsn: Callable[..., str],
    options: str,
    wire_counter: RoundTripCounter,
) -> None:
    store = make_store(dsn=make_dsn(**through(wire_counter), options=options), statement_timeout=2)
    facts = connection_facts(store, "statement_timeout")
    assert facts["SHOW statement_timeout"] == "10s"
    # The store owns nothing here, so the first-connection check cannot take the user's value
    # for a dropped startup option and override it with SET LOCAL on every statement (nor turn
    # prepared statements off, as it does when it finds its settings dropped).
    sent = statements_sent(store, wire_counter)
    assert not [s for s in sent if "SET LOCAL" in s], sent
    assert sent[0].startswith("PREPARE pgsession_insert_"), sent


def test_a_dsn_synchronous_commit_wins_while_the_stores_timeout_stays(
    make_store: Callable[..., PostgresStore],
    make_dsn: Callable[..., str],
    wire_counter: RoundTripCounter,
    pg_dsn: str,
) -> None:
    dsn = make_dsn(**through(wire_counter), options="-c synchronous_commit=local")
    store = make_store(dsn=dsn, synchronous_commit=False, statement_timeout=0.5)
    facts = connection_facts(store, "synchronous_commit", "statement_timeout")
    assert facts["SHOW synchronous_commit"] == "local"
    assert facts["SHOW statement_timeout"] == "500ms"
    sent = statements_sent(store, wire_counter)
    assert not [s for s in sent if "SET LOCAL" in s], sent
    assert timeout_message(store, pg_dsn).startswith(
        "a session statement ran longer than statement_timeout=0.5s;"
    )


def test_libpq_variables_win_over_the_stores_defaults(
    make_store: Callable[..., PostgresStore],
    make_dsn: Callable[..., str],
    schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGAPPNAME", "from-env")
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "8")
    monkeypatch.setenv("PGOPTIONS", f"-c search_path={schema}")
    store = make_store(dsn=make_dsn(), statement_timeout=3)
    facts = connection_facts(store, "search_path", "statement_timeout")
    assert facts["SHOW application_name"] == "from-env"
    assert facts["pg_stat_activity.application_name"] == "from-env"
    assert facts["connect_timeout"] == "8"
    assert facts["SHOW search_path"] == schema
    assert facts["SHOW statement_timeout"] == "3s"


def test_the_dsn_wins_over_the_libpq_variables_too(
    make_store: Callable[..., PostgresStore],
    make_dsn: Callable[..., str],
    schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libpq ignores PGOPTIONS when the DSN has options; merging must not bring it back."""
    monkeypatch.setenv("PGAPPNAME", "from-env")
    monkeypatch.setenv("PGOPTIONS", "-c work_mem=7MB")
    dsn = make_dsn(application_name="shop", options=f"-c search_path={schema}")
    facts = connection_facts(make_store(dsn=dsn), "search_path", "work_mem", "statement_timeout")
    assert facts["SHOW application_name"] == "shop"
    assert facts["SHOW search_path"] == schema
    assert facts["SHOW work_mem"] != "7MB"
    assert facts["SHOW statement_timeout"] == "5s"


def test_migrate_connects_with_the_dsns_parameters(
    make_dsn: Callable[..., str], schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spies on psycopg2.connect only to see the real connection it returns."""
    seen: list[tuple[dict[str, str], str | None]] = []
    real_connect = psycopg2.connect

    def spy(*args: Any, **kwargs: Any) -> psycopg2.extensions.connection:
        conn: psycopg2.extensions.connection = real_connect(*args, **kwargs)
        seen.append((conn.get_dsn_parameters(), conn.info.parameter_status("application_name")))
        return conn

    monkeypatch.setattr(psycopg2, "connect", spy)
    with pytest.raises(NothingToMigrate):  # connects first, then finds no table
        migrate_flask_pg_session(
            make_dsn(application_name="shop-migrate", connect_timeout="4"), schema=schema
        )
    assert len(seen) == 1
    parameters, server_application_name = seen[0]
    assert server_application_name == "shop-migrate"
    assert parameters["connect_timeout"] == "4"


# -- a failing DSN's password is in no message, traceback or log line -----------------------------

PASSWORD = "Zq8-store-Secret"


def everything_printed(exc: BaseException) -> str:
    """What a log or a crash would show: the traceback with its __cause__/__context__ chain, the repr."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) + repr(exc)


def failing_dsns() -> list[tuple[str, type[SessionError]]]:
    """DSNs with PASSWORD that fail: on 127.0.0.1 at a port nothing listens on, or malformed."""
    port = free_port()
    return [
        (f"postgresql://someone:{PASSWORD}@127.0.0.1:{port}/nodb", StoreUnavailable),
        (f"host=127.0.0.1 port={port} user=someone password={PASSWORD} dbname=nodb", StoreUnavailable),
        # libpq's parse message quotes "<password>%zz"
        (f"postgresql://someone:{PASSWORD}%zz@127.0.0.1:{port}/nodb", ConfigurationError),
        # an unencoded '/' or '@': connecting would quote a piece of the password as port or host
        (f"postgresql://someone:{PASSWORD}/rest@127.0.0.1:{port}/nodb", ConfigurationError),
        (f"postgresql://someone:first@{PASSWORD}@127.0.0.1:{port}/nodb", ConfigurationError),
    ]


@pytest.mark.parametrize(("dsn", "error"), failing_dsns())
def test_the_store_never_shows_a_failing_dsns_password(
    dsn: str, error: type[SessionError], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(error) as caught:
        store = PostgresStore(dsn, purge_interval=None, connect_timeout=2)
        try:
            store.create_table()
        finally:
            store.close()
    assert PASSWORD not in everything_printed(caught.value)
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize(("dsn", "error"), failing_dsns())
async def test_the_async_store_never_shows_a_failing_dsns_password(
    dsn: str, error: type[SessionError], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(error) as caught:
        store = AsyncPostgresStore(dsn, purge_interval=None, connect_timeout=2)
        try:
            await store.create_table()
        finally:
            await store.close()
    assert PASSWORD not in everything_printed(caught.value)
    assert PASSWORD not in caplog.text
