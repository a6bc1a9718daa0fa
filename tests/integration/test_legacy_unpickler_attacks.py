"""Crafted flask-pg-session rows against the restricted unpickler: what they can make it do.

Pickles are built by hand, opcode by opcode, since ``pickle.dumps`` never writes these shapes.
Nothing here measures time: a row that would cost too much to rebuild is refused by its shape,
before the unpickler runs, and the tests assert the refusal.
"""

from __future__ import annotations

import decimal
import pickle
import struct
from typing import Any

import pytest
from markupsafe import Markup

from pgsession_wsgi.errors import SessionError
from pgsession_wsgi.flask_pg_session import LegacyDataError, restricted_loads

# -- opcodes -------------------------------------------------------------------------------------

PROTO4 = b"\x80\x04"
MARK, STOP, POP, MEMOIZE = b"(", b".", b"0", b"\x94"
EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE = b"}", b"]", b")"
TUPLE, TUPLE1 = b"t", b"\x85"
SETITEM, SETITEMS, APPENDS, REDUCE, NONE = b"s", b"u", b"e", b"R", b"N"
FROZENSET = b"\x91"


def text(value: str) -> bytes:
    """BINUNICODE8: a str of any length."""
    raw = value.encode()
    return b"\x8d" + struct.pack("<Q", len(raw)) + raw


def long4(value: int) -> bytes:
    """LONG4: an int of any size."""
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8b" + struct.pack("<i", len(raw)) + raw


def get(index: int) -> bytes:
    """LONG_BINGET: the memo's item ``index`` pushed again (the same object)."""
    return b"j" + struct.pack("<I", index)


def stack_global(module: str, name: str) -> bytes:
    return text(module) + text(name) + b"\x93"


def refused_as_too_costly(payload: bytes) -> LegacyDataError:
    with pytest.raises(LegacyDataError) as info:
        restricted_loads(payload)
    assert isinstance(info.value, SessionError)
    assert "more work" in str(info.value) and "not converted" in str(info.value)
    return info.value


# -- work that grows faster than the pickle -----------------------------------------------------


def repeated_call(module: str, name: str, arguments: bytes, calls: int) -> bytes:
    """``[f(x), f(x), ...]``: f and the tuple ``(x,)`` memoized once, then each call is 11 bytes.

    :param arguments: opcodes that push the argument tuple.

    Each call copies (or parses) ``x`` anew, so a pickle of ``len(x) + 11 * calls`` bytes costs
    ``len(x) * calls``: a 1 MiB row would allocate tens of gigabytes.
    """
    body = PROTO4 + stack_global(module, name) + MEMOIZE  # memo 0: f
    body += arguments + MEMOIZE + POP + POP  # memo 1: (x,)
    body += EMPTY_LIST + MARK + (get(0) + get(1) + REDUCE) * calls + APPENDS
    return body + STOP


REPEATED_CALLS = {
    "Markup": ("markupsafe", "Markup", text("<b>" * 10_000) + TUPLE1),
    "Decimal": ("decimal", "Decimal", text("1" * 30_000) + TUPLE1),
    # How protocol 2 writes bytes: _codecs.encode(text, "latin1").
    "bytes": ("_codecs", "encode", text("x" * 30_000) + text("latin1") + b"\x86"),
}


@pytest.mark.parametrize(("module", "name", "arguments"), REPEATED_CALLS.values(), ids=REPEATED_CALLS)
def test_one_big_argument_used_by_many_calls_is_refused(module: str, name: str, arguments: bytes) -> None:
    value = restricted_loads(repeated_call(module, name, arguments, 3))  # a few calls: fine
    assert len(value) == 3 and value[0] == value[2]
    refused_as_too_costly(repeated_call(module, name, arguments, 1000))


def wide_tuple_tower(width: int, levels: int, *, as_member: bool = False) -> bytes:
    """``{t: None}`` (or ``frozenset({t})``) where ``t = (t', t', ...)`` ``width`` times, ``levels`` deep.

    Each level is one tuple of ``width`` memo references to the level below, so the pickle
    grows by ``5 * width`` bytes a level while hashing ``t`` (which unpickling a dict key or a
    set member does, and tuples do not cache) visits ``width ** levels`` items.
    """
    body = PROTO4 + EMPTY_DICT + MEMOIZE + EMPTY_TUPLE + MEMOIZE  # memo 0: the dict, 1: ()
    for level in range(levels):
        body += POP + MARK + get(level + 1) * width + TUPLE + MEMOIZE  # memo level + 2
    if as_member:
        return body + POP + POP + MARK + get(levels + 1) + FROZENSET + STOP
    return body + NONE + SETITEM + STOP


@pytest.mark.parametrize("as_member", [False, True], ids=["dict key", "frozenset member"])
def test_a_key_whose_hash_visits_exponentially_many_items_is_refused(as_member: bool) -> None:
    small = restricted_loads(wide_tuple_tower(3, 3))
    ((key, _),) = small.items()
    assert len(key) == 3 and key[0] == key[2] and len(key[0][0]) == 3
    # 30 ** 5 = 24 million items hashed for a pickle of about a kilobyte.
    refused_as_too_costly(wide_tuple_tower(30, 5, as_member=as_member))


def colliding_int_keys(count: int) -> bytes:
    """``{k: None, ...}`` with ``count`` distinct int keys of one hash (multiples of 2**61 - 1).

    int hashes are not randomised: each insert compares with every earlier key, so the work
    grows with the square of the number of keys (a 1 MiB row holds about 70,000).
    """
    modulus = 2**61 - 1
    pairs = b"".join(long4(modulus * n) + NONE for n in range(1, count + 1))
    return PROTO4 + EMPTY_DICT + MARK + pairs + SETITEMS + STOP


def test_many_keys_of_one_hash_are_refused() -> None:
    assert len(restricted_loads(colliding_int_keys(100))) == 100
    refused_as_too_costly(colliding_int_keys(3000))


def one_big_int_key_many_times(digits_bytes: int, times: int) -> bytes:
    """``{n: None}`` set ``times`` times with the same memoized big int: int hashes are not cached."""
    big = long4(1 << (8 * digits_bytes - 2)) + MEMOIZE  # memo 1 (the dict is memo 0)
    sets = (get(1) + NONE + SETITEM) * times
    return PROTO4 + EMPTY_DICT + MEMOIZE + big + POP + sets + STOP


def test_a_big_int_key_hashed_over_and_over_is_refused() -> None:
    assert len(restricted_loads(one_big_int_key_many_times(20_000, 3))) == 1
    refused_as_too_costly(one_big_int_key_many_times(20_000, 2000))


# -- and what real rows hold still loads ----------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_large_and_key_heavy_sessions_still_load(protocol: int) -> None:
    shared = ("tag", 1)
    value: dict[Any, Any] = {
        "big_markup": Markup("<p>" + "x" * 600_000 + "</p>"),
        "big_decimal": decimal.Decimal("9" * 50_000),
        "big_bytes": b"\xff" * 200_000,
        "big_int": 1 << 80_000,
        "many_keys": {f"k{n}": n for n in range(20_000)},
        "int_keys": {n: str(n) for n in range(1000)},
        "tuple_keys": {(n, str(n)): [n] for n in range(1000)},
        "shared": [shared] * 5000,
        "flashes": [("message", Markup(f"<i>{n}</i>")) for n in range(2000)],
    }
    loaded = restricted_loads(pickle.dumps(value, protocol=protocol))
    assert loaded == value
    assert type(loaded["big_markup"]) is Markup
