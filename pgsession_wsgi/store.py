"""``PostgresStore``: where sessions live, and the pool every statement goes through.

Each request-path statement is one autocommit statement on one row by its primary key, filtered
on ``expires_at > now()``: an expired row is never served, purged or not, and the store works
behind PgBouncer in transaction mode::

    store = PostgresStore("postgresql://app@db/app", max_connections=20)
    app = SessionMiddleware(app, store, secret_key=os.environ["SECRET_KEY"])
"""

from __future__ import annotations

from typing import Any

from ._drivers.psycopg2_driver import Psycopg2Connections, _answer_on
from ._store.base import StoreMethods
from ._store.prepared import MAX_BOUND_STATEMENTS as MAX_BOUND_STATEMENTS  # re-exported
from .core import Operation
from .dsn import normalize_dsn as normalize_dsn  # re-exported: cli and legacy import it from here
from .store_steps import EXACT_COUNT_LIMIT as EXACT_COUNT_LIMIT  # re-exported
from .store_steps import SessionInfo

__all__ = ["PostgresStore", "SessionInfo"]


class PostgresStore(Psycopg2Connections, StoreMethods):
    """Sessions in one PostgreSQL table, keyed by the SHA-256 of their id so a leak opens none.

    Every method that reaches the database raises :class:`StoreUnavailable` when it cannot do
    so in time, and :class:`SessionError` when a statement fails. An app with a SQLAlchemy engine
    or a psycopg2 pool can lend the store its connections instead (:meth:`from_engine`,
    :meth:`from_pool`, :meth:`from_factory`).

    :param dsn: a libpq connection string or ``postgresql://`` URL.
    :param table: table name; quoted as an identifier, so any name is safe.
    :param schema: schema holding the table; created if missing.
    :param max_connections: pool size per process.
    :param pool_timeout: seconds a request waits for a free connection before
        :class:`StoreUnavailable`.
    :param connect_timeout: seconds to wait for a new connection.
    :param statement_timeout: seconds any one statement may run (sent as a startup option).
    :param synchronous_commit: ``False`` acknowledges writes before their WAL reaches disk: much
        faster writes, but a database *crash* can lose the last fraction of a second of session
        changes (never corrupt them). ``True`` keeps the server's setting.
    :param create_table: create the schema, table and indexes on first use.
    :param purge_interval: seconds between background purges of expired rows; None for none.
    :param unlogged: keep sessions in an ``UNLOGGED`` table: faster writes, but a database
        *crash* empties it (everyone is logged out) and replicas do not get it. An existing
        table that differs is refused with a :class:`ConfigurationError` (``pgsession-wsgi init
        --unlogged`` / ``--logged`` converts it); None takes an existing table as it is.
    :param prepared_statements: prepare the request statements on the server once per
        connection, so PostgreSQL skips parsing and planning them and each write sends its values
        only. Turns itself off behind PgBouncer in transaction mode; False turns it off, e.g. for
        another pooler that shares server connections between clients.
    :param partitions: make the table ``PARTITION BY HASH (id)`` into this many partitions (2 to
        1024), for tens of millions of sessions; the purge runs one partition at a time. An
        existing table must be partitioned so (else a :class:`ConfigurationError`); None makes a
        plain table and takes an existing one as it is. Not with ``unlogged=True``.
    :raises ConfigurationError: the DSN is not PostgreSQL's, or a number is out of range.
    """

    _store_class = "PostgresStore"

    def create_table(self, *, convert: bool = False) -> None:
        """Create schema, table and indexes if missing; safe when many processes start at once.

        A table made by an older version gets the columns added since.

        :param convert: make an existing table unlogged or logged as ``unlogged`` says (a rewrite
            under an exclusive lock) instead of refusing it.
        :raises LegacyTableError: the table has flask-pg-session's layout; convert it first.
        :raises ConfigurationError: the table exists with another layout, or (without
            ``convert``) is unlogged when ``unlogged`` is False, or the reverse.
        """
        self._do(self._steps.table.creating(convert=convert), setup=True)

    def grant_access(self, role: str) -> None:
        """Grant ``role`` what an app needs to use the table, and nothing more.

        USAGE on the schema and SELECT, INSERT, UPDATE, DELETE on the table, run by the table's
        owner (``pgsession-wsgi init --grant ROLE``), so the app's role needs no CREATE privilege.

        :param role: the app's role, as named in PostgreSQL (quoted here).
        :raises PrivilegeError: this store's role may not grant them (it is not the owner).
        """
        self._do(self._steps.table.granting(role), setup=True)

    def check_table(self) -> None:
        """Check, without changing anything, that the table exists and is a pgsession-wsgi table.

        At start-up (the Flask extension does), a missing table stops the app instead of every request.

        :raises ConfigurationError: the table is missing, or is not a pgsession-wsgi table (a
            :class:`~pgsession_wsgi.LegacyTableError` for flask-pg-session's).
        :raises PrivilegeError: the store's role may not read the table's layout.
        :raises StoreUnavailable: the database cannot be reached.
        """
        self._do(self._steps.table.check, setup=True)

    def execute(self, operation: Operation) -> Any:
        """Run one statement the core asked for (see :mod:`pgsession_wsgi.core`), answer it.

        :param operation: a ``Load``, ``Insert``, ``Write``, ``Touch`` or ``Delete``.
        :returns: the answer that operation's docstring names.
        """
        steps, retry = self._steps.plans.get(type(operation)) or self._steps.plan(operation)
        return self._run(_answer_on, steps, operation, retry=retry)

    _answer = execute  # what StoreMethods' methods answer through

    def close(self) -> None:
        """Stop the purge thread and close pooled connections; the store is unusable after."""
        if self._purger is not None:
            self._purger.stop()
        self._pool.close()
