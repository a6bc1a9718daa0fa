"""The floor: server-side sessions with no session library at all, for benchmarks/app.py.

What any PostgreSQL session store must do at the least, written by hand on a plain psycopg2 pool:
a random id signed with HMAC-SHA256 in the cookie, one row per session keyed by that id, and per
request

- ``/read``:  one primary-key ``SELECT data ... WHERE id = %s AND expires_at > now()``;
- ``/write``: that SELECT, then one ``UPDATE ... SET data = data || %s`` merging the one key that
  changed (same filter);
- ``/none``:  nothing (the cookie is not even parsed);
- ``/login``: one ``INSERT`` and a ``Set-Cookie``.

No library can do less than this and still be a session store (expired rows must never be
served), so it is what pgsession-wsgi is measured against. The pool is
``psycopg2.pool.ThreadedConnectionPool`` with ``minconn = maxconn``: with a smaller ``minconn``
it closes every connection given back while ``minconn`` connections are already idle, and the
floor would reconnect all the time.

Durability is chosen per variant: ``floor`` (a logged table, every commit waits for the WAL
flush), ``floor-async`` (``synchronous_commit = off``) and ``floor-unlogged`` (an unlogged table:
no WAL at all, emptied after a crash), the same three choices pgsession-wsgi offers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.pool
from flask import Flask, Response, request

COOKIE = "floor"
LIFETIME_SECONDS = 31 * 24 * 3600  # the same idle lifetime as pgsession-wsgi's default


def statements(table: str) -> tuple[str, str, str]:
    """The floor's SELECT (read), UPDATE (merge one key) and INSERT (login) on ``table``; the
    ASGI floor (benchmarks/asgi_floor.py) sends the same."""
    return (
        f"SELECT data FROM {table} WHERE id = %s AND expires_at > now()",
        f"UPDATE {table} SET data = data || %s::jsonb WHERE id = %s AND expires_at > now()",
        f"INSERT INTO {table} (id, data, expires_at)"
        f" VALUES (%s, %s::jsonb, now() + interval '{LIFETIME_SECONDS} seconds')",
    )


class FloorStore:
    """A table of sessions and a fixed-size pool of autocommit connections to it.

    :param dsn: libpq URI of the database.
    :param unlogged: an unlogged table (no WAL).
    :param synchronous_commit: False: commits do not wait for the WAL flush.
    :param pool_size: connections per process, all opened at once and kept (minconn = maxconn).
    """

    def __init__(self, dsn: str, *, unlogged: bool, synchronous_commit: bool, pool_size: int) -> None:
        self.table = "floor_sessions_unlogged" if unlogged else "floor_sessions"
        self.unlogged = unlogged
        options = "" if synchronous_commit else "-c synchronous_commit=off"
        self.pool = psycopg2.pool.ThreadedConnectionPool(pool_size, pool_size, dsn, options=options)
        self._select, self._update, self._insert = statements(self.table)

    def create_table(self) -> None:
        """The table: a primary key, the data, the expiry; nothing else."""
        kind = "UNLOGGED TABLE" if self.unlogged else "TABLE"
        self._run(
            f"CREATE {kind} IF NOT EXISTS {self.table}"
            " (id bytea PRIMARY KEY, data jsonb NOT NULL, expires_at timestamptz NOT NULL)",
            (),
        )

    def _run(self, sql: str, params: tuple[Any, ...], fetch: bool = False) -> Any:
        conn = self.pool.getconn()
        try:
            if not conn.autocommit:
                conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchone() if fetch else None
        finally:
            self.pool.putconn(conn)

    def load(self, key: bytes) -> dict[str, Any] | None:
        row = self._run(self._select, (key,), fetch=True)
        return None if row is None else row[0]

    def merge(self, key: bytes, changed: dict[str, Any]) -> None:
        self._run(self._update, (json.dumps(changed), key))

    def insert(self, key: bytes, data: dict[str, Any]) -> None:
        self._run(self._insert, (key, json.dumps(data)))


class Signer:
    """``base64(id) + "." + base64(HMAC-SHA256(key, id))``: the id's bytes are the row's key."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"floor-cookie:" + secret.encode()).digest()

    def sign(self, key: bytes) -> str:
        mac = hmac.digest(self._key, key, "sha256")
        return f"{base64.urlsafe_b64encode(key).decode()}.{base64.urlsafe_b64encode(mac).decode()}"

    def unsign(self, value: str | None) -> bytes | None:
        if not value or "." not in value:
            return None
        encoded, _, mac_text = value.partition(".")
        try:
            key = base64.urlsafe_b64decode(encoded)
            mac = base64.urlsafe_b64decode(mac_text)
        except (ValueError, TypeError):
            return None
        expected = hmac.digest(self._key, key, "sha256")
        return key if hmac.compare_digest(mac, expected) else None


def install(app: Flask, dsn: str, *, variant: str, secret: str, pool_size: int) -> FloorStore:
    """The floor's routes on ``app`` (which has no session interface of its own).

    :param app: a Flask app without SECRET_KEY (Flask's own session is a NullSession).
    :param dsn: libpq URI of the database.
    :param variant: ``floor``, ``floor-async`` or ``floor-unlogged``.
    :param secret: signs the cookies.
    :param pool_size: connections per process.
    """
    store = FloorStore(
        dsn,
        unlogged=variant == "floor-unlogged",
        synchronous_commit=variant != "floor-async",
        pool_size=pool_size,
    )
    signer = Signer(secret)

    def session_key() -> bytes | None:
        return signer.unsign(request.cookies.get(COOKIE))

    @app.get("/login")
    def login() -> Response:
        key = secrets.token_bytes(32)
        data: dict[str, Any] = {"user_id": "user-42", "counter": 0}
        size = request.args.get("size", type=int)
        if size:
            data["blob"] = secrets.token_urlsafe(size)[:size]  # as app.blob(): incompressible
        store.insert(key, data)
        response = Response("logged in")
        response.set_cookie(COOKIE, signer.sign(key), max_age=LIFETIME_SECONDS, httponly=True, samesite="Lax")
        return response

    @app.get("/read")
    def read() -> str:
        key = session_key()
        data = store.load(key) if key is not None else None
        return f"user_id={(data or {}).get('user_id')}"

    @app.get("/write")
    def write() -> str:
        key = session_key()
        data = store.load(key) if key is not None else None
        if key is None or data is None:
            return "counter=0"
        counter = int(data.get("counter", 0)) + 1
        store.merge(key, {"counter": counter})
        return f"counter={counter}"

    @app.get("/none")
    def no_session() -> str:
        return "no session"

    return store
