"""A restricted unpickler for flask-pg-session's rows: plain data types in, nothing ever run.

Plain ``pickle.loads`` on its ``bytea`` column would run any code an attacker managed to write
there, so only an allow-list of plain data types is rebuilt, within a work budget.
"""

from __future__ import annotations

import _compat_pickle
import datetime as _dt
import decimal
import io
import pickle
import pickletools
import uuid
from itertools import chain
from typing import Any, Callable

from markupsafe import Markup

from ..errors import SessionError

__all__ = [
    "WORK_ALLOWANCE",
    "WORK_PER_BYTE",
    "LegacyDataError",
    "UnsafePickleError",
    "rebuild_work",
    "restricted_loads",
]


class UnsafePickleError(SessionError):
    """A pickle asked for a global or type outside the allow-list; nothing of it was run.

    :param global_name: the refused ``module.name`` (or a description of the refused call).
    """

    def __init__(self, global_name: str) -> None:
        super().__init__(
            f"refused to unpickle {global_name}: only plain data types (dict, list, tuple, str, "
            "bytes, int, float, bool, None, datetime types, UUID, Decimal, Markup) are allowed; "
            "the row was not converted"
        )
        self.global_name = global_name


class LegacyDataError(SessionError):
    """A legacy payload is not a readable pickle of a session dict (corrupt or wrong shape)."""


_LATIN1_NAMES = frozenset({"latin1", "latin-1", "latin_1", "iso8859-1", "iso-8859-1"})


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode`` (protocol 2's ``bytes``): latin-1 only, so no other codec runs."""
    if type(text) is not str or encoding not in _LATIN1_NAMES:
        raise UnsafePickleError(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin-1")


def _empty_bytes(*args: object) -> bytes:
    """Stand-in for ``bytes`` (protocol 2's ``b""``): ``bytes(n)`` would allocate, so no arguments."""
    if args:
        raise UnsafePickleError("builtins.bytes(<arguments>)")
    return b""


def _described(name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> str:
    """``name(<argument types>)``: a refused call, named without its values."""
    kinds = [type(arg).__name__ for arg in args] + [f"{key}=" for key in kwargs]
    return f"{name}({', '.join(kinds)})"


class _MarkupFromStr:
    """Stand-in for ``Markup``, from one ``str`` only (a class: pickle calls ``__new__``, NEWOBJ);
    the real one decodes ``(bytes, encoding)`` with any codec (idna is quadratic), ``str()`` the rest."""

    def __new__(cls, *args: object, **kwargs: object) -> Markup:  # type: ignore[misc]
        text = args[0] if len(args) == 1 else ""
        if kwargs or len(args) > 1 or type(text) is not str:
            raise UnsafePickleError(_described("markupsafe.Markup", args, kwargs))
        return Markup(text)


def _decimal_from_str(*args: object) -> decimal.Decimal:
    """Stand-in for ``Decimal``, from a ``str`` only: converting an ``int`` is quadratic in its size."""
    if len(args) != 1 or type(args[0]) is not str:
        raise UnsafePickleError(_described("decimal.Decimal", args, {}))
    return decimal.Decimal(args[0])


# (module, name) in the stream, Python 2 spellings mapped first (find_class) -> what to hand back.
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("datetime", "datetime"): _dt.datetime,
    ("datetime", "date"): _dt.date,
    ("datetime", "time"): _dt.time,
    ("datetime", "timedelta"): _dt.timedelta,
    ("datetime", "timezone"): _dt.timezone,
    ("uuid", "UUID"): uuid.UUID,
    ("decimal", "Decimal"): _decimal_from_str,
    ("markupsafe", "Markup"): _MarkupFromStr,
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "bytes"): _empty_bytes,
}

_SCALAR_TYPES: frozenset[type] = frozenset(
    {str, bytes, int, float, bool, type(None), _dt.date, _dt.timedelta, _dt.timezone, decimal.Decimal, Markup}
)
_CONTAINER_TYPES: frozenset[type] = frozenset({dict, list, tuple})


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose only reachable callables are the allow-listed constructors."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only allow-listed globals; the module is never imported for a refused one."""
        # Protocol 2 writes Python 2 names (``__builtin__.set``).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids: they would ask us to resolve an external object."""
        raise UnsafePickleError("persistent_load")


def type_name(obj: object) -> str:
    """``module.qualname`` of the object's type, as the errors name it."""
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _check_plain(value: object) -> None:
    """Refuse all but allow-listed exact types, and cycles (JSON cannot hold one), iteratively; protocol
    4+ builds sets and bytearrays without ``find_class``, and BUILD can give an allowed class odd state."""
    on_path: set[int] = set()
    done: set[int] = set()
    stack: list[tuple[object, bool]] = [(value, False)]
    while stack:
        obj, leaving = stack.pop()
        if leaving:
            on_path.discard(id(obj))
            done.add(id(obj))
            continue
        kind = type(obj)
        if kind in _SCALAR_TYPES:
            continue
        if kind in (_dt.datetime, _dt.time):
            tz = obj.tzinfo  # type: ignore[attr-defined]
            if tz is not None and type(tz) is not _dt.timezone:
                raise UnsafePickleError(type_name(tz))
            continue
        if kind is uuid.UUID:
            number = getattr(obj, "int", None)
            if type(number) is not int or not 0 <= number < 1 << 128:
                raise LegacyDataError("a pickled UUID has no valid 128-bit value")
            continue
        if kind not in _CONTAINER_TYPES:
            raise UnsafePickleError(type_name(obj))
        if id(obj) in on_path:
            raise LegacyDataError("the pickled data refers to itself (a cycle)")
        if id(obj) in done:
            continue
        on_path.add(id(obj))
        stack.append((obj, True))
        items = chain.from_iterable(obj.items()) if kind is dict else obj  # type: ignore[attr-defined]
        stack.extend((item, False) for item in items)  # type: ignore[attr-defined]


# Hashing a tuple (a dict key, a set member) recurses in C with no limit: a deep enough one
# crashes the process (a segmentation fault), so deeper ones are refused before unpickling.
_MAX_TUPLE_DEPTH = 1000
#: The work a pickle may cost to rebuild: this many units per byte of it, plus
#: :data:`WORK_ALLOWANCE` (:func:`rebuild_work` counts the units). Building what it holds costs
#: about one unit per byte; only reuse through the memo or keys of one hash cost more.
WORK_PER_BYTE = 8
#: The flat part of a pickle's work budget, in units (see :data:`WORK_PER_BYTE`).
WORK_ALLOWANCE = 4_000_000

# A replayed stack item: (tuple depth, cost of hashing it, bytes a constructor would copy from
# it, whether its hash is randomised: str and bytes).
_Item = tuple[int, int, int, bool]
_PLAIN: _Item = (0, 1, 1, False)
_TEXT_OPCODES = frozenset(
    {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
    | {"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}
)
_INT_OPCODES = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"})
_TUPLE_SIZES = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
# Opcodes that call an allow-listed callable: how many stack items its arguments are.
_CALL_ARGUMENTS = {"REDUCE": 1, "NEWOBJ": 1, "NEWOBJ_EX": 2}
_PUT_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPCODES = frozenset({"GET", "BINGET", "LONG_BINGET"})


class _Work:
    """The replay's running cost, refused once it passes the budget."""

    def __init__(self, payload_size: int) -> None:
        self.budget = WORK_PER_BYTE * payload_size + WORK_ALLOWANCE
        self.spent = 0
        self.fixed_hash_keys = 0  # keys so far whose hash is not randomised

    def spend(self, units: int) -> None:
        self.spent += units
        if self.spent > self.budget:
            raise LegacyDataError(
                f"rebuilding the pickled data would take more work than a pickle of its size can "
                f"need (over {self.budget} units: one object reused through the memo as many "
                "arguments or dict keys, or many keys of one hash); not converted"
            )

    def hash_key(self, item: _Item) -> None:
        """A dict key or set member: hashed once, and compared with every key of its hash."""
        _, weight, _, randomised = item
        if randomised:
            self.spend(weight)
        else:  # an attacker can give every such key one hash: count the worst case
            self.fixed_hash_keys += 1
            self.spend(weight * self.fixed_hash_keys)


def _pushed(name: str, arg: Any) -> _Item:
    """The item an opcode that takes nothing from the stack pushes."""
    if name in _TEXT_OPCODES:
        return (0, 1, len(arg), True)
    if name in _INT_OPCODES:
        size = (abs(int(arg)).bit_length() + 7) // 8
        return (0, 1 + size // 8, 1 + size, False)  # hashing an int reads all of it
    return _PLAIN


def _tuple_of(items: list[_Item], cap: int) -> _Item:
    """A tuple of ``items``: hashing it hashes each of them (tuples do not cache their hash)."""
    depth = 1 + max((item[0] for item in items), default=0)
    if depth > _MAX_TUPLE_DEPTH:
        raise LegacyDataError(
            f"the pickled data nests tuples more than {_MAX_TUPLE_DEPTH} deep; not converted"
        )
    weight = min(cap, 1 + sum(item[1] for item in items))
    size = min(cap, 1 + sum(item[2] for item in items))
    return (depth, weight, size, False)


def rebuild_work(payload: bytes) -> int:
    """The units of work unpickling ``payload`` would take, counted from its opcodes, running none.

    :func:`restricted_loads` refuses a pickle whose work passes ``WORK_PER_BYTE * len(payload) +
    WORK_ALLOWANCE``. The units: a constructor call (``Decimal``, ``Markup``, the datetime types,
    protocol 2's bytes) costs the size of its arguments; a dict key or set member costs its hash
    weight, and, when its hash is not randomised (anything but str and bytes), that weight times
    the number of such keys so far (all could share one hash). Sizes: a str or bytes its length,
    an int one plus its bytes, a tuple one plus its members', anything else one. Hash weights: a
    str or bytes one, an int one plus its bytes // 8, a tuple one plus its members'. A memo
    reference counts its object again each time it is used.

    :raises LegacyDataError: the work passes the budget (counting stops there), tuples nest more
        than 1000 deep, or the bytes are not a pickle the replay can follow.
    """
    try:
        return _check_work(payload)
    except SessionError:
        raise
    except Exception as exc:  # what pickletools cannot parse, load cannot either
        raise _unreadable(exc) from exc


def _unreadable(exc: Exception) -> LegacyDataError:
    return LegacyDataError(f"not a readable pickle: {type(exc).__name__}: {exc}")


def _check_work(payload: bytes) -> int:
    """Replay the unpickler's stack from the opcodes, keeping only what costs work; the units spent."""
    work = _Work(len(payload))
    cap = work.budget + 1  # weights and sizes beyond the budget need not be exact
    stack: list[_Item] = []
    marks: list[int] = []
    memo: dict[Any, _Item] = {}

    def above_mark() -> list[_Item]:
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    def take(count: int) -> list[_Item]:
        if count > len(stack):
            raise ValueError("stack underflow")
        items = stack[len(stack) - count :]
        del stack[len(stack) - count :]
        return items

    for opcode, arg, _ in pickletools.genops(payload):
        name = opcode.name
        if name in _PUT_OPCODES:
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in _GET_OPCODES:
            stack.append(memo[arg])  # a missing entry (KeyError) fails load too
        elif name == "DUP":
            stack.append(stack[-1])
        elif name == "POP" and marks and marks[-1] == len(stack):
            marks.pop()  # as _pickle does: POP right after MARK drops the mark
        elif name == "TUPLE":
            stack.append(_tuple_of(above_mark(), cap))
        elif name in _TUPLE_SIZES:
            stack.append(_tuple_of(take(_TUPLE_SIZES[name]), cap))
        elif name in _CALL_ARGUMENTS or name in ("INST", "OBJ"):
            # The allow-listed callables copy their arguments (INST and OBJ: those above the mark).
            arguments = take(_CALL_ARGUMENTS[name] + 1)[1:] if name in _CALL_ARGUMENTS else above_mark()
            size = min(cap, sum(item[2] for item in arguments))
            work.spend(size)
            stack.append((0, 1, size, False))
        elif name == "SETITEM":
            if len(stack) < 3:
                raise ValueError("stack underflow")
            work.hash_key(stack[-2])
            del stack[-2:]
        elif name in ("SETITEMS", "DICT", "ADDITEMS", "FROZENSET"):
            items = above_mark()
            for key in items[::2] if name in ("SETITEMS", "DICT") else items:  # keys, or set members
                work.hash_key(key)
            if name in ("DICT", "FROZENSET"):  # a new object (a frozenset caches its hash)
                stack.append(_PLAIN)
        else:  # the rest: their cost is their own size, and none makes a tuple
            before = opcode.stack_before
            if pickletools.markobject in before:
                del stack[marks.pop() :]
                count = before.index(pickletools.markobject)
            else:
                count = len(before)
            take(count)
            for item in opcode.stack_after:
                if item is pickletools.markobject:
                    marks.append(len(stack))
                else:
                    stack.append(_pushed(name, arg))
    return work.spent


def restricted_loads(payload: bytes) -> Any:
    """Unpickle ``payload`` allowing only plain data types, so a crafted row runs nothing.

    :param payload: one ``data`` cell of a flask-pg-session table (any pickle protocol).
    :returns: the value, of allow-listed types only (not always a dict).
    :raises UnsafePickleError: a global or type outside the allow-list, before anything runs.
    :raises LegacyDataError: the bytes are not a well-formed pickle, nest tuples deep enough to
        crash the interpreter, or would cost more work to rebuild than their size allows
        (:func:`rebuild_work`); judged from the opcodes, before anything is rebuilt.
    """
    rebuild_work(payload)
    try:
        value = _RestrictedUnpickler(io.BytesIO(payload)).load()
    except SessionError:
        raise
    except Exception as exc:  # corrupt stream: UnpicklingError, EOFError, ValueError, ...
        raise _unreadable(exc) from exc
    _check_plain(value)
    return value
