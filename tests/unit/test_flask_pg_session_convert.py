"""The size estimate that refuses a flask-pg-session row before its JSON is built.

``encode_row`` first estimates, without building anything, how large the row's JSON will be:
two bytes per dict entry's key and value and per list or tuple item, plus the length of each
text, bytes and Markup value, the digits of a Decimal and, for an int, its digits - 1 as its
bit length tells them (never more).
A row whose estimate is over ``max_size`` is refused with "would encode"; a row whose estimate
is at ``max_size`` is not refused by the estimate (the real size decides, with its own reason).
Each value kind is checked at its exact boundary, so that the estimate can be neither lowered
(a refusal would come later, from the real size) nor raised (a row that fits would be refused).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from markupsafe import Markup

from pgsession_wsgi.flask_pg_session.convert import encode_row

WOULD_ENCODE = "the data would encode to more than max_size"

# {"a": value}: the entry counts 2 + 2 bytes, the key 1.
ENTRY = 5
# {"": value}: the key counts nothing, and is counted last: a container under it is checked
# against the limit with the whole estimate in, where one under "a" is checked one byte short.
EMPTY_KEY_ENTRY = 4

# Each value with its estimate, worked out by hand from the rule above.
CASES: list[tuple[str, Any, int]] = [
    ("str", "x" * 40, 40),
    ("bytes", b"x" * 40, 40),
    ("markup", Markup("x" * 40), 40),
    ("int of 40 digits", 10**40 - 1, 39),
    ("negative int of 40 digits", -(10**40 - 1), 39),
    ("int of 41 digits", 10**40, 39),  # the bit length's digits: one short here, never over
    ("int of 3 digits", 999, 2),
    ("int of 4 digits", 2000, 3),
    ("int of 60 digits", 2**196, 58),  # 196 x log10(2) is just short of 59
    # 1671 x 0.30102 is just over 503. Wider than 1024 bits, the codec refuses it (its own reason)
    # once the estimate lets it through.
    ("int of 504 digits", 2**1671, 503),
    ("zero", 0, 0),
    ("decimal of 40 digits", Decimal("1" * 40), 40),
    ("list", ["x" * 10, "y" * 10], 2 * 2 + 20),
    ("tuple", ("x" * 10, "y" * 10), 2 * 2 + 20),
    ("dict", {"k" * 10: "v" * 10}, 2 * 2 + 20),
    ("nested", [{"k": ["x" * 5]}], 2 + (4 + 1) + (2 + 5)),
]


@pytest.mark.parametrize(("value", "estimate"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_a_row_one_byte_over_by_the_estimate_is_refused_by_it(value: Any, estimate: int) -> None:
    text, reason = encode_row({"a": value}, ENTRY + estimate - 1)
    assert text is None
    assert reason is not None and reason.startswith(WOULD_ENCODE), reason


@pytest.mark.parametrize(
    ("value", "estimate"), [([0, 0], 4), ((0, 0), 4), ({"": 0}, 4)], ids=["list", "tuple", "dict"]
)
def test_a_container_that_brings_the_estimate_to_the_limit_is_not_refused_by_it(
    value: Any, estimate: int
) -> None:
    text, reason = encode_row({"": value}, EMPTY_KEY_ENTRY + estimate)
    assert text is None
    assert reason is not None and reason.startswith("the data encodes to "), reason
    text, reason = encode_row({"": value}, EMPTY_KEY_ENTRY + estimate - 1)
    assert reason is not None and reason.startswith(WOULD_ENCODE), reason


@pytest.mark.parametrize(("value", "estimate"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_a_row_whose_estimate_is_at_the_limit_goes_on_to_its_real_size(value: Any, estimate: int) -> None:
    text, reason = encode_row({"a": value}, ENTRY + estimate)
    # The JSON is always larger than the estimate (quotes, brackets, tags), so the real size
    # refuses it, saying by how much (or the codec does): never the estimate's reason.
    assert text is None
    assert reason is not None and not reason.startswith(WOULD_ENCODE), reason


STORABLE = [case for case in CASES if not (type(case[1]) is int and case[1].bit_length() > 1024)]


@pytest.mark.parametrize(("value", "estimate"), [c[1:] for c in STORABLE], ids=[c[0] for c in STORABLE])
def test_the_estimate_never_passes_the_real_size(value: Any, estimate: int) -> None:
    text, reason = encode_row({"a": value}, 10_000)
    assert reason is None and text is not None
    assert len(text.encode()) > ENTRY + estimate
    assert encode_row({"a": value}, len(text.encode())) == (text, None)


class _Exploding(dict):  # type: ignore[type-arg]
    """A session dict whose items cannot be read: encode_row must not raise all the same."""

    def __init__(self, error: Exception) -> None:
        super().__init__(a=1)
        self.error = error

    def items(self) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RuntimeError("boom"), "the data cannot be converted (RuntimeError: boom)"),
        (RecursionError(), "the data cannot be converted (RecursionError)"),
    ],
)
def test_whatever_a_row_raises_refuses_that_row_with_what_it_was(error: Exception, reason: str) -> None:
    assert encode_row(_Exploding(error), 10_000) == (None, reason)
