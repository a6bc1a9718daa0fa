"""Internal: how the store's steps and its two drivers talk, with no I/O.

Steps yield each :class:`Statement` and are sent its answer, or the driver's error at the ``yield``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, NamedTuple, TypeVar

from ..errors import SessionDataError, SessionError
from ..session import checked_row

__all__ = ["Statement", "Steps", "Unreadable", "converse", "converse_async", "one_row", "readable"]

T = TypeVar("T")

# A statement's answer (its ``read``): NOTHING, None; ONE, the first row or None; ROW, the same,
# an unreadable row as an Unreadable; ALL, every row; EACH, every row, each unreadable one as an
# Unreadable; COUNT, how many rows the statement changed.
NOTHING, ONE, ROW, ALL, EACH, COUNT = range(6)

#: The tries a piece of work gets, each told whether it is the last: work safe to repeat gets a
#: second one on a fresh connection when the first breaks.
TRIES = {True: (False, True), False: (True,)}


class Statement(NamedTuple):
    """One statement a step asks a driver for.

    :param read: what the answer is: :data:`NOTHING`, :data:`ONE`, :data:`ROW`...
    :param client: bind the values on the client and send one simple-protocol message, as the text
        holds several commands (a ``SET LOCAL`` guard, a ``PREPARE``); psycopg2 always does.
    :param attempt: a prepared statement's bookkeeping (:mod:`.prepared`).
    """

    text: str
    params: Any = None
    read: int = NOTHING
    client: bool = False
    attempt: Any = None


#: A store's steps: yield statements, are sent their answers, return ``T``.
Steps = Generator[Statement, Any, T]


class DriverErrors:
    """A driver's exception classes (``psycopg2``'s or ``psycopg``'s: the same names), by what a
    store does about them."""

    def __init__(self, driver: Any) -> None:
        self.base: type[Exception] = driver.Error
        self.lost: tuple[type[Exception], ...] = (driver.OperationalError, driver.InterfaceError)
        self.canceled: type[Exception] = driver.errors.QueryCanceled
        self.undefined_table: type[Exception] = driver.errors.UndefinedTable
        self.read_only: type[Exception] = driver.errors.ReadOnlySqlTransaction
        self.prepared_missing: type[Exception] = driver.errors.InvalidSqlStatementName
        self.prepared_duplicate: type[Exception] = driver.errors.DuplicatePreparedStatement
        self._bare: type[Exception] = driver.DatabaseError

    def broke(self, exc: Exception) -> bool:
        """True if the connection broke under ``exc``: a connection error, or a bare ``DatabaseError``
        with no SQLSTATE (psycopg2's "server closed the connection unexpectedly" before libpq knew)."""
        if isinstance(exc, self.lost):
            return True
        # psycopg2 names the SQLSTATE pgcode, psycopg 3 sqlstate.
        sqlstate = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)
        return type(exc) is self._bare and not sqlstate


class Unreadable:
    """The answer for a row the driver could not read (``error``): :func:`readable` refuses it."""

    __slots__ = ("kind",)

    def __init__(self, error: BaseException) -> None:
        self.kind = type(error).__name__


def readable(row: Any) -> Any:
    """``row`` (None too); :class:`SessionDataError` if the driver could not read it or a time in it
    is out of range."""
    if type(row) is Unreadable:
        raise SessionDataError(row.kind)
    try:
        return checked_row(row)
    except ValueError as exc:
        raise SessionDataError(type(exc).__name__) from None


def one_row(row: Any) -> Any:
    """``row``, which a statement always answers; :class:`SessionError` if there is none."""
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
    """Run ``steps`` (not started) to its answer, each statement sent with ``send(link, statement)``."""
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
