"""pytest-benchmark: the middleware's own cost per request, in process, no network.

    pip install pytest-benchmark
    python -m pytest benchmarks/bench_overhead.py --benchmark-only

Each route is timed through webtest, bare and wrapped in SessionMiddleware, against the database
in $PGSESSION_DSN (default: the local server). The difference between a route's two rows is what
pgsession-wsgi adds, database round trip included.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from webtest import TestApp

sys.path.insert(0, str(Path(__file__).parent))
from overhead import session_app  # noqa: E402

from pgsession_wsgi import PostgresStore, SessionMiddleware  # noqa: E402

DSN = os.environ.get("PGSESSION_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="module")
def wrapped() -> Iterator[TestApp]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(DSN, schema=schema, purge_interval=None)
    client = TestApp(SessionMiddleware(session_app, store, secret_key="bench"), lint=False)
    client.get("/login")
    yield client
    store.close()
    conn = psycopg2.connect(DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
    conn.close()


@pytest.fixture(scope="module")
def bare(wrapped: TestApp) -> TestApp:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        environ["pgsession.session"] = {}  # what session_app reads, without the middleware
        return session_app(environ, start_response)

    client = TestApp(app, lint=False)
    client.set_cookie("session", wrapped.cookies["session"])  # the same request, cookie and all
    return client


@pytest.mark.parametrize("route", ["/none", "/read", "/write"])
def test_with_middleware(benchmark: Any, wrapped: TestApp, route: str) -> None:
    benchmark(wrapped.get, route)


@pytest.mark.parametrize("route", ["/none", "/read", "/write"])
def test_bare_app(benchmark: Any, bare: TestApp, route: str) -> None:
    benchmark(bare.get, route)
