"""Crafted flask-pg-session rows against the restricted unpickler: what they can make it do.

Pickles are built by hand, opcode by opcode, since ``pickle.dumps`` never writes these shapes.
Nothing here measures time: a row that would cost too much to rebuild is refused by its shape,
before the unpickler runs, and the tests assert the refusal.
"""

from __future__ import annotations

import decimal
import importlib
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest
from markupsafe import Markup

from pgsession_wsgi.errors import SessionError
from pgsession_wsgi.flask_pg_session import LegacyDataError, UnsafePickleError, restricted_loads

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


def glob(module: str, name: str) -> bytes:
    """GLOBAL: ``module.name``, resolved through the unpickler's ``find_class``."""
    return b"c" + f"{module}\n{name}\n".encode()


def call(func: bytes, *args: bytes) -> bytes:
    """REDUCE: ``func(*args)``, each given as the opcodes that push it."""
    return func + MARK + b"".join(args) + TUPLE + REDUCE


def in_a_session(value: bytes, header: bytes = PROTO4) -> bytes:
    """``{"x": value}``: the shape of a session row."""
    return header + EMPTY_DICT + text("x") + value + SETITEM + STOP


def refused_by_name(payload: bytes) -> str:
    """The ``module.name`` the unpickler refused; asserts nothing of the pickle was rebuilt."""
    with pytest.raises(UnsafePickleError) as info:
        restricted_loads(payload)
    assert isinstance(info.value, SessionError)
    assert "only plain data types" in str(info.value) and "the row was not converted" in str(info.value)
    return info.value.global_name


def refused_as_too_costly(payload: bytes) -> LegacyDataError:
    with pytest.raises(LegacyDataError) as info:
        restricted_loads(payload)
    assert isinstance(info.value, SessionError)
    assert "more work" in str(info.value) and "not converted" in str(info.value)
    # The message whole at its end: what makes a pickle cost more than its size (unpickle._Work.spend 5).
    assert str(info.value).endswith("arguments or dict keys, or many keys of one hash); not converted")
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


# -- the allow-list, exactly ----------------------------------------------------------------------

#: The globals a flask-pg-session row may name, as docs/flask-pg-session.md lists its types:
#: the datetime types, UUID, Decimal and Markup, plus the two protocol 2 needs to write bytes
#: (``_codecs.encode`` with latin-1, ``bytes()`` for b""). dict, list, tuple, str, int, float,
#: bool and None are opcodes, not globals.
DOCUMENTED_GLOBALS = frozenset(
    {
        ("datetime", "datetime"),
        ("datetime", "date"),
        ("datetime", "time"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("uuid", "UUID"),
        ("decimal", "Decimal"),
        ("markupsafe", "Markup"),
        ("_codecs", "encode"),
        ("builtins", "bytes"),
    }
)

#: Modules whose every public and private name is tried: where code execution, attribute
#: walks and imports live, and the modules the allowed names come from.
SEARCHED_MODULES = [
    "builtins",
    "os",
    "posix",
    "subprocess",
    "operator",
    "functools",
    "codecs",
    "_codecs",
    "importlib",
    "sys",
    "types",
    "io",
    "pickle",
    "_pickle",
    "copyreg",
    "marshal",
    "shutil",
    "pty",
    "runpy",
    "datetime",
    "uuid",
    "decimal",
    "markupsafe",
]


@pytest.mark.parametrize("module_name", SEARCHED_MODULES)
def test_no_global_outside_the_documented_ones_is_resolved(module_name: str) -> None:
    module = importlib.import_module(module_name)
    resolved = [
        name
        for name in dir(module)
        if (module_name, name) not in DOCUMENTED_GLOBALS
        and _outcome(glob(module_name, name) + STOP) != f"refused {module_name}.{name}"
    ]
    assert resolved == []


def _outcome(payload: bytes) -> str:
    try:
        restricted_loads(payload)
    except UnsafePickleError as exc:
        return f"refused {exc.global_name}"
    except SessionError as exc:
        return f"failed later: {exc}"
    return "loaded"


# Each named global pushed (never called): refused by find_class, by the name the pickle gave
# it (Python 2 spellings as they map to Python 3), not later as an object of a refused type.
DANGEROUS_GLOBALS = [
    ("builtins", "getattr", "builtins.getattr"),
    ("builtins", "eval", "builtins.eval"),
    ("builtins", "exec", "builtins.exec"),
    ("builtins", "compile", "builtins.compile"),
    ("builtins", "__import__", "builtins.__import__"),
    ("builtins", "open", "builtins.open"),
    ("builtins", "setattr", "builtins.setattr"),
    ("builtins", "globals", "builtins.globals"),
    ("builtins", "vars", "builtins.vars"),
    ("builtins", "type", "builtins.type"),
    ("builtins", "object", "builtins.object"),
    ("builtins", "breakpoint", "builtins.breakpoint"),
    ("builtins", "set", "builtins.set"),
    ("builtins", "bytearray", "builtins.bytearray"),
    ("os", "system", "os.system"),
    ("os", "popen", "os.popen"),
    ("os", "execv", "os.execv"),
    ("posix", "system", "posix.system"),
    ("subprocess", "Popen", "subprocess.Popen"),
    ("subprocess", "check_output", "subprocess.check_output"),
    ("operator", "attrgetter", "operator.attrgetter"),
    ("operator", "itemgetter", "operator.itemgetter"),
    ("operator", "methodcaller", "operator.methodcaller"),
    ("functools", "partial", "functools.partial"),
    ("functools", "reduce", "functools.reduce"),
    ("codecs", "decode", "codecs.decode"),
    ("codecs", "encode", "codecs.encode"),
    ("_codecs", "decode", "_codecs.decode"),
    ("importlib", "import_module", "importlib.import_module"),
    ("pickle", "loads", "pickle.loads"),
    ("_pickle", "loads", "_pickle.loads"),
    ("marshal", "loads", "marshal.loads"),
    ("types", "FunctionType", "types.FunctionType"),
    ("types", "CodeType", "types.CodeType"),
    ("copyreg", "_reconstructor", "copyreg._reconstructor"),
    ("runpy", "run_path", "runpy.run_path"),
    ("sys", "modules", "sys.modules"),
    # Python 2 spellings, resolved as their Python 3 names would be.
    ("__builtin__", "getattr", "builtins.getattr"),
    ("__builtin__", "eval", "builtins.eval"),
    ("__builtin__", "reduce", "functools.reduce"),
    ("commands", "getoutput", "subprocess.getoutput"),
    ("cPickle", "loads", "pickle.loads"),
    ("copy_reg", "_reconstructor", "copyreg._reconstructor"),
]


@pytest.mark.parametrize(
    ("module", "name", "refused_as"), DANGEROUS_GLOBALS, ids=[f"{m}.{n}" for m, n, _ in DANGEROUS_GLOBALS]
)
def test_dangerous_globals_are_refused_by_name(module: str, name: str, refused_as: str) -> None:
    assert refused_by_name(in_a_session(glob(module, name))) == refused_as


# Protocol 4's STACK_GLOBAL takes dotted names: attribute walks from an allowed class.
DOTTED_NAMES = [
    ("markupsafe", "Markup.join"),
    ("markupsafe", "Markup.join.__globals__"),
    ("markupsafe", "Markup.__new__"),
    ("uuid", "UUID.__init__.__globals__"),
    ("uuid", "os.system"),
    ("decimal", "Decimal.__class__"),
    ("datetime", "datetime.now"),
    ("datetime", "timezone.__subclasses__"),
    ("builtins", "bytes.fromhex"),
]


@pytest.mark.parametrize(("module", "name"), DOTTED_NAMES, ids=[f"{m}.{n}" for m, n in DOTTED_NAMES])
def test_dotted_names_from_allowed_globals_are_refused(module: str, name: str) -> None:
    assert refused_by_name(in_a_session(stack_global(module, name))) == f"{module}.{name}"


@pytest.mark.parametrize(("module", "name"), sorted(DOCUMENTED_GLOBALS))
def test_each_documented_global_resolves(module: str, name: str) -> None:
    # Pushed and dropped: the name resolves, nothing is called, the row loads.
    assert restricted_loads(PROTO4 + EMPTY_DICT + glob(module, name) + POP + STOP) == {}


# -- pickles that run a command --------------------------------------------------------------------


def getattr_walk(start: bytes, first: str, command: str) -> bytes:
    """``getattr(start, first).__globals__.get("__builtins__").get("eval")(command)``, by getattr alone.

    A function's ``__globals__`` holds its module's ``__builtins__``, so one allowed class with a
    Python-level method plus ``builtins.getattr`` is all it takes to reach ``eval``.
    """

    def attribute(obj: bytes, name: str) -> bytes:
        return call(glob("builtins", "getattr"), obj, text(name))

    module_globals = attribute(attribute(start, first), "__globals__")
    builtins_dict = call(attribute(module_globals, "get"), text("__builtins__"))
    evaluate = call(attribute(builtins_dict, "get"), text("eval"))
    return call(evaluate, text(command))


def command_payloads(marker: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (a pickle that runs ``touch marker`` when plainly unpickled, the global refused)."""
    touch = f"touch {marker}"
    python_touch = f"__import__('os').system('touch {marker}')"
    os_module = call(glob("builtins", "__import__"), text("os"))
    inner = call(glob("os", "system"), text(touch)) + STOP
    return {
        "getattr walk: Markup.join.__globals__ -> eval": (
            getattr_walk(glob("markupsafe", "Markup"), "join", python_touch),
            "builtins.getattr",
        ),
        "getattr walk: Markup.__new__.__globals__ -> eval": (
            getattr_walk(glob("markupsafe", "Markup"), "__new__", python_touch),
            "builtins.getattr",
        ),
        "getattr walk: UUID.__init__.__globals__ -> eval": (
            getattr_walk(glob("uuid", "UUID"), "__init__", python_touch),
            "builtins.getattr",
        ),
        "os.system": (call(glob("os", "system"), text(touch)), "os.system"),
        "posix.system": (call(glob("posix", "system"), text(touch)), "posix.system"),
        "eval": (call(glob("builtins", "eval"), text(python_touch)), "builtins.eval"),
        "exec": (call(glob("builtins", "exec"), text(python_touch)), "builtins.exec"),
        "subprocess.call": (
            call(glob("subprocess", "call"), EMPTY_LIST + MARK + text("touch") + text(str(marker)) + APPENDS),
            "subprocess.call",
        ),
        "commands.getoutput (Python 2)": (
            call(glob("commands", "getoutput"), text(touch)),
            "subprocess.getoutput",
        ),
        "functools.partial(os.system, cmd)()": (
            call(call(glob("functools", "partial"), glob("os", "system"), text(touch))),
            "functools.partial",
        ),
        "operator.methodcaller('system', cmd)(__import__('os'))": (
            call(call(glob("operator", "methodcaller"), text("system"), text(touch)), os_module),
            "operator.methodcaller",
        ),
        "pickle.loads(inner pickle)": (
            call(glob("pickle", "loads"), b"B" + struct.pack("<I", len(inner)) + inner),
            "pickle.loads",
        ),
        "INST opcode (protocol 0)": (MARK + text(touch) + b"i" + b"os\nsystem\n", "os.system"),
        "OBJ opcode (protocol 1)": (MARK + glob("os", "system") + text(touch) + b"o", "os.system"),
    }


@pytest.mark.parametrize("name", list(command_payloads(Path("unused"))))
def test_pickles_that_run_a_command_are_refused_and_run_nothing(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    value, refused_as = command_payloads(marker)[name]
    # Python 3 maps Python 2 names (commands -> subprocess) in pickles of protocol 2 or lower.
    payload = in_a_session(value, b"\x80\x02" if "Python 2" in name else PROTO4)

    assert refused_by_name(payload) == refused_as
    assert not marker.exists()
    # Each is a real exploit: plain pickle.loads runs the command.
    pickle.loads(payload)  # noqa: S301
    assert marker.exists()
