"""The one way tests run SQL of their own against a test database (fixtures that create schemas,
and tests that hold a connection open on purpose, keep their own code)."""

from __future__ import annotations

from typing import Any, Protocol

import psycopg2


class HasTable(Protocol):
    """A store: where it connects and the quoted, schema-qualified name of its table."""

    @property
    def dsn(self) -> str: ...

    @property
    def qualified_name(self) -> str: ...


def sql(target: str | HasTable, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of its own (autocommit, closed after); its rows, or [].

    :param target: a DSN, or a store: then the statement runs on the store's database and each
        ``{t}`` in it is the store's table (``store.qualified_name``).
    :param params: bound parameters, as for ``cursor.execute`` (``%s`` placeholders).
    """
    if isinstance(target, str):
        dsn = target
    else:
        dsn = target.dsn
        statement = statement.replace("{t}", target.qualified_name)
    conn = psycopg2.connect(dsn, connect_timeout=5, application_name="pgsession-test")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()
