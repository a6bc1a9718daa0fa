"""Session values to JSON and back, without pickle, through a registry of type tags.

A value JSON lacks a type for is stored as a one-key object whose key, its *tag*, starts with a
space: ``{" dt": "2026-01-01T00:00:00"}``; a user dict that looks like one is wrapped in ``" di"``.
The built-in tags are the stored format and never change: ``" t"`` tuple, ``" dt"``/``" d"``/``" tm"``
datetime/date/time, ``" b"`` bytes, ``" u"`` UUID, ``" dec"`` Decimal, ``" m"`` Markup, ``" f"`` a
float jsonb would misprint (``1e+16``, ``-0.0``), ``" s"`` a str jsonb cannot hold (NUL, lone
surrogate). Decoding accepts only what encoding writes; anything else is a
:class:`~pgsession_wsgi.SessionDataError`. Add types with :func:`register_type` at start-up.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime, time
from typing import Any, TypeVar

from ._codec_tags import (
    _DICT_TAG,
    _NOT_JSONB,
    TypeTag,
    UnwrittenNumber,
    _BytesTag,
    _DecimalTag,
    _FloatTag,
    _FunctionTag,
    _IsoFormatTag,
    _MarkupTag,
    _NotEncoded,
    _OddStrTag,
    _plain_float,
    _SubclassFunctionTag,
    _TupleTag,
    _UUIDTag,
    _WrappedDictTag,
)
from ._codec_tags import Recurse as Recurse  # public here: a tag author annotates with it
from .errors import SessionDataError, TagRegistrationError

__all__ = [
    "MAX_DECIMAL_EXPONENT",
    "MAX_DEPTH",
    "MAX_INT_BITS",
    "Codec",
    "TagRegistrationError",
    "TypeTag",
    "check_key",
    "decode_value",
    "default_codec",
    "dumps",
    "encode_value",
    "register_type",
    "same",
]

#: Deeper nesting (containers and tagged values) is refused, far from the recursion limit.
MAX_DEPTH = 64
#: Wider ints are refused: Python will not print ints of over 4300 digits.
MAX_INT_BITS = 1024
#: Decimals beyond ``1E+1000`` or ``1E-1000`` are refused: written out in full they can take
#: gigabytes, however short their text.
MAX_DECIMAL_EXPONENT = 1000

_T = TypeVar("_T")
# Stored as plain JSON before any tag is asked.
_PLAIN_TYPES = (int, bool, type(None), list, dict)
# Decode as themselves. A str too: jsonb holds no NUL or lone surrogate, so none is searched for.
_AS_IS = frozenset({str, bool, type(None)})


def check_key(key: str) -> None:
    """Raise ``ValueError`` for a key jsonb cannot hold (NUL or a lone surrogate)."""
    if _NOT_JSONB.search(key):
        raise ValueError(f"the key {key!r} contains a NUL character or a lone surrogate")


class Codec:
    """Turns session values into JSON data and back, through a registry of :class:`TypeTag`.

    A new codec knows the built-in types; :data:`default_codec` is the one sessions use. Values
    are looked up by exact type, then by the tags' :meth:`TypeTag.check`. Register tags at
    start-up: the registry is not locked against concurrent requests.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, TypeTag] = {}
        self._by_type: dict[type, TypeTag] = {}
        self._checked: list[TypeTag] = []  # tags overriding check(), in the order they are asked
        for tag in _BUILTIN_TAGS:
            self.register(tag)

    def register(self, tag: TypeTag, *, replace: bool = False, index: int | None = None) -> None:
        """Store the values of ``tag.types`` (and those its ``check`` accepts) with ``tag``.

        :param tag: the tag; its name must start with a space (or be None, for untagged).
        :param replace: take the name and types over from the tags holding them. Without it a
            collision is an error, so no app silently changes how stored rows decode.
        :param index: the place among the tags whose ``check`` is asked (a subclass's tag before
            its base's); default: last, or the place of the tag it replaces.
        :raises TagRegistrationError: the tag is malformed (a name without a leading space, no
            ``to_json``...), or it collides with a registered tag and ``replace`` is off.
        """
        self._validate(tag)
        holder = self._holder(tag)
        if holder is not None and not replace:
            raise TagRegistrationError(_collision_message(tag, holder, self._by_type))
        position = None
        for old in (self._by_name.get(tag.name) if tag.name is not None else None, tag):
            if old is not None and self._is_registered(old):
                position = self._forget(old)
        for kind in tag.types:
            self._by_type[kind] = tag  # a tag holding it before keeps its name, to read old rows
        if tag.name is not None:
            self._by_name[tag.name] = tag
        if type(tag).check is not TypeTag.check:
            where = index if index is not None else position
            self._checked.insert(len(self._checked) if where is None else where, tag)

    def register_type(
        self,
        cls: type[_T],
        name: str | None,
        to_json: Callable[[_T], Any],
        from_json: Callable[[Any], _T] | None = None,
        *,
        subclasses: bool = False,
        replace: bool = False,
        index: int | None = None,
    ) -> None:
        """Store ``cls`` values as what ``to_json`` makes of them; see :func:`register_type`.

        :raises TagRegistrationError: as for :meth:`register`, or a name without ``from_json``
            (or ``from_json`` without a name).
        """
        if (name is None) != (from_json is None):
            raise TagRegistrationError(
                f"register_type({cls.__qualname__}, {name!r}, ...): a tag name and from_json go "
                "together; without a name the value is stored untagged and reads back as plain data"
            )
        factory = _SubclassFunctionTag if subclasses else _FunctionTag
        self.register(factory(cls, name, to_json, from_json), replace=replace, index=index)

    def _validate(self, tag: TypeTag) -> None:
        name = tag.name
        if name is not None and (type(name) is not str or not name.startswith(" ")):
            raise TagRegistrationError(
                f"the tag name {name!r} of {tag!r} must be a str starting with a space: a name "
                "without one could be a plain dict key and would change how such dicts decode"
            )
        if name is not None and _NOT_JSONB.search(name):
            raise TagRegistrationError(f"the tag name {name!r} contains a NUL character or a lone surrogate")
        if name == _DICT_TAG and name in self._by_name:
            raise TagRegistrationError(f"the tag {_DICT_TAG!r} is the codec's own and cannot be replaced")
        if type(tag).to_json is TypeTag.to_json:
            raise TagRegistrationError(f"{tag!r} does not implement to_json")
        if name is not None and type(tag).from_json is TypeTag.from_json:
            raise TagRegistrationError(f"{tag!r} does not implement from_json: nothing could read it back")
        for kind in tag.types:
            if not isinstance(kind, type):
                raise TagRegistrationError(f"{tag!r} lists {kind!r} in its types, which is not a type")
            if kind in _PLAIN_TYPES:
                raise TagRegistrationError(
                    f"{kind.__name__} values are stored as plain JSON before any tag is asked; "
                    f"{tag!r} would never be used"
                )

    def _holder(self, tag: TypeTag) -> TypeTag | None:
        """The first registered tag ``tag`` collides with: by name, by type, or itself."""
        if tag.name in self._by_name:
            return self._by_name[tag.name]
        for kind in tag.types:
            if kind in self._by_type:
                return self._by_type[kind]
        return tag if self._is_registered(tag) else None

    def _is_registered(self, tag: TypeTag) -> bool:
        holders = [*self._by_name.values(), *self._by_type.values(), *self._checked]
        return any(holder is tag for holder in holders)

    def _forget(self, tag: TypeTag) -> int | None:
        """Unregister ``tag`` entirely; return its former place among the checked tags."""
        for kind in [kind for kind, holder in self._by_type.items() if holder is tag]:
            del self._by_type[kind]
        if tag.name is not None and self._by_name.get(tag.name) is tag:
            del self._by_name[tag.name]
        for position, checked in enumerate(self._checked):
            if checked is tag:
                del self._checked[position]
                return position
        return None

    def encode(self, value: Any) -> Any:
        """Turn ``value`` into plain JSON data; raise ``TypeError``/``ValueError`` if it can't be.

        ``ValueError`` also covers what would not read back as the same value: nesting past
        :data:`MAX_DEPTH`, ints past :data:`MAX_INT_BITS`, NaN and infinities, Decimals past
        :data:`MAX_DECIMAL_EXPONENT`, and zone offsets with a fraction of a second.
        """
        return self._encode(value, 0)

    def _encode(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            if _NOT_JSONB.search(value) is None:
                return value
        elif kind is int:
            if value.bit_length() > MAX_INT_BITS:
                raise ValueError(f"integers wider than {MAX_INT_BITS} bits cannot be stored")
            return value
        elif kind is bool or value is None:
            return value
        elif kind is dict or kind is list:
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(_too_deep())
            if kind is list:
                encode = self._encode
                return [encode(item, depth) for item in value]
            return self._encode_dict(value, depth)
        elif kind is float and _plain_float(value):
            return value
        return self._encode_tagged(value, depth)

    def _encode_dict(self, value: dict[Any, Any], depth: int) -> Any:
        encoded = {}
        encode = self._encode
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"dict keys must be str, not {type(key).__name__}")
            check_key(key)
            encoded[key] = encode(item, depth)
        if len(encoded) == 1 and next(iter(encoded)).startswith(" "):
            return {_DICT_TAG: encoded}
        return encoded

    def _encode_tagged(self, value: Any, depth: int) -> Any:
        tag = self._by_type.get(type(value))
        if tag is None:
            tag = self._checked_tag_for(value)
        depth += 1
        if depth > MAX_DEPTH:
            raise ValueError(_too_deep())
        payload = tag.to_json(value, lambda item: self._encode(item, depth))
        return payload if tag.name is None else {tag.name: payload}

    def _checked_tag_for(self, value: Any) -> TypeTag:
        for tag in self._checked:
            if tag.check(value):
                return tag
        kind = type(value)
        raise TypeError(
            f"values of type {kind.__module__}.{kind.__qualname__} cannot be stored "
            "(pgsession_wsgi.codec.register_type teaches the codec a type)"
        )

    def decode(self, data: Any) -> Any:
        """Inverse of :meth:`encode`, for exactly what it writes, the same on every Python.

        :raises SessionDataError: ``data`` is nothing ``encode`` writes (another spelling of a
            payload, a refused value, an unregistered tag, or a tag's ``from_json`` raised); the
            message names what was wrong, never the data itself.
        """
        try:
            return self._decode(data, 0)
        except SessionDataError:
            raise
        except Exception as exc:  # anything a foreign or damaged value can make a decoder raise
            raise SessionDataError(str(exc) if isinstance(exc, _NotEncoded) else type(exc).__name__) from None

    def _decode(self, data: Any, depth: int) -> Any:
        kind = type(data)
        if kind in _AS_IS:
            return data
        if kind is dict or kind is list:
            depth += 1
            if depth > MAX_DEPTH:
                raise _NotEncoded(f"a value nested deeper than {MAX_DEPTH} levels")
            if kind is list:
                decode = self._decode
                return [item if type(item) in _AS_IS else decode(item, depth) for item in data]
            return self._decode_dict(data, depth)
        if kind is int:
            if data.bit_length() > MAX_INT_BITS:
                raise _NotEncoded(f"an integer wider than {MAX_INT_BITS} bits")
            return data
        if kind is float and _plain_float(data):
            return data
        if kind is float or kind is UnwrittenNumber:  # NaN, infinite, in exponent form (tagged), rounded
            raise _NotEncoded("a float not finite, in exponent form or spelled otherwise than written")
        raise _NotEncoded(f"a {kind.__name__}, which is not JSON data")

    def _decode_dict(self, data: dict[Any, Any], depth: int) -> Any:
        decode = self._decode
        if len(data) == 1:
            name, payload = next(iter(data.items()))
            if type(name) is str and name.startswith(" "):  # a tag: the codec wraps dicts like it
                tag = self._by_name.get(name)
                if tag is None:
                    raise _NotEncoded(
                        "a tag no type is registered for: register the app's types with "
                        "register_type at start-up, as the app that stored it did"
                    )
                return tag.from_json(payload, lambda item: decode(item, depth))
        return {key: item if type(item) in _AS_IS else decode(item, depth) for key, item in data.items()}


def _too_deep() -> str:
    return f"values nested deeper than {MAX_DEPTH} levels cannot be stored"


def _collision_message(tag: TypeTag, holder: TypeTag, by_type: dict[type, TypeTag]) -> str:
    if holder is tag:
        return f"{tag!r} is already registered; pass replace=True to register it again"
    if tag.name is not None and holder.name == tag.name:
        return (
            f"the tag name {tag.name!r} is taken by {holder!r}; pass replace=True to replace it "
            "(rows already stored with that name are then read by the new tag)"
        )
    kinds = ", ".join(kind.__qualname__ for kind in tag.types if by_type.get(kind) is holder)
    return (
        f"{kinds} values are already stored with {holder!r}; pass replace=True to store them "
        f"with {tag!r} instead ({holder!r} still reads the rows stored with it)"
    )


# The tags a new Codec starts with: the stored format.
_BUILTIN_TAGS: tuple[TypeTag, ...] = (
    _TupleTag(),
    _WrappedDictTag(),
    _IsoFormatTag(" dt", datetime),
    _IsoFormatTag(" d", date),
    _IsoFormatTag(" tm", time),
    _BytesTag(),
    _UUIDTag(),
    _DecimalTag(MAX_DECIMAL_EXPONENT),
    _MarkupTag(),
    _FloatTag(),
    _OddStrTag(),
)

#: The codec :func:`encode_value` and :func:`decode_value`, and so sessions, use.
default_codec = Codec()


def register_type(
    cls: type[_T],
    name: str | None,
    to_json: Callable[[_T], Any],
    from_json: Callable[[Any], _T] | None = None,
    *,
    subclasses: bool = False,
    replace: bool = False,
    index: int | None = None,
) -> None:
    """Teach :data:`default_codec` to store ``cls``; register at start-up, before any request::

        register_type(Line, " line", lambda line: [line.sku, line.price], lambda data: Line(*data))

    :param name: its tag, starting with a space; it is in every row stored, so never reuse it
        for another type. None stores the value untagged, and it reads back as plain data.
    :param to_json: the value as data the codec can already store (encoded in turn).
    :param from_json: the value rebuilt from that data (decoded first); required with a name.
    :param subclasses: store instances of subclasses of ``cls`` with this tag too.
    :param replace: take a tag name or type over from the tag holding it.
    :param index: the place among the tags that check subclasses.
    :raises TagRegistrationError: a malformed tag name, or one or a type already registered
        (without ``replace``).
    """
    default_codec.register_type(
        cls, name, to_json, from_json, subclasses=subclasses, replace=replace, index=index
    )


def encode_value(value: Any) -> Any:
    """Turn ``value`` into plain JSON data with :data:`default_codec` (see :meth:`Codec.encode`)."""
    return default_codec.encode(value)


def decode_value(data: Any) -> Any:
    """Inverse of :func:`encode_value` (see :meth:`Codec.decode`).

    :raises SessionDataError: ``data`` is nothing :func:`encode_value` writes.
    """
    return data if type(data) in _AS_IS else default_codec.decode(data)  # a string: no call


# One encoder for every call: json.dumps() with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def dumps(data: Any) -> str:
    """Compact JSON text of what :func:`encode_value` returned (UTF-8 as is: its length bounds
    the stored size)."""
    return _ENCODER.encode(data)


def same(left: Any, right: Any) -> bool:
    """Equality of encoded data that also compares types, so ``1``, ``1.0`` and ``True`` differ."""
    if type(left) is not type(right):
        return False
    if type(left) is dict:
        return left.keys() == right.keys() and all(same(v, right[k]) for k, v in left.items())
    if type(left) is list:
        return len(left) == len(right) and all(map(same, left, right))
    return bool(left == right)
