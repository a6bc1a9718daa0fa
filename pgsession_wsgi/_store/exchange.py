"""Internal: how the store's steps and its two drivers talk, with no I/O.

Everything a store does (a request's statement, the table's setup, a purge) is written once, in
:mod:`pgsession_wsgi.store_steps`, as *steps*: a generator that yields each :class:`Statement` it
needs and is sent that statement's answer, as the request algorithm of :mod:`pgsession_wsgi.core`
yields its operations. A driver (psycopg2 in :mod:`pgsession_wsgi._drivers.psycopg2_driver`, psycopg 3
in :mod:`pgsession_wsgi._drivers.psycopg_driver`) only sends a statement and hands back what its ``read``
asks for; when the statement fails, the driver's exception is thrown into the step at its ``yield``,
so the step decides what it means. :func:`converse` and :func:`converse_async` run a step on one
connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, NamedTuple, TypeVar

from ..errors import SessionDataError, SessionError
from ..session import checked_row

__all__ = ["Statement", "Steps", "Unreadable", "converse", "converse_async", "one_row", "readable"]

T = TypeVar("T")

# What a statement's answer is (its ``read``): NOTHING, None; ONE, the first row or None; ROW, the
# same, but a row the driver cannot read is answered as an Unreadable (for readable() to refuse);
# ALL, every row; EACH, every row, each one the driver cannot read as an Unreadable; COUNT, how
# many rows the statement changed.
NOTHING, ONE, ROW, ALL, EACH, COUNT = range(6)

#: The tries a piece of work gets, each told whether it is the last: work that is safe to repeat
#: (reads, idempotent writes) gets a second one on a fresh connection when the first breaks.
TRIES = {True: (False, True), False: (True,)}


class Statement(NamedTuple):
    """One statement a step asks a driver for.

    :param text: the SQL, with ``%(name)s`` or ``%s`` placeholders; sent as it is without params.
    :param params: the values, or None.
    :param read: what the answer is: :data:`NOTHING`, :data:`ONE`, :data:`ROW`, :data:`ALL`,
        :data:`EACH` or :data:`COUNT`.
    :param client: bind the values on the client and send the text in one simple-protocol message,
        as the text holds several commands (a ``SET LOCAL`` guard, a ``PREPARE``); psycopg2 always
        does, psycopg 3 binds on the server otherwise.
    :param attempt: a prepared statement's bookkeeping (:mod:`pgsession_wsgi._store.prepared`): told when
        the statement was sent, asked for another statement when it failed.
    """

    text: str
    params: Any = None
    read: int = NOTHING
    client: bool = False
    attempt: Any = None


#: A store's steps: yield statements, are sent their answers, return ``T``.
Steps = Generator[Statement, Any, T]


class DriverErrors:
    """A driver's exception classes, by what a store does about them (psycopg2's and psycopg 3's
    have the same names: ``Error``, ``OperationalError``, ``errors.QueryCanceled``...).

    :param driver: the driver's module, ``psycopg2`` or ``psycopg``.
    """

    def __init__(self, driver: Any) -> None:
        self.base: type[Exception] = driver.Error
        # The connection broke (work that is safe to repeat gets another try); ran past
        # statement_timeout; no table; a read-only server (a standby: SQLSTATE 25006); a prepared
        # statement not there, or there already.
        self.lost: tuple[type[Exception], ...] = (driver.OperationalError, driver.InterfaceError)
        self.canceled: type[Exception] = driver.errors.QueryCanceled
        self.undefined_table: type[Exception] = driver.errors.UndefinedTable
        self.read_only: type[Exception] = driver.errors.ReadOnlySqlTransaction
        self.prepared_missing: type[Exception] = driver.errors.InvalidSqlStatementName
        self.prepared_duplicate: type[Exception] = driver.errors.DuplicatePreparedStatement
        # What the driver raises for an error with no SQLSTATE, which no server sent.
        self._bare: type[Exception] = driver.DatabaseError

    def broke(self, exc: Exception) -> bool:
        """True if the connection broke under ``exc``: a connection error, or a bare
        ``DatabaseError`` with no SQLSTATE (psycopg2's "server closed the connection
        unexpectedly" when the server went away before libpq marked the connection bad)."""
        if isinstance(exc, self.lost):
            return True
        # psycopg2 names the SQLSTATE pgcode, psycopg 3 sqlstate.
        sqlstate = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)
        return type(exc) is self._bare and not sqlstate


class Unreadable:
    """The answer for a row whose values the driver could not read (a time or a duration no
    Python value holds, JSON the codec never writes): :func:`readable` refuses it.

    :param error: what the driver raised.
    """

    __slots__ = ("kind",)

    def __init__(self, error: BaseException) -> None:
        self.kind = type(error).__name__


def readable(row: Any) -> Any:
    """``row`` (None too), if it holds values pgsession-wsgi could have written.

    :raises SessionDataError: the driver could not read it, or a time in it is out of range.
    """
    if type(row) is Unreadable:
        raise SessionDataError(row.kind)
    try:
        return checked_row(row)
    except ValueError as exc:
        raise SessionDataError(type(exc).__name__) from None


def one_row(row: Any) -> Any:
    """``row``, which a statement always answers.

    :raises SessionError: there is none.
    """
    if row is None:
        raise SessionError("the database returned no row where one was expected")
    return row


def _instead(steps: Steps[Any], statement: Statement, exc: Exception) -> Statement:
    """What to send after ``statement`` failed: another statement, or what the step makes of it."""
    if statement.attempt is not None:
        other: Statement | None = statement.attempt.recover(statement, exc)
        if other is not None:
            return other
    return steps.throw(exc)


def converse(steps: Steps[T], send: Callable[[Any, Statement], Any], link: Any) -> T:
    """Run ``steps`` to its answer, each statement sent with ``send(link, statement)``.

    :param steps: the steps, not started.
    :param send: a driver's: sends a statement on ``link`` and answers as its ``read`` asks.
    :param link: the driver's connection (or cursor) to send on.
    """
    try:
        statement = next(steps)
        while True:
            try:
                answer = send(link, statement)
            except Exception as exc:
                statement = _instead(steps, statement, exc)
            else:
                if statement.attempt is not None and statement.attempt.done is not None:
                    statement.attempt.sent()
                statement = steps.send(answer)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def converse_async(steps: Steps[T], send: Callable[[Any, Statement], Awaitable[Any]], link: Any) -> T:
    """:func:`converse` with an async driver's ``send``."""
    try:
        statement = next(steps)
        while True:
            try:
                answer = await send(link, statement)
            except Exception as exc:
                statement = _instead(steps, statement, exc)
            else:
                if statement.attempt is not None and statement.attempt.done is not None:
                    statement.attempt.sent()
                statement = steps.send(answer)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
