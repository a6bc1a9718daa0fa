"""Tests that kill mutants the rest of the suite let survive (tests/MUTATION.md lists them).

Each test names, in its docstring, the mutants it was written for (mutmut's names, e.g.
``codec.xǁCodecǁregister__mutmut_20``: the module, the function, the mutation's number). The
tests that need a database use the real one through the fixtures in conftest.py: nothing is mocked.
"""

from __future__ import annotations

import logging
import threading  # noqa: E402
from datetime import timedelta
from typing import Any

import psycopg2
import pytest

from pgsession_wsgi import ConfigurationError  # noqa: E402
from pgsession_wsgi.cookies import hash_session_id
from pgsession_wsgi.errors import (  # noqa: E402
    SessionError,
)
from pgsession_wsgi.store import PostgresStore  # noqa: E402


def test_the_purge_on_an_apps_pool_borrows_and_purges(
    pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """purge.xǁPurgeWorkerǁrun__mutmut_9, _10: the per-batch purge on borrowed connections."""
    import psycopg2.pool
    from db import sql
    from helpers import wait_for

    pool = psycopg2.pool.ThreadedConnectionPool(1, 2, pg_dsn)
    store = PostgresStore.from_pool(pool, schema=schema, purge_interval=0.05)
    try:
        with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
            store.stats()  # creates the table and starts the worker
            sql(
                pg_dsn,
                f"INSERT INTO {store.qualified_name} (id, data, expires_at)"
                " SELECT sha256(g::text::bytea), '{}'::jsonb, now() - interval '1 hour'"
                " FROM generate_series(1, 4) g",
                None,
            )
            wait_for(lambda: any("purged" in r.getMessage() for r in caplog.records), "a purge")
        assert [r.getMessage() for r in caplog.records if "purged" in r.getMessage()][0] == (
            f"purged 4 expired sessions from {store.qualified_name}"
        )
    finally:
        store.close()
        pool.closeall()


# -- store: stats, a user's sessions, revoking, purging, the retry on a dropped connection -----


def _add_rows(store: PostgresStore, rows: list[tuple[str, str | None, str]]) -> None:
    """Rows of ``(session id, user id or None, expiry offset from now)``, written as SQL."""
    from db import sql

    for session_id, user_id, offset in rows:
        sql(
            store,
            f"INSERT INTO {store.qualified_name} (id, data, user_id, expires_at)"
            " VALUES (%s, '{}'::jsonb, %s, now() + %s::interval)",
            (hash_session_id(session_id), user_id, offset),
        )


def _dropped_mid_statement(store: PostgresStore, call: Any) -> Any:
    """``call()``'s answer when the server ends its connection while its statement runs.

    Another connection locks the table, so the statement waits; its backend is then terminated
    (as a server restart or a failover would), and the lock released.
    """
    from db import sql
    from helpers import wait_for

    locker = psycopg2.connect(store.dsn)
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # the answer under test may be an error
            outcome.append(exc)

    try:
        with locker.cursor() as cur:
            cur.execute(f"LOCK TABLE {store.qualified_name} IN ACCESS EXCLUSIVE MODE")
        thread = threading.Thread(target=run)
        thread.start()
        waiting = "SELECT pid FROM pg_locks WHERE relation = to_regclass(%s) AND NOT granted"
        wait_for(
            lambda: sql(store.dsn, waiting, (store.qualified_name,)), "the statement to wait on the lock"
        )
        ((pid,),) = sql(store.dsn, waiting, (store.qualified_name,))
        sql(store.dsn, "SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(
            lambda: not sql(store.dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)),
            "the waiting backend to end",
        )
    finally:
        locker.rollback()
        locker.close()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return outcome[0]


# -- store: prepared statements, the other request statements, purging batch by batch ---------

_DAY = timedelta(days=1)


def _insert(store: PostgresStore, session_id: str, data_json: str = '{"a": 1}') -> None:
    store.insert(hash_session_id(session_id), data_json, None, _DAY, None)


def _prepared_here(store: PostgresStore) -> int:
    # Seam: pg_prepared_statements shows only on the store's own connection, which only _run reaches.
    return store._run(
        lambda cur: (cur.execute("SELECT count(*) FROM pg_prepared_statements"), cur.fetchone())[1][0],
        retry=True,
    )


def test_request_statements_are_prepared_and_recover_when_the_server_loses_them(
    make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """store.xǁPostgresStoreǁ_send__mutmut_1, _2, _40 to _52.

    Prepared on the store's own connection; when they are gone (DEALLOCATE, as PgBouncer's
    server switch does), the store says so once and sends plain statements from then on.
    """
    store = make_store(max_connections=1)
    _insert(store, "one")
    assert store.load(hash_session_id("one"), _DAY) is not None
    assert _prepared_here(store) == 2  # insert and load
    # Seam: only SQL run on the store's own connection can make its server session forget them.
    store._run(lambda cur: cur.execute("DEALLOCATE ALL"), retry=True)
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        row = store.load(hash_session_id("one"), _DAY)
        _insert(store, "two")
        other = store.load(hash_session_id("two"), _DAY)
    assert row is not None and other is not None
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "prepared statements dropped by the server side (PgBouncer?); sending plain statements"
    ]
    assert _prepared_here(store) == 0


def test_without_prepared_statements_the_plain_text_is_sent(make_store: Any) -> None:
    """store.xǁPostgresStoreǁ_send__mutmut_2 to _10."""
    store = make_store(prepared_statements=False)
    _insert(store, "one")
    row = store.load(hash_session_id("one"), _DAY)
    assert row is not None
    assert _prepared_here(store) == 0


def test_a_prepare_whose_execute_failed_is_not_prepared_twice(
    make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """store.xǁPostgresStoreǁ_send__mutmut_23, _32 to _34, _36 to _39.

    ``PREPARE ...; EXECUTE ...`` where the EXECUTE fails (bad JSON) leaves the statement
    prepared: the next insert uses it, without turning prepared statements off.
    """
    store = make_store(max_connections=1)
    store.stats()
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        with pytest.raises(SessionError):
            _insert(store, "bad", "{not json")
        _insert(store, "good")
        _insert(store, "better")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []
    assert store.load(hash_session_id("good"), _DAY) is not None
    assert store.load(hash_session_id("better"), _DAY) is not None
    assert _prepared_here(store) == 2  # the insert, and the load prepared after it: still on


def test_a_prepare_that_failed_is_sent_again(make_store: Any, caplog: pytest.LogCaptureFixture) -> None:
    """store.xǁPostgresStoreǁ_send__mutmut_24: the table was missing, so the PREPARE failed too."""
    from db import sql

    store = make_store(max_connections=1)
    store.stats()
    name = store.qualified_name.split(".")[1]
    sql(store, f"ALTER TABLE {store.qualified_name} RENAME TO gone", None)
    with pytest.raises(SessionError):
        store.load(hash_session_id("one"), _DAY)
    sql(store, f"ALTER TABLE {store.qualified_name.split('.')[0]}.gone RENAME TO {name}", None)
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"):
        assert store.load(hash_session_id("one"), _DAY) is None
    assert caplog.records == []
    assert _prepared_here(store) == 1


def test_a_store_on_an_apps_pool_opens_no_connection_and_says_how_to_purge(pg_dsn: str, schema: str) -> None:
    """store.xǁPostgresStoreǁconnect_unpooled__mutmut_1 to _3 and _lent__mutmut_35."""
    import psycopg2.pool

    pool = psycopg2.pool.ThreadedConnectionPool(1, 2, pg_dsn)
    store = PostgresStore.from_pool(pool, schema=schema)
    try:
        with pytest.raises(ConfigurationError) as error:
            store.connect_unpooled()
        assert str(error.value) == (
            "this store borrows every connection from your psycopg2 pool and opens none of its "
            "own; purge with purge_expired() or purge_batch_by_batch()"
        )
    finally:
        store.close()
        pool.closeall()


# -- store: on an app's psycopg2 pool, the DDL, purging on a connection of one's own -----------


def _blocked(
    dsn: str, store: PostgresStore, call: Any, *, until_it_gives_up: bool = False
) -> tuple[str, Any]:
    """The text PostgreSQL shows for ``call()``'s statement while a lock holds it, and its answer.

    ``dsn`` is the database's (a store on an app's pool knows none). The lock is released once
    the text is seen, or, with ``until_it_gives_up``, once the call has ended by itself (a
    statement timeout).
    """
    from db import sql
    from helpers import wait_for

    locker = psycopg2.connect(dsn)
    outcome: list[Any] = []
    texts: list[str] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # the answer under test may be an error
            outcome.append(exc)

    def seen() -> bool:
        waiting = (
            "SELECT a.query FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.relation = to_regclass(%s) AND NOT l.granted"
        )
        if not texts:
            texts.extend(row[0] for row in sql(dsn, waiting, (store.qualified_name,)))
        return bool(texts) and (bool(outcome) or not until_it_gives_up)

    try:
        with locker.cursor() as cur:
            cur.execute(f"LOCK TABLE {store.qualified_name} IN ACCESS EXCLUSIVE MODE")
            thread = threading.Thread(target=run)
            thread.start()
            wait_for(seen, "the statement to wait on the lock")
    finally:
        locker.rollback()
        locker.close()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return texts[0], outcome[0]


def test_a_store_on_an_apps_pool_sets_its_settings_on_each_statement(pg_dsn: str, schema: str) -> None:
    """store.xǁPostgresStoreǁfrom_pool__mutmut_2, _3, _5, _9, _19, _20, _23, _27, _28, _29, _30,
    _31 and _lent__mutmut_5, _6, _12, _13, _16, _20 to _24, _28.

    No startup option reaches a connection the app made: the statement timeout and
    synchronous_commit are set with SET LOCAL before each statement, and the timeout's error
    names the value to raise.
    """
    import psycopg2.pool

    from pgsession_wsgi.errors import StoreUnavailable as Unavailable

    pool = psycopg2.pool.ThreadedConnectionPool(1, 4, pg_dsn)
    stores: list[PostgresStore] = []
    try:
        with pytest.raises(ConfigurationError) as error:
            PostgresStore.from_pool(pool, schema=schema, purge_interval=0)
        assert str(error.value) == "purge_interval must be a positive number of seconds, or None"

        default = PostgresStore.from_pool(pool, schema=schema, purge_interval=None)
        stores.append(default)
        assert (default.statement_timeout, default.unlogged, default.purge_interval) == (5.0, False, None)
        assert default.borrows_connections
        default.stats()  # creates the table
        assert sql_rows(pg_dsn, default) == [("p",)]
        text, answer = _blocked(pg_dsn, default, default.stats)
        assert text.startswith("SET LOCAL statement_timeout = 5000; SELECT")
        assert "synchronous_commit" not in text
        assert answer["live"] == 0

        quick = PostgresStore.from_pool(
            pool, "other", schema=schema, statement_timeout=0.2, synchronous_commit=False, unlogged=True
        )
        stores.append(quick)
        quick.stats()
        assert sql_rows(pg_dsn, quick) == [("u",)]
        text, answer = _blocked(pg_dsn, quick, quick.stats, until_it_gives_up=True)
        assert text.startswith("SET LOCAL statement_timeout = 200; SET LOCAL synchronous_commit = off; ")
        assert isinstance(answer, Unavailable)
        assert str(answer) == (
            "a session statement ran longer than statement_timeout=0.2s; check the database load, "
            "or raise statement_timeout"
        )
    finally:
        for store in stores:
            store.close()
        pool.closeall()


def sql_rows(dsn: str, store: PostgresStore) -> list[tuple[Any, ...]]:
    """The table's persistence: ``p`` logged, ``u`` unlogged."""
    from db import sql

    return sql(
        dsn, "SELECT relpersistence FROM pg_class WHERE oid = to_regclass(%s)", (store.qualified_name,)
    )


def test_a_store_on_a_connection_factory_checks_its_options_and_sets_its_settings(
    pg_dsn: str, schema: str
) -> None:
    """store.xǁPostgresStoreǁfrom_factory__mutmut_2, _4, _5, _7 to _21, _23 to _37, _39 to _46, _48 to _56,
    _58 to _60: the refusals, the defaults, the settings
    reaching each statement (the factory's connections lack them), the table's persistence."""
    from pgsession_wsgi.errors import StoreUnavailable as Unavailable

    with pytest.raises(ConfigurationError) as error:
        PostgresStore.from_factory("not callable")  # type: ignore[arg-type]
    assert str(error.value) == (
        "from_factory() takes a callable returning a new psycopg2 connection, "
        "e.g. lambda: psycopg2.connect(dsn)"
    )
    with pytest.raises(ConfigurationError) as error:
        PostgresStore.from_factory(lambda: psycopg2.connect(pg_dsn), schema=schema, purge_interval=0)
    assert str(error.value) == "purge_interval must be a positive number of seconds, or None"
    with pytest.raises(ConfigurationError) as error:
        PostgresStore.from_factory(lambda: psycopg2.connect(pg_dsn), schema=schema, max_connections=0)
    assert str(error.value) == "max_connections must be at least 1"

    stores: list[PostgresStore] = []
    try:
        default = PostgresStore.from_factory(
            lambda: psycopg2.connect(pg_dsn), schema=schema, purge_interval=None
        )
        stores.append(default)
        assert (default.statement_timeout, default.unlogged, default.purge_interval) == (5.0, False, None)
        assert not default.borrows_connections
        with pytest.raises(ConfigurationError) as error:
            default.dsn  # noqa: B018
        assert str(error.value) == (
            "this store takes its connections from your connection factory and knows no DSN; use the DSN "
            "your app opens them with (e.g. pgsession-wsgi --dsn ...)"
        )
        _insert(default, "one")
        assert default.load(hash_session_id("one"), _DAY) is not None
        assert sql_rows(pg_dsn, default) == [("p",)]

        quick = PostgresStore.from_factory(
            lambda: psycopg2.connect(pg_dsn),
            "other",
            schema=schema,
            statement_timeout=0.2,
            synchronous_commit=False,
            unlogged=True,
            purge_interval=None,
        )
        stores.append(quick)
        quick.stats()
        assert sql_rows(pg_dsn, quick) == [("u",)]
        _, answer = _blocked(pg_dsn, quick, quick.stats, until_it_gives_up=True)
        assert isinstance(answer, Unavailable)
        assert str(answer) == (
            "a session statement ran longer than statement_timeout=0.2s; check the database load, "
            "or raise statement_timeout"
        )
    finally:
        for store in stores:
            store.close()


def test_a_store_on_an_engine_checks_its_options_and_sets_its_settings(
    pg_dsn: str, schema: str, make_engine: Any
) -> None:
    """store.xǁPostgresStoreǁfrom_engine__mutmut_1 to _12, _16 to _21, _23 to _32: the refusal,
    the defaults, the settings on each statement (SET LOCAL), the table's persistence."""
    from pgsession_wsgi.errors import StoreUnavailable as Unavailable

    engine = make_engine(pg_dsn)
    with pytest.raises(ConfigurationError) as error:
        PostgresStore.from_engine(engine, schema=schema, purge_interval=0)
    assert str(error.value) == "purge_interval must be a positive number of seconds, or None"
    stores: list[PostgresStore] = []
    try:
        default = PostgresStore.from_engine(engine, schema=schema, purge_interval=None)
        stores.append(default)
        assert (default.statement_timeout, default.unlogged, default.purge_interval) == (5.0, False, None)
        assert default.borrows_connections
        default.stats()
        assert sql_rows(pg_dsn, default) == [("p",)]
        text, answer = _blocked(pg_dsn, default, default.stats)
        assert text.startswith("SET LOCAL statement_timeout = 5000; SELECT")
        assert answer["live"] == 0

        quick = PostgresStore.from_engine(
            engine,
            "other",
            schema=schema,
            statement_timeout=0.2,
            synchronous_commit=False,
            unlogged=True,
            purge_interval=None,
        )
        stores.append(quick)
        quick.stats()
        assert sql_rows(pg_dsn, quick) == [("u",)]
        text, answer = _blocked(pg_dsn, quick, quick.stats, until_it_gives_up=True)
        assert text.startswith("SET LOCAL statement_timeout = 200; SET LOCAL synchronous_commit = off; ")
        assert isinstance(answer, Unavailable)
        assert "statement_timeout=0.2s" in str(answer)
    finally:
        for store in stores:
            store.close()
