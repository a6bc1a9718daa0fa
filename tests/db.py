"""The one way tests run SQL of their own against a test database (fixtures that create schemas,
and tests that hold a connection open on purpose, keep their own code)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import psycopg2
import psycopg2.extensions

if TYPE_CHECKING:
    import sqlalchemy as sa


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


def engine_url(dsn: str) -> sa.URL:
    """A ``postgresql+psycopg2`` SQLAlchemy URL for a libpq DSN (the wire counter's is key=value)."""
    import sqlalchemy as sa

    params = psycopg2.extensions.parse_dsn(dsn)
    socket = str(params.get("host", "")).startswith("/")  # a socket directory goes in the query
    main = {"user", "password", "dbname"} | (set() if socket else {"host", "port"})
    return sa.URL.create(
        "postgresql+psycopg2",
        username=params.get("user"),
        password=params.get("password"),
        host=None if socket else params.get("host"),
        port=int(params["port"]) if params.get("port") and not socket else None,
        database=params.get("dbname"),
        query={key: value for key, value in params.items() if key not in main},
    )
