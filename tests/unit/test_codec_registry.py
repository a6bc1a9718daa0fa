"""The codec's registry: an app's own types are stored the way the built-in ones are.

What registration refuses, it refuses with a message naming the tag, the name or the types taken.

The same types through a real session and table: tests/integration/test_codec_registry_sessions.py.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime
from typing import Any

import pytest
from codec_types import STOP, LazyText, Point, Stop, with_app_types
from markupsafe import Markup

from pgsession_wsgi import ConfigurationError, SessionDataError
from pgsession_wsgi import codec as codec_module
from pgsession_wsgi.codec import (
    MAX_DEPTH,
    Codec,
    Recurse,
    TagRegistrationError,
    TypeTag,
    decode_value,
    dumps,
    encode_value,
)


def round_trip(codec: Codec, value: Any) -> Any:
    return codec.decode(json.loads(dumps(codec.encode(value))))


def nested(depth: int, leaf: Any = 1) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


# -- app types round-trip ---------------------------------------------------------------------


def test_a_registered_dataclass_is_stored_under_its_tag_and_read_back() -> None:
    codec = with_app_types(Codec())
    assert codec.encode(Point(1, 2)) == {" pt": [1, 2]}
    assert codec.encode(STOP) == {
        " stop": {"where": {" pt": [1, 2]}, "at": {" dt": "2026-03-04T05:06:00"}, "fare": {" dec": "2.50"}}
    }
    back = round_trip(codec, STOP)
    assert back == STOP and type(back.where) is Point and type(back.at) is datetime


@pytest.mark.parametrize(
    "value",
    [[Point(1, 2), STOP], {"p": Point(3, 4), "s": [STOP]}, (Point(5, 6), (STOP,)), {" pt": Point(0, 0)}],
    ids=["list", "dict", "tuple", "dict-looking-like-a-tag"],
)
def test_registered_types_inside_containers_round_trip(value: Any) -> None:
    assert round_trip(with_app_types(Codec()), value) == value


def test_a_tag_class_gets_the_codec_for_its_payload() -> None:
    class Interval:
        def __init__(self, start: date, end: date) -> None:
            self.start, self.end = start, end

    class IntervalTag(TypeTag):
        name = " iv"
        types = (Interval,)

        def to_json(self, value: Any, encode: Recurse) -> Any:
            return [encode(value.start), encode(value.end)]

        def from_json(self, data: Any, decode: Recurse) -> Any:
            return Interval(*(decode(item) for item in data))

    codec = Codec()
    codec.register(IntervalTag())
    encoded = codec.encode([Interval(date(2026, 1, 1), date(2026, 2, 1))])
    assert encoded == [{" iv": [{" d": "2026-01-01"}, {" d": "2026-02-01"}]}]
    (back,) = codec.decode(encoded)
    assert (back.start, back.end) == (date(2026, 1, 1), date(2026, 2, 1))


def test_a_lazy_string_is_stored_as_plain_text() -> None:
    codec = with_app_types(Codec())
    assert codec.encode({"greeting": LazyText(lambda: "Hallo")}) == {"greeting": "Hallo"}
    back = round_trip(codec, [LazyText(lambda: "nul\x00")])  # still jsonb-safe
    assert back == ["nul\x00"] and type(back[0]) is str


def test_subclasses_are_taken_only_when_asked_for() -> None:
    class Point3(Point):
        pass

    codec = with_app_types(Codec())
    with pytest.raises(TypeError, match="Point3 cannot be stored"):
        codec.encode(Point3(1, 2))
    codec.register_type(
        Point, " pt", lambda p: [p.x, p.y], lambda d: Point(*d), subclasses=True, replace=True
    )
    assert codec.encode(Point3(1, 2)) == {" pt": [1, 2]}


def test_index_puts_a_subclass_tag_before_its_base() -> None:
    class Trusted(Markup):
        pass

    class VeryTrusted(Trusted):
        pass

    codec = Codec()
    codec.register_type(Trusted, " tr", str, Trusted, subclasses=True)
    assert codec.encode(VeryTrusted("x")) == {" m": "x"}  # Markup's tag is asked first
    codec.register_type(Trusted, " tr", str, Trusted, subclasses=True, replace=True, index=0)
    assert codec.encode(VeryTrusted("x")) == {" tr": "x"}
    assert codec.encode(Markup("x")) == {" m": "x"}


class _Base:
    pass


class _Child(_Base):
    pass


class _GrandChild(_Child):
    pass


def test_a_replaced_checked_tag_keeps_its_place_and_markup_subclasses_still_encode() -> None:
    """codec.xǁCodecǁregister__mutmut_20, _32 and xǁCodecǁ_forget__mutmut_7.

    Replacing a tag that checks subclasses puts the new one where the old one was, ahead of tags
    registered after it, and forgets exactly the old one (Markup's own tag stays).
    """
    codec = Codec()
    codec.register_type(_Base, " base", lambda v: "old", lambda d: _Base(), subclasses=True)
    codec.register_type(_Child, " child", lambda v: "child", lambda d: _Child(), subclasses=True)
    assert codec.encode(_GrandChild()) == {" base": "old"}
    codec.register_type(_Base, " base", lambda v: "new", lambda d: _Base(), subclasses=True, replace=True)
    assert codec.encode(_GrandChild()) == {" base": "new"}

    class Safe(Markup):
        pass

    assert codec.encode(Safe("<b>x</b>")) == {" m": "<b>x</b>"}


def test_codecs_keep_their_registrations_apart() -> None:
    with_app_types(Codec())
    with pytest.raises(TypeError, match="register_type"):
        Codec().encode(Point(1, 2))
    with pytest.raises(TypeError):
        codec_module.encode_value(Point(1, 2))
    # An unknown tag is no plain dict: a row of an app whose type is not registered here.
    with pytest.raises(SessionDataError, match="no type is registered"):
        Codec().decode({" pt": [1, 2]})
    assert Codec().decode({" di": {" pt": [1, 2]}}) == {" pt": [1, 2]}  # a dict that looks like it


def test_the_module_level_register_type_passes_every_option_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """codec.x_register_type__mutmut_1..16 (register_type on the default codec).

    The default codec is a new one for this test (put back after it), so no registration
    outlives the test; classes and names are made anew on each call all the same.
    """
    monkeypatch.setattr(codec_module, "default_codec", Codec())
    suffix = uuid.uuid4().hex[:8]
    plain = type(f"Plain{suffix}", (), {})
    plain_child = type(f"PlainChild{suffix}", (plain,), {})
    base = type(f"Base{suffix}", (), {})
    child = type(f"Child{suffix}", (base,), {})
    markup_child = type(f"MarkupChild{suffix}", (Markup, base), {})  # two tags accept it

    codec_module.register_type(plain, f" p{suffix}", lambda v: [1], lambda d: plain())
    assert encode_value(plain()) == {f" p{suffix}": [1]}
    assert type(decode_value({f" p{suffix}": [1]})) is plain
    with pytest.raises(TypeError):  # no subclasses unless asked
        encode_value(plain_child())
    with pytest.raises(TagRegistrationError):  # no replacing unless asked
        codec_module.register_type(plain, f" p{suffix}", lambda v: [2], lambda d: plain())

    codec_module.register_type(base, f" b{suffix}", lambda v: [1], lambda d: base(), subclasses=True)
    assert encode_value(child()) == {f" b{suffix}": [1]}
    assert encode_value(markup_child("x")) == {" m": "x"}  # Markup's tag is asked first...
    codec_module.register_type(
        base, f" b{suffix}", lambda v: [2], lambda d: base(), subclasses=True, replace=True, index=0
    )
    assert encode_value(child()) == {f" b{suffix}": [2]}
    assert encode_value(markup_child("x")) == {f" b{suffix}": [2]}  # ...until index=0 is passed on


# -- what registration refuses ----------------------------------------------------------------


@pytest.mark.parametrize("name", [" dt", " t", " s", " f", " m"])
def test_a_built_in_name_is_not_shadowed_without_replace(name: str) -> None:
    codec = Codec()
    with pytest.raises(TagRegistrationError, match="replace=True") as raised:
        codec.register_type(Point, name, lambda p: [p.x, p.y], lambda d: Point(*d))
    assert isinstance(raised.value, ConfigurationError)
    assert codec.decode(json.loads(dumps(codec.encode((1, "nul\x00", 1e20))))) == (1, "nul\x00", 1e20)


def test_replace_takes_a_name_over_explicitly() -> None:
    codec = Codec()
    codec.register_type(Point, " dt", lambda p: [p.x, p.y], lambda d: Point(*d), replace=True)
    assert codec.decode({" dt": [1, 2]}) == Point(1, 2)
    with pytest.raises(TypeError):  # datetime lost its tag with it
        codec.encode(datetime(2026, 1, 1))


def test_a_type_already_stored_needs_replace_and_its_old_rows_still_load() -> None:
    codec = Codec()
    with pytest.raises(TagRegistrationError, match="already stored with"):
        codec.register_type(date, " day", date.toordinal, date.fromordinal)
    codec.register_type(date, " day", date.toordinal, date.fromordinal, replace=True)
    assert codec.encode(date(2026, 1, 1)) == {" day": date(2026, 1, 1).toordinal()}
    assert codec.decode({" d": "2026-01-01"}) == date(2026, 1, 1)


def test_a_name_is_registered_once() -> None:
    codec = with_app_types(Codec())
    with pytest.raises(TagRegistrationError, match="' pt' is taken"):
        codec.register_type(Stop, " pt", repr, eval)
    tag = TypeTagForPoints()
    codec.register(tag, replace=True)
    with pytest.raises(TagRegistrationError, match="already registered"):
        codec.register(tag)


class TypeTagForPoints(TypeTag):
    name = " pt"
    types = (Point,)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return [value.x, value.y]

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return Point(*data)


@pytest.mark.parametrize("name", ["pt", "", "pt ", "\tpt", b" pt", " nul\x00"])
def test_a_name_must_start_with_a_space(name: Any) -> None:
    with pytest.raises(TagRegistrationError) as raised:
        Codec().register_type(Point, name, lambda p: [p.x, p.y], lambda d: Point(*d))
    assert isinstance(raised.value, ConfigurationError)
    assert repr(name) in str(raised.value)


def test_the_wrapped_dict_tag_cannot_be_replaced() -> None:
    with pytest.raises(TagRegistrationError, match="the codec's own"):
        Codec().register_type(Point, " di", lambda p: [p.x, p.y], lambda d: Point(*d), replace=True)


@pytest.mark.parametrize("kind", [int, bool, type(None), list, dict])
def test_a_tag_for_plain_json_is_refused(kind: type) -> None:
    with pytest.raises(TagRegistrationError, match="never be used"):
        Codec().register_type(kind, " x", str, str)


def test_name_and_from_json_go_together() -> None:
    with pytest.raises(TagRegistrationError, match="go together"):
        Codec().register_type(Point, " pt", str)
    with pytest.raises(TagRegistrationError, match="go together"):
        Codec().register_type(LazyText, None, str, str)  # type: ignore[arg-type]


def test_a_tag_class_must_read_back_what_it_writes() -> None:
    class WriteOnly(TypeTag):
        name = " wo"
        types = (Point,)

        def to_json(self, value: Any, encode: Recurse) -> Any:
            return [value.x, value.y]

    with pytest.raises(TagRegistrationError, match="from_json"):
        Codec().register(WriteOnly())


class _CheckOnly(TypeTag):
    """A tag with no name and no types: it is found only through check()."""

    def check(self, value: Any) -> bool:
        return isinstance(value, _Base)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return "base"


def test_a_tag_registered_twice_is_refused_even_when_only_its_check_holds_it() -> None:
    """codec.xǁCodecǁ_holders__mutmut_8 and _9."""
    codec = Codec()
    tag = _CheckOnly()
    codec.register(tag)
    with pytest.raises(TagRegistrationError, match=r"^<_CheckOnly None> is already registered; pass replace"):
        codec.register(tag)


def test_registration_errors_say_what_is_wrong() -> None:
    """codec.xǁTypeTagǁ__repr____mutmut_1, xǁCodecǁ_validate__mutmut_11, _12, _16, _23, _30."""

    class NoToJson(TypeTag):
        name = " x"

    class NotAType(TypeTag):
        name = " y"
        types = (42,)  # type: ignore[assignment]

        def to_json(self, value: Any, encode: Recurse) -> Any:
            return value

        def from_json(self, data: Any, decode: Recurse) -> Any:
            return data

    codec = Codec()
    with pytest.raises(TagRegistrationError) as no_space:
        codec.register_type(date, "pt", str, date.fromisoformat)
    assert str(no_space.value).endswith(
        "must be a str starting with a space: a name "
        "without one could be a plain dict key and would change how such dicts decode"
    )
    with pytest.raises(TagRegistrationError) as nul:
        codec.register_type(date, " a\x00", str, date.fromisoformat)
    assert str(nul.value) == "the tag name ' a\\x00' contains a NUL character or a lone surrogate"
    with pytest.raises(TagRegistrationError) as no_to_json:
        codec.register(NoToJson())
    assert str(no_to_json.value) == "<NoToJson ' x'> does not implement to_json"
    with pytest.raises(TagRegistrationError) as not_a_type:
        codec.register(NotAType())
    assert str(not_a_type.value) == "<NotAType ' y'> lists 42 in its types, which is not a type"


class _X:
    pass


class _Y:
    pass


class _Z:
    pass


class _TwoTypes(TypeTag):
    name = " two"
    types = (_Y, _Z)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return 0

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return data


class _ThreeTypes(TypeTag):
    name = " three"
    types = (_X, _Y, _Z)

    def to_json(self, value: Any, encode: Recurse) -> Any:
        return 0

    def from_json(self, data: Any, decode: Recurse) -> Any:
        return data


def test_collision_messages_name_the_taken_name_or_exactly_the_taken_types() -> None:
    """codec.x__collision_message__mutmut_2, _5, _6, _7, _9, _10, _11 and
    xǁ_FunctionTagǁ__repr____mutmut_1."""
    codec = Codec()
    codec.register_type(_X, " xy", lambda v: 0, lambda d: _X())
    codec.register_type(_Y, " y", lambda v: 0, lambda d: _Y())
    with pytest.raises(TagRegistrationError) as by_name:
        codec.register_type(_Z, " xy", lambda v: 0, lambda d: _Z())
    assert str(by_name.value) == (
        "the tag name ' xy' is taken by <_FunctionTag ' xy' for _X>; pass replace=True to replace it "
        "(rows already stored with that name are then read by the new tag)"
    )
    with pytest.raises(TagRegistrationError) as by_type:
        codec.register_type(_X, " other", lambda v: 0, lambda d: _X())
    assert str(by_type.value).startswith("_X values are already stored with <_FunctionTag ' xy' for _X>;")
    # A tag holding two of the types another tag lists: the message names exactly those two.
    codec = Codec()
    codec.register(_TwoTypes())
    with pytest.raises(TagRegistrationError) as two:
        codec.register(_ThreeTypes())
    assert str(two.value).startswith("_Y, _Z values are already stored with <_TwoTypes ' two'>;")


# -- limits hold inside an app's payloads ------------------------------------------------------


class Box:
    def __init__(self, content: Any) -> None:
        self.content = content

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and other.content == self.content


def boxing(codec: Codec) -> Codec:
    codec.register_type(Box, " box", lambda box: box.content, Box)
    return codec


def test_depth_limit_counts_the_tag_and_its_payload() -> None:
    codec = boxing(Codec())
    assert round_trip(codec, Box(nested(MAX_DEPTH - 1))) == Box(nested(MAX_DEPTH - 1))
    assert round_trip(codec, nested(MAX_DEPTH - 1, Box(1))) == nested(MAX_DEPTH - 1, Box(1))
    with pytest.raises(ValueError, match="nested deeper"):
        codec.encode(Box(nested(MAX_DEPTH)))
    with pytest.raises(ValueError, match="nested deeper"):
        codec.encode(nested(MAX_DEPTH, Box(1)))  # the tag itself is a level
    with pytest.raises(SessionDataError, match="nested deeper"):
        codec.decode({" box": nested(MAX_DEPTH)})  # a row written by something else
    with pytest.raises(ValueError, match="integers wider"):
        codec.encode(Box([10**400]))


def test_a_converter_that_returns_its_own_type_ends_at_the_depth_limit() -> None:
    codec = Codec()
    codec.register_type(LazyText, None, lambda text: text)
    with pytest.raises(ValueError, match="nested deeper"):
        codec.encode(LazyText(lambda: "loop"))


def test_a_self_containing_value_inside_a_tag_is_refused() -> None:
    loop: list[Any] = []
    loop.append(Box(loop))
    with pytest.raises(ValueError, match="nested deeper"):
        boxing(Codec()).encode(loop)


# -- what the codec itself never asks -------------------------------------------------------


def test_tags_that_the_codec_never_asks_still_answer() -> None:
    """codec.xǁTypeTagǁcheck__mutmut_1 and xǁ_WrappedDictTagǁto_json__mutmut_1: the default
    check() (no tag of the codec's own that keeps it is ever asked) and the wrapped-dict tag's
    to_json (the codec wraps such dicts itself)."""
    assert TypeTag().check(object()) is False
    # Private: the codec writes wrapped dicts itself, so only a tag made here calls this to_json.
    assert codec_module._WrappedDictTag().to_json({" a": 1}, lambda item: [item]) == {" a": [1]}
