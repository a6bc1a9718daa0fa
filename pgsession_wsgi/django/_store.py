"""The store that also reads, moves and purges ``django_session`` rows, and which cookies are their keys."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from ..errors import SessionDataError
from ..sql import quote_identifier
from ..store import PostgresStore

_T = TypeVar("_T")
_Cursor = psycopg2.extensions.cursor

# Django's own session keys (32 of [a-z0-9]): only such a cookie is looked up in django_session.
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

    def _on_legacy(
        self, statement: str, params: dict[str, str] | None, missing: _T, result: Callable[[_Cursor], _T]
    ) -> _T:
        """``result`` of the cursor after ``statement``, or ``missing`` if Django's table is gone."""
        sql = self._legacy_sql(statement)

        def work(cur: _Cursor) -> _T:
            try:
                cur.execute(sql, params)
            except psycopg2.errors.UndefinedTable:
                return missing
            return result(cur)

        return self._run(work, retry=True)

    def find_django_session(self, key: str) -> tuple[str, datetime] | None:
        """The live ``django_session`` row of ``key`` (data, expiry); None if none or no such table."""

        def found(cur: _Cursor) -> tuple[str, datetime] | None:
            row = cur.fetchone()
            return None if row is None else (row[0], row[1])

        statement = (
            "SELECT session_data, expire_date FROM {old} WHERE session_key = %(key)s AND expire_date > now()"
        )
        return self._on_legacy(statement, {"key": key}, None, found)

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
        """Move the old row here in one statement: its stored data, or None if moved or changed meanwhile."""
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

        def move(cur: _Cursor) -> dict[str, Any] | None:
            cur.execute(statement, params)
            try:
                row = cur.fetchone()
            except (ValueError, RecursionError) as exc:
                raise SessionDataError(type(exc).__name__) from None
            return None if row is None else dict(row[0])

        return self._run(move, retry=False)

    def delete_django_session(self, key: str) -> bool:
        """Delete the ``django_session`` row under ``key``; True if there was one."""
        statement = "DELETE FROM {old} WHERE session_key = %(key)s"
        return self._on_legacy(statement, {"key": key}, False, lambda cur: bool(cur.rowcount))

    def purge_django_sessions(self) -> int:
        """Delete the expired ``django_session`` rows (none if the table is gone); how many went."""
        statement = "DELETE FROM {old} WHERE expire_date < now()"
        return self._on_legacy(statement, None, 0, lambda cur: int(cur.rowcount))
