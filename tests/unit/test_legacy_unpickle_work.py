"""The work budget of the restricted unpickler, unit by unit, as ``rebuild_work`` documents it.

A legacy row is refused before it is unpickled when rebuilding it would cost more than
``WORK_PER_BYTE`` units per byte plus ``WORK_ALLOWANCE``. The attack tests show that the costly
shapes are refused; these pin the count itself on small pickles whose cost is worked out by hand
from the documented units, so that a miscount in either direction (a budget an attacker could
slip under, or a real session refused) fails here.
"""

from __future__ import annotations

import decimal
import pickle
import struct

import pytest

from pgsession_wsgi.flask_pg_session import (
    WORK_ALLOWANCE,
    WORK_PER_BYTE,
    LegacyDataError,
    rebuild_work,
    restricted_loads,
)

PROTO4, STOP, MARK, POP, MEMOIZE = b"\x80\x04", b".", b"(", b"0", b"\x94"
EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE, NONE = b"}", b"]", b")", b"N"
TUPLE, TUPLE1, TUPLE2, TUPLE3 = b"t", b"\x85", b"\x86", b"\x87"
SETITEM, SETITEMS, APPENDS, REDUCE = b"s", b"u", b"e", b"R"
NEWOBJ, NEWOBJ_EX, OBJ = b"\x81", b"\x92", b"o"
EMPTY_SET, ADDITEMS, FROZENSET = b"\x8f", b"\x90", b"\x91"


def text(value: str) -> bytes:
    raw = value.encode()
    return b"\x8d" + struct.pack("<Q", len(raw)) + raw


def long1(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def get(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)


DECIMAL = b"cdecimal\nDecimal\n"


def decimal_of(argument: bytes) -> bytes:
    """``Decimal(x)`` by REDUCE, ``argument`` the opcodes that push x."""
    return PROTO4 + DECIMAL + argument + TUPLE1 + REDUCE + STOP


def one_key(key: bytes) -> bytes:
    return PROTO4 + EMPTY_DICT + key + NONE + SETITEM + STOP


# -- dict keys and set members: their hash ---------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_str_keys_cost_one_each_and_int_keys_one_more_per_earlier_int_key(protocol: int) -> None:
    # str hashes are randomised: 1 each. int hashes are not, so the k-th int key is counted
    # as compared with all k - 1 before it: 1 + 2 + 3.
    assert rebuild_work(pickle.dumps({"a": 1, "b": 2, "c": 3}, protocol=protocol)) == 3
    assert rebuild_work(pickle.dumps({1: "a", 2: "b", 3: "c"}, protocol=protocol)) == 1 + 2 + 3
    # str keys do not raise the count of the int keys after them.
    assert rebuild_work(pickle.dumps({"a": 0, 1: 0, "b": 0, 2: 0}, protocol=protocol)) == 1 + 1 + 1 + 2


@pytest.mark.parametrize("protocol", [4, 5])
def test_set_and_frozenset_members_are_counted_as_keys(protocol: int) -> None:
    assert rebuild_work(pickle.dumps({1, 2, 3}, protocol=protocol)) == 1 + 2 + 3
    assert rebuild_work(pickle.dumps(frozenset({1, 2, 3}), protocol=protocol)) == 1 + 2 + 3
    assert rebuild_work(PROTO4 + EMPTY_SET + MARK + long1(1) + long1(2) + ADDITEMS + STOP) == 1 + 2
    assert rebuild_work(PROTO4 + MARK + text("a") + text("b") + FROZENSET + STOP) == 2


@pytest.mark.parametrize(
    ("key", "weight"),
    [
        (5, 1),
        (2**55, 1),  # 56 bits: 7 bytes, hashed in under one 8-byte step
        (2**56, 2),  # 57 bits: 8 bytes
        (2**63, 2),  # 64 bits: 8 bytes
        (-(2**63), 2),  # the sign changes nothing
        (2**64, 2),  # 65 bits: 9 bytes
        (2**127, 3),  # 16 bytes
    ],
)
def test_an_int_key_weighs_one_plus_its_bytes_over_eight(key: int, weight: int) -> None:
    assert rebuild_work(one_key(long1(key))) == weight
    # A second key of the same size counts twice its weight.
    assert (
        rebuild_work(PROTO4 + EMPTY_DICT + MARK + long1(key) + NONE + long1(key + 1) + NONE + SETITEMS + STOP)
        == 3 * weight
    )


def test_a_tuple_key_weighs_one_plus_its_members() -> None:
    assert rebuild_work(one_key(EMPTY_TUPLE)) == 1
    assert rebuild_work(one_key(long1(7) + text("ab") + TUPLE2)) == 1 + 1 + 1
    assert rebuild_work(one_key(long1(1) + long1(2) + TUPLE2 + long1(3) + TUPLE1 + TUPLE2)) == 1 + 3 + 2
    assert rebuild_work(one_key(MARK + NONE + long1(2**63) + text("x") + TUPLE)) == 1 + 1 + 2 + 1
    # A tuple is not randomised: two tuple keys, the second counted twice.
    two = PROTO4 + EMPTY_DICT + MARK + long1(1) + TUPLE1 + NONE + long1(2) + TUPLE1 + NONE + SETITEMS + STOP
    assert rebuild_work(two) == 2 + 2 * 2


def test_a_memoized_key_is_counted_each_time_it_is_set() -> None:
    key = long1(2**63) + MEMOIZE  # memo 1; weight 2
    payload = PROTO4 + EMPTY_DICT + MEMOIZE + key + POP + (get(1) + NONE + SETITEM) * 3 + STOP
    assert restricted_loads(payload) == {2**63: None}
    assert rebuild_work(payload) == 2 * 1 + 2 * 2 + 2 * 3


# -- constructor calls: the size of their arguments --------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "size"),
    [
        (text("12345"), 5),  # a str: its length
        (text("é" * 3), 3),  # in characters
        (long1(0), 1),  # an int: one plus its bytes
        (long1(2**55), 1 + 7),
        (long1(2**56), 1 + 8),
        (long1(-(2**56)), 1 + 8),
        # (sign, digits, exponent): one plus each member's size
        (long1(0) + long1(1) + long1(4) + TUPLE2 + long1(-1) + TUPLE3, 1 + 1 + (1 + 2 + 2) + 2),
    ],
    ids=["str", "wide-str", "zero", "7-bytes", "8-bytes", "minus-8-bytes", "tuple"],
)
def test_a_call_costs_the_size_of_its_argument_tuple(argument: bytes, size: int) -> None:
    # Counted from the opcodes, before anything is called (the Decimal stand-in then takes only
    # a str: the others are refused when loaded).
    assert rebuild_work(decimal_of(argument)) == 1 + size


def test_each_way_of_calling_counts_its_arguments() -> None:
    args = text("123") + TUPLE1  # size 1 + 3
    assert rebuild_work(PROTO4 + DECIMAL + args + NEWOBJ + STOP) == 4
    # NEWOBJ_EX: the argument tuple and the keyword dict (size 1).
    assert rebuild_work(PROTO4 + DECIMAL + args + EMPTY_DICT + NEWOBJ_EX + STOP) == 4 + 1
    # OBJ (protocol 1): everything above the mark, the class (size 1) with the arguments.
    assert rebuild_work(MARK + DECIMAL + text("123") + OBJ + STOP) == 1 + 3
    # INST (protocol 0): the class is in the opcode, the arguments above the mark.
    assert rebuild_work(MARK + text("123") + b"idecimal\nDecimal\n" + STOP) == 3
    # The result of a call is as big as what it copied: a tuple holding it, used as an argument.
    inner = DECIMAL + text("123") + TUPLE1 + REDUCE  # costs 4, size 4
    assert rebuild_work(PROTO4 + DECIMAL + inner + TUPLE1 + REDUCE + STOP) == 4 + (1 + 4)


def test_the_real_pickles_of_each_allowed_type_cost_their_arguments() -> None:
    # Decimal pickles as Decimal("1.5"): one plus three; a Markup as Markup("<b>"): one plus three.
    assert rebuild_work(pickle.dumps(decimal.Decimal("1.5"), protocol=4)) == 1 + 3
    from markupsafe import Markup

    assert rebuild_work(pickle.dumps(Markup("<b>"), protocol=4)) == 1 + 3


def test_a_memoized_argument_is_copied_by_every_call() -> None:
    # memo 0: Decimal, memo 1: ("1" * 100,), then three calls: each copies the 101.
    body = PROTO4 + DECIMAL + MEMOIZE + text("1" * 100) + TUPLE1 + MEMOIZE + POP + POP
    payload = body + EMPTY_LIST + MARK + (get(0) + get(1) + REDUCE) * 3 + APPENDS + STOP
    assert len(restricted_loads(payload)) == 3
    assert rebuild_work(payload) == 3 * 101


# -- the budget ------------------------------------------------------------------------------------


def calls_costing(length: int, calls: int) -> bytes:
    """``[Decimal(x)] * calls`` with ``x = "1" * length`` memoized: costs ``calls * (1 + length)``."""
    body = PROTO4 + DECIMAL + MEMOIZE + text("1" * length) + TUPLE1 + MEMOIZE + POP + POP
    return body + EMPTY_LIST + MARK + (get(0) + get(1) + REDUCE) * calls + APPENDS + STOP


def exactly_the_budget() -> tuple[int, int]:
    """The length of x and the number of calls that make :func:`calls_costing` cost its budget."""
    for calls in range(1000, 2000):
        fixed = len(calls_costing(0, calls))  # the payload grows one byte per character of x
        # calls * (1 + length) == WORK_PER_BYTE * (fixed + length) + WORK_ALLOWANCE
        numerator = WORK_PER_BYTE * fixed + WORK_ALLOWANCE - calls
        if numerator % (calls - WORK_PER_BYTE) == 0:
            return numerator // (calls - WORK_PER_BYTE), calls
    raise AssertionError("no exact fit")  # pragma: no cover


def test_the_budget_is_eight_units_a_byte_plus_four_million() -> None:
    assert (WORK_PER_BYTE, WORK_ALLOWANCE) == (8, 4_000_000)


def test_a_pickle_costing_exactly_its_budget_loads_and_one_unit_more_is_refused() -> None:
    length, calls = exactly_the_budget()
    payload = calls_costing(length, calls)
    budget = WORK_PER_BYTE * len(payload) + WORK_ALLOWANCE
    assert rebuild_work(payload) == budget
    assert len(restricted_loads(payload)) == calls
    # One more character of x: the pickle one byte longer (8 units more budget), the work
    # ``calls`` units more.
    longer = calls_costing(length + 1, calls)
    over = WORK_PER_BYTE * len(longer) + WORK_ALLOWANCE
    for refuse in (rebuild_work, restricted_loads):
        with pytest.raises(LegacyDataError, match=f"more work .* \\(over {over} units"):
            refuse(longer)


def test_what_the_replay_cannot_follow_is_not_a_readable_pickle() -> None:
    with pytest.raises(LegacyDataError, match="not a readable pickle"):
        rebuild_work(b"\x80\x04garbage")
    with pytest.raises(LegacyDataError, match="not a readable pickle"):
        rebuild_work(PROTO4 + get(7) + STOP)  # a memo entry never stored


def test_the_stack_is_followed_through_dup_pop_and_marks() -> None:
    big = long1(2**63)  # weight 2
    # DUP: the same int as key and value.
    assert restricted_loads(PROTO4 + EMPTY_DICT + big + b"2" + SETITEM + STOP) == {2**63: 2**63}
    assert rebuild_work(PROTO4 + EMPTY_DICT + big + b"2" + SETITEM + STOP) == 2
    # POP right after MARK drops the mark (as the unpickler does), not an item.
    dropped_mark = PROTO4 + EMPTY_DICT + MARK + POP + big + NONE + SETITEM + STOP
    assert restricted_loads(dropped_mark) == {2**63: None}
    assert rebuild_work(dropped_mark) == 2
    # A list's APPENDS takes everything above its mark: the key after it is still the dict's.
    listed = PROTO4 + EMPTY_DICT + big + EMPTY_LIST + MARK + big + big + APPENDS + SETITEM + STOP
    assert restricted_loads(listed) == {2**63: [2**63, 2**63]}
    assert rebuild_work(listed) == 2
    # TUPLE takes everything above its mark.
    marked = one_key(MARK + big + big + big + TUPLE)
    assert rebuild_work(marked) == 1 + 3 * 2


@pytest.mark.parametrize(
    "payload",
    [
        PROTO4 + long1(1) + TUPLE2 + STOP,  # a pair from one item
        PROTO4 + long1(1) + TUPLE3 + STOP,
        PROTO4 + DECIMAL + REDUCE + STOP,  # a call without its arguments
        PROTO4 + text("x") + DECIMAL + NEWOBJ_EX + STOP,
        PROTO4 + EMPTY_DICT + long1(1) + SETITEM + STOP,  # a key without its value
    ],
    ids=["TUPLE2", "TUPLE3", "REDUCE", "NEWOBJ_EX", "SETITEM"],
)
def test_an_opcode_short_of_items_is_not_a_readable_pickle(payload: bytes) -> None:
    for read in (rebuild_work, restricted_loads):
        with pytest.raises(LegacyDataError, match="not a readable pickle: ValueError: stack underflow"):
            read(payload)


def test_dup_pushes_the_top_item_again() -> None:
    # {5: 2**63, 2**63: None}: the copy DUP makes is the second key (weight 2, counted twice).
    payload = PROTO4 + EMPTY_DICT + MARK + long1(5) + long1(2**63) + b"2" + NONE + SETITEMS + STOP
    assert restricted_loads(payload) == {5: 2**63, 2**63: None}
    assert rebuild_work(payload) == 1 * 1 + 2 * 2


def test_a_fixed_size_tuple_takes_exactly_its_items() -> None:
    assert restricted_loads(PROTO4 + long1(1) + long1(2) + TUPLE2 + STOP) == (1, 2)
    assert rebuild_work(PROTO4 + long1(1) + long1(2) + TUPLE2 + STOP) == 0
    # Above a mark, only the tuple is a key: its two items are gone from the stack.
    payload = PROTO4 + EMPTY_DICT + MARK + long1(1) + long1(2) + TUPLE2 + NONE + SETITEMS + STOP
    assert restricted_loads(payload) == {(1, 2): None}
    assert rebuild_work(payload) == 3


CALLED = {
    "REDUCE": DECIMAL + text("1") + TUPLE1 + REDUCE,  # costs 1 + 1
    "OBJ": MARK + DECIMAL + text("1") + OBJ,  # costs 1 (the class) + 1
}


@pytest.mark.parametrize("call", CALLED.values(), ids=list(CALLED))
def test_what_a_call_makes_is_a_plain_item_of_the_size_it_copied(call: bytes) -> None:
    # As a key: one fixed hash of weight 1 after an int key, so counted twice.
    keyed = PROTO4 + EMPTY_DICT + MARK + long1(1) + NONE + call + NONE + SETITEMS + STOP
    assert restricted_loads(keyed) == {1: None, decimal.Decimal(1): None}
    assert rebuild_work(keyed) == 1 + 2 + 1 * 2
    # In tuples, it adds no depth: 1000 tuples around it load, 1001 are refused.
    assert rebuild_work(PROTO4 + call + TUPLE1 * 1000 + STOP) == 2
    with pytest.raises(LegacyDataError, match="nests tuples more than 1000 deep"):
        rebuild_work(PROTO4 + call + TUPLE1 * 1001 + STOP)


def test_dict_and_frozenset_opcodes_hash_their_items_and_push_one_item() -> None:
    # DICT (protocol 0 and 1 write it empty; a crafted one holds items above its mark).
    dict_of_two = MARK + long1(1) + NONE + long1(2) + NONE + b"d"
    assert restricted_loads(PROTO4 + dict_of_two + STOP) == {1: None, 2: None}
    assert rebuild_work(PROTO4 + dict_of_two + STOP) == 1 + 2
    assert rebuild_work(PROTO4 + dict_of_two + TUPLE1 + STOP) == 1 + 2  # an item like any other
    members = MARK + long1(1) + long1(2) + FROZENSET
    assert rebuild_work(PROTO4 + members + TUPLE1 + STOP) == 1 + 2
    # As a key a frozenset weighs 1: it caches its hash.
    assert rebuild_work(one_key(members)) == 1 + 2 + 1 * 3  # (restricted_loads refuses frozensets)


def test_any_other_opcode_short_of_items_is_a_stack_underflow() -> None:
    with pytest.raises(LegacyDataError, match="not a readable pickle: ValueError: stack underflow$"):
        rebuild_work(PROTO4 + NONE + b"a" + STOP)  # APPEND without a list
