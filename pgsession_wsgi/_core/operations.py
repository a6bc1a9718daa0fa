"""Internal: the statements the core asks a store to run, their answers, and the loops that run them.

Apart from :mod:`pgsession_wsgi.core`, which documents them: the stores need only these.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Optional, TypeVar, Union
from uuid import UUID

from ..errors import SessionError
from ..session import Expiry

T = TypeVar("T")

KEEP_USER: Any = object()  # a Write's user_id that leaves the stored one (documented in core)
USER_PREFIX_SEPARATOR = "\x1f"  # between a key_prefix and a user id (documented in core)

# A UUID in any case, with or without hyphens, braces or a urn:uuid: head: stored as str(UUID).
_UUID_SPELLING = re.compile(r"(?i)(?:urn:uuid:)?(\{)?[0-9a-f]{8}(?:-?[0-9a-f]{4}){3}-?[0-9a-f]{12}(?(1)\})")


def user_id_text(value: Any, key: str | None = None, *, key_prefix: str = "") -> str:
    """The one text form a user id is stored and looked up under.

    A str is kept as it is, unless it spells a UUID: then it is the UUID's canonical form, as a
    :class:`uuid.UUID` and an int are their ``str()``. Anything else is refused, so "log out
    everywhere" never misses a session stored under another type or spelling. With ``key_prefix``,
    apps sharing a table never see or end each other's users' sessions.

    :param key: the session key it was found under, for the error message; None for a lookup.
    :param key_prefix: the app's ``key_prefix`` (``SESSION_KEY_PREFIX``); "" for none.
    :raises SessionError: ``value`` is not a str, int or UUID, or holds NUL or U+001F.
    """
    kind = type(value)
    where = f"the session value under user_key {key!r}" if key is not None else "a user id"
    if kind is str:
        text = str(value)
        if _UUID_SPELLING.fullmatch(text):
            text = str(UUID(text))
        elif "\x00" in text or USER_PREFIX_SEPARATOR in text:
            raise SessionError(
                f"{where} holds a NUL or U+001F character, which user ids cannot: store the "
                "user's id without control characters"
            )
    elif kind is int or kind is UUID:
        text = str(value)
    else:
        raise SessionError(
            f"{where} is a {kind.__module__}.{kind.__qualname__}; user ids must be str, int or UUID: "
            "store the user's id in one of those types"
        )
    return f"{key_prefix}{USER_PREFIX_SEPARATOR}{text}" if key_prefix else text


# The operations are plain dataclasses, yet values: a frozen one costs about five times as much to
# build (its __init__ sets each field through object.__setattr__), and a request builds up to four.
@dataclass
class LoadedRow:
    """A live row, as :class:`Load` is answered: its data and whether a touch is due.

    :param data: the stored JSON object, parsed (its values still encoded).
    :param touch_due: the expiry is due to be pushed forward at the save.
    :param idle_timeout: the session's own idle lifetime (``set_expiry(timedelta)``), or None.
    :param ends_at: the session's fixed end (``set_expiry(datetime)``), or None.
    """

    data: dict[str, Any]
    touch_due: bool
    idle_timeout: timedelta | None = None
    ends_at: datetime | None = None


@dataclass
class WriteResult:
    """How a :class:`Write` went: the core decides from it whether a cookie must go out.

    :param updated: the live row was there and was written.
    :param touched: its expiry moved forward.
    :param permanent: the stored ``_permanent`` flag; None if unset.
    :param idle_timeout: the row's own idle lifetime after the write, or None.
    :param ends_at: the row's fixed end after the write, or None.
    """

    updated: bool
    touched: bool
    permanent: bool | None
    idle_timeout: timedelta | None = None
    ends_at: datetime | None = None


@dataclass
class Load:
    """Read the live row under ``id_hash``; answered with a :class:`LoadedRow` or None.

    :param id_hash: the SHA-256 of the session id, the row's key.
    :param touch_interval: how old ``accessed_at`` may get before a touch is due.
    :param session_id: the id as the cookie carries it (without the core's ``key_prefix``), for a
        store that may also find the session elsewhere, e.g. in flask-pg-session's table, keyed by
        the id itself; None if not known. Never log it: it is as good as the cookie.
    """

    id_hash: bytes
    touch_interval: timedelta
    # Kept out of repr() and ==: an operation printed in a log must not carry a usable cookie.
    session_id: str | None = field(default=None, repr=False, compare=False)


@dataclass
class Insert:
    """Store a new session; answered with None, or :class:`SessionTooLarge` raised.

    :param id_hash: the SHA-256 of the new id.
    :param data_json: the whole session, a JSON object.
    :param user_id: the text of the user column (:func:`user_id_text`), or None.
    :param idle: the row expires this long after its last touch.
    :param absolute: the row expires this long after its creation at the latest; None: never.
    :param max_size: the most bytes the stored data may take; None for no limit.
    :param idle_timeout: the session's own idle lifetime, used instead of ``idle``; None: ``idle``.
    :param ends_at: the session's fixed end, used instead of any idle expiry; None: none.
    """

    id_hash: bytes
    data_json: str
    user_id: str | None
    idle: timedelta
    absolute: timedelta | None
    max_size: int | None
    idle_timeout: timedelta | None = None
    ends_at: datetime | None = None


@dataclass
class Write:
    """Merge changes into a live row (maybe moving it); answered with a :class:`WriteResult`.

    ``id_hash`` (of the current id), ``absolute``, ``idle_timeout``, ``ends_at`` and
    ``touch_interval`` are as for :class:`Insert` and :class:`Load`.

    :param changed_json: the changed keys, a JSON object merged over the stored one.
    :param removed: the keys to delete from the stored object.
    :param replace: start from an empty object instead (after ``clear()``).
    :param new_hash: the SHA-256 of a new id to move the row to; None to keep the id.
    :param user_id: the user column's new text, None to clear it, or :data:`KEEP_USER`.
    :param idle: as for :class:`Insert`; applied only when a touch is due.
    :param max_size: as for :class:`Insert`, measured on the merged row.
    :param set_expiry: store ``idle_timeout`` and ``ends_at`` and recompute the expiry from
        them now, due or not; False keeps the row's own (and writes neither).
    """

    id_hash: bytes
    changed_json: str
    removed: list[str]
    replace: bool
    new_hash: bytes | None
    user_id: Any  # text, None to clear, or KEEP_USER
    idle: timedelta
    absolute: timedelta | None
    touch_interval: timedelta
    max_size: int | None
    set_expiry: bool = False
    idle_timeout: timedelta | None = None
    ends_at: datetime | None = None


@dataclass
class Touch:
    """Push a live row's expiry forward (by its own lifetime, if it has one); True if it was there.
    ``id_hash`` is as for :class:`Load`; ``idle`` and ``absolute`` as for :class:`Insert`."""

    id_hash: bytes
    idle: timedelta
    absolute: timedelta | None


@dataclass
class Delete:
    """Remove the row under ``id_hash`` (the SHA-256 of the session id); True if it was there."""

    id_hash: bytes


def stored_expiry(idle_timeout: timedelta | None, ends_at: datetime | None) -> Expiry:
    """A row's own lifetime as a session's ``expiry``: a fixed end wins, as in the expiry formula
    (``COALESCE(ends_at, ...)``)."""
    return ends_at if ends_at is not None else idle_timeout


def expiry_columns(expiry: Expiry) -> tuple[timedelta | None, datetime | None]:
    """A session's own lifetime as the row holds it: ``(idle_timeout, ends_at)``.

    :param expiry: what ``session.set_expiry()`` was given (None: the store's defaults).
    """
    if isinstance(expiry, datetime):
        return None, expiry
    return expiry, None


Operation = Union[Load, Insert, Write, Touch, Delete]
#: A step of the core: yields operations, is sent their results, returns ``T``.
Steps = Generator[Operation, Any, T]
#: What :func:`advance` answers: the step's first operation and None, or None and its answer.
#: (``Optional``, so that its documentation reads it on Python 3.9 too.)
Advanced = tuple[Optional[Operation], Any]


def run(steps: Steps[T], execute: Callable[[Operation], Any]) -> T:
    """Drive ``steps`` (such as ``core.save(session)``) with a blocking ``execute`` (such as
    ``PostgresStore.execute``), which runs one operation and returns its answer."""
    try:
        operation = next(steps)
        while True:
            operation = steps.send(execute(operation))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_async(steps: Steps[T], execute: Callable[[Operation], Awaitable[Any]]) -> T:
    """:func:`run` with a coroutine function ``execute`` (an async store's)."""
    operation, answer = advance(steps)
    if operation is None:
        return answer  # type: ignore[no-any-return]
    return await resume_async(steps, operation, execute)


def advance(steps: Steps[T]) -> Advanced:
    """Start ``steps`` without awaiting: ``(its first operation, None)``, or ``(None, its answer)``
    when it needs none (the save of a session read but not changed), so nothing is awaited."""
    try:
        return next(steps), None
    except StopIteration as done:
        return None, done.value


async def resume_async(
    steps: Steps[T], operation: Operation, execute: Callable[[Operation], Awaitable[Any]]
) -> T:
    """Go on with ``steps`` from the ``operation`` :func:`advance` gave, as :func:`run_async`."""
    try:
        while True:
            operation = steps.send(await execute(operation))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
