"""Internal: what both stores are and offer, whatever their driver, written once.

The async store wraps each of :class:`StoreMethods` in :func:`awaiting` (its ``_do`` is async)."""

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
    """The options, the names and the DDL; the constructor is both stores' (see theirs)."""

    _store_class = "StoreBase"
    _errors: DriverErrors
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
        """A store on connections the app lends (given back after each statement)."""
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
        self._steps = StoreSteps(
            schema, table, settings, statement_timeout=statement_timeout, unlogged=unlogged,
            create=create_table, store_class=self._store_class, errors=self._errors, partitions=partitions,
        )
        #: The table's name, as given (unquoted).
        self.table = table
        #: The schema's name, as given (unquoted).
        self.schema = schema
        #: Seconds any one statement may run, as given; None for no limit (or the app's own).
        self.statement_timeout = statement_timeout
        #: Seconds between background purges, as given; None for none.
        self.purge_interval = purge_interval
        #: Whether the table is (made) unlogged, as given; None takes an existing one as it is.
        self.unlogged = unlogged
        #: The hash partitions the table is made with, as given; None: a plain table, or one taken as it is.
        self.partitions = partitions
        self._create_table = create_table
        # Where the app's connections come from ("your SQLAlchemy engine"), None for a DSN.
        self._origin: str | None = None
        self._driver_state()

    def _driver_state(self) -> None:
        """Set up what the driver keeps for a new store."""

    def __repr__(self) -> str:
        return f"<{self._store_class} {self.qualified_name}>"

    @property
    def qualified_name(self) -> str:
        """The table's quoted, schema-qualified name, as the store's SQL names it."""
        return self._steps.qualified

    def ddl(self) -> str:
        """The statements that create the table and its indexes, for a DBA to run by hand.

        They also add the columns a table made by an older version lacks.
        """
        return self._steps.table.ddl()


class StoreMethods:
    """The store's methods besides ``execute``, written once for both stores."""

    _steps: StoreSteps

    def _answer(self, operation: Operation) -> Any:
        raise NotImplementedError

    def _do(self, make: Callable[[], Steps[T]], *, retry: bool = True) -> T:
        raise NotImplementedError

    def load(self, id_hash: bytes, touch_interval: timedelta) -> LoadedRow | None:
        """The live row for ``id_hash``, or None.

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

        :raises SessionTooLarge: the data, as stored (``octet_length(data::text)``), is over
            ``max_size``; nothing was stored.
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

        :returns: whether the row was there, whether its expiry moved, its ``_permanent``, and
            its own lifetime.
        :raises SessionTooLarge: the merged row is over ``max_size`` (measured in the same
            statement: concurrent writes cannot pass it together); nothing was written.
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

    def purge_expired(
        self,
        batch_size: int = DEFAULT_PURGE_BATCH_SIZE,
        *,
        on_batch: Callable[[int, int], bool | None] | None = None,
    ) -> int:
        """Delete expired rows in batches of ``batch_size``; returns how many went.

        Each batch is its own short transaction that skips rows in use, so requests never wait on
        it. While another process is purging, this call stops early and may return 0.

        :param batch_size: rows per statement: shorter statements against more round trips.
        :param on_batch: to show progress or stop a long purge: called as
            ``on_batch(removed, expected)`` before the first batch (``removed`` 0) and after each
            one, ``removed`` counting every row gone so far. ``expected`` is how many rows were
            expired at the start, exact up to :data:`EXACT_COUNT_LIMIT`, else estimated (so
            ``removed`` may pass it). Return ``False`` to stop; what was removed stays removed.
            A plain (not async) callable on the async store too.
        :raises ConfigurationError: ``batch_size`` is below 1.
        """
        return self._do(self._steps.purge(batch_size, on_batch).batches)

    def sessions_for_user(self, user_id: Any, *, key_prefix: str = "") -> list[SessionInfo]:
        """The live sessions whose ``user_key`` value is ``user_id``, most recently used first.

        :param user_id: a str, int or UUID (``42`` and ``"42"`` are the same user, and so are a
            UUID's spellings), matched as :func:`~pgsession_wsgi.core.user_id_text` stores it.
        :param key_prefix: the app's ``key_prefix`` (``SESSION_KEY_PREFIX``): only that app's
            sessions are listed; "" for an app without one.
        :returns: the sessions; one whose row holds a time no ``datetime`` holds (``infinity``)
            is left out, with a warning.
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

        Every row goes, expired ones too (uncounted), whichever app sharing the table made it.

        :param batch_size: rows per statement, each its own short transaction: a request waits
            for one batch at most, and none runs into ``statement_timeout``. A session made while
            it runs may stay.
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
    """``method`` for the async store: the same signature and docstring, its answer awaited."""

    async def twin(self: Any, *args: P.args, **kwargs: P.kwargs) -> T:
        return await cast("Awaitable[T]", method(self, *args, **kwargs))

    return functools.wraps(method)(twin)  # type: ignore[return-value]
