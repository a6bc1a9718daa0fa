"""One decoded flask-pg-session dict to the JSON a pgsession-wsgi row stores, or why it cannot be.

Nothing here raises: a row that cannot be converted is refused with a reason, the others go on.
"""

from __future__ import annotations

import decimal
from typing import Any, Final

from markupsafe import Markup

from ..codec import dumps, encode_value
from ..core import user_id_text
from ..errors import SessionError
from ..session import META_KEYS

__all__ = ["convert_session", "encode_row", "user_column"]

# What the size estimate counts per value: a separator and a quote, at the least.
_NODE_BYTES: Final = 2


def _estimate_exceeds(value: object, limit: int) -> bool:
    """True as soon as ``value`` is sure to encode to more than ``limit`` bytes, copying nothing.

    Shared references count once per use, as the JSON copies them, so a tiny pickle expanding
    to gigabytes stops within ``limit / 2`` values. The count never exceeds the real size.
    """
    total = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bytes or kind is Markup:
            total += len(item)
        elif kind is int:
            bits = abs(item).bit_length()
            total += (bits - 1) * 30102 // 100000 if bits else 0  # digits - 1, rounded down
        elif kind is decimal.Decimal:
            total += len(item.as_tuple().digits)
        elif kind is dict or kind is list or kind is tuple:
            total += (2 if kind is dict else 1) * _NODE_BYTES * len(item)
            if total > limit:
                return True
            stack.extend(item)
            if kind is dict:
                stack.extend(item.values())
        if total > limit:
            return True
    return False


def encode_row(data: dict[Any, Any], max_size: int) -> tuple[str | None, str | None]:
    """``(json, None)`` for a convertible session dict, ``(None, reason)`` otherwise; never raises.

    :param data: a session dict as :func:`~.unpickle.restricted_loads` returned it.
    :param max_size: the largest JSON, in UTF-8 bytes, to accept; judged before the JSON is built.
    """
    try:
        return _encode_row_or_raise(data, max_size)
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None, f"the data cannot be converted ({detail})"


def _encode_row_or_raise(data: dict[Any, Any], max_size: int) -> tuple[str | None, str | None]:
    if _estimate_exceeds(data, max_size):
        return None, f"the data would encode to more than max_size ({max_size} bytes); not converted"
    encoded: dict[str, Any] = {}
    for key, value in data.items():
        if type(key) is not str:
            return None, f"a session key is a {type(key).__name__}, not a str"
        if "\x00" in key:
            return None, "a session key contains a NUL character"
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return None, "a session key contains a lone surrogate (not valid UTF-8)"
        try:
            encoded[key] = encode_value(value)
        except (TypeError, ValueError) as exc:
            return None, f"the value under key {key!r} cannot be stored: {exc}"
    text = dumps(encoded)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # jsonb (and the UTF-8 connection) cannot carry it
        return None, "the data holds a lone surrogate (not valid UTF-8)"
    if size > max_size:
        return None, f"the data encodes to {size} bytes, more than max_size ({max_size} bytes)"
    return text, None


def user_column(
    data: dict[str, Any], user_key: str | None, key_prefix: str = ""
) -> tuple[str | None, str | None]:
    """``(text, None)`` for the user column of a converted row (None: nobody is logged in), or
    ``(None, reason)``; the text the store looks users up by, so "log out everywhere" finds it.

    :param user_key: the session key holding the user's id; None leaves the column empty.
    :param key_prefix: ``SESSION_KEY_PREFIX``, which scopes the user as the app's own saves do.
    """
    value = data.get(user_key) if user_key is not None else None
    if value is None:
        return None, None
    try:
        return user_id_text(value, user_key, key_prefix=key_prefix), None
    except SessionError as exc:
        return None, str(exc)


def convert_session(
    data: dict[str, Any], max_size: int, user_key: str | None, key_prefix: str
) -> tuple[str | None, str | None, str | None]:
    """``(json, user column, None)``; ``(None, None, reason)`` if refused; all None if ``data`` holds
    only Flask's ``_permanent`` flag. The rules the fallback and the migration share."""
    if all(key in META_KEYS for key in data):
        return None, None, None
    data_json, reason = encode_row(data, max_size)
    if data_json is None:
        return None, None, reason or "cannot be stored"
    user_id, reason = user_column(data, user_key, key_prefix)
    return (None, None, reason) if reason is not None else (data_json, user_id, None)
