"""Internal: a session table's names and the DDL that makes it, its grants and its persistence.

Names are quoted here once; :mod:`pgsession_wsgi.sql` imports every name here back (issue 22)."""

from __future__ import annotations

import hashlib

from ..errors import ConfigurationError

__all__ = [
    "create_statements",
    "grant_statements",
    "index_names",
    "partition_names",
    "persistence_statement",
    "quote_identifier",
    "setup_names",
    "suffixed_name",
]


def quote_identifier(name: str, what: str) -> str:
    """Quote a table or schema name the way PostgreSQL does, so any name is data, never SQL.

    :param name: the table or schema name, as given.
    :param what: what it names (``"table"``, ``"schema"``...), for the error message.
    :raises ConfigurationError: the name is empty, holds NUL, or is over 63 bytes.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ConfigurationError(f"the {what} name must be a non-empty string without NUL characters")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: bytes of a command line that were not UTF-8
        raise ConfigurationError(f"the {what} name is not valid UTF-8: choose another name") from None
    if size > 63:
        raise ConfigurationError(
            f"the {what} name {name!r} is longer than PostgreSQL's 63-byte limit: choose a shorter one"
        )
    return '"' + name.replace('"', '""') + '"'


def suffixed_name(name: str, suffix: str) -> str:
    """``name`` + ``suffix``, ``name`` cut on a character boundary to PostgreSQL's 63 bytes, so the
    suffix always survives (as PostgreSQL names a primary key: ``<table>_pkey``)."""
    head = name.encode("utf-8")[: 63 - len(suffix.encode())].decode("utf-8", "ignore")
    return head + suffix


def _name_base(table: str) -> str:
    # Distinct per table even when long names share a prefix (PostgreSQL cuts names at 63 bytes).
    short = table.encode()[:30].decode("utf-8", "ignore")
    return f"{short}_{hashlib.sha256(table.encode()).hexdigest()[:8]}"


def index_names(table: str) -> tuple[str, str]:
    """The unquoted names of a table's ``expires_at`` index and its partial ``user_id`` index.

    The DDL and :func:`pgsession_wsgi.sqlalchemy.session_table` both take them from here.
    """
    base = _name_base(table)
    return base + "_expires_at_idx", base + "_user_id_idx"


def partition_names(table: str, count: int) -> list[str]:
    """The names of a hash-partitioned table's ``count`` partitions, in remainder order."""
    base = _name_base(table)
    return [f"{base}_p{remainder}" for remainder in range(count)]


def setup_names(schema: str, table: str) -> tuple[str, str, str, str]:
    """The quoted names :data:`~pgsession_wsgi.sql.SETUP_STATE` is bound with: schema, table and
    its two indexes."""
    schema_part = quote_identifier(schema, "schema")
    expires_index, user_index = index_names(table)

    def qualified(name: str) -> str:
        return f"{schema_part}.{quote_identifier(name, 'table')}"

    return schema_part, qualified(table), qualified(expires_index), qualified(user_index)


def grant_statements(schema: str, table: str, role: str) -> list[str]:
    """The GRANTs a least-privilege role needs to use the session table once it exists, and no more:
    USAGE on the schema, and SELECT, INSERT, UPDATE, DELETE on the table."""
    schema_part = quote_identifier(schema, "schema")
    qualified = f"{schema_part}.{quote_identifier(table, 'table')}"
    grantee = quote_identifier(role, "role")
    return [
        f"GRANT USAGE ON SCHEMA {schema_part} TO {grantee}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {qualified} TO {grantee}",
    ]


def persistence_statement(qualified: str, unlogged: bool) -> str:
    """The DDL that makes an existing table unlogged or logged again (a rewrite under an
    ``ACCESS EXCLUSIVE`` lock, so only run when asked for).

    :param qualified: the table's quoted, qualified name, as exact SQL.
    """
    return f"ALTER TABLE {qualified} SET {'UNLOGGED' if unlogged else 'LOGGED'}"


def create_statements(
    schema: str, table: str, partitions: int | None
) -> tuple[list[str], list[str], list[str]]:
    """The DDL that creates a table of ours (``partitions`` as :class:`~pgsession_wsgi.sql.Statements`).

    :returns: ``(create, create_unlogged, partitions)``: schema, table, its partitions and
        indexes, the table logged; the same, the table unlogged; the partitions' qualified names.
    """
    schema_part = quote_identifier(schema, "schema")
    exact = f"{schema_part}.{quote_identifier(table, 'table')}"
    expires_index, user_index = (quote_identifier(name, "index") for name in index_names(table))
    table_columns = (
        f" TABLE IF NOT EXISTS {exact} (\n"
        "    id          bytea        PRIMARY KEY,\n"
        "    data        jsonb        NOT NULL,\n"
        "    user_id     text,\n"
        "    created_at  timestamptz  NOT NULL DEFAULT now(),\n"
        "    accessed_at timestamptz  NOT NULL DEFAULT now(),\n"
        "    expires_at  timestamptz  NOT NULL,\n"
        "    idle_timeout interval,\n"
        "    ends_at     timestamptz\n"
        ")"
    )
    qualified_partitions = [
        f"{schema_part}.{quote_identifier(name, 'table')}" for name in partition_names(table, partitions or 0)
    ]
    # Updates are mostly HOT with room left on each page: the table's, or each partition's
    # (a partitioned table itself holds no rows, so takes no storage parameters).
    fill = " WITH (fillfactor = 90)"
    table_columns += fill if partitions is None else " PARTITION BY HASH (id)"
    parts = [
        f"CREATE TABLE IF NOT EXISTS {qualified} PARTITION OF"
        f" {exact} FOR VALUES WITH (MODULUS {partitions}, REMAINDER {remainder}){fill}"
        for remainder, qualified in enumerate(qualified_partitions)
    ]
    indexes = [
        f"CREATE INDEX IF NOT EXISTS {expires_index} ON {exact} (expires_at)",
        f"CREATE INDEX IF NOT EXISTS {user_index} ON {exact} (user_id) WHERE user_id IS NOT NULL",
    ]
    create_schema = f"CREATE SCHEMA IF NOT EXISTS {schema_part}"
    create = [create_schema, "CREATE" + table_columns, *parts, *indexes]
    create_unlogged = [create_schema, "CREATE UNLOGGED" + table_columns, *parts, *indexes]
    return create, create_unlogged, qualified_partitions
