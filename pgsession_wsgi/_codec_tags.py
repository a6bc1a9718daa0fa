"""Internal: :class:`~pgsession_wsgi.codec.TypeTag` and the built-in tags, the stored format of 0.1.0.

Each built-in tag is a small class whose name and payload never change (the module docstring of
:mod:`pgsession_wsgi.codec` lists them), with the helpers that check a payload is spelled exactly
as it is written. They are apart from the codec so that ``codec.py`` holds the registry and the
walk over a value (encode, decode) and this module the per-type formats. It imports nothing from
the codec: the codec imports the tags from here and hands :class:`_DecimalTag` its exponent limit.
``TypeTag`` and ``Recurse`` are public as ``pgsession_wsgi.codec.TypeTag`` and
``pgsession_wsgi.codec.Recurse``; import them from there.
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

# jsonb holds neither U+0000 nor lone surrogates; strings with either travel as base64.
_NOT_JSONB = re.compile("[\x00\ud800-\udfff]")
# The codec writes this tag itself (dicts that look like a tag); it cannot be replaced.
_DICT_TAG = " di"


class TypeTag:
    """How the values of one type are stored: subclass it and register an instance.

    Set :attr:`name` and :attr:`types` (as class or instance attributes), override :meth:`check`
    only to take subclasses or look-alikes too, and implement :meth:`to_json` and
    :meth:`from_json`. Leave ``name`` and ``types`` alone once the tag is registered: the codec
    indexes them then.
    """

    #: The key of the one-key object the value is stored as. It starts with a space: the codec
    #: wraps every user dict whose one key does, so a tag is never mistaken for data. None: the
    #: value is stored untagged, as whatever :meth:`to_json` returns, and reads back as that
    #: plain value (a lazy string as its text).
    name: str | None = None
    #: The exact types this tag stores, found with one dict lookup; subclasses are not included.
    types: tuple[type, ...] = ()

    def check(self, value: Any) -> bool:
        """Whether this tag stores ``value``, an instance of a type no tag lists in ``types``.

        Only tags that override this method are asked, in their registration order, and only
        for values no exact type matched: an ``isinstance`` here costs nothing on the fast path.

        :param value: the value to store.
        """
        return False

    def to_json(self, value: Any, encode: Recurse) -> Any:
        """The payload ``value`` is stored as: JSON data (dict, list, str, int, float, bool, None).

        :param value: the value to store, of one of :attr:`types` or accepted by :meth:`check`.
        :param encode: the codec's encoder; pass it any part that is not plain JSON (the items of
            a container) so that it is tagged in turn and the depth limit still applies.
        """
        raise NotImplementedError

    def from_json(self, data: Any, decode: Recurse) -> Any:
        """The value rebuilt from its stored payload; raise on a payload that makes no sense
        (the codec reads anything raised as a :class:`~pgsession_wsgi.SessionDataError`).

        :param data: the payload as stored, that is as :meth:`to_json` returned it.
        :param decode: the codec's decoder; pass it the parts :meth:`to_json` encoded, so that
            their tags are read and the depth limit still applies.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class _NotEncoded(ValueError):
    """A value the codec never writes, met while decoding; ``Codec.decode`` turns it into a
    :class:`~pgsession_wsgi.SessionDataError` whose reason is this message, which never holds
    the data."""


def _plain_float(value: float) -> bool:
    """Whether ``value`` is stored as a plain JSON number (else tagged, or refused if not finite).

    jsonb would print a float in exponent form as an int (``1e+16``), and ``-0.0`` as ``0.0``,
    so those are tagged.
    """
    text = repr(value)
    return math.isfinite(value) and "e" not in text and text != "-0.0"


class UnwrittenNumber(str):
    """A JSON number with a fraction or exponent that the encoder would not have written: its
    text as stored. The codec refuses it on decoding, where a float would round it in silence."""

    __slots__ = ()


def _read_float(text: str) -> Any:
    value = float(text)
    return value if repr(value) == text else UnwrittenNumber(text)


def loads(text: str | bytes) -> Any:
    """Stored JSON text as Python data, each number with a fraction or exponent read as a float
    only where it is spelled as the encoder writes one (its repr, as jsonb prints it back):
    ``1e-400`` or ``0.30000000000000000001`` would read as ``0.0`` and ``0.3``, another value than
    was stored, so they come back as :class:`UnwrittenNumber`, which decoding refuses.

    The stores' drivers read the ``data`` column with it (internal: ``pgsession_wsgi.codec``
    decodes what it returns).

    :param text: a ``data`` column's text (psycopg 3 hands bytes, psycopg2 str).
    :raises ValueError: not JSON, or bytes that are not UTF-8.
    """
    return _DECODER.decode(text if isinstance(text, str) else text.decode())


# One decoder, made once: json.loads with a hook would build a new one for every row.
_DECODER = json.JSONDecoder(parse_float=_read_float)


def _as_written(tag: TypeTag, value: Any, data: Any) -> Any:
    """``value``, decoded from ``data`` by a built-in ``tag``, if ``tag`` writes it as ``data``.

    The one check that a payload is spelled as the encoder spells it: every other spelling a
    parser accepts (which differ between Python versions) and every value the encoder refuses
    are refused here.
    """
    try:
        written = tag.to_json(value, _no_recursion)
    except (TypeError, ValueError):
        written = _MISSING
    if type(written) is not type(data) or written != data:
        raise _NotEncoded(f"a {tag.name!r} payload not as pgsession-wsgi writes it")
    return value


def _no_recursion(item: Any) -> Any:
    raise AssertionError("the built-in scalar tags encode no parts")


def _text(tag: TypeTag, data: Any) -> str:
    """``data``, the payload of a built-in ``tag`` that stores text; refused if it is not a str."""
    if type(data) is not str:
        raise _NotEncoded(f"a {tag.name!r} payload that is not a str")
    return data


_MISSING = object()


# -- the built-in tags: the stored format of 0.1.0 ------------------------------------------


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
    """A user dict whose one key starts with a space; the codec writes it itself."""

    name = _DICT_TAG

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return {key: encode(item) for key, item in value.items()}

    def from_json(self, data: Any, decode: Recurse) -> Any:
        # The codec wraps a dict only when its one key starts with a space: nothing else.
        if type(data) is not dict or len(data) != 1:
            raise _NotEncoded(f"a {_DICT_TAG!r} payload that is not a dict of one key")
        ((key, item),) = data.items()
        if type(key) is not str or not key.startswith(" ") or _NOT_JSONB.search(key) is not None:
            raise _NotEncoded(f"a {_DICT_TAG!r} payload whose key does not start with a space")
        return {key: decode(item)}


class _IsoFormatTag(TypeTag):
    """datetime, date or time as ISO 8601 text."""

    def __init__(self, name: str, cls: type[datetime] | type[date] | type[time]) -> None:
        self.name = name
        self.types = (cls,)
        self._cls = cls

    def to_json(self, value: Any, encode: Recurse) -> Any:
        offset = value.utcoffset() if isinstance(value, (datetime, time)) else None
        if offset is not None and offset.microseconds:
            # isoformat() writes it, but no fromisoformat() of any Python reads it back as it was.
            raise ValueError("a time zone offset with a fraction of a second cannot be stored")
        return value.isoformat()

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return _as_written(self, self._cls.fromisoformat(_text(self, data)), data)


class _BytesTag(TypeTag):
    name = " b"
    types = (bytes,)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return base64.b64encode(value).decode("ascii")

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return _as_written(self, base64.b64decode(_text(self, data), validate=True), data)


class _UUIDTag(TypeTag):
    name = " u"
    types = (UUID,)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return value.hex

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return _as_written(self, UUID(hex=_text(self, data)), data)


class _DecimalTag(TypeTag):
    """A finite Decimal within ``max_exponent`` (the codec's ``MAX_DECIMAL_EXPONENT``), as its text.

    NaN (signalling NaN raises on any comparison) and infinity are refused, as for floats.
    """

    name = " dec"
    types = (Decimal,)

    def __init__(self, max_exponent: int) -> None:
        self._max_exponent = max_exponent

    def to_json(self, value: Any, encode: Recurse) -> Any:
        if not value.is_finite():
            raise ValueError("NaN and infinite Decimals cannot be stored")
        limit = self._max_exponent
        if abs(value.adjusted()) > limit:
            raise ValueError(f"Decimals beyond 1E+{limit} or 1E-{limit} cannot be stored")
        return str(value)

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return _as_written(self, Decimal(_text(self, data)), data)


class _MarkupTag(TypeTag):
    """Markup and its subclasses (which read back as Markup)."""

    name = " m"
    types = (Markup,)

    def check(self, value: Any) -> bool:
        return isinstance(value, Markup)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        if _NOT_JSONB.search(value):
            raise ValueError("Markup with a NUL character or a lone surrogate cannot be stored")
        return str(value)

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return _as_written(self, Markup(_text(self, data)), data)


class _FloatTag(TypeTag):
    """A float whose repr has an exponent (jsonb would print 1e+16 as an int); NaN and infinity
    are refused, as JSON has neither. Other floats are plain JSON numbers."""

    name = " f"
    types = (float,)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        if not math.isfinite(value):
            raise ValueError("NaN and infinite floats cannot be stored")
        if _plain_float(value):
            raise ValueError(f"{value!r} is stored as a plain JSON number, not with {self.name!r}")
        return repr(value)

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return _as_written(self, float(_text(self, data)), data)


class _OddStrTag(TypeTag):
    """A str with NUL or a lone surrogate, which jsonb cannot hold; other str are plain JSON."""

    name = " s"
    types = (str,)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        if _NOT_JSONB.search(value) is None:
            raise ValueError(
                f"a str without NUL or a lone surrogate is stored as plain JSON, not with {self.name!r}"
            )
        return base64.b64encode(value.encode("utf-8", "surrogatepass")).decode("ascii")

    def from_json(self, data: Any, decode: Recurse) -> Any:
        raw = base64.b64decode(_text(self, data), validate=True)
        return _as_written(self, raw.decode("utf-8", "surrogatepass"), data)


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
        # Never called for an untagged value (nothing marks it); it reads back as plain data.
        self._from_json = from_json if from_json is not None else _as_is

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return encode(self._to_json(value))

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return self._from_json(decode(data))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} for {self.types[0].__qualname__}>"


def _as_is(data: Any) -> Any:
    return data


class _SubclassFunctionTag(_FunctionTag):
    def check(self, value: Any) -> bool:
        return isinstance(value, self.types[0])
