"""Session values survive the trip through JSON with their exact types, and pickle is never used."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from markupsafe import Markup

from pgsession_wsgi.codec import MAX_DEPTH, decode_value, dumps, encode_value, same

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


@pytest.mark.parametrize("value", [object(), {1: "int key"}, float("nan"), float("inf"), {1, 2}])
def test_unstorable_values_are_refused(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        dumps(encode_value(value))


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
    with pytest.raises(ValueError, match="nested deeper"):
        decode_value(json.loads(dumps([encode_value(deepest)])))
