"""A hash-partitioned session table (``partitions=N``, issue 25): made, used, purged and checked
like a plain one, by both stores, the Flask extension and the command line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg2
import pytest
from apps.asgi_apps import starlette_app
from apps.asgi_support import http_client
from apps.support import wsgi_call
from flask import Flask, session
from helpers import close_extension_stores

from pgsession_wsgi import ConfigurationError, PostgresStore, SessionMiddleware, get_session
from pgsession_wsgi.async_store import AsyncPostgresStore
from pgsession_wsgi.cli import main as cli_main
from pgsession_wsgi.flask import PgSession

SECRET = "partitions-secret-0123456789abcdef0123"


def query(dsn: str, text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(text, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def rows_per_partition(dsn: str, schema: str, table: str = "pgsession") -> dict[str, int]:
    """Each partition's name and how many rows it holds (empty for a plain table)."""
    names = query(
        dsn,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname",
        (f'"{schema}"."{table}"',),
    )
    return {name: query(dsn, f'SELECT count(*) FROM "{schema}"."{name}"')[0][0] for (name,) in names}


def counter(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    session = get_session(environ)
    if environ["PATH_INFO"] == "/login":
        session["_user_id"] = "alice"  # a login: the row moves to a new id, maybe another partition
    session["n"] = session.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(session["n"]).encode()]


def test_the_table_is_made_in_hash_partitions_and_requests_spread_over_them(
    pg_dsn: str, schema: str, make_store: Callable[..., PostgresStore]
) -> None:
    store = make_store(partitions=4)
    app = SessionMiddleware(counter, store, secret_key=SECRET)
    cookies = []
    for _ in range(40):
        response = wsgi_call(app, "/")
        cookies.append(response.cookie())
    counts = rows_per_partition(pg_dsn, schema)
    assert len(counts) == 4 and sum(counts.values()) == 40
    assert all(count > 0 for count in counts.values())  # 40 random ids: each of 4 partitions gets some
    # Reads, writes and a login (the id changes, so the row may move to another partition) work.
    for cookie in cookies[:10]:
        assert wsgi_call(app, "/", cookie=cookie).body == b"2"
        login = wsgi_call(app, "/login", cookie=cookie)
        assert login.body == b"3" and login.cookie() not in (None, cookie)
        assert wsgi_call(app, "/", cookie=login.cookie()).body == b"4"
    assert len(store.sessions_for_user("alice")) == 10
    assert sum(rows_per_partition(pg_dsn, schema).values()) == 40
    assert store.stats()["total_bytes"] > 0  # the partitions' sizes (the parent holds none)


def expired_sessions(app: SessionMiddleware, dsn: str, schema: str, count: int) -> None:
    """``count`` new sessions through ``app``, then every row of the table expired."""
    for _ in range(count):
        wsgi_call(app, "/")
    query(dsn, f"UPDATE \"{schema}\".pgsession SET expires_at = now() - interval '1 s'")


def test_the_purge_empties_every_partition_and_leaves_live_rows(
    pg_dsn: str, schema: str, make_store: Callable[..., PostgresStore]
) -> None:
    store = make_store(partitions=3)
    app = SessionMiddleware(counter, store, secret_key=SECRET)
    expired_sessions(app, pg_dsn, schema, 30)
    live = [wsgi_call(app, "/").cookie() for _ in range(5)]
    progress: list[tuple[int, int]] = []
    assert (
        store.purge_expired(batch_size=4, on_batch=lambda done, total: progress.append((done, total))) == 30
    )
    assert sum(rows_per_partition(pg_dsn, schema).values()) == 5
    assert progress[-1] == (30, 30) and [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert all(wsgi_call(app, "/", cookie=cookie).body == b"2" for cookie in live)


def test_a_stop_asked_by_on_batch_ends_the_purge_across_partitions(
    pg_dsn: str, schema: str, make_store: Callable[..., PostgresStore]
) -> None:
    store = make_store(partitions=4)
    app = SessionMiddleware(counter, store, secret_key=SECRET)
    expired_sessions(app, pg_dsn, schema, 40)
    removed = store.purge_expired(batch_size=2, on_batch=lambda done, total: done < 2)
    assert removed == 2 and sum(rows_per_partition(pg_dsn, schema).values()) == 38


async def test_the_async_store_makes_uses_and_purges_the_same_table(
    pg_dsn: str, schema: str, make_async_store: Callable[..., AsyncPostgresStore]
) -> None:
    store = make_async_store(partitions=2)
    await store.open()
    app = starlette_app(store)
    async with http_client(app) as client:
        assert [(await client.get("/inc")).json() for _ in range(3)] == [1, 2, 3]
        for _ in range(9):
            client.cookies.clear()
            assert (await client.get("/inc")).json() == 1
    counts = rows_per_partition(pg_dsn, schema)
    assert len(counts) == 2 and sum(counts.values()) == 10
    query(pg_dsn, f"UPDATE \"{schema}\".pgsession SET expires_at = now() - interval '1 s'")
    assert await store.purge_expired(batch_size=1) == 10


def test_a_store_without_the_option_takes_a_partitioned_table_as_it_is(
    pg_dsn: str, schema: str, make_store: Callable[..., PostgresStore]
) -> None:
    make_store(partitions=2).create_table()
    plain_view = make_store()
    app = SessionMiddleware(counter, plain_view, secret_key=SECRET)
    cookie = wsgi_call(app, "/").cookie()
    assert wsgi_call(app, "/", cookie=cookie).body == b"2"
    query(pg_dsn, f"UPDATE \"{schema}\".pgsession SET expires_at = now() - interval '1 s'")
    assert plain_view.purge_expired() == 1


@pytest.mark.parametrize(
    ("made", "asked", "found"),
    [(None, 4, "is not partitioned"), (4, 8, "is partitioned into 4 (strategy 'h')")],
    ids=["plain table", "other count"],
)
def test_a_table_partitioned_otherwise_is_refused_naming_what_it_is(
    schema: str, make_store: Callable[..., PostgresStore], made: int | None, asked: int, found: str
) -> None:
    make_store(partitions=made).create_table()
    with pytest.raises(ConfigurationError) as refused:
        make_store(partitions=asked).create_table()
    assert str(refused.value) == (
        f'the session table "{schema}"."pgsession" {found}, but the store was told partitions={asked}: '
        "pass the number it has (or partitions=None to take it as it is); a plain table becomes a "
        "partitioned one only by copying its rows into a new table (see docs/deployment.md, "
        "A table that scales out)"
    )
    with pytest.raises(ConfigurationError, match="store was told partitions"):
        make_store(partitions=asked, create_table=False).stats()  # the check without creating


@pytest.mark.parametrize("partitions", [0, 1, 1025, True, "4", 2.0])
def test_a_number_of_partitions_postgresql_cannot_make_is_refused(
    make_store: Callable[..., PostgresStore], partitions: Any
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        make_store(partitions=partitions)
    assert str(refused.value) == (
        "partitions must be a whole number from 2 to 1024 (e.g. 16), or None for a plain table, "
        f"not {partitions!r}"
    )


def test_partitions_and_unlogged_are_refused_together(make_store: Callable[..., PostgresStore]) -> None:
    with pytest.raises(ConfigurationError, match="partitions and unlogged=True cannot go together"):
        make_store(partitions=4, unlogged=True)


def test_flask_reads_pgsession_partitions(pg_dsn: str, schema: str) -> None:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema, PGSESSION_PARTITIONS="3"
    )

    @app.get("/")
    def view() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    PgSession(app)
    try:
        client = app.test_client()
        assert [client.get("/").text for _ in range(2)] == ["1", "2"]
        assert len(rows_per_partition(pg_dsn, schema)) == 3
    finally:
        close_extension_stores([app])


@pytest.mark.parametrize("value", ["1", 2000, "many"])
def test_flask_refuses_a_partition_count_naming_the_key(pg_dsn: str, schema: str, value: Any) -> None:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema, PGSESSION_PARTITIONS=value
    )
    with pytest.raises(ConfigurationError, match="^PGSESSION_PARTITIONS must be a whole number"):
        PgSession(app)


def test_init_and_cleanup_take_partitions(
    pg_dsn: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--dsn", pg_dsn, "--schema", schema]
    assert cli_main(["init", *where, "--partitions", "4"]) == 0
    assert len(rows_per_partition(pg_dsn, schema)) == 4
    assert cli_main(["cleanup", *where, "--partitions", "4"]) == 0
    capsys.readouterr()
    assert cli_main(["cleanup", *where, "--partitions", "3"]) == 2
    assert "is partitioned into 4" in capsys.readouterr().err


def test_each_purge_batch_deletes_from_one_partition(
    pg_dsn: str, schema: str, make_store: Callable[..., PostgresStore], wire_counter: Any
) -> None:
    """Purged one partition at a time: each batch's scan and row locks stay in one partition's
    index, not in all of them at once."""
    filler = SessionMiddleware(counter, make_store(partitions=3), secret_key=SECRET)
    for _ in range(12):
        wsgi_call(filler, "/")
    query(pg_dsn, f'UPDATE "{schema}".pgsession SET expires_at = now() - interval \'1 s\'')
    store = make_store(dsn=wire_counter.dsn, partitions=3)
    store.stats()  # the table check, before counting
    wire_counter.reset()
    assert store.purge_expired(batch_size=100) == 12
    purges = [text for text in wire_counter.statements if "DELETE FROM" in text]
    partitions = sorted(rows_per_partition(pg_dsn, schema))
    assert len(purges) == 3
    assert [next(name for name in partitions if f'"{name}"' in text) for text in purges] == partitions
