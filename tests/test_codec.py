"""Session values survive the trip through JSON with their exact types, and pickle is never used."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from markupsafe import Markup

from pgsession_wsgi.codec import decode_value, dumps, encode_value, same

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
