"""flask-pg-session's table and rows, written the way flask-pg-session 0.1.0 writes them.

Its exact DDL, ``pickle.dumps`` of a plain dict (default protocol), naive UTC ``expiry`` (NULL for
a browser session), the ``created`` default and ``SESSION_KEY_PREFIX`` + uuid4 ids; its cookie
signer. The migration tests and the switching tests build the old side with these.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
from pathlib import Path
from typing import Any

import psycopg2
from db import sql
from flask import Flask
from itsdangerous import Signer

#: The apps' SECRET_KEY, which flask-pg-session signed the cookies with.
LEGACY_SECRET = "legacy-secret"
#: flask-pg-session's default table (``SESSION_PG_TABLE``).
LEGACY_TABLE = "flask_sessions"


def q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def create_legacy_table(dsn: str, schema: str, table: str = LEGACY_TABLE) -> None:
    """flask-pg-session's own DDL (flask_pg_session/_queries.py), names quoted as it quotes them."""
    target = f"{q(schema)}.{q(table)}"
    sql(dsn, f"CREATE SCHEMA IF NOT EXISTS {q(schema)}")
    sql(
        dsn,
        f"CREATE TABLE IF NOT EXISTS {target} ("
        " session_id VARCHAR(255) NOT NULL PRIMARY KEY,"
        " created TIMESTAMP WITHOUT TIME ZONE DEFAULT (NOW() AT TIME ZONE 'utc'),"
        " data BYTEA, expiry TIMESTAMP WITHOUT TIME ZONE)",
    )
    sql(dsn, f"CREATE UNIQUE INDEX IF NOT EXISTS {q('uq_' + table + '_session_id')} ON {target} (session_id)")
    sql(dsn, f"CREATE INDEX IF NOT EXISTS {q(table + '_expiry_idx')} ON {target} (expiry)")


def naive_utc(delta: dt.timedelta) -> dt.datetime:
    """What flask-pg-session stores: now(UTC) + lifetime, tzinfo stripped."""
    return (dt.datetime.now(dt.timezone.utc) + delta).replace(tzinfo=None)


def write_row(
    dsn: str,
    schema: str,
    stored_id: str,
    data: Any,
    expiry: dt.datetime | None,
    table: str = LEGACY_TABLE,
    *,
    raw: bytes | None = None,
) -> None:
    """flask-pg-session's upsert: pickle.dumps(dict(session)) under prefix + id, naive UTC expiry.

    :param raw: the bytes to store instead of pickling ``data``.
    """
    payload = raw if raw is not None else pickle.dumps(data)
    sql(
        dsn,
        f"INSERT INTO {q(schema)}.{q(table)} (session_id, data, expiry) VALUES (%s, %s, %s)"
        " ON CONFLICT (session_id) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry",
        (stored_id, psycopg2.Binary(payload), expiry),
    )


def signed(session_id: str) -> str:
    """The cookie flask-pg-session sets with ``SESSION_USE_SIGNER``."""
    return Signer(LEGACY_SECRET, salt="flask-session", key_derivation="hmac").sign(session_id).decode()


class RunsCommand:
    """Pickles into ``os.system("touch <path>")``: plain pickle.loads would create the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (os.system, (f"touch {self.path}",))


def add_login_required_view(app: Flask) -> None:
    """Flask-Login with users of any id, and ``/me``: the logged-in user's id, else 401."""
    import flask_login

    manager = flask_login.LoginManager(app)

    class User(flask_login.UserMixin):  # type: ignore[name-defined,misc]
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    manager.user_loader(User)

    @app.route("/me")
    @flask_login.login_required
    def me() -> str:
        return str(flask_login.current_user.get_id())
