"""Internal: what a session store decides, written once for both drivers and without I/O.

Each decision is a step (:mod:`pgsession_wsgi._store.exchange`); a store only runs them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._core.operations import user_id_text
from ._drivers.connections import first_line
from ._store.exchange import ALL, COUNT, EACH, ONE, ROW, DriverErrors, Statement, Steps, one_row, readable
from ._store.layout import TableSetup, privilege_error, read_only_error
from ._store.prepared import Fixed, PreparedStatements
from .cookies import hash_session_id
from .core import KEEP_USER, Delete, Insert, Load, LoadedRow, Operation, Touch, Write, WriteResult
from .errors import (
    ConfigurationError,
    PrivilegeError,
    SessionDataError,
    SessionError,
    SessionTooLarge,
    StoreUnavailable,
)
from .session import skipping_unreadable_row
from .sql import CURRENT_ROLE, SETTINGS, Statements, guard

__all__ = ["EXACT_COUNT_LIMIT", "SAMPLED_PAGES", "DeleteAll", "Purge", "SessionInfo", "StoreSteps"]

log = logging.getLogger("pgsession_wsgi")

#: Up to this many expired rows are counted exactly for a purge's progress; beyond it they are
#: estimated from about SAMPLED_PAGES of the table's pages (16 MB), so counting never takes long.
EXACT_COUNT_LIMIT = 100_000
SAMPLED_PAGES = 2000


@dataclass(frozen=True)
class SessionInfo:
    """One live session of a user, for a "your devices" page; never carries the session id.

    :param id_hash: the hex SHA-256 of the session id: tells sessions apart, opens none.
    :param created_at: when the session began (a regenerated id keeps it).
    :param accessed_at: when its expiry was last pushed forward (at most every touch interval).
    :param expires_at: when it ends unless it is used again.
    """

    id_hash: str
    created_at: datetime
    accessed_at: datetime
    expires_at: datetime


class StoreSteps:
    """Everything one store decides, for one table: each public method checks its arguments at
    once and returns steps, or what makes them anew for each try. ``settings`` are those the store
    itself sets (startup options, or ``SET LOCAL``)."""

    def __init__(
        self, schema: str, table: str, settings: dict[str, str], *, statement_timeout: float | None,
        unlogged: bool | None, create: bool, store_class: str, errors: DriverErrors,
        partitions: int | None = None,
    ) -> None:
        self._partitions = partitions
        self.sql = Statements(schema, table, "", partitions)
        self.table = TableSetup(self.sql, schema, table, unlogged, create, store_class, partitions)
        self.qualified, self.lock_key = self.table.qualified, self.table.lock_key
        self._schema, self._table = schema, table
        self.settings = settings
        self._statement_timeout = statement_timeout
        self._store_class = store_class
        self.errors = errors
        #: The prefix each of :attr:`sql` carries: "", or ``SET LOCAL`` for each setting.
        self.guard = ""
        self.settings_checked = False
        self.prepared = PreparedStatements(self.sql, errors, self._plain)
        self._request = self.prepared.statement  # a request statement, prepared or as text
        #: Each of the core's operations' steps, and whether they may run again: not an insert or a
        #: write, which may have been applied before a connection broke.
        self.plans: dict[type, tuple[Callable[[Any, Any], Steps[Any]], bool]] = {
            Load: (self._load, True),
            Write: (self._write, False),
            Insert: (self._insert, False),
            Touch: (self._touch, True),
            Delete: (self._delete, True),
        }

    def lend(self) -> None:
        """Connections the app lends: no startup option of ours reached them, so every statement
        sets the settings itself (``SET LOCAL``), and nothing is prepared on them."""
        self._guard()
        self.settings_checked = True

    def _guard(self) -> None:
        self.guard = guard(self.settings)
        self.sql = Statements(self._schema, self._table, self.guard, self._partitions)
        self.prepared.templates = None  # PgBouncer in transaction mode would lose them

    def check_settings(self) -> Steps[None]:
        """On a new connection, once: were the startup options kept? PgBouncer in transaction
        mode drops them; then every statement carries its own ``SET LOCAL`` (still one round trip)."""
        if self.settings_checked:
            return
        kept = dict((yield Statement(SETTINGS, (list(self.settings),), ALL)))
        if kept != self.settings:
            self._guard()
            log.info("startup options not kept (PgBouncer?); setting them per statement")
        self.settings_checked = True

    def statement(self, text: str, params: Any, read: int) -> Statement:
        """One of :attr:`sql`'s statements (guarded ones hold several commands)."""
        return Statement(text, params, read, bool(self.guard))

    def _plain(self, kind: str, params: dict[str, Any], fixed: Fixed, read: int) -> Statement:
        """A request statement as text, every value bound (prepared statements off)."""
        return Statement(getattr(self.sql, kind), {**params, **dict(fixed)}, read, bool(self.guard))

    def fail(self, exc: Exception, last: bool) -> None:
        """Raise what the driver's ``exc`` means for the app; return if the work may run again
        (the connection broke, and this was not its ``last`` try)."""
        if isinstance(exc, self.errors.canceled):
            limit = "the statement_timeout your DSN or server sets"
            if "statement_timeout" in self.settings:
                limit = f"statement_timeout={self._statement_timeout}s"
            raise StoreUnavailable(
                f"a session statement ran longer than {limit}; check the database load, "
                "or raise statement_timeout"
            ) from None
        if self.errors.broke(exc):
            if not last:
                return
            raise StoreUnavailable(
                f"lost the connection to PostgreSQL ({first_line(exc)}); it is retried on the next request"
            ) from None
        if isinstance(exc, self.errors.read_only):
            raise read_only_error(first_line(exc)) from None
        if isinstance(exc, self.errors.undefined_table):
            raise SessionError(
                f"the session table {self.qualified} does not exist: create it with "
                f"`pgsession-wsgi init` or {self._store_class}(create_table=True)"
            ) from None
        raise SessionError(f"the session store failed: {first_line(exc)}") from None

    def current_role(self) -> Steps[str | None]:
        """The role the connection works as, for a privilege error; None if it cannot be asked."""
        try:
            return str(one_row((yield Statement(CURRENT_ROLE, None, ONE)))[0])
        except self.errors.base:
            return None

    def refused(self, exc: Exception, role: str | None) -> PrivilegeError:
        """The error for a statement the role ``role`` may not run, the GRANTs named."""
        return privilege_error(first_line(exc), role=role, table=self._table, schema=self._schema)

    def plan(self, operation: Operation) -> tuple[Callable[[Any, Any], Steps[Any]], bool]:
        """``operation``'s entry in ``plans``, which its subclass may take; TypeError if it has none."""
        entry = self.plans.get(type(operation))  # one lookup on every request's path
        if entry is not None:
            return entry
        for kind, entry in self.plans.items():
            if isinstance(operation, kind):
                return entry
        raise TypeError(f"not a session store operation: {operation!r}")

    def _load(self, op: Load, conn: Any) -> Steps[LoadedRow | None]:
        statement = self._request(conn, "load", {"id": op.id_hash}, (("touch", op.touch_interval),), ROW)
        row = readable((yield statement))
        if row is None:
            return None
        if type(row[0]) is not dict:  # a JSON array or scalar: no session was ever stored as one
            raise SessionDataError("the stored data is not a JSON object")
        return LoadedRow(*row)

    def _insert(self, op: Insert, conn: Any) -> Steps[None]:
        params = {
            "id": op.id_hash,
            "data": op.data_json,
            "user_id": op.user_id,
            "idle_timeout": op.idle_timeout,
            "ends_at": op.ends_at,
        }
        fixed = (("idle", op.idle), ("absolute", op.absolute), ("max_size", op.max_size))
        inserted = yield self._request(conn, "insert", params, fixed, COUNT)
        if inserted == 0 and op.max_size is not None:
            size = one_row((yield self.statement(self.sql.size_of, params, ONE)))[0]
            raise SessionTooLarge(int(size), op.max_size)

    def _write(self, op: Write, conn: Any) -> Steps[WriteResult]:
        # The expiry columns change only when a touch is due (or with set_expiry), so most writes
        # leave every indexed column as it was and PostgreSQL can update the row in place (HOT).
        keep_user = op.user_id is KEEP_USER
        params = {
            "id": op.id_hash,
            "new_id": op.new_hash,
            "changed": op.changed_json,
            # No key removed (most writes): the empty array's text, cheaper than adapting a list.
            "removed": list(op.removed) if op.removed else "{}",
            "replace": op.replace,
            "set_user": not keep_user,
            "user_id": None if keep_user else op.user_id,
            "set_expiry": op.set_expiry,
            "idle_timeout": op.idle_timeout,
            "ends_at": op.ends_at,
        }
        # Only data changes (the common write): the statement without the other columns' cases.
        kind = "merge" if op.new_hash is None and not (op.replace or op.set_expiry) and keep_user else "write"
        fixed = (
            ("touch", op.touch_interval),
            ("idle", op.idle),
            ("absolute", op.absolute),
            ("max_size", op.max_size),
        )
        row = readable((yield self._request(conn, kind, params, fixed, ROW)))
        if row is None:
            if op.max_size is not None:
                # Rare: the row is gone, or the merge would pass the limit. Ask which.
                found = yield self.statement(self.sql.merged_size, params, ONE)
                if found is not None and found[0] > op.max_size:
                    raise SessionTooLarge(int(found[0]), op.max_size)
            return WriteResult(updated=False, touched=False, permanent=None)
        permanent, touched, own_idle, own_end = row  # permanent: a bool, or None if unset
        return WriteResult(True, touched, permanent, own_idle, own_end)

    def _touch(self, op: Touch, conn: Any) -> Steps[bool]:
        fixed = (("idle", op.idle), ("absolute", op.absolute))
        return bool((yield self._request(conn, "touch", {"id": op.id_hash}, fixed, COUNT)))

    def _delete(self, op: Delete, conn: Any) -> Steps[bool]:
        return bool((yield self._request(conn, "delete", {"id": op.id_hash}, (), COUNT)))

    def purge(self, batch_size: int, on_batch: Callable[[int, int], bool | None] | None = None) -> Purge:
        """A purge of expired rows in batches of ``batch_size`` (see ``purge_expired``)."""
        return Purge(self, batch_size, on_batch)

    def sessions_for_user(self, user_id: Any, key_prefix: str) -> Callable[[], Steps[list[SessionInfo]]]:
        """The steps listing a user's live sessions (``user_id`` is checked now)."""
        params = {"user_id": user_id_text(user_id, key_prefix=key_prefix)}

        def select() -> Steps[list[SessionInfo]]:
            found = []
            for row in (yield self.statement(self.sql.for_user, params, EACH)):
                with skipping_unreadable_row():  # a row that cannot be read is left out
                    found.append(SessionInfo(*readable(row or ())))
            return found

        return select

    def revoke_user(self, user_id: Any, keep: Any, key_prefix: str) -> Callable[[], Steps[int]]:
        """The steps deleting a user's sessions but ``keep`` (a Session or an id; checked now)."""
        keep_id = keep if isinstance(keep, str) else getattr(keep, "id", None)
        params = {
            "user_id": user_id_text(user_id, key_prefix=key_prefix),
            "keep": hash_session_id(keep_id) if keep_id else None,
        }

        def revoke() -> Steps[int]:
            return int((yield self.statement(self.sql.revoke, params, COUNT)))

        return revoke

    def delete_all(self, batch_size: int) -> DeleteAll:
        """The deletion of every row, in batches of ``batch_size`` (see ``delete_all``)."""
        return DeleteAll(self, batch_size)

    def stats(self) -> Steps[dict[str, int]]:
        """How full the table is: live and expired rows, distinct users, bytes on disk."""
        row = yield self.statement(self.sql.stats, {"name": self.qualified}, ONE)
        live, expired, users, size = one_row(row)
        return {"live": live, "expired": expired, "users": users, "total_bytes": size}


class DeleteAll:
    """Every row of the table deleted, batch after batch in id order until none is left; the
    live sessions it ended counted across tries (a try after a broken connection starts over).

    :raises ConfigurationError: ``batch_size`` is below 1.
    """

    def __init__(self, steps: StoreSteps, batch_size: int) -> None:
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        self._steps = steps
        self._batch_size = batch_size
        self.ended = 0

    def batches(self) -> Steps[int]:
        """Every batch on one connection; how many live sessions ended (in all tries)."""
        steps, after = self._steps, b""
        while True:
            params = {"after": after, "limit": self._batch_size}
            ended, last = one_row((yield steps.statement(steps.sql.delete_all, params, ONE)))
            self.ended += ended
            if last is None:  # nothing left from ``after`` on (a short batch may have passed a
                return self.ended  # row a request was moving to a later id: go on until none)
            after = bytes(last)


class Purge:
    """One purge: batch after batch until one comes back short (or ``on_batch`` says stop), each
    from where the last ended in ``expires_at`` order (so never over the index entries of deleted
    rows not yet vacuumed); what was removed is kept across batches, tries and connections.

    :raises ConfigurationError: ``batch_size`` is below 1.
    """

    def __init__(
        self, steps: StoreSteps, batch_size: int, on_batch: Callable[[int, int], bool | None] | None
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        self._steps = steps
        self._batch_size = batch_size
        self._on_batch = on_batch
        self.removed = 0
        self.more = True  # another batch is due
        self.stopped = False
        self._expected: int | None = None
        self._after: Any = "-infinity"

    def batches(self) -> Steps[int]:
        """Every batch on one connection; how many rows went (in all tries)."""
        if self._on_batch is not None and self._expected is None:
            self._expected = yield from self._count_expired()
            if self._on_batch(0, self._expected) is False:
                return 0
        # A partitioned table one partition at a time; a try starts at each one's first expired row.
        for statement in self._steps.sql.purge_partitions or [self._steps.sql.purge]:
            self._after, self.more = "-infinity", True
            while self.more:
                yield from self.batch(statement)
            if self.stopped:
                break
        return self.removed

    def batch(self, statement: str | None = None) -> Steps[None]:
        """One batch (of the table, or of the partition ``statement`` purges), then :attr:`more`
        says whether another is due."""
        params = {"lock": self._steps.lock_key, "limit": self._batch_size, "after": self._after}
        text = self._steps.sql.purge if statement is None else statement
        removed, last = one_row((yield self._steps.statement(text, params, ONE)))
        self.removed += removed
        going = self._on_batch is None or self._on_batch(self.removed, self._expected or 0) is not False
        self.stopped = not going
        self.more = going and removed >= self._batch_size
        self._after = last

    def _count_expired(self) -> Steps[int]:
        """About how many rows are expired: exact up to EXACT_COUNT_LIMIT, else estimated from
        a sample of the table's pages (counting millions of rows would delay the purge it is
        meant to describe, and the planner's statistics lag behind a burst of expiries)."""
        steps = self._steps
        count = steps.statement(steps.sql.expired_count, {"cap": EXACT_COUNT_LIMIT}, ONE)
        (counted,) = one_row((yield count))
        if counted < EXACT_COUNT_LIMIT:
            return int(counted)
        params = {"pages": SAMPLED_PAGES, "name": steps.qualified}
        (estimate,) = one_row((yield steps.statement(steps.sql.expired_sample, params, ONE)))
        return max(int(counted), int(estimate or 0))
