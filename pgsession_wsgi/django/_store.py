"""The store, and the read-through of Django's ``django_session``: a :class:`PostgresStore` that can
also read, move and purge its rows, which cookies are old Django keys, the id an old key moves
to, and the move of one old session into our table."""

from __future__ import annotations

import base64
import hmac
import logging
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from django.utils import timezone as django_timezone

from ..codec import dumps, encode_value
from ..cookies import hash_session_id
from ..core import run, user_id_text
from ..errors import SessionDataError, SessionError
from ..session import META_KEYS, Session
from ..sql import quote_identifier
from ..store import PostgresStore

if TYPE_CHECKING:
    from ._runtime import Runtime

log = logging.getLogger("pgsession_wsgi")

# Django's own session keys, as django.contrib.sessions.backends.base makes them: 32 characters
# of [a-z0-9]. Only such a cookie is looked up in django_session, never a client's other choice.
DJANGO_KEY = re.compile(r"[a-z0-9]{32}")


class DjangoStore(PostgresStore):
    """A :class:`PostgresStore` that can also read, move and purge ``django_session`` rows."""

    legacy_name: str | None = None

    def set_legacy_table(self, table: str, schema: str | None) -> None:
        """Name the table of Django's database sessions (quoted here)."""
        quoted = quote_identifier(table, "table")
        self.legacy_name = f"{quote_identifier(schema, 'schema')}.{quoted}" if schema else quoted

    def _legacy_sql(self, statement: str) -> str:
        assert self.legacy_name is not None
        return self._steps.guard + statement.replace("{old}", self.legacy_name.replace("%", "%%")).replace(
            "{new}", self.qualified_name.replace("%", "%%")
        )

    def find_django_session(self, key: str) -> tuple[str, datetime] | None:
        """The live ``django_session`` row under ``key``: its encoded data and expiry; None if
        none (or no such table)."""
        statement = self._legacy_sql(
            "SELECT session_data, expire_date FROM {old} WHERE session_key = %(key)s AND expire_date > now()"
        )

        def find(cur: psycopg2.extensions.cursor) -> tuple[str, datetime] | None:
            try:
                cur.execute(statement, {"key": key})
            except psycopg2.errors.UndefinedTable:
                return None
            row = cur.fetchone()
            return None if row is None else (row[0], row[1])

        return self._run(find, retry=True)

    def move_django_session(
        self,
        key: str,
        session_data: str,
        id_hash: bytes,
        data_json: str,
        user_id: str | None,
        absolute: timedelta | None,
        idle_timeout: timedelta | None,
        ends_at: datetime | None,
    ) -> dict[str, Any] | None:
        """Delete the old row and insert it here in one statement; the stored data, or None if
        another request moved (or changed) it first."""
        statement = self._legacy_sql(
            "WITH m AS (DELETE FROM {old} WHERE session_key = %(key)s AND session_data = %(old_data)s"
            " AND expire_date > now() RETURNING expire_date)"
            " INSERT INTO {new} AS t (id, data, user_id, created_at, accessed_at, expires_at, idle_timeout,"
            " ends_at) SELECT %(id)s, %(data)s::jsonb, %(user)s, now(), now(),"
            " LEAST(COALESCE(%(ends_at)s::timestamptz, m.expire_date), now() + %(absolute)s::interval),"
            " %(idle_timeout)s::interval, %(ends_at)s::timestamptz FROM m"
            " ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, user_id = EXCLUDED.user_id,"
            " created_at = EXCLUDED.created_at, accessed_at = EXCLUDED.accessed_at,"
            " expires_at = EXCLUDED.expires_at, idle_timeout = EXCLUDED.idle_timeout,"
            " ends_at = EXCLUDED.ends_at WHERE t.expires_at <= now()"
            " RETURNING t.data"
        )
        params = {
            "key": key,
            "old_data": session_data,
            "id": psycopg2.Binary(id_hash),
            "data": data_json,
            "user": user_id,
            "absolute": absolute,
            "idle_timeout": idle_timeout,
            "ends_at": ends_at,
        }

        def move(cur: psycopg2.extensions.cursor) -> dict[str, Any] | None:
            cur.execute(statement, params)
            try:
                row = cur.fetchone()
            except (ValueError, RecursionError) as exc:
                raise SessionDataError(type(exc).__name__) from None
            return None if row is None else dict(row[0])

        return self._run(move, retry=False)

    def delete_django_session(self, key: str) -> bool:
        """Delete the ``django_session`` row under ``key``; True if there was one."""
        statement = self._legacy_sql("DELETE FROM {old} WHERE session_key = %(key)s")

        def delete(cur: psycopg2.extensions.cursor) -> bool:
            try:
                cur.execute(statement, {"key": key})
            except psycopg2.errors.UndefinedTable:
                return False
            return bool(cur.rowcount)

        return self._run(delete, retry=True)

    def purge_django_sessions(self) -> int:
        """Delete the expired ``django_session`` rows (none if the table is gone); how many went."""
        statement = self._legacy_sql("DELETE FROM {old} WHERE expire_date < now()")

        def purge(cur: psycopg2.extensions.cursor) -> int:
            try:
                cur.execute(statement)
            except psycopg2.errors.UndefinedTable:
                return 0
            return int(cur.rowcount)

        return self._run(purge, retry=True)


def derived_id(runtime: Runtime, django_key: str) -> str:
    """The id an old Django session key moves to: an HMAC of it under ``SECRET_KEY``, so that
    two requests with the same old cookie move it to one row (43 characters, as new ids)."""
    digest = hmac.digest(
        runtime.secret_key, b"pgsession-wsgi django session\x00" + django_key.encode(), "sha256"
    )
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def django_decode(session_data: str) -> dict[str, Any]:
    """An old row's data, decoded by Django's own database backend (its signing, its serializer)."""
    from django.contrib.sessions.backends.db import SessionStore as DjangoDbStore

    return DjangoDbStore().decode(session_data)  # type: ignore[no-any-return]


def move_django_session(runtime: Runtime, session: Session, key: str) -> dict[str, Any] | None:
    """Move the live ``django_session`` row of the old key ``key`` into our table under
    ``session``'s id (:func:`derived_id`), in one statement; the stored data, or None when there
    is no such row or it cannot be moved (one warning, naming it by its new id's hash)."""
    assert session.state.session_id is not None
    id_hash = hash_session_id(session.state.session_id)
    label = id_hash.hex()[:12]
    found = runtime.store.find_django_session(key)
    if found is None:
        return None
    session_data, _expire_date = found
    data = dict(django_decode(session_data))
    expiry = data.pop("_session_expiry", None)
    idle_timeout: timedelta | None = None
    ends_at: datetime | None = None
    if expiry == 0:
        data["_permanent"] = False
    elif isinstance(expiry, (int, float)) and not isinstance(expiry, bool) and expiry > 0:
        idle_timeout = timedelta(seconds=expiry)
    elif isinstance(expiry, str):
        try:
            end = datetime.fromisoformat(expiry)
        except ValueError:
            end = None
        if end is not None:
            ends_at = end if end.utcoffset() is not None else django_timezone.make_aware(end)
    if not data or all(name in META_KEYS for name in data):
        log.warning(
            "Django session %s not moved (empty or unreadable data); the request gets a new session",
            label,
        )
        return None
    try:
        encoded = {name: encode_value(value) for name, value in data.items()}
        user_key = runtime.core.policy.user_key
        user_value = data.get(user_key) if user_key is not None else None
        user = (
            None
            if user_value is None
            else user_id_text(user_value, user_key, key_prefix=runtime.core.key_prefix)
        )
    except (TypeError, ValueError, SessionError) as exc:
        log.warning(
            "Django session %s not moved (%s); the request gets a new session", label, type(exc).__name__
        )
        return None
    data_json = "{" + ",".join(f"{dumps(name)}:{dumps(value)}" for name, value in encoded.items()) + "}"
    max_size = runtime.core.policy.max_size
    if max_size is not None and len(data_json.encode("utf-8")) > max_size:
        log.warning("Django session %s not moved (over max_size); the request gets a new session", label)
        return None
    stored = runtime.store.move_django_session(
        key, session_data, id_hash, data_json, user, runtime.absolute_timeout, idle_timeout, ends_at
    )
    if stored is None:  # another request moved it meanwhile: read what it stored
        return run(runtime.core.load(session), runtime.store.execute)
    if not session.state.expiry_set:
        session.state.expiry = ends_at if ends_at is not None else idle_timeout
    return stored
