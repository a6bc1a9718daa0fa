"""Internal: :class:`~pgsession_wsgi.codec.TypeTag` and the built-in tags (the stored format).

``TypeTag`` and ``Recurse`` are public as ``pgsession_wsgi.codec.TypeTag`` and ``.Recurse``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from markupsafe import Markup

#: The codec's own encoder or decoder, handed to a tag for the parts of its payload.
Recurse = Callable[[Any], Any]

# What jsonb cannot hold; strings with it travel as base64.
_NOT_JSONB = re.compile("[\x00\ud800-\udfff]")
# The codec writes this tag itself (dicts that look like a tag); it cannot be replaced.
_DICT_TAG = " di"


class TypeTag:
    """How the values of one type are stored: subclass it and register an instance.

    Set :attr:`name` and :attr:`types`, override :meth:`check` only to take subclasses or
    look-alikes too, and implement :meth:`to_json` and :meth:`from_json`. Leave ``name`` and
    ``types`` alone once registered: the codec indexes them.
    """

    #: The key of the one-key object the value is stored as; it starts with a space, so it is
    #: never mistaken for data. None: stored untagged, as what :meth:`to_json` returns, and read
    #: back as that plain value.
    name: str | None = None
    #: The exact types this tag stores (not their subclasses).
    types: tuple[type, ...] = ()

    def check(self, value: Any) -> bool:
        """Whether this tag stores ``value``, of a type no tag lists in ``types``.

        Only tags that override it are asked, in registration order, and only for values no exact
        type matched, so an ``isinstance`` here costs the common values nothing.
        """
        return False

    def to_json(self, value: Any, encode: Recurse) -> Any:
        """The payload ``value`` is stored as: JSON data (dict, list, str, int, float, bool, None).

        :param encode: the codec's encoder; pass it any part that is not plain JSON (a
            container's items) so it is tagged in turn and the depth limit applies.
        """
        raise NotImplementedError

    def from_json(self, data: Any, decode: Recurse) -> Any:
        """The value rebuilt from its payload; raise on a payload that makes no sense (the codec
        turns it into a :class:`~pgsession_wsgi.SessionDataError`).

        :param data: the payload, as :meth:`to_json` returned it.
        :param decode: the codec's decoder; pass it the parts :meth:`to_json` encoded.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class _NotEncoded(ValueError):
    """A value the codec never writes, met while decoding; its message never holds the data."""


def _plain_float(value: float) -> bool:
    """Whether ``value`` is plain JSON: jsonb would print ``1e+16`` as an int, ``-0.0`` as ``0.0``."""
    text = repr(value)
    return math.isfinite(value) and "e" not in text and text != "-0.0"


class UnwrittenNumber(str):
    """The text of a stored JSON number the encoder would not have written; decoding refuses it,
    where a float would round it in silence."""

    __slots__ = ()


def _read_float(text: str) -> Any:
    value = float(text)
    return value if repr(value) == text else UnwrittenNumber(text)


def loads(text: str | bytes) -> Any:
    """A ``data`` column's text (bytes from psycopg 3) as Python data; a float spelled otherwise
    than its repr (``1e-400``) comes back as :class:`UnwrittenNumber`.

    :raises ValueError: not JSON, or bytes that are not UTF-8.
    """
    return _DECODER.decode(text if isinstance(text, str) else text.decode())


# Made once: json.loads with a hook would build a new one for every row.
_DECODER = json.JSONDecoder(parse_float=_read_float)


def _no_recursion(item: Any) -> Any:
    raise AssertionError("the built-in scalar tags encode no parts")


class _TextTag(TypeTag):
    """A scalar stored as text, read back only from the exact text ``to_json`` writes: not from
    other spellings (parsers accept different ones per Python version) or refused values."""

    _parse: Callable[[str], Any]  # the value from its text

    def from_json(self, data: Any, decode: Recurse) -> Any:
        if type(data) is not str:
            raise _NotEncoded(f"a {self.name!r} payload that is not a str")
        value = self._parse(data)
        try:
            written = self.to_json(value, _no_recursion)
        except (TypeError, ValueError):
            written = None
        if type(written) is not str or written != data:
            raise _NotEncoded(f"a {self.name!r} payload not as pgsession-wsgi writes it")
        return value


class _TupleTag(TypeTag):
    name = " t"
    types = (tuple,)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return [encode(item) for item in value]

    def from_json(self, data: Any, decode: Recurse) -> Any:
        if type(data) is not list:
            raise _NotEncoded("a ' t' payload that is not a list")
        return tuple(decode(item) for item in data)


class _WrappedDictTag(TypeTag):
    """A user dict whose one key starts with a space."""

    name = _DICT_TAG

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return {key: encode(item) for key, item in value.items()}

    def from_json(self, data: Any, decode: Recurse) -> Any:
        if type(data) is not dict or len(data) != 1:
            raise _NotEncoded(f"a {_DICT_TAG!r} payload that is not a dict of one key")
        ((key, item),) = data.items()
        if type(key) is not str or not key.startswith(" ") or _NOT_JSONB.search(key) is not None:
            raise _NotEncoded(f"a {_DICT_TAG!r} payload whose key does not start with a space")
        return {key: decode(item)}


class _IsoFormatTag(_TextTag):
    """datetime, date or time as ISO 8601 text."""

    def __init__(self, name: str, cls: type[datetime] | type[date] | type[time]) -> None:
        self.name = name
        self.types = (cls,)
        self._parse = cls.fromisoformat

    def to_json(self, value: Any, encode: Recurse) -> Any:
        offset = value.utcoffset() if isinstance(value, (datetime, time)) else None
        if offset is not None and offset.microseconds:
            # isoformat() writes it, but no fromisoformat() of any Python reads it back as it was.
            raise ValueError("a time zone offset with a fraction of a second cannot be stored")
        return value.isoformat()


class _BytesTag(_TextTag):
    name = " b"
    types = (bytes,)

    def _parse(self, text: str) -> bytes:
        return base64.b64decode(text, validate=True)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return base64.b64encode(value).decode("ascii")


class _UUIDTag(_TextTag):
    name = " u"
    types = (UUID,)
    _parse = UUID

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return value.hex


class _DecimalTag(_TextTag):
    """A finite Decimal within ``max_exponent``, as its text (a signalling NaN raises on any
    comparison, so NaN is refused)."""

    name = " dec"
    types = (Decimal,)
    _parse = Decimal

    def __init__(self, max_exponent: int) -> None:
        self._max_exponent = max_exponent

    def to_json(self, value: Any, encode: Recurse) -> Any:
        if not value.is_finite():
            raise ValueError("NaN and infinite Decimals cannot be stored")
        limit = self._max_exponent
        if abs(value.adjusted()) > limit:
            raise ValueError(f"Decimals beyond 1E+{limit} or 1E-{limit} cannot be stored")
        return str(value)


class _MarkupTag(_TextTag):
    """Markup and its subclasses (which read back as Markup)."""

    name = " m"
    types = (Markup,)
    _parse = Markup

    def check(self, value: Any) -> bool:
        return isinstance(value, Markup)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        if _NOT_JSONB.search(value):
            raise ValueError("Markup with a NUL character or a lone surrogate cannot be stored")
        return str(value)


class _FloatTag(_TextTag):
    """A finite float that is no plain JSON number (see ``_plain_float``), as its repr."""

    name = " f"
    types = (float,)
    _parse = float

    def to_json(self, value: Any, encode: Recurse) -> Any:
        if not math.isfinite(value):
            raise ValueError("NaN and infinite floats cannot be stored")
        if _plain_float(value):
            raise ValueError(f"{value!r} is stored as a plain JSON number, not with {self.name!r}")
        return repr(value)


class _OddStrTag(_TextTag):
    """A str with NUL or a lone surrogate, as base64 of its UTF-8."""

    name = " s"
    types = (str,)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        if _NOT_JSONB.search(value) is None:
            raise ValueError(
                f"a str without NUL or a lone surrogate is stored as plain JSON, not with {self.name!r}"
            )
        return base64.b64encode(value.encode("utf-8", "surrogatepass")).decode("ascii")

    def _parse(self, text: str) -> str:
        return base64.b64decode(text, validate=True).decode("utf-8", "surrogatepass")


class _FunctionTag(TypeTag):
    """The tag ``Codec.register_type`` makes from a pair of functions."""

    def __init__(
        self,
        cls: type[Any],
        name: str | None,
        to_json: Callable[[Any], Any],
        from_json: Callable[[Any], Any] | None,
    ) -> None:
        self.name = name
        self.types = (cls,)
        self._to_json = to_json
        # Never called for an untagged value: nothing marks it.
        self._from_json = from_json if from_json is not None else lambda data: data

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return encode(self._to_json(value))

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return self._from_json(decode(data))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} for {self.types[0].__qualname__}>"


class _SubclassFunctionTag(_FunctionTag):
    def check(self, value: Any) -> bool:
        return isinstance(value, self.types[0])
