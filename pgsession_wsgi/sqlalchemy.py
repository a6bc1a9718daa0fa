"""The session table as SQLAlchemy metadata, for apps whose migrations Alembic writes.

An app that manages its schema with Alembic wants the session table in its own migrations, not
created behind its back at start-up. :func:`session_table` describes exactly the table the store
creates (columns, types, defaults, primary key, index names, fillfactor), so autogenerate writes
it once and then sees no difference, whether Alembic or the store created it::

    from sqlalchemy import MetaData, create_engine
    from pgsession_wsgi import PostgresStore
    from pgsession_wsgi.sqlalchemy import session_table

    metadata = MetaData()                   # the app's, the one Alembic's env.py compares
    session_table(metadata)                 # "public"."pgsession", as the store names it
    engine = create_engine("postgresql+psycopg2://app@db/app")
    store = PostgresStore.from_engine(engine, create_table=False)

The same metadata serves an async engine (``create_async_engine("postgresql+psycopg://...")``,
or ``+asyncpg``): create the table with ``run_sync``, as SQLAlchemy does any DDL there, and give
the async store the engine's database with :func:`store_dsn` (a pool of its own, a few
connections) or, to share one pool, :meth:`AsyncPostgresStore.from_pool
<pgsession_wsgi.async_store.AsyncPostgresStore.from_pool>` on a ``psycopg_pool`` pool of your
app's (the async store borrows from a ``psycopg_pool`` pool only, not from an ``AsyncEngine``'s
pool; SQLAlchemy's asyncio itself needs ``pip install 'sqlalchemy[asyncio]'``)::

    from sqlalchemy.ext.asyncio import create_async_engine
    from pgsession_wsgi.asgi import AsyncPostgresStore
    from pgsession_wsgi.sqlalchemy import session_table, store_dsn

    engine = create_async_engine("postgresql+psycopg://app@db/app")
    async with engine.begin() as conn:      # or the Alembic migration
        await conn.run_sync(metadata.create_all)
    store = AsyncPostgresStore(store_dsn(engine), create_table=False, max_connections=4)

Needs the ``sqlalchemy`` extra (``pip install pgsession-wsgi[sqlalchemy]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import MissingExtraError

try:
    from sqlalchemy import (
        URL,
        Column,
        Connection,
        Engine,
        Index,
        MetaData,
        PrimaryKeyConstraint,
        Table,
        Text,
        event,
        func,
        text,
    )
    from sqlalchemy.dialects.postgresql import BYTEA, INTERVAL, JSONB, TIMESTAMP
    from sqlalchemy.dialects.postgresql.base import PGDialect
    from sqlalchemy.engine import make_url
except ModuleNotFoundError as missing:  # the [sqlalchemy] extra: say which command installs it
    raise (MissingExtraError.of(missing, __name__) or missing) from None

if TYPE_CHECKING:
    # Only for the annotation: sqlalchemy.ext.asyncio needs greenlet, which sync apps lack.
    import sqlalchemy.ext.asyncio

from .defaults import DEFAULT_TABLE
from .dsn import normalize_dsn
from .errors import ConfigurationError
from .sql import index_names, quote_identifier

__all__ = ["FILLFACTOR", "session_table", "store_dsn"]

#: The table's fillfactor: room on each page so that most writes, which leave every indexed
#: column as it was, are HOT updates (see :meth:`pgsession_wsgi.store.PostgresStore.write`).
FILLFACTOR = 90

# Table(postgresql_with=...) came with SQLAlchemy 2.1; on 2.0 the fillfactor is set by an
# ALTER TABLE right after CREATE TABLE instead (Alembic does not compare storage parameters).
_TABLE_WITH = any(
    target is Table and "with" in arguments for target, arguments in PGDialect.construct_arguments or ()
)


def _primary_key_name(table: str) -> str:
    """The name PostgreSQL gives an unnamed primary key (``<table>_pkey``, the table name cut to
    fit 63 bytes), so a metadata naming convention cannot make it differ from the store's."""
    return table.encode()[: 63 - len("_pkey")].decode("utf-8", "ignore") + "_pkey"


def session_table(
    metadata: MetaData, name: str = DEFAULT_TABLE, schema: str | None = None, *, unlogged: bool = False
) -> Table:
    """Add the session table to ``metadata``, exactly as :class:`~pgsession_wsgi.PostgresStore`
    creates it, and return it.

    Then ``metadata.create_all(engine)`` or an Alembic migration creates the table, and the store
    runs with ``create_table=False``; autogenerate finds nothing to change against a table the
    store created, and adds what a table made by an older version lacks. The index names are
    the store's own (:func:`pgsession_wsgi.sql.index_names`) and explicit, so a naming
    convention on ``metadata`` leaves them alone.

    :param metadata: the app's metadata (the one Alembic's ``target_metadata`` names).
    :param name: the table name: the store's ``table``.
    :param schema: the schema: the store's ``schema`` (None: the connection's default schema,
        ``public`` unless the search path says otherwise; the store's default is ``"public"``).
    :param unlogged: ``CREATE UNLOGGED TABLE``, for a store with ``unlogged=True`` (which refuses
        a logged table, and a store with ``unlogged=False`` an unlogged one). Autogenerate does
        not compare it: to convert an existing table run ``pgsession-wsgi init --unlogged``.
    :returns: the :class:`sqlalchemy.Table`; the app may read it, the store writes it.
    :raises ConfigurationError: a name PostgreSQL cannot hold (empty, NUL, over 63 bytes).
    """
    quote_identifier(name, "table")
    if schema is not None:
        quote_identifier(schema, "schema")
    expires_index, user_index = index_names(name)
    storage: dict[str, Any] = {"postgresql_with": {"fillfactor": FILLFACTOR}} if _TABLE_WITH else {}
    table = Table(
        name,
        metadata,
        Column("id", BYTEA, nullable=False),
        Column("data", JSONB, nullable=False),
        Column("user_id", Text),
        Column("created_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
        Column("accessed_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
        Column("expires_at", TIMESTAMP(timezone=True), nullable=False),
        Column("idle_timeout", INTERVAL),
        Column("ends_at", TIMESTAMP(timezone=True)),
        PrimaryKeyConstraint("id", name=_primary_key_name(name)),
        schema=schema,
        prefixes=["UNLOGGED"] if unlogged else [],
        **storage,
    )
    Index(expires_index, table.c.expires_at)
    Index(user_index, table.c.user_id, postgresql_where=table.c.user_id.is_not(None))
    if not _TABLE_WITH:
        event.listen(table, "after_create", _set_fillfactor)
    return table


def _set_fillfactor(table: Table, connection: Connection, **kw: Any) -> None:
    """After CREATE TABLE on SQLAlchemy 2.0, which cannot put the fillfactor in it."""
    name = connection.dialect.identifier_preparer.format_table(table)
    connection.execute(text(f"ALTER TABLE {name} SET (fillfactor = {FILLFACTOR})"))


def store_dsn(engine: Engine | sqlalchemy.ext.asyncio.AsyncEngine | URL | str) -> str:
    """The DSN of an app's engine, sync or async, for a store of its own on the same database.

    For an async engine, whose connections no store can borrow:
    ``AsyncPostgresStore(store_dsn(engine))``; for a sync one,
    :meth:`PostgresStore.from_engine <pgsession_wsgi.store.PostgresStore.from_engine>` shares its
    pool instead. The password is kept (the store must log in); the driver part of the URL
    (``+psycopg``, ``+asyncpg``) is dropped, and the URL's query parameters go to libpq as
    they are, so keep driver-only ones (asyncpg's ``prepared_statement_cache_size``...) out of it.

    :param engine: an ``Engine``, an ``AsyncEngine``, or their ``URL`` (or its text).
    :returns: a ``postgresql://`` URL the stores accept.
    :raises ConfigurationError: the engine is not a PostgreSQL one.
    """
    target: Any = getattr(engine, "sync_engine", engine)  # an AsyncEngine wraps a sync one
    url = target.url if isinstance(target, Engine) else make_url(target)
    if url.get_backend_name() != "postgresql":
        raise ConfigurationError(
            f"store_dsn() needs a PostgreSQL engine, not a {url.get_backend_name()} one: sessions live "
            "in PostgreSQL"
        )
    return normalize_dsn(url.render_as_string(hide_password=False))
