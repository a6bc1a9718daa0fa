"""Session values to JSON and back, without pickle.

JSON lacks several types people keep in sessions, so those are written as one-key objects whose
key starts with a space (``{" dt": "2026-01-01T00:00:00"}``); a user dict that happens to look
like a tag is wrapped so that it never decodes as one. Each top-level session key stays a
top-level JSON key, which is what lets the store merge changes per key.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from markupsafe import Markup

__all__ = ["decode_value", "dumps", "encode_value", "same"]

_PLAIN = (str, int, bool, type(None))


def _encode_str(value: str) -> Any:
    # jsonb cannot hold U+0000, so such strings travel as base64.
    if "\x00" in value:
        return {" s": base64.b64encode(value.encode("utf-8", "surrogatepass")).decode("ascii")}
    return value


def _encode_dict(value: dict[Any, Any]) -> Any:
    encoded = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"dict keys must be str, not {type(key).__name__}")
        if "\x00" in key:
            raise TypeError("dict keys cannot contain NUL characters")
        encoded[key] = encode_value(item)
    if len(encoded) == 1 and next(iter(encoded)).startswith(" "):
        return {" di": encoded}
    return encoded


def encode_value(value: Any) -> Any:
    """Turn ``value`` into plain JSON data; raise ``TypeError``/``ValueError`` if it can't be."""
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("NaN and infinite floats cannot be stored")
        text = repr(value)
        # jsonb prints 1e+16 as 10000000000000000, which would read back as an int.
        return {" f": text} if "e" in text else value
    if kind is dict:
        return _encode_dict(value)
    if kind is list:
        return [encode_value(item) for item in value]
    if kind is tuple:
        return {" t": [encode_value(item) for item in value]}
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
        return {" m": str(value)}
    raise TypeError(f"values of type {kind.__module__}.{kind.__qualname__} cannot be stored")


_DECODERS: dict[str, Callable[[Any], Any]] = {
    " t": lambda items: tuple(decode_value(item) for item in items),
    " dt": datetime.fromisoformat,
    " d": date.fromisoformat,
    " tm": time.fromisoformat,
    " b": lambda text: base64.b64decode(text),
    " u": UUID,
    " dec": Decimal,
    " m": Markup,
    " f": float,
    " s": lambda text: base64.b64decode(text).decode("utf-8", "surrogatepass"),
    " di": lambda inner: {key: decode_value(item) for key, item in inner.items()},
}


def decode_value(data: Any) -> Any:
    """Inverse of :func:`encode_value`."""
    kind = type(data)
    if kind is dict:
        if len(data) == 1:
            tag, payload = next(iter(data.items()))
            decoder = _DECODERS.get(tag)
            if decoder is not None:
                return decoder(payload)
        return {key: decode_value(item) for key, item in data.items()}
    if kind is list:
        return [decode_value(item) for item in data]
    return data


def dumps(data: Any) -> str:
    """Compact JSON text of already-encoded data."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def same(left: Any, right: Any) -> bool:
    """Equality that also compares types, so ``1``, ``1.0`` and ``True`` count as different."""
    if type(left) is not type(right):
        return False
    if type(left) is dict:
        return left.keys() == right.keys() and all(same(v, right[k]) for k, v in left.items())
    if type(left) is list:
        return len(left) == len(right) and all(map(same, left, right))
    return bool(left == right)
