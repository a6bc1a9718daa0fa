"""unit/ needs no database (run only it: ``python -m pytest tests/unit``); integration/ and faults/ do.

Shared fixtures: a real PostgreSQL for every test that uses one, never a mock. integration/ shares
one database; faults/ stops or cuts servers, injects faults and runs real servers under load.

The database is ``PGSESSION_TEST_DSN`` when set (e.g. ``postgresql://postgres@127.0.0.1:5432/test``),
else one embedded server started for the whole run. Each test gets its own schema, so tests never
see each other's rows. Fault tests take a private server (``owned_server``) they may stop, restart
or cut connections on; mark them ``@pytest.mark.slow`` (run them alone with ``-m slow``, skip them
with ``-m "not slow"``).

Tests through PgBouncer (``make_pgbouncer``) need the ``pgbouncer`` program (Debian: ``apt-get install
pgbouncer``). Without it they are skipped, so a laptop run stays green; set
``PGSESSION_REQUIRE_PGBOUNCER=1`` (CI does) to make a missing pgbouncer fail them instead.

Tests assert through the public API. Where a test must see what no public name shows, it goes
through one of these seams, and says so where it does:

- ``store._run(work, retry=...)``: a statement on one of the store's own connections (its
  settings, such as ``synchronous_commit``; its prepared statements, dropped to test recovery);
- ``store._pool``: the store's own pool (its size and wait as configured, a connection of its own,
  the engine or pool an app lent), and ``store._steps``: whether prepared statements are on;
- ``pool._readable`` / ``pool._is_dead`` and ``pgsession_wsgi._drivers.connections``: how an idle
  connection is found dead, to stand in for a platform without ``select.poll()``;
- ``EmbeddedPostgres._programs()``: where the private copy of PostgreSQL's programs is;
- the private helpers a unit test names in its docstring (the CLI's redaction, the unpickler's
  checks, the migration's batches), each one a rule with cases too many to reach from outside.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg2
import pytest

# Tests in every folder import the modules here as top-level ones: `wire`, `db`, `helpers`, `apps.support`.
sys.path.insert(0, str(Path(__file__).parent))

from wire import PGBOUNCER_INSTALL_HINT, PgBouncer, RoundTripCounter, find_pgbouncer  # noqa: E402

if TYPE_CHECKING:
    import sqlalchemy as sa

    from pgsession_wsgi.async_store import AsyncPostgresStore
    from pgsession_wsgi.embedded import EmbeddedPostgres
    from pgsession_wsgi.store import PostgresStore


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """The DSN of the database the tests share: PGSESSION_TEST_DSN, or an embedded server."""
    dsn = os.environ.get("PGSESSION_TEST_DSN")
    if dsn:
        yield dsn
        return
    from pgsession_wsgi.embedded import start_embedded

    server = start_embedded()
    try:
        yield server.dsn
    finally:
        server.close()


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    """A new, empty schema ``t_<hex>`` for this test alone; dropped with everything in it after."""
    name = f"t_{uuid.uuid4().hex}"
    conn = psycopg2.connect(pg_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{name}"')
        yield name
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        conn.close()


@pytest.fixture
def make_store(pg_dsn: str, schema: str) -> Iterator[Callable[..., PostgresStore]]:
    """``make_store(**kwargs)``: a PostgresStore in this test's schema, no purge thread.

    Any keyword (dsn, schema, purge_interval, table, ...) overrides the defaults; every store made
    is closed after the test.
    """
    from pgsession_wsgi.store import PostgresStore

    stores: list[PostgresStore] = []

    def make(**kwargs: Any) -> PostgresStore:
        options: dict[str, Any] = {"dsn": pg_dsn, "schema": schema, "purge_interval": None}
        options.update(kwargs)
        store = PostgresStore(**options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def make_engine() -> Iterator[Callable[..., sa.Engine]]:
    """``make_engine(dsn, **create_engine_options)``: an app's SQLAlchemy engine on
    ``postgresql+psycopg2``; each is disposed of after the test."""
    import sqlalchemy as sa
    from db import engine_url

    engines: list[sa.Engine] = []

    def make(dsn: str, **options: Any) -> sa.Engine:
        engine = sa.create_engine(engine_url(dsn), **options)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def owned_server() -> Iterator[EmbeddedPostgres]:
    """A private throwaway PostgreSQL this test may stop, restart or cut connections on."""
    from pgsession_wsgi.embedded import start_embedded

    server = start_embedded()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def wire_counter(pg_dsn: str) -> Iterator[RoundTripCounter]:
    """A proxy counting the statements sent to the test database: connect through ``.dsn``."""
    counter = RoundTripCounter(pg_dsn)
    try:
        yield counter
    finally:
        counter.close()


@pytest.fixture
def make_pgbouncer() -> Iterator[Callable[..., PgBouncer]]:
    """``make_pgbouncer(backend_dsn, pool_size=20)``: PgBouncer (transaction pooling) in front of
    that server, with ``pool_size`` server connections per database and user.

    Needs the ``pgbouncer`` program: without it the test is skipped, or fails when
    PGSESSION_REQUIRE_PGBOUNCER is set (so CI cannot pass by skipping). Each one started is stopped
    after the test. Decided at setup, before the test starts any server.
    """
    if find_pgbouncer() is None:
        reason = f"pgbouncer is not installed ({PGBOUNCER_INSTALL_HINT})"
        if os.environ.get("PGSESSION_REQUIRE_PGBOUNCER", "") not in ("", "0"):
            pytest.fail(f"{reason}; PGSESSION_REQUIRE_PGBOUNCER is set, so it is required", pytrace=False)
        pytest.skip(f"{reason}; set PGSESSION_REQUIRE_PGBOUNCER=1 to fail instead")
    started: list[PgBouncer] = []

    def make(backend_dsn: str, pool_size: int = 20) -> PgBouncer:
        bouncer = PgBouncer(backend_dsn, pool_size=pool_size)
        started.append(bouncer)
        return bouncer

    yield make
    for bouncer in started:
        bouncer.close()


@pytest.fixture
def anyio_backend() -> str:
    """The async tests run on asyncio: psycopg 3's async connections and pool need it."""
    return "asyncio"


@pytest.fixture
async def make_async_store(pg_dsn: str, schema: str) -> AsyncIterator[Callable[..., AsyncPostgresStore]]:
    """``make_async_store(**kwargs)``: an AsyncPostgresStore in this test's schema, closed after."""
    from pgsession_wsgi.async_store import AsyncPostgresStore

    stores: list[AsyncPostgresStore] = []

    def make(**kwargs: Any) -> AsyncPostgresStore:
        options: dict[str, Any] = {"dsn": pg_dsn, "schema": schema, "purge_interval": None}
        options.update(kwargs)
        store = AsyncPostgresStore(**options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture(autouse=True)
def _current_session_left_unbound() -> Iterator[None]:
    """A test that leaves ``current_session`` bound (a WSGI body never closed) fails here, by its
    own name, instead of a later test failing that reads it (they run in one thread)."""
    from pgsession_wsgi import middleware

    yield
    leaked = middleware._current.get(None)  # the one private read: no public "is it bound?"
    if leaked is not None:
        middleware._current.set(None)  # type: ignore[arg-type]  # so that later tests start clean
        pytest.fail("this test left current_session bound: close the WSGI response it got")


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """The root logger as it was before the test: an app that configures logging (Litestar's
    default config adds a queue handler writing to the stderr of its test, closed afterwards)
    would otherwise turn a later test's warning into a "Logging error" on that test's stderr."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
