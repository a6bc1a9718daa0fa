"""The session table as SQLAlchemy metadata, so Alembic's migrations create it, not the store.

:func:`session_table` describes exactly the table the store creates, so autogenerate writes it
once and then sees no difference::

    metadata = MetaData()                   # the one Alembic's env.py compares
    session_table(metadata)
    store = PostgresStore.from_engine(create_engine(url), create_table=False)

An async engine's connections cannot be borrowed: give the async store its database instead::

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
    # sqlalchemy.ext.asyncio needs greenlet, which sync apps lack.
    import sqlalchemy.ext.asyncio

from ._store.ddl import suffixed_name
from .defaults import DEFAULT_TABLE
from .dsn import normalize_dsn
from .errors import ConfigurationError
from .sql import index_names, quote_identifier

__all__ = ["FILLFACTOR", "session_table", "store_dsn"]

#: The table's fillfactor: room on each page so that most writes are HOT updates.
FILLFACTOR = 90

# Table(postgresql_with=...) came with SQLAlchemy 2.1; on 2.0 the fillfactor is set by an
# ALTER TABLE right after CREATE TABLE instead (Alembic does not compare storage parameters).
_TABLE_WITH = any(
    target is Table and "with" in arguments for target, arguments in PGDialect.construct_arguments or ()
)


def session_table(
    metadata: MetaData, name: str = DEFAULT_TABLE, schema: str | None = None, *, unlogged: bool = False
) -> Table:
    """Add the session table to ``metadata``, exactly as :class:`~pgsession_wsgi.PostgresStore`
    creates it, and return it; run the store with ``create_table=False``.

    :param metadata: the app's metadata (the one Alembic's ``target_metadata`` names).
    :param name: the store's ``table``.
    :param schema: the store's ``schema`` (None: the connection's default schema; the store's
        default is ``"public"``).
    :param unlogged: ``CREATE UNLOGGED TABLE``, for a store with ``unlogged=True``. Autogenerate
        does not compare it: convert an existing table with ``pgsession-wsgi init --unlogged``.
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
        # PostgreSQL's name for an unnamed primary key, so a naming convention cannot change it.
        PrimaryKeyConstraint("id", name=suffixed_name(name, "_pkey")),
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

    The password is kept and the driver (``+asyncpg``) dropped; query parameters go to libpq as
    they are, so keep driver-only ones out of the URL.

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
