"""``unlogged=True``: the session table without WAL, on a real PostgreSQL (``pg_class.relpersistence``).

A table is created unlogged (its indexes with it) or logged as the option says; an existing table
that disagrees is refused with the command that converts it, and converted only when asked
(``create_table(convert=True)``, ``pgsession-wsgi init --unlogged`` / ``--logged``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import timedelta

import pytest
from db import sql

from pgsession_wsgi import PostgresStore
from pgsession_wsgi.async_store import AsyncPostgresStore
from pgsession_wsgi.cli import main
from pgsession_wsgi.errors import ConfigurationError

HOUR = timedelta(hours=1)


def persistence(store: PostgresStore | AsyncPostgresStore) -> dict[str, str]:
    """relpersistence of the table and of each of its indexes ('u' unlogged, 'p' permanent)."""
    rows = sql(
        store.dsn,
        "SELECT c.relname, c.relpersistence FROM pg_class c WHERE c.oid = to_regclass(%s)"
        " UNION ALL SELECT i.relname, i.relpersistence FROM pg_index x"
        " JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = to_regclass(%s)",
        (store.qualified_name, store.qualified_name),
    )
    return {str(name): str(kind) for name, kind in rows}


def test_unlogged_store_creates_an_unlogged_table_and_indexes(
    make_store: Callable[..., PostgresStore],
) -> None:
    store = make_store(unlogged=True)
    store.create_table()
    kinds = persistence(store)
    assert len(kinds) == 4  # the table, its primary key and two indexes
    assert set(kinds.values()) == {"u"}


def test_default_store_creates_a_logged_table(make_store: Callable[..., PostgresStore]) -> None:
    store = make_store()
    store.create_table()
    assert set(persistence(store).values()) == {"p"}


def test_sessions_round_trip_in_an_unlogged_table(make_store: Callable[..., PostgresStore]) -> None:
    store = make_store(unlogged=True)
    id_hash = os.urandom(32)
    store.insert(id_hash, json.dumps({"a": 1}), user_id=None, idle=HOUR, absolute=None)
    row = store.load(id_hash, timedelta(minutes=1))
    assert row is not None and row.data == {"a": 1}


def test_the_option_is_created_on_first_use_too(make_store: Callable[..., PostgresStore]) -> None:
    store = make_store(unlogged=True)
    assert store.load(os.urandom(32), timedelta(minutes=1)) is None  # creates the table
    assert set(persistence(store).values()) == {"u"}


@pytest.mark.parametrize("create_table", [True, False])
def test_a_logged_table_is_refused_by_an_unlogged_store(
    make_store: Callable[..., PostgresStore], create_table: bool
) -> None:
    make_store().create_table()
    store = make_store(unlogged=True, create_table=create_table)
    with pytest.raises(ConfigurationError, match=r"init --unlogged.*SET UNLOGGED"):
        store.load(os.urandom(32), timedelta(minutes=1))
    assert set(persistence(store).values()) == {"p"}  # never converted on the way


@pytest.mark.parametrize("create_table", [True, False])
def test_an_unlogged_table_is_refused_by_a_logged_store(
    make_store: Callable[..., PostgresStore], create_table: bool
) -> None:
    make_store(unlogged=True).create_table()
    store = make_store(create_table=create_table)
    with pytest.raises(ConfigurationError, match=r"UNLOGGED.*unlogged=True.*init --logged"):
        store.load(os.urandom(32), timedelta(minutes=1))
    assert set(persistence(store).values()) == {"u"}


def test_none_takes_the_table_as_it_is(make_store: Callable[..., PostgresStore]) -> None:
    make_store(unlogged=True).create_table()
    store = make_store(unlogged=None, create_table=False)
    assert store.load(os.urandom(32), timedelta(minutes=1)) is None
    fresh = make_store(unlogged=None, table="fresh")
    fresh.create_table()
    assert set(persistence(fresh).values()) == {"p"}  # a new one is logged


def test_convert_makes_an_existing_table_unlogged_and_back_keeping_its_rows(
    make_store: Callable[..., PostgresStore],
) -> None:
    logged = make_store()
    id_hash = os.urandom(32)
    logged.insert(id_hash, json.dumps({"kept": True}), user_id="u1", idle=HOUR, absolute=None)
    unlogged = make_store(unlogged=True)
    unlogged.create_table(convert=True)
    assert set(persistence(unlogged).values()) == {"u"}
    row = unlogged.load(id_hash, timedelta(minutes=1))
    assert row is not None and row.data == {"kept": True}
    back = make_store(unlogged=False)
    back.create_table(convert=True)
    assert set(persistence(back).values()) == {"p"}
    assert back.load(id_hash, timedelta(minutes=1)) is not None


def test_ddl_says_unlogged(make_store: Callable[..., PostgresStore]) -> None:
    assert "CREATE UNLOGGED TABLE IF NOT EXISTS" in make_store(unlogged=True).ddl()
    ddl = make_store().ddl()
    assert "CREATE TABLE IF NOT EXISTS" in ddl and "UNLOGGED" not in ddl


def test_cli_init_unlogged_and_logged(
    make_store: Callable[..., PostgresStore], pg_dsn: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--dsn", pg_dsn, "--schema", schema]
    assert main(["init", *where, "--unlogged"]) == 0
    store = make_store(unlogged=None)
    assert set(persistence(store).values()) == {"u"}
    assert main(["init", *where]) == 0  # neither flag: left as it is
    assert set(persistence(store).values()) == {"u"}
    assert main(["stats", *where]) == 0  # maintenance commands take either kind
    assert main(["init", *where, "--logged"]) == 0
    assert set(persistence(store).values()) == {"p"}
    assert "unlogged" in capsys.readouterr().out
    assert main(["init", "--sql", "--unlogged", "--schema", schema]) == 0
    assert "CREATE UNLOGGED TABLE" in capsys.readouterr().out


@pytest.mark.anyio
async def test_async_store_unlogged(make_async_store: Callable[..., AsyncPostgresStore]) -> None:
    store = make_async_store(unlogged=True)
    await store.create_table()
    assert set(persistence(store).values()) == {"u"}
    refusing = make_async_store()
    with pytest.raises(ConfigurationError, match="UNLOGGED"):
        await refusing.create_table()
    converting = make_async_store(unlogged=False)
    await converting.create_table(convert=True)
    assert set(persistence(store).values()) == {"p"}
    assert "CREATE UNLOGGED TABLE" in make_async_store(unlogged=True).ddl()


def test_flask_pgsession_unlogged_config(pg_dsn: str, schema: str) -> None:
    flask = pytest.importorskip("flask")
    from pgsession_wsgi.flask import PgSession

    app = flask.Flask(__name__)
    app.config.update(
        SECRET_KEY="unlogged", PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema, PGSESSION_UNLOGGED=True
    )
    extension = PgSession(app)
    try:
        assert set(persistence(extension.get_middleware(app).store).values()) == {"u"}
        other = flask.Flask(__name__)
        other.config.update(SECRET_KEY="unlogged", PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
        with pytest.raises(ConfigurationError, match="PGSESSION_UNLOGGED"):
            PgSession(other)  # refused at start, not converted
    finally:
        extension.get_middleware(app).store.close()
