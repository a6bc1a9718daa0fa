"""Internal: every SQL statement pgsession-wsgi sends, and the DDL, written once for both drivers.

Names travel only as quoted identifiers; values only as bound ``%(name)s`` parameters."""

from __future__ import annotations

import hashlib
import re

# Re-exported: the table's names and DDL moved to _store.ddl (issue 22).
from ._store.ddl import create_statements as create_statements
from ._store.ddl import grant_statements as grant_statements
from ._store.ddl import index_names as index_names
from ._store.ddl import partition_names as partition_names
from ._store.ddl import persistence_statement as persistence_statement
from ._store.ddl import quote_identifier as quote_identifier

__all__ = [
    "ADDED_COLUMNS",
    "EXPECTED_COLUMNS",
    "LAYOUT",
    "LOCK",
    "PARTITIONING",
    "PERSISTENCE",
    "PRIVILEGES",
    "SCHEMA_MISSING",
    "SETTINGS",
    "Statements",
    "guard",
    "index_names",
    "partition_names",
    "lock_key",
    "persistence_statement",
    "prepared",
    "quote_identifier",
    "upgrade_statement",
    "with_literals",
]

#: Take the table's advisory lock for the rest of the transaction (creation, migration).
LOCK = "SELECT pg_advisory_xact_lock(%s)"
#: Whether a schema (its quoted name bound as the value) is missing.
SCHEMA_MISSING = "SELECT to_regnamespace(%s) IS NULL"
#: Whether the schema is missing, whether the table or one of its indexes is (the names of
#: :func:`setup_names` bound), and whether the server takes no writes (a standby).
SETUP_STATE = (
    "SELECT to_regnamespace(%s) IS NULL,"
    " to_regclass(%s) IS NULL OR to_regclass(%s) IS NULL OR to_regclass(%s) IS NULL,"
    " current_setting('transaction_read_only')::boolean"
)
#: The role a connection works as, named in a privilege error.
CURRENT_ROLE = "SELECT current_user"
#: A table's columns and their types (its quoted, qualified name bound).
LAYOUT = (
    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
    " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
)
#: The current values of some settings (their names bound as an array).
SETTINGS = "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)"
#: How a table is partitioned ("h" for hash, NULL for not at all) and into how many partitions.
PARTITIONING = (
    "SELECT (SELECT partstrat::text FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)),"
    " (SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass(%s))"
)
#: Whether a table is unlogged; no row if missing.
PERSISTENCE = "SELECT relpersistence = 'u' FROM pg_class WHERE oid = to_regclass(%s)"
#: Who the store connects as, and whether it may use the table: USAGE on the schema and each
#: of the four privileges on the table (has_table_privilege is true for any one of a list).
PRIVILEGES = (
    "SELECT current_user, has_schema_privilege(%s, 'USAGE') AND has_table_privilege(%s, 'SELECT')"
    " AND has_table_privilege(%s, 'INSERT') AND has_table_privilege(%s, 'UPDATE')"
    " AND has_table_privilege(%s, 'DELETE')"
)


def lock_key(schema: str, table: str) -> int:
    """The advisory lock key of one table: creation, migration and purges serialise on it."""
    digest = hashlib.sha256(f"pgsession-wsgi:{schema}.{table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def guard(settings: dict[str, str]) -> str:
    """``SET LOCAL`` for each setting, to prefix statements where startup options are dropped."""
    return "".join(f"SET LOCAL {name} = {value}; " for name, value in settings.items())


#: The columns and types a table must have to be taken as ours.
EXPECTED_COLUMNS = {
    "id": "bytea",
    "data": "jsonb",
    "user_id": "text",
    "created_at": "timestamp with time zone",
    "accessed_at": "timestamp with time zone",
    "expires_at": "timestamp with time zone",
    "idle_timeout": "interval",
    "ends_at": "timestamp with time zone",
}
#: The columns added since 0.1.0: an older table of ours gets them from :func:`upgrade_statement`.
ADDED_COLUMNS = {"idle_timeout": "interval", "ends_at": "timestamptz"}


def upgrade_statement(qualified: str) -> str:
    """The DDL that brings a table made by an older version up to date (metadata only, instant)."""
    adds = ", ".join(f"ADD COLUMN IF NOT EXISTS {name} {kind}" for name, kind in ADDED_COLUMNS.items())
    return f"ALTER TABLE {qualified} {adds}"


#: The type of every parameter of the request statements, declared when they are prepared.
PARAMETER_TYPES = {
    "id": "bytea",
    "new_id": "bytea",
    "data": "text",
    "changed": "text",
    "removed": "text[]",
    "replace": "boolean",
    "set_user": "boolean",
    "user_id": "text",
    "set_expiry": "boolean",
    "idle": "interval",
    "absolute": "interval",
    "touch": "interval",
    "idle_timeout": "interval",
    "ends_at": "timestamptz",
    "max_size": "bigint",
}
# A doubled % (in a quoted name) first, so that what follows it is never read as a placeholder.
_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)s")


def prepared(kind: str, text: str) -> tuple[str, str]:
    """A request statement as a server-side prepared statement: ``(prepare, execute)``.

    Both are templates like ``text`` (``%`` doubled, each value a ``%(name)s`` placeholder of the
    ``EXECUTE``), sent together in one round trip; each parameter is sent once.

    :param kind: the statement's name in :class:`Statements` (``"load"``, ``"write"``...).
    :param text: its text, with no guard prefix.
    :raises KeyError: a placeholder without a type in :data:`PARAMETER_TYPES`.
    """
    order: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%%"
        if name not in order:
            order.append(name)
        return f"${order.index(name) + 1}"

    body = _PLACEHOLDER.sub(number, text)
    name = _statement_name(kind, text)
    types = ", ".join(PARAMETER_TYPES[param] for param in order)
    arguments = ", ".join(f"%({param})s" for param in order)
    return f"PREPARE {name} ({types}) AS {body}", f"EXECUTE {name}({arguments})"


def by_name(kind: str, text: str) -> tuple[bytes, str]:
    """A request statement as a driver that executes prepared statements by name sends it.

    :returns: ``(name, statement)``: the name of :func:`prepared`'s statement, and ``text`` with
        each ``%(name)s`` placeholder made ``%(name)t`` (its value sent as text).
    """
    statement = _PLACEHOLDER.sub(lambda m: "%%" if m.group(1) is None else f"%({m.group(1)})t", text)
    return _statement_name(kind, text).encode(), statement


def _statement_name(kind: str, text: str) -> str:
    """A prepared statement's name: its kind and a hash of its text, so that one name always
    means one statement whichever table or connection it meets."""
    return f"pgsession_{kind}_{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _in_template(sql_text: str) -> str:
    """Exact SQL text as part of a statement run with parameters: the drivers read ``%``."""
    return sql_text.replace("%", "%%")


def with_literals(template: str, literals: dict[str, str]) -> str:
    """``template`` with some of its ``%(name)s`` placeholders replaced by fixed SQL literals.

    For an app's settings (lifetimes, size limit): written in once, not adapted on every request.

    :param literals: placeholder names and the SQL text of their values (e.g. ``"NULL"``).
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return _in_template(literals[name]) if name in literals else match.group(0)

    return _PLACEHOLDER.sub(replace, template)


def _expiry(ends_at: str, idle_timeout: str, created_at: str) -> str:
    """When a row expires: its fixed end, else its idle timeout from now; LEAST ignores a NULL limit."""
    return (
        f"LEAST(COALESCE({ends_at}, now() + COALESCE({idle_timeout}, %(idle)s)), {created_at} + %(absolute)s)"
    )


# By the lifetime the row holds (a touch, or a write whose touch is due) ...
_ROW_EXPIRY = _expiry("ends_at", "idle_timeout", "created_at")
# ... or by the one set_expiry() gave in this request (an insert, or a write that sets it).
_NEW_ENDS_AT = "%(ends_at)s::timestamptz"
_NEW_IDLE_TIMEOUT = "%(idle_timeout)s::interval"
# A session's own idle timeout shortens the touch interval as the store's does (a tenth of it).
_TOUCH_DUE = "accessed_at < now() - LEAST(%(touch)s, idle_timeout / 10)"
_MERGED = "(CASE WHEN %(replace)s THEN '{}'::jsonb ELSE data - %(removed)s::text[] END || %(changed)s::jsonb)"
# The stored _permanent flag as a boolean, NULL when unset or not a boolean: the driver then
# returns a bool (no JSON to parse), and a string "true" is not taken for true.
_STORED_PERMANENT = "CASE data -> '_permanent' WHEN 'true' THEN true WHEN 'false' THEN false END"
# max_size bounds what the database stores, measured as it prints the jsonb value.
_FITS = "(%(max_size)s::bigint IS NULL OR octet_length({data}::text) <= %(max_size)s::bigint)"


# The size of a table (%(name)s), or of its partitions if it has some: a partitioned table holds no
# rows itself, and pg_partition_tree() lists nothing for a plain table.
_TREE_SIZE = (
    "COALESCE((SELECT sum({size}(relid))::bigint FROM pg_partition_tree(to_regclass(%(name)s))),"
    " {size}(to_regclass(%(name)s)))"
)


def _purge(t: str) -> str:
    """One purge batch on the table (or partition) ``t``: the rows gone, and the last ``expires_at``."""
    return (
        "WITH lock AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(%(lock)s) AS acquired),"
        f" deleted AS (DELETE FROM {t} WHERE id IN (SELECT s.id FROM {t} s, lock"
        " WHERE lock.acquired AND s.expires_at <= now() AND s.expires_at >= %(after)s::timestamptz"
        " ORDER BY s.expires_at LIMIT %(limit)s FOR UPDATE OF s SKIP LOCKED) RETURNING expires_at)"
        " SELECT count(*), max(expires_at) FROM deleted"
    )


class Statements:
    """The SQL text for one table, built once per store.

    :param guard: a prefix for every request statement (see :func:`guard`), or "".
    :param partitions: make the table ``PARTITION BY HASH (id)`` into this many partitions; None
        for a plain table.
    """

    def __init__(self, schema: str, table: str, guard: str, partitions: int | None = None) -> None:
        exact = f"{quote_identifier(schema, 'schema')}.{quote_identifier(table, 'table')}"
        # DDL runs without parameters and takes the exact name; the rest the template form (%%).
        t = _in_template(exact)
        create, create_unlogged, qualified_partitions = create_statements(schema, table, partitions)
        #: Each partition's quoted, qualified name, in remainder order; empty for a plain table.
        self.partitions = qualified_partitions
        #: Schema, table, its partitions and indexes (the table logged).
        self.create = create
        #: The same with an unlogged table (its indexes are unlogged with it).
        self.create_unlogged = create_unlogged
        #: Adds the columns a table made by 0.1.0 lacks; run only when they are missing.
        self.upgrade = upgrade_statement(exact)
        self.load = (
            f"SELECT data, {_TOUCH_DUE}, idle_timeout, ends_at FROM {t}"
            " WHERE id = %(id)s AND expires_at > now()"
        )
        self.insert = (
            f"INSERT INTO {t} (id, data, user_id, idle_timeout, ends_at, expires_at)"
            f" SELECT %(id)s, s.data, %(user_id)s, {_NEW_IDLE_TIMEOUT}, {_NEW_ENDS_AT},"
            f" {_expiry(_NEW_ENDS_AT, _NEW_IDLE_TIMEOUT, 'now()')}"
            " FROM (SELECT %(data)s::jsonb AS data) s"
            f" WHERE {_FITS.format(data='s.data')}"
        )
        self.size_of = "SELECT octet_length(%(data)s::jsonb::text)"
        # Setting user_id to its own value keeps the update HOT-eligible (PostgreSQL compares).
        self.write = (
            f"UPDATE {t} SET id = COALESCE(%(new_id)s, id), data = {_MERGED},"
            " user_id = CASE WHEN %(set_user)s THEN %(user_id)s ELSE user_id END,"
            f" idle_timeout = CASE WHEN %(set_expiry)s THEN {_NEW_IDLE_TIMEOUT} ELSE idle_timeout END,"
            f" ends_at = CASE WHEN %(set_expiry)s THEN {_NEW_ENDS_AT} ELSE ends_at END,"
            f" accessed_at = CASE WHEN %(set_expiry)s OR {_TOUCH_DUE} THEN now() ELSE accessed_at END,"
            " expires_at = CASE"
            f" WHEN %(set_expiry)s THEN {_expiry(_NEW_ENDS_AT, _NEW_IDLE_TIMEOUT, 'created_at')}"
            f" WHEN {_TOUCH_DUE} THEN {_ROW_EXPIRY} ELSE expires_at END"
            f" WHERE id = %(id)s AND expires_at > now() AND {_FITS.format(data=_MERGED)}"
            f" RETURNING {_STORED_PERMANENT}, accessed_at = now(), idle_timeout, ends_at"
        )
        # The common write, with nothing but data to change (no new id, user or lifetime, no
        # clear()): the same UPDATE with half the parameters, so it is smaller to send and to run.
        merged = "(data - %(removed)s::text[] || %(changed)s::jsonb)"
        self.merge = (
            f"UPDATE {t} SET data = {merged},"
            f" accessed_at = CASE WHEN {_TOUCH_DUE} THEN now() ELSE accessed_at END,"
            f" expires_at = CASE WHEN {_TOUCH_DUE} THEN {_ROW_EXPIRY} ELSE expires_at END"
            f" WHERE id = %(id)s AND expires_at > now() AND {_FITS.format(data=merged)}"
            f" RETURNING {_STORED_PERMANENT}, accessed_at = now(), idle_timeout, ends_at"
        )
        self.merged_size = (
            f"SELECT octet_length({_MERGED}::text) FROM {t} WHERE id = %(id)s AND expires_at > now()"
        )
        self.touch = (
            f"UPDATE {t} SET accessed_at = now(), expires_at = {_ROW_EXPIRY}"
            " WHERE id = %(id)s AND expires_at > now()"
        )
        self.delete = f"DELETE FROM {t} WHERE id = %(id)s"
        self.purge = _purge(t)
        #: :attr:`purge` of each partition: each batch's scan and locks stay in one partition.
        self.purge_partitions = [guard + _purge(_in_template(name)) for name in self.partitions]
        # About how many rows a purge has ahead, for progress: counted up to %(cap)s rows, else
        # estimated from a sample of about %(pages)s pages, whatever the freshness of statistics.
        self.expired_count = (
            f"SELECT count(*) FROM (SELECT 1 FROM {t} WHERE expires_at <= now() LIMIT %(cap)s) s"
        )
        percent = (
            "LEAST(100, %(pages)s * 100.0 / GREATEST(1,"
            f" {_TREE_SIZE.format(size='pg_relation_size')} / current_setting('block_size')::int))"
        )
        self.expired_sample = (
            f"SELECT round(count(*) * 100.0 / {percent})::bigint"
            f" FROM {t} TABLESAMPLE SYSTEM ({percent}) WHERE expires_at <= now()"
        )
        self.for_user = (
            f"SELECT encode(id, 'hex'), created_at, accessed_at, expires_at FROM {t}"
            " WHERE user_id = %(user_id)s AND expires_at > now() ORDER BY accessed_at DESC"
        )
        self.revoke = f"DELETE FROM {t} WHERE user_id = %(user_id)s AND id IS DISTINCT FROM %(keep)s"
        # Every row, a batch at a time in id order from %(after)s on (requests wait for one batch
        # at most): the live sessions it ended, and the last id (NULL once nothing was left).
        self.delete_all = (
            f"WITH deleted AS (DELETE FROM {t} WHERE id IN (SELECT id FROM {t}"
            " WHERE id >= %(after)s::bytea ORDER BY id LIMIT %(limit)s) RETURNING id, expires_at)"
            " SELECT count(*) FILTER (WHERE expires_at > now()), (array_agg(id ORDER BY id DESC))[1]"
            " FROM deleted"
        )
        self.stats = (
            "SELECT count(*) FILTER (WHERE expires_at > now()),"
            " count(*) FILTER (WHERE expires_at <= now()),"
            " count(DISTINCT user_id) FILTER (WHERE expires_at > now()),"
            f" {_TREE_SIZE.format(size='pg_total_relation_size')} FROM {t}"
        )
        if guard:
            # Every statement but the DDL, in the same query string: one round trip, one implicit
            # transaction.
            for name, text in list(vars(self).items()):
                if isinstance(text, str) and name != "upgrade":
                    setattr(self, name, guard + text)
