"""``PostgresStore``: where sessions live, and the pool every statement goes through.

Each request-path statement is a single autocommit statement that touches one row by its primary
key and filters ``expires_at > now()``, so an expired row is never served whether or not it has
been purged yet, and the store works unchanged behind PgBouncer in transaction mode::

    from pgsession_wsgi import PostgresStore, SessionMiddleware, current_session

    store = PostgresStore("postgresql://app@db/app", max_connections=20)
    app = SessionMiddleware(app, store, secret_key=os.environ["SECRET_KEY"])
    store.revoke_user(user_id, keep=current_session)  # in a view: "log out everywhere else"
"""

from __future__ import annotations

from typing import Any

from ._drivers.psycopg2_driver import Psycopg2Connections, _answer_on
from ._store.base import StoreMethods
from ._store.prepared import MAX_BOUND_STATEMENTS as MAX_BOUND_STATEMENTS  # importable here, as in 0.2.0
from .core import Operation
from .dsn import normalize_dsn as normalize_dsn  # re-exported: cli and legacy import it from here
from .store_steps import EXACT_COUNT_LIMIT as EXACT_COUNT_LIMIT  # importable here, as in 0.2.0
from .store_steps import SessionInfo

# LoadedRow, WriteResult, KEEP_USER and user_id_text live in core; importable here as in 0.1.0.
__all__ = ["PostgresStore", "SessionInfo"]


class PostgresStore(Psycopg2Connections, StoreMethods):
    """Sessions in one PostgreSQL table, keyed by the SHA-256 of their id so a leak opens none.

    Every method that reaches the database raises :class:`StoreUnavailable` when it cannot do
    so in time, and :class:`SessionError` when a statement fails.

    Built from a DSN, the store has a pool of its own. An app that already has a SQLAlchemy
    engine or a psycopg2 pool can lend the store its connections instead (:meth:`from_engine`,
    :meth:`from_pool`), or say how to open them (:meth:`from_factory`).

    :param dsn: a libpq connection string or ``postgresql://`` URL.
    :param table: table name; quoted as an identifier, so any name is safe.
    :param schema: schema holding the table; created if missing.
    :param max_connections: pool size per process.
    :param pool_timeout: seconds a request waits for a free connection before
        :class:`StoreUnavailable`.
    :param connect_timeout: seconds to wait for a new connection.
    :param statement_timeout: seconds any one statement may run (sent as a startup option).
    :param synchronous_commit: ``True`` keeps the server's setting. ``False`` acknowledges writes
        before their WAL reaches disk: much faster writes, but a database *crash* (not a clean
        restart) can lose the last fraction of a second of session changes. Sessions are never
        corrupted either way.
    :param create_table: create the schema, table and indexes on first use.
    :param purge_interval: seconds between background purges of expired rows; None for none.
    :param unlogged: keep sessions in an ``UNLOGGED`` table: writes skip the WAL (faster, and
        ``synchronous_commit`` no longer matters for them), but after a database *crash* the
        table is emptied (everyone is logged out), and it is not copied to streaming replicas:
        the durability of Redis without persistence. An existing table that differs is refused
        with a :class:`ConfigurationError` (``pgsession-wsgi init --unlogged`` / ``--logged``
        converts it); None takes an existing table as it is (a new one is logged).
    :param prepared_statements: prepare the request statements (load, insert, write, touch,
        delete) on the server, once per connection: PostgreSQL then skips parsing and planning
        them on every request, and each write sends its values only (about 250 bytes instead of
        1.2 KB). The ``PREPARE`` travels in the same message as the first ``EXECUTE``, so no
        round trip is added. Off by itself behind PgBouncer in transaction mode (as found at the
        first connection, or when a prepared statement goes missing); False turns it off, e.g.
        for another pooler that shares server connections between clients.
    :param partitions: make the table ``PARTITION BY HASH (id)`` into this many partitions (2 to
        1024), for tables of tens of millions of sessions: each request statement still touches
        one row by its key (in one partition), and the purge runs one partition at a time. An
        existing table must be partitioned so (else a :class:`ConfigurationError`); None (the
        default) makes a plain table and takes an existing one as it is. Not with
        ``unlogged=True`` (PostgreSQL has no unlogged partitioned tables). See
        ``docs/deployment.md``, "A table that scales out".
    :raises ConfigurationError: the DSN is not PostgreSQL's, or a number is out of range.
    """

    _store_class = "PostgresStore"

    # -- setup -----------------------------------------------------------------------------

    def create_table(self, *, convert: bool = False) -> None:
        """Create schema, table and indexes if missing; safe when many processes start at once.

        ``CREATE ... IF NOT EXISTS`` alone races in PostgreSQL (a concurrent create fails on a
        catalog unique index), so the statements run under a transaction-scoped advisory lock.
        A table made by an older version gets the columns added since (metadata only).

        :param convert: make an existing table unlogged or logged as ``unlogged`` says
            (``ALTER TABLE ... SET UNLOGGED`` / ``SET LOGGED``: the table is rewritten under an
            exclusive lock, and ``SET LOGGED`` writes all of it to the WAL) instead of refusing it.
        :raises LegacyTableError: the table has flask-pg-session's layout; convert it first.
        :raises ConfigurationError: the table exists with another layout, or (without
            ``convert``) is unlogged when ``unlogged`` is False, or the reverse.
        """
        self._do(self._steps.table.creating(convert=convert), setup=True)

    def grant_access(self, role: str) -> None:
        """Grant ``role`` what an app needs to use the table, and nothing more.

        USAGE on the schema and SELECT, INSERT, UPDATE, DELETE on the table: run by the table's
        owner (``pgsession-wsgi init --grant ROLE``), so the app's own role needs no CREATE
        privilege and does not own the table. Start that app's store with ``create_table=False``
        (Flask and Quart: ``PGSESSION_CREATE_TABLE = False``), or leave it on: a store finds the
        table and its indexes there and runs no DDL.

        :param role: the app's role, as named in PostgreSQL (quoted here).
        :raises PrivilegeError: this store's role may not grant them (it is not the owner).
        """
        self._do(self._steps.table.granting(role), setup=True)

    def check_table(self) -> None:
        """Check, without changing anything, that the table exists and is a pgsession-wsgi table.

        What a store with ``create_table=False`` runs at its first request anyway; call it at
        start-up (the Flask extension does) so that a missing table stops the app with one line
        naming ``pgsession-wsgi init``, instead of failing every request.

        :raises ConfigurationError: the table is missing, or is not a pgsession-wsgi table (a
            :class:`~pgsession_wsgi.LegacyTableError` for flask-pg-session's).
        :raises PrivilegeError: the store's role may not read the table's layout.
        :raises StoreUnavailable: the database cannot be reached.
        """
        self._do(self._steps.table.check, setup=True)

    # -- the request path ------------------------------------------------------------------

    def execute(self, operation: Operation) -> Any:
        """Run one statement the core asked for (see :mod:`pgsession_wsgi.core`), answer it.

        :param operation: a ``Load``, ``Insert``, ``Write``, ``Touch`` or ``Delete``.
        :returns: the answer that operation's docstring names.
        """
        steps, retry = self._steps.plans.get(type(operation)) or self._steps.plan(operation)
        return self._run(_answer_on, steps, operation, retry=retry)

    _answer = execute  # the methods of StoreMethods answer as this class does

    def close(self) -> None:
        """Stop the purge thread and close pooled connections; the store is unusable after."""
        if self._purger is not None:
            self._purger.stop()
        self._pool.close()
