"""docs/asgi.md's ``AsyncPostgresStore.from_pool`` example, run as the page shows it: the app's
pool opens in its own lifespan, and the store is opened on it without a warning (issue 21,
point 5). The middleware used to open the store as the startup message came in, before the
app's lifespan had opened the pool, and logged "session store not reachable at startup ... is
closed" on every start.
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2.extensions import make_dsn, parse_dsn
from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]


def documented_example() -> str:
    """The python block of docs/asgi.md that builds an app on ``AsyncPostgresStore.from_pool``,
    with the imports the page's first block makes (the page runs as one namespace)."""
    page = (ROOT / "docs" / "asgi.md").read_text(encoding="utf-8")
    blocks = [textwrap_dedent(b) for b in re.findall(r"^( *)```python\n(.*?)^\1```", page, re.S | re.M)]
    (example,) = [b for b in blocks if "from_pool(pool)" in b and "app =" in b]
    return "import os\nfrom pgsession_wsgi.asgi import AsyncPostgresStore, SessionMiddleware\n" + example


def textwrap_dedent(found: tuple[str, str]) -> str:
    indent, code = found
    return "\n".join(line[len(indent):] for line in code.splitlines()) + "\n"


@pytest.fixture
def database_url(pg_dsn: str) -> Iterator[str]:
    """A database of its own: the example uses the default table, public.pgsession."""
    name = f"pool_example_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield make_dsn(**{**parse_dsn(pg_dsn), "dbname": name})
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def test_the_documented_from_pool_example_starts_without_a_warning_and_keeps_sessions(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("SECRET_KEY", secrets.token_hex(32))
    namespace: dict[str, Any] = {}
    exec(compile(documented_example(), "docs/asgi.md", "exec"), namespace)
    # TestClient runs the lifespan, as a server does.
    with caplog.at_level(logging.INFO, logger="pgsession_wsgi"), TestClient(namespace["app"]) as client:
        assert [r for r in caplog.records if r.name == "pgsession_wsgi"] == []  # at startup
        assert client.get("/").json() == {"visits": 1}
        assert client.get("/").json() == {"visits": 2}
    assert [r.getMessage() for r in caplog.records if r.name == "pgsession_wsgi"] == []
    assert namespace["pool"].closed  # the app's own shutdown closed its pool


def test_a_table_that_is_not_ours_still_fails_the_startup_after_the_apps_own(
    pg_dsn: str, schema: str
) -> None:
    from contextlib import asynccontextmanager

    from db import sql
    from starlette.applications import Starlette

    from pgsession_wsgi import ConfigurationError
    from pgsession_wsgi.asgi import AsyncPostgresStore, SessionMiddleware

    sql(pg_dsn, f'CREATE TABLE "{schema}".pgsession (id int PRIMARY KEY, note text)')
    ran: list[str] = []

    @asynccontextmanager
    async def app_lifespan(app: Starlette) -> Any:
        ran.append("startup")
        try:
            yield
        finally:
            ran.append("shutdown")

    store = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
    app = Starlette(lifespan=app_lifespan)
    app.add_middleware(SessionMiddleware, store=store, secret_key=secrets.token_hex(32))
    with pytest.raises(ConfigurationError, match="not a pgsession-wsgi table"), TestClient(app):
        pass
    assert ran == ["startup", "shutdown"]  # the app's own startup ran first, then its cleanup
