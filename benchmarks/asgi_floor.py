"""The ASGI floor: server-side sessions with no session library, for benchmarks/asgi_app.py.

benchmarks/floor.py's floor on the async side: a Starlette app with hand-written SQL on psycopg 3
async and a ``psycopg_pool.AsyncConnectionPool``. A random id signed with HMAC-SHA256 in the
cookie, one row per session keyed by that id (the same table shape as the WSGI floor), and per
request

- ``/read``:  one primary-key ``SELECT data ... WHERE id = %s AND expires_at > now()``;
- ``/write``: that SELECT, then one ``UPDATE ... SET data = data || %s`` merging the key that
  changed (same filter);
- ``/none`` and ``/skip``: nothing (the cookie is not even parsed);
- ``/login``: one ``INSERT`` and a ``Set-Cookie``.

It is written the way psycopg 3's documentation shows: ``await conn.execute(sql, params)`` on a
pooled autocommit connection, values bound on the server, and psycopg 3's automatic prepared
statements left at their default (a statement run five times on a connection is prepared), which
an app talking to PostgreSQL directly gets for free. The pool opens all its connections at startup
(``min_size = max_size``), the size pgsession-wsgi's async store grows to by default (10).

Durability per variant, as for the WSGI floor: ``asgi-floor`` (a logged table, commits wait for the
WAL flush), ``asgi-floor-async`` (``synchronous_commit = off``), ``asgi-floor-unlogged`` (an
unlogged table).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from floor import LIFETIME_SECONDS, Signer, statements

COOKIE = "floor"
POOL_SIZE = 10


class AsyncFloorStore:
    """A table of sessions and a fixed-size pool of autocommit psycopg 3 connections to it.

    :param dsn: libpq URI of the database.
    :param unlogged: an unlogged table (no WAL).
    :param synchronous_commit: False: commits do not wait for the WAL flush.
    """

    def __init__(self, dsn: str, *, unlogged: bool, synchronous_commit: bool) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.table = "asgi_floor_sessions_unlogged" if unlogged else "asgi_floor_sessions"
        self.unlogged = unlogged
        kwargs: dict[str, Any] = {"autocommit": True}
        if not synchronous_commit:
            kwargs["options"] = "-c synchronous_commit=off"
        self.pool = AsyncConnectionPool(
            dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, kwargs=kwargs, open=False
        )
        self._select, self._update, self._insert = statements(self.table)

    async def create_table(self) -> None:
        """The table: a primary key, the data, the expiry; nothing else."""
        kind = "UNLOGGED TABLE" if self.unlogged else "TABLE"
        async with self.pool.connection() as conn:
            await conn.execute(
                f"CREATE {kind} IF NOT EXISTS {self.table}"
                " (id bytea PRIMARY KEY, data jsonb NOT NULL, expires_at timestamptz NOT NULL)"
            )

    async def load(self, key: bytes) -> dict[str, Any] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(self._select, (key,))
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def merge(self, key: bytes, changed: dict[str, Any]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(self._update, (json.dumps(changed), key))

    async def insert(self, key: bytes, data: dict[str, Any]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(self._insert, (key, json.dumps(data)))


def store_for(variant: str, dsn: str) -> AsyncFloorStore:
    """The store of ``asgi-floor``, ``asgi-floor-async`` or ``asgi-floor-unlogged``."""
    return AsyncFloorStore(
        dsn, unlogged=variant == "asgi-floor-unlogged", synchronous_commit=variant != "asgi-floor-async"
    )


def create_app(variant: str, dsn: str, secret: str, routes: Callable[..., list[Any]]) -> Any:
    """The floor's Starlette app: the same routes and answers as asgi_app's other Starlette apps.

    :param routes: asgi_app's ``starlette_routes``: given the login, read and write views, the
        app's routes.
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

    store = store_for(variant, dsn)
    signer = Signer(secret)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await store.pool.open(wait=True)
        try:
            yield
        finally:
            await store.pool.close()

    def session_key(request: Request) -> bytes | None:
        return signer.unsign(request.cookies.get(COOKIE))

    async def login(request: Request) -> PlainTextResponse:
        key = secrets.token_bytes(32)
        await store.insert(key, {"user_id": "user-42", "counter": 0})
        response = PlainTextResponse("logged in")
        response.set_cookie(COOKIE, signer.sign(key), max_age=LIFETIME_SECONDS, httponly=True, samesite="lax")
        return response

    async def read(request: Request) -> PlainTextResponse:
        key = session_key(request)
        data = await store.load(key) if key is not None else None
        return PlainTextResponse(f"user_id={(data or {}).get('user_id')}")

    async def write(request: Request) -> PlainTextResponse:
        key = session_key(request)
        data = await store.load(key) if key is not None else None
        if key is None or data is None:
            return PlainTextResponse("counter=0")
        counter = int(data.get("counter", 0)) + 1
        await store.merge(key, {"counter": counter})
        return PlainTextResponse(f"counter={counter}")

    return Starlette(routes=routes(login, read, write), lifespan=lifespan)


async def prepare(variant: str, dsn: str) -> None:
    """Create the variant's table once, before uvicorn starts its workers."""
    store = store_for(variant, dsn)
    await store.pool.open(wait=True)
    try:
        await store.create_table()
    finally:
        await store.pool.close()
