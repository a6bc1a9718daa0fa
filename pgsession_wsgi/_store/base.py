"""Internal: what both stores are and offer, whatever their driver, written once.

:class:`StoreBase` holds the options, the names and the table's DDL, and the :class:`StoreSteps
<pgsession_wsgi.store_steps.StoreSteps>` that decide everything the store does.
:class:`StoreMethods` is the store's API beyond the core's ``execute``: each request statement
on its own, the purge, a user's sessions, every session at once, the table's figures. Their
bodies hand an operation to the store's ``_answer`` or steps to its ``_do``:
:class:`~pgsession_wsgi.store.PostgresStore` inherits them, which answer at once;
:class:`~pgsession_wsgi.async_store.AsyncPostgresStore` takes each through :func:`awaiting`, as
its ``_answer`` and ``_do`` are coroutines.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..core import KEEP_USER, Delete, Insert, Load, LoadedRow, Operation, Touch, Write, WriteResult
from ..defaults import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PURGE_BATCH_SIZE,
    DEFAULT_PURGE_INTERVAL,
    DEFAULT_SCHEMA,
    DEFAULT_TABLE,
    check_store_options,
)
from ..dsn import lent_settings, normalize_dsn, store_connect_arguments
from ..errors import ConfigurationError
from ..store_steps import SessionInfo, StoreSteps
from .exchange import DriverErrors, Steps

if TYPE_CHECKING:
    from typing import Concatenate, ParamSpec

    P = ParamSpec("P")

__all__ = ["StoreBase", "StoreMethods", "awaiting"]

T = TypeVar("T")
S = TypeVar("S", bound="StoreBase")


def _check_partitions(partitions: int | None, unlogged: bool | None) -> None:
    """Refuse a number of partitions PostgreSQL cannot make, or one it cannot make unlogged."""
    if partitions is None:
        return
    if isinstance(partitions, bool) or not isinstance(partitions, int) or not 2 <= partitions <= 1024:
        raise ConfigurationError(
            f"partitions must be a whole number from 2 to 1024 (e.g. 16), or None for a plain table, "
            f"not {partitions!r}"
        )
    if unlogged:
        raise ConfigurationError(
            "partitions and unlogged=True cannot go together: PostgreSQL makes no unlogged "
            "partitioned table; choose one of them"
        )


class StoreBase:
    """What both stores are, whatever their driver: the options, the names and the DDL.

    The constructor is :class:`~pgsession_wsgi.store.PostgresStore`'s and
    :class:`~pgsession_wsgi.async_store.AsyncPostgresStore`'s (their docstrings say what each
    parameter means); each store opens its own connections in :meth:`_own_connections`.
    """

    #: The store's class as messages name it, and its driver's errors.
    _store_class = "StoreBase"
    _errors: DriverErrors
    #: Whether the driver executes a prepared statement by name (see :mod:`.prepared`).
    _prepares_by_name = False
    _pool: Any

    def __init__(
        self,
        dsn: str,
        table: str = DEFAULT_TABLE,
        schema: str = DEFAULT_SCHEMA,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        statement_timeout: float | None = 5.0,
        synchronous_commit: bool = True,
        create_table: bool = True,
        purge_interval: float | None = DEFAULT_PURGE_INTERVAL,
        unlogged: bool | None = False,
        prepared_statements: bool = True,
        partitions: int | None = None,
    ) -> None:
        dsn = normalize_dsn(dsn)
        check_store_options(max_connections, pool_timeout, connect_timeout, purge_interval)
        _check_partitions(partitions, unlogged)
        # The settings kept are only those we send, so a user's own is never "re-applied".
        connect_kwargs, settings = store_connect_arguments(
            dsn, connect_timeout=connect_timeout, statement_timeout=statement_timeout,
            synchronous_commit=synchronous_commit,
        )
        self._configure(
            table, schema, statement_timeout, settings, create_table, purge_interval, unlogged, partitions
        )
        self._own_connections(connect_kwargs, max_connections, pool_timeout)
        if prepared_statements:
            self._steps.prepared.enable(self._prepares_by_name)

    def _own_connections(self, connect_kwargs: dict[str, Any], max_connections: int, timeout: float) -> None:
        raise NotImplementedError

    @classmethod
    def _lend(
        cls: type[S], source: Any, table: str, schema: str, statement_timeout: float | None,
        synchronous_commit: bool, create_table: bool, purge_interval: float | None, unlogged: bool | None,
    ) -> S:
        """A store on connections the app lends (``source``, given back after each statement)."""
        store = cls.__new__(cls)
        settings = lent_settings(statement_timeout, synchronous_commit)
        store._configure(table, schema, statement_timeout, settings, create_table, purge_interval, unlogged)
        store._pool = source
        store._origin = source.origin
        store._steps.lend()
        return store

    def _configure(
        self, table: str, schema: str, statement_timeout: float | None, settings: dict[str, str],
        create_table: bool, purge_interval: float | None, unlogged: bool | None,
        partitions: int | None = None,
    ) -> None:
        """What every constructor does, wherever the connections come from."""
        self._steps = StoreSteps(
            schema, table, settings, statement_timeout=statement_timeout, unlogged=unlogged,
            create=create_table, store_class=self._store_class, errors=self._errors, partitions=partitions,
        )
        #: The table's name, as given (unquoted).
        self.table = table
        #: The schema's name, as given (unquoted).
        self.schema = schema
        #: Seconds any one statement may run, as given; None for no limit (or, on an app's
        #: connections, their own).
        self.statement_timeout = statement_timeout
        #: Seconds between background purges, as given; None for none.
        self.purge_interval = purge_interval
        #: Whether the table is (made) unlogged, as given; None takes an existing one as it is.
        self.unlogged = unlogged
        #: The hash partitions the table is made with (and purged one by one), as given; None
        #: for a plain table (or a partitioned one taken as it is).
        self.partitions = partitions
        self._create_table = create_table
        # Where the app's connections come from ("your SQLAlchemy engine"), None for a DSN.
        self._origin: str | None = None
        self._driver_state()

    def _driver_state(self) -> None:
        """Set up what the driver keeps (a new store's: no connection, nothing ready)."""

    def __repr__(self) -> str:
        return f"<{self._store_class} {self.qualified_name}>"

    @property
    def qualified_name(self) -> str:
        """The table's quoted, schema-qualified name, as the store's SQL names it."""
        return self._steps.qualified

    def ddl(self) -> str:
        """The statements that create the table and its indexes, for a DBA to run by hand.

        They also bring a table made by an older version up to date (its missing columns). With
        ``unlogged=True`` the table is created ``UNLOGGED``.
        """
        return self._steps.table.ddl()


class StoreMethods:
    """The store's methods besides ``execute``, written once (see the module)."""

    _steps: StoreSteps

    def _answer(self, operation: Operation) -> Any:
        """Answer an operation as this store's ``execute`` does, whatever a subclass's adds."""
        raise NotImplementedError

    def _do(self, make: Callable[[], Steps[T]], *, retry: bool = True) -> T:
        """Run the steps ``make`` makes on a connection, made anew for each try."""
        raise NotImplementedError

    def load(self, id_hash: bytes, touch_interval: timedelta) -> LoadedRow | None:
        """The live row for ``id_hash``, or None: the answer to a ``Load``.

        :param id_hash: the SHA-256 of the session id.
        :param touch_interval: how old ``accessed_at`` may get before ``touch_due`` is set.
        :raises SessionDataError: the row holds JSON the codec never writes, or a time or a
            duration no Python value holds (``infinity``, year 10000...).
        """
        return self._answer(Load(id_hash, touch_interval))  # type: ignore[no-any-return]

    def insert(
        self,
        id_hash: bytes,
        data_json: str,
        user_id: str | None,
        idle: timedelta,
        absolute: timedelta | None,
        max_size: int | None = None,
        *,
        idle_timeout: timedelta | None = None,
        ends_at: datetime | None = None,
    ) -> None:
        """Store a new session, as :class:`~pgsession_wsgi.core.Insert` describes each parameter.

        The size is what the database stores (``octet_length(data::text)``), checked in the
        same statement.

        :raises SessionTooLarge: the data is over ``max_size``; nothing was stored.
        """
        insert = Insert(id_hash, data_json, user_id, idle, absolute, max_size, idle_timeout, ends_at)
        return self._answer(insert)  # type: ignore[no-any-return]

    def write(
        self,
        id_hash: bytes,
        changed_json: str,
        removed: Sequence[str],
        *,
        replace: bool,
        new_hash: bytes | None,
        user_id: Any = KEEP_USER,
        idle: timedelta,
        absolute: timedelta | None,
        touch_interval: timedelta,
        max_size: int | None = None,
        set_expiry: bool = False,
        idle_timeout: timedelta | None = None,
        ends_at: datetime | None = None,
    ) -> WriteResult:
        """Merge changed keys into a live row, moving it to ``new_hash`` if given, as
        :class:`~pgsession_wsgi.core.Write` describes each parameter.

        The merged row is measured in the same statement, so concurrent writes cannot pass
        ``max_size`` together. The expiry columns change only when a touch is due (or with
        ``set_expiry``), so most writes leave every indexed column as it was and PostgreSQL can
        update the row in place (a HOT update).

        :returns: whether the row was there, whether its expiry moved, its ``_permanent``, and
            its own lifetime.
        :raises SessionTooLarge: the merged row is over ``max_size``; nothing was written.
        """
        write = Write(
            id_hash, changed_json, list(removed), replace, new_hash, user_id, idle, absolute, touch_interval,
            max_size, set_expiry, idle_timeout, ends_at,
        )
        return self._answer(write)  # type: ignore[no-any-return]

    def touch(self, id_hash: bytes, idle: timedelta, absolute: timedelta | None) -> bool:
        """Push a live row's expiry forward (by its own lifetime, if it has one), data untouched.

        :param id_hash: the SHA-256 of the session id.
        :param idle: as for :meth:`insert`.
        :param absolute: as for :meth:`insert`.
        :returns: whether the row was there.
        """
        return self._answer(Touch(id_hash, idle, absolute))  # type: ignore[no-any-return]

    def delete(self, id_hash: bytes) -> bool:
        """Remove a session; true if a row was there.

        :param id_hash: the SHA-256 of the session id.
        """
        return self._answer(Delete(id_hash))  # type: ignore[no-any-return]

    # -- maintenance -----------------------------------------------------------------------

    def purge_expired(
        self,
        batch_size: int = DEFAULT_PURGE_BATCH_SIZE,
        *,
        on_batch: Callable[[int, int], bool | None] | None = None,
    ) -> int:
        """Delete expired rows in batches of ``batch_size``; returns how many went.

        Each batch is one short statement, its own transaction, that skips rows other
        transactions hold, so requests never wait on it and a stop between batches leaves nothing
        half-done. Batches take a transaction-scoped advisory lock: while another process is
        purging, this call stops early (and may return 0).

        :param batch_size: rows per statement: shorter statements against more round trips.
        :param on_batch: for a long purge, to show progress or stop it: called as
            ``on_batch(removed, expected)`` once before the first batch (``removed`` 0) and after
            each committed batch, ``removed`` counting every row gone so far. ``expected`` is how
            many rows were expired at the start: an exact count up to
            :data:`EXACT_COUNT_LIMIT`, beyond it an estimate from a sample of the table's pages
            (rows expiring meanwhile are purged too, so ``removed`` may pass it). Return
            ``False`` to stop there; the rows removed so far stay removed and are counted in the
            result. Without it, no count is made.
            On the async store too it is a plain (not async) callable.
        :raises ConfigurationError: ``batch_size`` is below 1.
        """
        return self._do(self._steps.purge(batch_size, on_batch).batches)

    def sessions_for_user(self, user_id: Any, *, key_prefix: str = "") -> list[SessionInfo]:
        """The live sessions whose ``user_key`` value is ``user_id``, most recently used first.

        :param user_id: a str, int or UUID (``42`` and ``"42"`` are the same user, and so are a
            UUID's spellings), matched as :func:`~pgsession_wsgi.core.user_id_text` stores it.
        :param key_prefix: the app's ``key_prefix`` (``SESSION_KEY_PREFIX``): only that app's
            sessions are listed; "" for an app without one.
        :returns: the sessions; one whose row holds a time no ``datetime`` holds (``infinity``,
            year 10000: never written by pgsession-wsgi) is left out, with a warning.
        :raises SessionError: ``user_id`` is of another type.
        """
        return self._do(self._steps.sessions_for_user(user_id, key_prefix))

    def revoke_user(self, user_id: Any, keep: Any = None, *, key_prefix: str = "") -> int:
        """Delete every session of ``user_id`` ("log out everywhere"), except ``keep``.

        :param user_id: as for :meth:`sessions_for_user`.
        :param keep: a :class:`Session` or a session id to spare, typically the current one.
        :param key_prefix: the app's ``key_prefix``: only that app's sessions end; "" for none.
        :returns: how many sessions were deleted.
        :raises SessionError: ``user_id`` is not a str, int or UUID.
        """
        return self._do(self._steps.revoke_user(user_id, keep, key_prefix))

    def delete_all(self, *, batch_size: int = DEFAULT_PURGE_BATCH_SIZE) -> int:
        """End every session in the table ("log everyone out"); returns how many live ones ended.

        Every row goes, expired ones too (uncounted), whichever app made it: a session's row
        does not record the app's ``key_prefix`` (its id is hashed with it), so apps sharing the
        table under their own prefixes are all logged out; give an app a table of its own
        (``table=``) for a ``delete_all`` of its own. To end one user's sessions, use
        :meth:`revoke_user`. Works on connections the app lends (``from_pool``, ``from_engine``)
        as on the store's own.

        :param batch_size: rows per statement, each its own short transaction: a request waits
            for one batch at most, and a big table takes more statements, not longer ones (none
            runs into ``statement_timeout``). A session made while it runs may stay.
        :raises ConfigurationError: ``batch_size`` is below 1.
        """
        return self._do(self._steps.delete_all(batch_size).batches)

    def stats(self) -> dict[str, int]:
        """How full the table is, for monitoring and ``pgsession-wsgi stats``.

        :returns: ``live`` and ``expired`` rows, distinct ``users`` with a live session, and
            ``total_bytes``, the table's size on disk with its indexes.
        """

        return self._do(self._steps.stats)


def awaiting(
    method: Callable[Concatenate[Any, P], T],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]:
    """A method of :class:`StoreMethods` for the async store: the same parameters and docstring,
    its answer (a coroutine there) awaited."""

    async def twin(self: Any, *args: P.args, **kwargs: P.kwargs) -> T:
        return await cast("Awaitable[T]", method(self, *args, **kwargs))

    return functools.wraps(method)(twin)  # type: ignore[return-value]
