"""Internal: the checks on what an app puts into a session and on what a store reads from a row.

Plain functions, for ``Session`` and the stores; :mod:`pgsession_wsgi.session` imports them back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, TypeVar, Union

from ..codec import check_key, dumps, encode_value
from ..defaults import MAX_LIFETIME
from ..errors import InvalidExpiry, SessionDataError, UnstorableTypeError, UnstorableValueError

log = logging.getLogger("pgsession_wsgi")

_REENCODE = object()  # in Session._assigned: a container, encoded again at the save
#: A session's own lifetime: an idle timeout (rolling), a fixed end, or None for the store's default.
Expiry = Union[timedelta, datetime, None]


def _checked_expiry(value: Any) -> Expiry:
    """``value`` if a session can have it as its lifetime; refused where the app set it."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise InvalidExpiry(
                f"set_expiry() needs a positive timedelta, not {value!r}: to end the session call "
                "session.invalidate(); for a cookie that ends with the browser set "
                "session.permanent = False"
            )
        if value > MAX_LIFETIME:  # its end moves on as the session is used: it must stay readable
            raise InvalidExpiry(
                f"set_expiry({value!r}) is longer than {MAX_LIFETIME.days} days (100 years): the "
                "session's end moves on by it as it is used, and must stay before year 9999 ends; "
                "give a shorter lifetime"
            )
        return value
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise InvalidExpiry(
                f"set_expiry() needs an aware datetime, not the naive {value!r} (its time zone "
                "cannot be known): e.g. datetime.now(timezone.utc) + timedelta(days=30)"
            )
        if value <= datetime.now(timezone.utc):
            raise InvalidExpiry(
                f"set_expiry({value.isoformat()}) is not in the future: to end the session call "
                "session.invalidate()"
            )
        if not readable_time(value):
            raise InvalidExpiry(
                f"set_expiry({value.isoformat()}) ends after year 9999 in UTC, which no driver "
                "reads back: give an earlier end"
            )
        return value
    raise TypeError(
        "set_expiry() takes a timedelta (an idle lifetime of its own), an aware datetime (a fixed "
        f"end) or None (the middleware's timeouts), not {type(value).__name__}: e.g. "
        "timedelta(days=30)"
    )


# psycopg2 reads -infinity and infinity as these, psycopg 3 refuses both: neither is a stored time.
_FIRST_INSTANT = datetime.min.replace(tzinfo=timezone.utc)
_LAST_INSTANT = datetime.max.replace(tzinfo=timezone.utc)


def readable_time(value: datetime) -> bool:
    """Whether an aware ``value`` is a time both drivers read back as itself: strictly between the
    first and last instants a ``datetime`` holds, in UTC (23:00 on 31 December 9999 at UTC-5 is in
    year 10000 for the database)."""
    try:
        utc = value.astimezone(timezone.utc)
    except OverflowError:  # before year 1 or after year 9999 in UTC
        return False
    return _FIRST_INSTANT < utc < _LAST_INSTANT


#: What a driver raises reading a row pgsession-wsgi never writes: such JSON (``ValueError``,
#: ``RecursionError``), a time outside years 1-9999 (psycopg2: ``ValueError``), an interval longer
#: than a ``timedelta`` (psycopg2: ``OverflowError``). A store adds its driver's own error.
UNREADABLE_VALUE_ERRORS: tuple[type[Exception], ...] = (ValueError, ArithmeticError, RecursionError)

_Row = TypeVar("_Row", bound=Optional[Sequence[Any]])


@contextmanager
def reading_row(*driver_errors: type[Exception]) -> Iterator[None]:
    """Fetch a row inside (only the fetch: these errors are a statement's too), then check it with
    :func:`checked_row`. A row no driver reads as values pgsession-wsgi could have written (the
    driver's own errors for it: ``driver_errors``, e.g. ``psycopg.DataError``) is a
    :class:`SessionDataError` naming the driver's exception, never the row's data."""
    try:
        yield
    except (*UNREADABLE_VALUE_ERRORS, *driver_errors) as exc:
        raise SessionDataError(type(exc).__name__) from None


@contextmanager
def skipping_unreadable_row(*driver_errors: type[Exception]) -> Iterator[None]:
    """As :func:`reading_row`, but such a row is left out with a warning: ``sessions_for_user``
    lists the sessions it can read, and ``revoke_user`` still deletes all."""
    try:
        with reading_row(*driver_errors):
            yield
    except SessionDataError as exc:
        log.warning("a session was left out of sessions_for_user: %s", exc)


def checked_row(row: _Row) -> _Row:
    """``row`` as fetched (None too), if each time in it is a :func:`readable_time` (so that both
    drivers read a row holding ``infinity`` the same way); ``ValueError`` otherwise."""
    if row is not None:
        for value in row:
            if isinstance(value, datetime) and not readable_time(value):
                raise ValueError("a stored time is at or past the end of year 9999 or at year 1")
    return row


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _encode(key: str, value: Any, changed_in_place: bool = False) -> Any:
    """``value`` as the save stores it; refused naming ``key`` (and saying if it ``changed_in_place``)."""
    try:
        check_key(key)
        return encode_value(value)
    except TypeError as exc:
        raise UnstorableTypeError(
            f"{_where(key, changed_in_place)} cannot be stored: {exc}. Store plain data (str, int, "
            "float, bool, None, list, dict with str keys, tuple, datetime, date, time, bytes, UUID, "
            "Decimal, Markup) instead, or teach the codec your type",
            key,
        ) from None
    except ValueError as exc:
        raise UnstorableValueError(
            f"{_where(key, changed_in_place)} cannot be stored: {exc}. Store a value that reads "
            "back as itself instead (e.g. None rather than NaN, a str for a huge number, flatter "
            "data)",
            key,
        ) from None


def _checked_key(key: Any) -> str:
    """``key`` if a session can have it: a ``str`` (as in JSON); ``TypeError`` otherwise."""
    if type(key) is not str:
        raise TypeError(f"session keys must be str, not {type(key).__name__}")
    return key


def _encoded(key: str, value: Any, checked: Any) -> Any:
    """``checked``, the encoding made at the assignment, or for a container encoded anew."""
    if checked is _REENCODE:
        return _encode(key, value, changed_in_place=True)
    return checked


def _where(key: str, changed_in_place: bool) -> str:
    if changed_in_place:
        return f"the session value under key {key!r}, changed in place since it went in,"
    return f"the session value under key {key!r}"


def _object_json(encoded: dict[str, str], keys: list[str]) -> str:
    return "{" + ",".join(f"{dumps(key)}:{encoded[key]}" for key in keys) + "}"
