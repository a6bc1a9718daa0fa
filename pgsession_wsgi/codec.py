"""Session values to JSON and back, without pickle, through a registry of type tags.

JSON lacks several types people keep in sessions, so a value of such a type is written as a
one-key object whose key, its *tag*, starts with a space: ``{" dt": "2026-01-01T00:00:00"}``. A
user dict that happens to look like a tag (one key, starting with a space) is wrapped,
``{" di": {...}}``, so that it never decodes as one. Each top-level session key stays a top-level
JSON key, which is what lets the store merge changes per key.

The built-in tags are the stored format since 0.1.0, so their names and payloads never change:
``" t"`` tuple (list of items), ``" dt"`` datetime, ``" d"`` date, ``" tm"`` time (ISO 8601 text),
``" b"`` bytes (base64), ``" u"`` UUID (32 hex digits), ``" dec"`` Decimal (its text), ``" m"``
Markup (its text), ``" f"`` a float that prints in exponent form (its repr: jsonb would print
``1e+16`` as an int), ``" s"`` a str holding NUL or a lone surrogate, which jsonb cannot hold
(base64 of its UTF-8, surrogatepass), and ``" di"`` the wrapped dict.

Adding a type
-------------
Register it once at start-up, before the first request, with :func:`register_type`: a tag name of
your own (starting with a space), how to turn a value into data the codec can already store, and
how to rebuild it from that data::

    from dataclasses import dataclass
    from decimal import Decimal
    from pgsession_wsgi.codec import register_type

    @dataclass
    class Line:
        sku: str
        price: Decimal

    register_type(Line, " line", lambda line: [line.sku, line.price], lambda data: Line(*data))

``to_json`` may return anything storable (lists, dicts, tuples, Decimal, other registered types):
it is encoded like any value, and ``from_json`` receives it decoded. A type that should simply be
stored as another one, such as flask-babel's ``LazyString`` as its text, needs no tag name and
reads back as that plain value::

    register_type(LazyString, None, str)

A name or a type already registered, a built-in one included, is refused unless ``replace=True``
says so: the name is in every row stored with it. Each tagged value is a level towards
:data:`MAX_DEPTH`, and its payload's containers count too.

For full control subclass :class:`TypeTag` and register an instance with
``default_codec.register(tag)``; the built-in types are registered that way. A :class:`Codec` of
your own starts with the built-ins and keeps its registrations apart from :data:`default_codec`.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

from markupsafe import Markup

from .errors import TagRegistrationError

__all__ = [
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

#: Containers (lists, dicts, tuples) and tagged values nested deeper than this are refused:
#: every stored value must decode again without coming near Python's recursion limit.
MAX_DEPTH = 64
#: Integers wider than this are refused (about 308 decimal digits): Python refuses to print
#: ints of over 4300 digits, and no session needs one.
MAX_INT_BITS = 1024

_T = TypeVar("_T")
#: The codec's own encoder or decoder, handed to a tag for the parts of its payload.
Recurse = Callable[[Any], Any]

# jsonb holds neither U+0000 nor lone surrogates; strings with either travel as base64.
_NOT_JSONB = re.compile("[\x00\ud800-\udfff]")
# Stored as plain JSON before any tag is asked, so a tag for one would never be used.
_PLAIN_TYPES = (int, bool, type(None), list, dict)
# What JSON nests; everything else decodes as itself.
_CONTAINERS = (dict, list)
# The codec writes this tag itself (dicts that look like a tag); it cannot be replaced.
_DICT_TAG = " di"


def check_key(key: str) -> None:
    """Raise ``ValueError`` for a str key jsonb cannot hold (NUL or a lone surrogate).

    :param key: a session or dict key, checked before anything is sent to the database.
    """
    if _NOT_JSONB.search(key):
        raise ValueError(f"the key {key!r} contains a NUL character or a lone surrogate")


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
        """The value rebuilt from its stored payload; raise on a payload that makes no sense.

        :param data: the payload as stored, that is as :meth:`to_json` returned it.
        :param decode: the codec's decoder; pass it the parts :meth:`to_json` encoded, so that
            their tags are read and the depth limit still applies.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class Codec:
    """Turns session values into JSON data and back, through a registry of :class:`TypeTag`.

    A new codec knows the built-in types; :data:`default_codec` is the one sessions use. Plain
    str, int, bool, None, list and dict, and floats JSON prints exactly, never reach the
    registry; other values are looked up by exact type, then by the tags' :meth:`TypeTag.check`.
    Register tags at start-up: the registry is not locked against concurrent requests.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, TypeTag] = {}
        self._by_type: dict[type, TypeTag] = {}
        self._checked: list[TypeTag] = []  # tags overriding check(), in the order they are asked
        for tag in _BUILTIN_TAGS:
            self.register(tag)

    # -- registering -----------------------------------------------------------------------

    def register(self, tag: TypeTag, *, replace: bool = False, index: int | None = None) -> None:
        """Store the values of ``tag.types`` (and those its ``check`` accepts) with ``tag``.

        :param tag: the tag; its name must start with a space (or be None, for untagged).
        :param replace: take the name and the types over from the tags that hold them. Without
            it a collision is an error, so that no app silently changes how stored rows decode.
            A tag that loses only its types still reads the rows stored with its name.
        :param index: where ``tag`` goes among the tags whose ``check`` is asked, when more than
            one may accept a value (a subclass's tag before its base's); default: last, or the
            place of the tag it replaces.
        :raises TagRegistrationError: the tag is malformed (a name without a leading space, no
            ``to_json``...), or it collides with a registered tag and ``replace`` is off.
        """
        self._validate(tag)
        holders = self._holders(tag)
        if holders and not replace:
            raise TagRegistrationError(_collision_message(tag, holders[0], self._by_type))
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
        """Store ``cls`` values as what ``to_json`` makes of them, and rebuild them with ``from_json``.

        :param cls: the type to store.
        :param name: the tag, a name of your own starting with a space; it is part of every
            row stored, so keep it short and never reuse it for another type. None stores the
            value untagged, as plain ``to_json(value)``, which is also what reads back.
        :param to_json: the value as data the codec can store (it is encoded in turn).
        :param from_json: the value rebuilt from that data (decoded first); required with a
            name, and refused without one, as an untagged value cannot be told apart.
        :param subclasses: store instances of subclasses of ``cls`` with this tag too (they read
            back as whatever ``from_json`` makes).
        :param replace: as for :meth:`register`: take a name or type another tag holds.
        :param index: as for :meth:`register`: the place among tags that check subclasses.
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

    def _holders(self, tag: TypeTag) -> list[TypeTag]:
        """The registered tags ``tag`` collides with: by name, by type, or ``tag`` itself."""
        found = [self._by_name[tag.name]] if tag.name in self._by_name else []
        found += [self._by_type[kind] for kind in tag.types if kind in self._by_type]
        if self._is_registered(tag):
            found.append(tag)
        unique: list[TypeTag] = []
        for holder in found:  # by identity: a tag class may define __eq__ (or no __hash__)
            if not any(holder is seen for seen in unique):
                unique.append(holder)
        return unique

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

    # -- encoding --------------------------------------------------------------------------

    def encode(self, value: Any) -> Any:
        """Turn ``value`` into plain JSON data; raise ``TypeError``/``ValueError`` if it can't be.

        ``ValueError`` also covers values nested deeper than :data:`MAX_DEPTH` (each list, dict,
        tuple or other tagged value is a level) and ints wider than :data:`MAX_INT_BITS`, so
        that whatever is stored can always be read back.

        :param value: a session value.
        """
        return self._encode(value, 0)

    def _encode(self, value: Any, depth: int) -> Any:
        kind = type(value)
        # The fast path: plain JSON never reaches the registry.
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
        elif kind is float and math.isfinite(value) and "e" not in repr(value):
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

    # -- decoding --------------------------------------------------------------------------

    def decode(self, data: Any) -> Any:
        """Inverse of :meth:`encode`; refuses (``ValueError``) what it would refuse to store.

        Anything else a tag's ``from_json`` raises on a damaged payload propagates as is.

        :param data: JSON data as stored (parsed).
        """
        return self._decode(data, 0)

    def _decode(self, data: Any, depth: int) -> Any:
        kind = type(data)
        if kind is not dict and kind is not list:
            return data
        depth += 1
        if depth > MAX_DEPTH:
            raise ValueError(f"the value is nested deeper than {MAX_DEPTH} levels")
        decode = self._decode
        if kind is list:
            return [decode(item, depth) if type(item) in _CONTAINERS else item for item in data]
        if len(data) == 1:
            name, payload = next(iter(data.items()))
            tag = self._by_name.get(name)
            if tag is not None:
                return tag.from_json(payload, lambda item: decode(item, depth))
        return {key: decode(item, depth) if type(item) in _CONTAINERS else item for key, item in data.items()}


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


# -- the built-in tags: the stored format of 0.1.0 ------------------------------------------


class _TupleTag(TypeTag):
    name = " t"
    types = (tuple,)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return [encode(item) for item in value]

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return tuple(decode(item) for item in data)


class _WrappedDictTag(TypeTag):
    """A user dict whose one key starts with a space; the codec writes it itself."""

    name = _DICT_TAG

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return {key: encode(item) for key, item in value.items()}

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return {key: decode(item) for key, item in data.items()}


class _IsoFormatTag(TypeTag):
    """datetime, date or time as ISO 8601 text."""

    def __init__(self, name: str, cls: type[datetime] | type[date] | type[time]) -> None:
        self.name = name
        self.types = (cls,)
        self._cls = cls

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return value.isoformat()

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return self._cls.fromisoformat(data)


class _BytesTag(TypeTag):
    name = " b"
    types = (bytes,)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return base64.b64encode(value).decode("ascii")

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return base64.b64decode(data)


class _UUIDTag(TypeTag):
    name = " u"
    types = (UUID,)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return value.hex

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return UUID(data)


class _DecimalTag(TypeTag):
    name = " dec"
    types = (Decimal,)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return str(value)

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return Decimal(data)


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
        return Markup(data)


class _FloatTag(TypeTag):
    """A float whose repr has an exponent (jsonb would print 1e+16 as an int); NaN and infinity
    are refused, as JSON has neither. Other floats are plain JSON numbers."""

    name = " f"
    types = (float,)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        if not math.isfinite(value):
            raise ValueError("NaN and infinite floats cannot be stored")
        return repr(value)

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return float(data)


class _OddStrTag(TypeTag):
    """A str with NUL or a lone surrogate, which jsonb cannot hold; other str are plain JSON."""

    name = " s"
    types = (str,)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return base64.b64encode(value.encode("utf-8", "surrogatepass")).decode("ascii")

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return base64.b64decode(data).decode("utf-8", "surrogatepass")


class _FunctionTag(TypeTag):
    """The tag :meth:`Codec.register_type` makes from a pair of functions."""

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


_BUILTIN_TAGS: tuple[TypeTag, ...] = (
    _TupleTag(),
    _WrappedDictTag(),
    _IsoFormatTag(" dt", datetime),
    _IsoFormatTag(" d", date),
    _IsoFormatTag(" tm", time),
    _BytesTag(),
    _UUIDTag(),
    _DecimalTag(),
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
    """Teach :data:`default_codec` to store ``cls``; see :meth:`Codec.register_type`.

    :param cls: the type to store.
    :param name: its tag, starting with a space; None stores it untagged, as plain data.
    :param to_json: the value as data the codec can already store.
    :param from_json: the value rebuilt from that data; required with a name.
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
    """Turn ``value`` into plain JSON data with :data:`default_codec` (see :meth:`Codec.encode`).

    :param value: a session value; ``TypeError``/``ValueError`` if it cannot be stored.
    """
    return default_codec.encode(value)


def decode_value(data: Any) -> Any:
    """Inverse of :func:`encode_value`; refuses (``ValueError``) what it would refuse to store.

    :param data: JSON data as stored (parsed).
    """
    return default_codec.decode(data)


# One encoder for every call: json.dumps() with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def dumps(data: Any) -> str:
    """Compact JSON text of already-encoded data (UTF-8 as is: its length bounds the stored size).

    :param data: what :func:`encode_value` returned.
    """
    return _ENCODER.encode(data)


def same(left: Any, right: Any) -> bool:
    """Equality that also compares types, so ``1``, ``1.0`` and ``True`` count as different.

    :param left: encoded data, e.g. a value as loaded.
    :param right: encoded data, e.g. the same value as it would be saved now.
    """
    if type(left) is not type(right):
        return False
    if type(left) is dict:
        return left.keys() == right.keys() and all(same(v, right[k]) for k, v in left.items())
    if type(left) is list:
        return len(left) == len(right) and all(map(same, left, right))
    return bool(left == right)
