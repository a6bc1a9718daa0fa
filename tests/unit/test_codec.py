"""Session values survive the trip through JSON with their exact types, and pickle is never used.

What cannot be stored is refused with a message saying what and why; the registry an app adds its
own types to is tests/unit/test_codec_registry.py.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from pgsession_wsgi import SessionDataError
from pgsession_wsgi import codec as codec_module
from pgsession_wsgi.codec import (
    MAX_DECIMAL_EXPONENT,
    MAX_DEPTH,
    MAX_INT_BITS,
    Codec,
    check_key,
    decode_value,
    dumps,
    encode_value,
    same,
)

VALUES: list[Any] = [
    "text",
    "",
    "a\x00b",
    0,
    -7,
    2**70,
    1.5,
    1e20,
    1e-7,
    True,
    False,
    None,
    [1, "two", [3]],
    {"nested": {"deep": [1, 2]}},
    (1, 2),
    ((1,), [2, (3,)]),
    datetime(2026, 1, 2, 3, 4, 5, 6),
    datetime(2026, 1, 2, tzinfo=timezone.utc),
    datetime(2026, 1, 2, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    date(2026, 11, 25),
    time(23, 59, 1),
    b"\x00\xffbytes",
    uuid4(),
    Decimal("1.10"),
    Markup("<b>safe</b>"),
    {" t": "looks like a tag"},
    {" dt": {" t": [1]}},
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_round_trip_keeps_value_and_type(value: Any) -> None:
    text = dumps(encode_value(value))
    back = decode_value(json.loads(text))
    assert back == value
    assert type(back) is type(value)


def test_nested_types_keep_their_types() -> None:
    value = {"when": [datetime(2026, 1, 1)], "ids": (uuid4(), b"x")}
    back = decode_value(json.loads(dumps(encode_value(value))))
    assert type(back["when"][0]) is datetime
    assert type(back["ids"]) is tuple and type(back["ids"][1]) is bytes


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {1: "int key"},
        float("nan"),
        float("inf"),
        {1, 2},
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("-Infinity"),
        Decimal(f"1E+{MAX_DECIMAL_EXPONENT + 1}"),
        Decimal(f"1E-{MAX_DECIMAL_EXPONENT + 1}"),
        Decimal("1" * (MAX_DECIMAL_EXPONENT + 2)),  # 1.1...E+1001
        Decimal("0E-1001"),
        # No fromisoformat() reads an offset with a fraction of a second back as it was written.
        datetime(2026, 1, 1, tzinfo=timezone(timedelta(microseconds=1))),
        time(0, 0, tzinfo=timezone(-timedelta(seconds=1, microseconds=5))),
    ],
    ids=lambda value: repr(value)[:30],
)
def test_unstorable_values_are_refused(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        dumps(encode_value(value))


def test_the_widest_decimals_stored_are_read_back() -> None:
    for value in (
        Decimal(f"1E+{MAX_DECIMAL_EXPONENT}"),
        Decimal(f"-1E-{MAX_DECIMAL_EXPONENT}"),
        Decimal("9" * (MAX_DECIMAL_EXPONENT + 1)),
        Decimal("0E+1000"),
    ):
        back = decode_value(json.loads(dumps(encode_value(value))))
        assert back == value and str(back) == str(value)


def test_encoding_errors_say_what_cannot_be_stored() -> None:
    """codec.xǁCodecǁ_encode_dict__mutmut_5, _6, xǁCodecǁ_checked_tag_for__mutmut_5,
    xǁ_MarkupTagǁto_json__mutmut_2.._5 and xǁ_FloatTagǁto_json__mutmut_3.._6."""
    codec = Codec()
    with pytest.raises(TypeError) as key:
        codec.encode({1: "x"})
    assert str(key.value) == "dict keys must be str, not int"
    with pytest.raises(TypeError) as unknown:
        codec.encode(object())
    assert str(unknown.value) == (
        "values of type builtins.object cannot be stored "
        "(pgsession_wsgi.codec.register_type teaches the codec a type)"
    )
    with pytest.raises(ValueError) as markup:
        codec.encode(Markup("a\x00b"))
    assert str(markup.value) == "Markup with a NUL character or a lone surrogate cannot be stored"
    with pytest.raises(ValueError) as nan:
        codec.encode(float("nan"))
    assert str(nan.value) == "NaN and infinite floats cannot be stored"


def test_the_key_check_and_the_int_limit_are_exact() -> None:
    """codec.x_check_key__mutmut_2 and xǁCodecǁ_encode__mutmut_7."""
    with pytest.raises(ValueError) as key:
        check_key("a\x00")
    assert str(key.value) == "the key 'a\\x00' contains a NUL character or a lone surrogate"
    widest = 2**MAX_INT_BITS - 1
    assert widest.bit_length() == MAX_INT_BITS
    assert Codec().encode(widest) == widest
    with pytest.raises(ValueError):
        Codec().encode(widest + 1)


def test_dumps_is_compact_utf8_and_refuses_nan() -> None:
    """codec.x_dumps__mutmut_7, _8, _11, _12: its length is what the size check counts."""
    assert dumps({"k": ["é", 1]}) == '{"k":["é",1]}'
    with pytest.raises(ValueError):
        dumps(float("nan"))


# -- decoding exactly what encode writes ------------------------------------------------------


def nested(depth: int, leaf: Any = 1) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


# Data encode never writes, as a row written by something else may hold it (issue 20). Each is a
# SessionDataError: never a value of another type or spelling, never an error of the interpreter.
NOT_ENCODED: list[tuple[str, Any]] = [
    # floats: JSON has no NaN or infinity; a plain float is stored plain, an exponent one as its repr
    ("f-nan", {" f": "nan"}),
    ("f-NaN", {" f": "NaN"}),
    ("f-inf", {" f": "inf"}),
    ("f-minus-infinity", {" f": "-Infinity"}),
    ("f-overflows-to-inf", {" f": "1e999"}),
    ("f-plain-float", {" f": "1.5"}),
    ("f-capital-E", {" f": "1E+20"}),
    ("f-spaces", {" f": " 1e+20"}),
    ("f-underscore", {" f": "1_0e+20"}),
    ("f-not-text", {" f": 1e20}),
    ("plain-nan", float("nan")),
    ("plain-inf-in-list", [float("inf")]),
    ("plain-inf-in-dict", {"a": float("-inf")}),
    ("plain-float-with-exponent", 1e20),
    # bytes: base64 as b64encode writes it, nothing else (it used to read as b'' or as a prefix)
    ("b-not-base64", {" b": "not base64!"}),
    ("b-no-padding", {" b": "YQ"}),
    ("b-padding-bits", {" b": "YR=="}),
    ("b-space", {" b": "Y Q=="}),
    ("b-newline", {" b": "YQ==\n"}),
    ("b-fullwidth", {" b": "\uff39\uff31=="}),
    ("b-not-text", {" b": 5}),
    ("b-list", {" b": ["YQ=="]}),
    # a str with NUL or a lone surrogate is tagged; any other is plain
    ("s-plain-text", {" s": "YWJj"}),
    ("s-not-utf8", {" s": "/w=="}),
    ("s-not-base64", {" s": "!!"}),
    ("s-not-text", {" s": 1}),
    # Decimal: finite, not too wide, in its own spelling
    ("dec-sNaN", {" dec": "sNaN"}),
    ("dec-NaN", {" dec": "NaN"}),
    ("dec-minus-NaN", {" dec": "-NaN"}),
    ("dec-NaN-payload", {" dec": "NaN123"}),
    ("dec-Infinity", {" dec": "Infinity"}),
    ("dec-minus-Inf", {" dec": "-Inf"}),
    ("dec-huge-exponent", {" dec": "1E+999999999"}),
    ("dec-tiny-exponent", {" dec": "1E-999999999"}),
    ("dec-too-wide", {" dec": "1" * (MAX_DECIMAL_EXPONENT + 2)}),
    ("dec-lowercase-e", {" dec": "1e5"}),
    ("dec-space", {" dec": " 1"}),
    ("dec-underscore", {" dec": "1_000"}),
    ("dec-arabic-digits", {" dec": "\u0661\u0662"}),
    ("dec-hex", {" dec": "0x10"}),
    ("dec-not-text", {" dec": 1}),
    # datetime, date, time: ISO 8601 as isoformat() writes it, on every Python
    ("dt-month-13", {" dt": "2026-13-01T00:00:00"}),
    ("dt-date-only", {" dt": "2026-01-01"}),
    ("dt-Z", {" dt": "2026-01-01T00:00:00Z"}),
    ("dt-basic-format", {" dt": "20260101T000000"}),
    ("dt-space", {" dt": "2026-01-01 00:00:00"}),
    ("dt-zero-microseconds", {" dt": "2026-01-01T00:00:00.000000"}),
    ("dt-not-text", {" dt": 5}),
    ("d-short", {" d": "2026-1-1"}),
    ("d-basic-format", {" d": "20260101"}),
    ("d-week", {" d": "2026-W01-1"}),
    ("d-datetime", {" d": "2026-01-01T00:00:00"}),
    ("tm-24", {" tm": "24:00:00"}),
    ("tm-short-hour", {" tm": "1:02:03"}),
    ("tm-no-seconds", {" tm": "12:00"}),
    ("tm-Z", {" tm": "12:00:00Z"}),
    # UUID: 32 lowercase hex digits, as UUID.hex
    ("u-dashes", {" u": "12345678-1234-5678-1234-567812345678"}),
    ("u-braces", {" u": "{12345678123456781234567812345678}"}),
    ("u-urn", {" u": "urn:uuid:12345678-1234-5678-1234-567812345678"}),
    ("u-uppercase", {" u": "ABCDEF78123456781234567812345678"}),
    ("u-short", {" u": "1234"}),
    ("u-not-text", {" u": 5}),
    # tuple: a list of items
    ("t-str", {" t": "ab"}),
    ("t-dict", {" t": {"a": 1}}),
    ("t-int", {" t": 5}),
    ("t-null", {" t": None}),
    # a dict that looks like a tag is wrapped: one key, starting with a space
    ("di-list", {" di": [1]}),
    ("di-plain-dict", {" di": {"a": 1}}),
    ("di-two-tags", {" di": {" t": 1, " u": 2}}),
    ("di-empty", {" di": {}}),
    ("di-text", {" di": "x"}),
    ("m-not-text", {" m": 5}),
    ("m-nul", {" m": "a\x00b"}),
    ("unknown-tag", {" zz": 1}),
    ("unknown-tag-inside", {"a": [{" pt": [1, 2]}]}),
    # what JSON never holds, and what the limits refuse
    ("int-too-wide", 2 ** (MAX_INT_BITS + 1)),
    ("int-too-wide-inside", {"a": [-(2 ** (MAX_INT_BITS + 1))]}),
    ("tuple-not-json", (1, 2)),
    ("set-not-json", {1, 2}),
    ("bytes-not-json", b"x"),
    ("one-level-too-deep", nested(MAX_DEPTH + 1)),
    ("5000-deep-list", nested(5000)),
    ("5000-deep-tuple-tag", {" t": nested(5000)}),
    ("5000-deep-in-wrapped-dict", {" di": {" k": nested(5000)}}),
]


@pytest.mark.parametrize("data", [data for _, data in NOT_ENCODED], ids=[name for name, _ in NOT_ENCODED])
def test_data_encode_never_writes_is_a_session_data_error(data: Any) -> None:
    with pytest.raises(SessionDataError) as refused:
        decode_value(data)
    assert "could not be decoded" in str(refused.value)


def test_a_refusal_never_quotes_the_data() -> None:
    for _, data in NOT_ENCODED:
        with pytest.raises(SessionDataError) as refused:
            decode_value({"k": data})
        message = str(refused.value)
        assert "12345678" not in message and "2026" not in message and "YQ" not in message


# Everything encode accepts, on every Python the package supports: the property is that
# decode(encode(v)) is v again, and stored the same way.
_OFFSETS = st.integers(-86399, 86399).map(lambda seconds: timedelta(seconds=seconds))  # whole seconds
_ZONES = st.none() | st.just(timezone.utc) | st.builds(timezone, _OFFSETS)
_TEXT = st.text(st.characters(exclude_categories=()))  # NUL and lone surrogates included
_KEYS = st.text().filter(lambda key: "\x00" not in key) | st.sampled_from([" t", " dt", " di", " x", " "])
_DECIMALS = st.builds(
    lambda sign, digits, exponent: Decimal((sign, tuple(digits), exponent)),
    st.integers(0, 1),
    st.lists(st.integers(0, 9), min_size=1, max_size=50),
    st.integers(-MAX_DECIMAL_EXPONENT, MAX_DECIMAL_EXPONENT - 50),
)
_LEAVES = (
    _TEXT
    | st.integers(min_value=-(2**MAX_INT_BITS) + 1, max_value=2**MAX_INT_BITS - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
    | st.datetimes(timezones=_ZONES)
    | st.dates()
    | st.times(timezones=_ZONES)
    | st.binary()
    | st.uuids()
    | _DECIMALS
    | st.builds(Markup, st.text().filter(lambda text: "\x00" not in text))
)
STORABLE = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner) | st.lists(inner).map(tuple) | st.dictionaries(_KEYS, inner),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(STORABLE)
def test_everything_encode_writes_decodes_to_an_equal_value_stored_the_same(value: Any) -> None:
    text = dumps(encode_value(value))
    back = decode_value(json.loads(text))
    assert back == value
    assert dumps(encode_value(back)) == text  # the same types all the way down


def test_same_tells_types_apart() -> None:
    assert same({"a": [1]}, {"a": [1]})
    assert not same(1, True)
    assert not same(1, 1.0)
    assert not same({"a": [1]}, {"a": [True]})
    assert not same([1, 2], [1])


def test_codec_never_imports_pickle() -> None:
    import pgsession_wsgi.codec as codec

    source = Path(codec.__file__).read_text()
    assert "pickle" not in source.replace("without pickle", "")


# Rows as pgsession-wsgi 0.1.0 wrote them, one per built-in tag: the stored format, which the
# registry must keep reading and keep writing byte for byte.
ROWS_OF_0_1_0: list[tuple[str, Any]] = [
    ('{" t":[1,"a"]}', (1, "a")),
    ('{" dt":"2026-01-02T03:04:05.000006"}', datetime(2026, 1, 2, 3, 4, 5, 6)),
    ('{" dt":"2026-01-02T00:00:00+05:30"}', datetime(2026, 1, 2, tzinfo=timezone(timedelta(minutes=330)))),
    ('{" d":"2026-11-25"}', date(2026, 11, 25)),
    ('{" tm":"23:59:01"}', time(23, 59, 1)),
    ('{" b":"AP9ieXRlcw=="}', b"\x00\xffbytes"),
    ('{" u":"12345678123456781234567812345678"}', UUID("12345678-1234-5678-1234-567812345678")),
    ('{" dec":"1.10"}', Decimal("1.10")),
    ('{" m":"<b>safe</b>"}', Markup("<b>safe</b>")),
    ('{" f":"1e+20"}', 1e20),
    ('{" f":"1e-07"}', 1e-7),
    ('{" s":"YQBi"}', "a\x00b"),
    ('{" s":"eO2ggA=="}', "x\ud800"),
    ('{" di":{" t":"looks like a tag"}}', {" t": "looks like a tag"}),
    (
        '{"cart":[{" t":[{" dec":"2.50"},{" u":"12345678123456781234567812345678"}]}],"n":1.5}',
        {"cart": [(Decimal("2.50"), UUID("12345678-1234-5678-1234-567812345678"))], "n": 1.5},
    ),
]


@pytest.mark.parametrize("text, value", ROWS_OF_0_1_0, ids=lambda v: v if isinstance(v, str) else "")
def test_rows_of_0_1_0_still_load_and_are_written_the_same(text: str, value: Any) -> None:
    back = decode_value(json.loads(text))
    assert back == value and type(back) is type(value)
    if isinstance(value, tuple):
        assert [type(item) for item in back] == [type(item) for item in value]
    assert dumps(encode_value(value)) == text


def test_every_built_in_tag_has_a_row_of_0_1_0() -> None:
    names = {next(iter(json.loads(text))) for text, _ in ROWS_OF_0_1_0}
    assert names >= {" t", " dt", " d", " tm", " b", " u", " dec", " m", " f", " s", " di"}


def test_the_built_in_iso_tags_are_made_from_their_arguments() -> None:
    """codec.xǁ_IsoFormatTagǁ__init____mutmut_1, _2, _3.

    The built-in tags are made when the module is imported, before mutmut picks a mutant, so a
    tag made here is the only way to run a mutated __init__.
    """
    # Private: no public call makes a built-in tag, and only a new one runs a mutated __init__.
    tag = codec_module._IsoFormatTag(" d", date)
    assert (tag.name, tag.types) == (" d", (date,))
    assert tag.from_json("2026-01-02", lambda item: item) == date(2026, 1, 2)
    assert json.loads(dumps(Codec().encode(date(2026, 1, 2)))) == {" d": "2026-01-02"}


@pytest.mark.parametrize(
    "leaf",
    [datetime(2026, 1, 1), b"x", Decimal("1"), Markup("m"), 1e20, "nul\x00", (1,), {" k": 1}],
    ids=lambda v: type(v).__name__,
)
def test_a_tagged_value_is_a_level_of_its_own(leaf: Any) -> None:
    """At MAX_DEPTH a tagged value is refused when stored, as a row holding it would be refused
    when read (0.1.0 stored such values and then could not read them). Plain leaves are no level
    (tests/integration/test_hardening.py: test_depth_limit_is_exact)."""
    deepest = leaf
    for _ in range(MAX_DEPTH - 1):
        deepest = [deepest]
    assert decode_value(json.loads(dumps(encode_value(deepest)))) == deepest
    with pytest.raises(ValueError, match="nested deeper"):
        encode_value([deepest])
    with pytest.raises(SessionDataError, match="nested deeper"):
        decode_value(json.loads(dumps([encode_value(deepest)])))
