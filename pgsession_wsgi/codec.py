"""Session values to JSON and back, without pickle.

JSON lacks several types people keep in sessions, so those are written as one-key objects whose
key starts with a space (``{" dt": "2026-01-01T00:00:00"}``); a user dict that happens to look
like a tag is wrapped so that it never decodes as one. Each top-level session key stays a
top-level JSON key, which is what lets the store merge changes per key.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from markupsafe import Markup

__all__ = ["MAX_DEPTH", "MAX_INT_BITS", "check_key", "decode_value", "dumps", "encode_value", "same"]

#: Containers (lists, dicts, tuples) nested deeper than this are refused: every stored value
#: must decode again without coming near Python's recursion limit.
MAX_DEPTH = 64
#: Integers wider than this are refused (about 308 decimal digits): Python refuses to print
#: ints of over 4300 digits, and no session needs one.
MAX_INT_BITS = 1024

_PLAIN = (str, int, bool, type(None))
# jsonb holds neither U+0000 nor lone surrogates; strings with either travel as base64.
_NOT_JSONB = re.compile("[\x00\ud800-\udfff]")


def check_key(key: str) -> None:
    """Raise ``ValueError`` for a str key jsonb cannot hold (NUL or a lone surrogate)."""
    if _NOT_JSONB.search(key):
        raise ValueError(f"the key {key!r} contains a NUL character or a lone surrogate")


def _encode_str(value: str) -> Any:
    if _NOT_JSONB.search(value):
        return {" s": base64.b64encode(value.encode("utf-8", "surrogatepass")).decode("ascii")}
    return value


def _encode_dict(value: dict[Any, Any], depth: int) -> Any:
    encoded = {}
    for key, item in value.items():
        if type(key) is not str:
            raise TypeError(f"dict keys must be str, not {type(key).__name__}")
        check_key(key)
        encoded[key] = _encode(item, depth)
    if len(encoded) == 1 and next(iter(encoded)).startswith(" "):
        return {" di": encoded}
    return encoded


def encode_value(value: Any) -> Any:
    """Turn ``value`` into plain JSON data; raise ``TypeError``/``ValueError`` if it can't be.

    ``ValueError`` also covers values nested deeper than :data:`MAX_DEPTH` and ints wider than
    :data:`MAX_INT_BITS`, so that whatever is stored can always be read back.
    """
    return _encode(value, 0)


def _encode(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is int:
        if value.bit_length() > MAX_INT_BITS:
            raise ValueError(f"integers wider than {MAX_INT_BITS} bits cannot be stored")
        return value
    if kind in _PLAIN:
        return value
    if kind in (dict, list, tuple):
        depth += 1
        if depth > MAX_DEPTH:
            raise ValueError(f"values nested deeper than {MAX_DEPTH} levels cannot be stored")
    if kind is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("NaN and infinite floats cannot be stored")
        text = repr(value)
        # jsonb prints 1e+16 as 10000000000000000, which would read back as an int.
        return {" f": text} if "e" in text else value
    if kind is dict:
        return _encode_dict(value, depth)
    if kind is list:
        return [_encode(item, depth) for item in value]
    if kind is tuple:
        return {" t": [_encode(item, depth) for item in value]}
    if kind is datetime:
        return {" dt": value.isoformat()}
    if kind is date:
        return {" d": value.isoformat()}
    if kind is time:
        return {" tm": value.isoformat()}
    if kind is bytes:
        return {" b": base64.b64encode(value).decode("ascii")}
    if kind is UUID:
        return {" u": value.hex}
    if kind is Decimal:
        return {" dec": str(value)}
    if isinstance(value, Markup):
        if _NOT_JSONB.search(value):
            raise ValueError("Markup with a NUL character or a lone surrogate cannot be stored")
        return {" m": str(value)}
    raise TypeError(f"values of type {kind.__module__}.{kind.__qualname__} cannot be stored")


_DECODERS: dict[str, Callable[[Any, int], Any]] = {
    " t": lambda items, depth: tuple(_decode(item, depth) for item in items),
    " dt": lambda text, depth: datetime.fromisoformat(text),
    " d": lambda text, depth: date.fromisoformat(text),
    " tm": lambda text, depth: time.fromisoformat(text),
    " b": lambda text, depth: base64.b64decode(text),
    " u": lambda text, depth: UUID(text),
    " dec": lambda text, depth: Decimal(text),
    " m": lambda text, depth: Markup(text),
    " f": lambda text, depth: float(text),
    " s": lambda text, depth: base64.b64decode(text).decode("utf-8", "surrogatepass"),
    " di": lambda inner, depth: {key: _decode(item, depth) for key, item in inner.items()},
}


def decode_value(data: Any) -> Any:
    """Inverse of :func:`encode_value`; refuses (``ValueError``) what it would refuse to store."""
    return _decode(data, 0)


def _decode(data: Any, depth: int) -> Any:
    kind = type(data)
    if kind is dict or kind is list:
        depth += 1
        if depth > MAX_DEPTH:
            raise ValueError(f"the value is nested deeper than {MAX_DEPTH} levels")
    if kind is dict:
        if len(data) == 1:
            tag, payload = next(iter(data.items()))
            decoder = _DECODERS.get(tag)
            if decoder is not None:
                return decoder(payload, depth)
        return {key: _decode(item, depth) for key, item in data.items()}
    if kind is list:
        return [_decode(item, depth) for item in data]
    return data


def dumps(data: Any) -> str:
    """Compact JSON text of already-encoded data (UTF-8 as is: its length bounds the stored size)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def same(left: Any, right: Any) -> bool:
    """Equality that also compares types, so ``1``, ``1.0`` and ``True`` count as different."""
    if type(left) is not type(right):
        return False
    if type(left) is dict:
        return left.keys() == right.keys() and all(same(v, right[k]) for k, v in left.items())
    if type(left) is list:
        return len(left) == len(right) and all(map(same, left, right))
    return bool(left == right)
