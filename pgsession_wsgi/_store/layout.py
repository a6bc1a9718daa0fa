"""Internal: the session table's setup and checks, as steps without a driver.

Both stores go through :class:`TableSetup`, so a table is met the same way whichever driver asks."""

from __future__ import annotations

import contextlib
import logging
import shlex
from collections.abc import Callable, Mapping

from .. import sql
from ..errors import ConfigurationError, LegacyTableError, PrivilegeError, ReadOnlyServer, SessionError
from .ddl import grant_statements, persistence_statement, quote_identifier, setup_names
from .exchange import ALL, ONE, Statement, Steps, one_row

__all__ = [
    "TableSetup",
    "check_layout",
    "check_persistence",
    "missing_table_error",
    "needs_upgrade",
    "privilege_error",
    "read_only_error",
    "setup_plan",
]

log = logging.getLogger("pgsession_wsgi")


class TableSetup:
    """A store's table: its DDL, creation, layout check and grants, as steps, and what is done."""

    def __init__(
        self,
        statements: sql.Statements,
        schema: str,
        table: str,
        unlogged: bool | None,
        create: bool,
        store_class: str,
        partitions: int | None = None,
    ) -> None:
        self._sql = statements
        self.schema, self.table = schema, table
        self.qualified = f"{quote_identifier(schema, 'schema')}.{quote_identifier(table, 'table')}"
        self.lock_key = sql.lock_key(schema, table)
        self._unlogged = unlogged
        self._create = create
        self._store_class = store_class
        self._partitions = partitions
        self.created = self.checked = False

    def ddl(self) -> str:
        """The statements that create the table and its indexes (``PostgresStore.ddl``)."""
        schema_sql, table_sql, *index_sql = self._statements()
        return ";\n".join([schema_sql, table_sql, self._sql.upgrade, *index_sql]) + ";\n"

    def _statements(self) -> list[str]:
        return self._sql.create_unlogged if self._unlogged else self._sql.create

    def due(self) -> Callable[[], Steps[None]] | None:
        """What the store does before its first statement, once: create or check the table."""
        if self._create:
            return None if self.created else self.creating(convert=False)
        return None if self.checked else self.check

    def creating(self, *, convert: bool) -> Callable[[], Steps[None]]:
        """The steps that create what is missing, in one transaction under the table's lock."""

        def create() -> Steps[None]:
            yield Statement("BEGIN")
            try:
                yield Statement(sql.LOCK, (self.lock_key,))
                state = yield Statement(sql.SETUP_STATE, setup_names(self.schema, self.table), ONE)
                missing_schema, missing_objects, read_only = one_row(state)
                if read_only:  # a standby: found at start-up, not at the first write
                    raise read_only_error("transaction_read_only is on")
                before, after = setup_plan(missing_schema, missing_objects, self._statements())
                for statement in before:
                    yield Statement(statement)
                # Before the indexes, which need our columns.
                yield from self._check_layout(upgrade=True, convert=convert)
                for statement in after:
                    yield Statement(statement)
                yield Statement("COMMIT")
            except Exception:
                with contextlib.suppress(Exception):  # the connection is gone, and its transaction
                    yield Statement("ROLLBACK")
                raise
            self.created = True

        return create

    def check(self) -> Steps[None]:
        """Check, changing nothing, that the table is there and is ours."""
        yield from self._check_layout(upgrade=False)
        self.checked = True

    def granting(self, role: str) -> Callable[[], Steps[None]]:
        """The steps that grant ``role`` what an app needs (the names are checked now)."""
        statements = grant_statements(self.schema, self.table, role)
        return lambda: (Statement(statement) for statement in statements)

    def _check_layout(self, *, upgrade: bool, convert: bool = False) -> Steps[None]:
        """Refuse a table that is not ours, or that the store's role may not use, or whose
        persistence differs from ``unlogged`` (unless ``convert``); with ``upgrade``, add what an
        older one of ours lacks."""
        columns = dict((yield Statement(sql.LAYOUT, (self.qualified,), ALL)))
        if upgrade and needs_upgrade(columns):
            # ALTER TABLE waits for an exclusive lock even when there is nothing to add: only now.
            yield Statement(self._sql.upgrade)
            columns = dict((yield Statement(sql.LAYOUT, (self.qualified,), ALL)))
        if not columns:
            where = {"qualified": self.qualified, "table": self.table, "schema": self.schema}
            raise missing_table_error(**where, driver_class=self._store_class)
        check_layout(columns, qualified=self.qualified, table=self.table, schema=self.schema)
        if self._partitions is not None:
            strategy, count = one_row((yield Statement(sql.PARTITIONING, (self.qualified,) * 2, ONE)))
            # While creating, a partitioned table just made has no partitions yet.
            found = self._partitions if upgrade and strategy == "h" and int(count) == 0 else int(count)
            check_partitions(strategy, found, self._partitions, qualified=self.qualified)
        # Found at start-up rather than as a 500 on every request: a table made for another role.
        role, allowed = one_row((yield Statement(sql.PRIVILEGES, (self.schema, *[self.qualified] * 4), ONE)))
        if not allowed:
            detail = f"permission denied for table {self.table}"
            raise privilege_error(detail, role=role, table=self.table, schema=self.schema)
        if self._unlogged is None:
            return
        is_unlogged = bool(one_row((yield Statement(sql.PERSISTENCE, (self.qualified,), ONE)))[0])
        if convert and is_unlogged != self._unlogged:
            how = "SET UNLOGGED" if self._unlogged else "SET LOGGED"
            log.warning("converting the session table %s: %s", self.qualified, how)
            yield Statement(persistence_statement(self.qualified, self._unlogged))
            is_unlogged = self._unlogged
        check_persistence(is_unlogged, self._unlogged, qualified=self.qualified)


def setup_plan(missing_schema: bool, missing_objects: bool, create: list[str]) -> tuple[list[str], list[str]]:
    """The DDL ``create_table`` runs before the layout check, and after it: none if the table and its
    indexes exist (``CREATE ... IF NOT EXISTS`` needs privileges a least-privilege role lacks)."""
    if not missing_objects:
        return [], []
    schema_sql, table_sql, *index_sql = create
    return [schema_sql, table_sql] if missing_schema else [table_sql], index_sql


def missing_table_error(*, qualified: str, table: str, schema: str, driver_class: str) -> SessionError:
    """The error for a store told ``create_table=False`` whose table does not exist (not a
    configuration error: the table may be made while the app runs, and the next request works)."""
    return SessionError(
        f"the session table {qualified} does not exist: create it once as its owner with "
        f"`pgsession-wsgi init --dsn ... --schema {shlex.quote(schema)} --table {shlex.quote(table)}`, "
        f"or let the app create it ({driver_class}(create_table=True); Flask and Quart: "
        "PGSESSION_CREATE_TABLE = True)"
    )


def read_only_error(detail: str) -> ReadOnlyServer:
    """The error for a server that takes no writes (``detail`` showed it): the DSN's way to the one
    that does."""
    return ReadOnlyServer(
        f"the database server is read-only ({detail}): the DSN reached a standby, or a primary "
        "being demoted in a failover. List every server in the DSN and add "
        "target_session_attrs=read-write (e.g. host=db1,db2 target_session_attrs=read-write), so "
        "libpq connects only to the one that takes writes; retried on the next request"
    )


def privilege_error(detail: str, *, role: str | None, table: str, schema: str) -> PrivilegeError:
    """The error for a statement the store's role (None: unknown) may not run, the GRANTs named."""
    who = role if role else "APP_ROLE"
    grants = "; ".join(grant_statements(schema, table, who))
    return PrivilegeError(
        f"the session store failed: {detail}. The role {who!r} needs the session table made for "
        f"it: run `pgsession-wsgi init --dsn ... --schema {shlex.quote(schema)} --table "
        f"{shlex.quote(table)} --grant {shlex.quote(who)}` once as the table's owner (it creates the "
        f"table and grants what the role needs), or run yourself: {grants}",
        role,
    )


def needs_upgrade(columns: Mapping[str, str]) -> bool:
    """Whether the table is ours but made by an older version: only columns added since are missing
    (only then may a store add them; a table of anyone else is never altered)."""
    missing = sql.EXPECTED_COLUMNS.keys() - columns.keys()
    if not missing or not missing <= sql.ADDED_COLUMNS.keys():
        return False
    return all(columns[name] == kind for name, kind in sql.EXPECTED_COLUMNS.items() if name in columns)


def check_layout(columns: Mapping[str, str], *, qualified: str, table: str, schema: str) -> None:
    """Refuse a table whose columns (name to type, as ``LAYOUT`` answers) are not ours, naming
    what to do about it: a :class:`LegacyTableError` for flask-pg-session's, else a
    :class:`ConfigurationError`."""
    if all(columns.get(name) == kind for name, kind in sql.EXPECTED_COLUMNS.items()):
        return
    if needs_upgrade(columns):
        missing = ", ".join(name for name in sql.ADDED_COLUMNS if name not in columns)
        raise ConfigurationError(
            f"the session table {qualified} lacks the column(s) {missing} (per-session lifetimes, "
            f"added in pgsession-wsgi 0.2.0); add them once with `{sql.upgrade_statement(qualified)}` "
            "(instant: no rewrite), or `pgsession-wsgi init`, or start a store with create_table=True, "
            "which adds them itself"
        )
    if {"session_id", "data", "expiry"} <= columns.keys():
        raise LegacyTableError(
            qualified,
            "pgsession-wsgi migrate-flask-pg-session --dsn ... "
            f"--table {shlex.quote(table)} --schema {shlex.quote(schema)}",
        )
    raise ConfigurationError(
        f"the table {qualified} exists but is not a pgsession-wsgi table (columns: "
        f"{', '.join(sorted(columns))}); choose another table name or schema"
    )


def check_partitions(strategy: str | None, count: int, partitions: int, *, qualified: str) -> None:
    """Refuse a table not hash-partitioned (``strategy`` ``"h"``) into ``partitions`` as told."""
    if strategy == "h" and count == partitions:
        return
    found = "not partitioned" if strategy is None else f"partitioned into {count} (strategy {strategy!r})"
    raise ConfigurationError(
        f"the session table {qualified} is {found}, but the store was told partitions={partitions}: "
        "pass the number it has (or partitions=None to take it as it is); a plain table becomes a "
        "partitioned one only by copying its rows into a new table (see docs/deployment.md, "
        "A table that scales out)"
    )


def check_persistence(is_unlogged: bool, unlogged: bool, *, qualified: str) -> None:
    """Refuse an existing table that is unlogged when the store was told logged, or the reverse
    (never converted on the way: the rewrite's exclusive lock would stall every request)."""
    if is_unlogged == unlogged:
        return
    if is_unlogged:
        raise ConfigurationError(
            f"the session table {qualified} is UNLOGGED (emptied after a database crash) but the "
            "store was not told so: pass unlogged=True (Flask: PGSESSION_UNLOGGED = True) to keep "
            "it that way, or make it crash-safe with `pgsession-wsgi init --logged` (or "
            f"`{persistence_statement(qualified, False)}`), which rewrites the table"
        )
    raise ConfigurationError(
        f"the session table {qualified} is a logged table but the store has unlogged=True: convert "
        f"it with `pgsession-wsgi init --unlogged` (or `{persistence_statement(qualified, True)}`), "
        "which rewrites the table under an exclusive lock, or drop unlogged=True"
    )
