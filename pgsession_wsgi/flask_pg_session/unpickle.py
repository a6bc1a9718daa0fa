"""A restricted unpickler for flask-pg-session's rows: plain data types in, nothing ever run.

flask-pg-session stores ``pickle.dumps(dict(session))`` in a ``bytea`` column. Plain
``pickle.loads`` on that column would run any code an attacker (or a compromised replica,
backup or SQL injection elsewhere) managed to write there, so this module unpickles with an
allow-list of plain data types and refuses everything else before it is called.
"""

from __future__ import annotations

import _compat_pickle
import datetime as _dt
import decimal
import io
import pickle
import pickletools
import uuid
from typing import Any, Callable

from markupsafe import Markup

from ..errors import SessionError

__all__ = ["LegacyDataError", "UnsafePickleError", "restricted_loads"]


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
    """Stand-in for ``_codecs.encode``, which protocol 2 uses to rebuild ``bytes``.

    The real function accepts any codec name; only the latin-1 form pickle emits is
    accepted, so a crafted pickle cannot reach other codecs through it.
    """
    if type(text) is not str or encoding not in _LATIN1_NAMES:
        raise UnsafePickleError(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin-1")


def _empty_bytes(*args: object) -> bytes:
    """Stand-in for ``bytes``, which protocol 2 calls with no arguments for ``b""``.

    ``bytes(n)`` would allocate ``n`` zero bytes, so any argument is refused.
    """
    if args:
        raise UnsafePickleError("builtins.bytes(<arguments>)")
    return b""


def _described(name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> str:
    """``name(<argument types>)``: how a refused call is named (never its values)."""
    kinds = [type(arg).__name__ for arg in args] + [f"{key}=" for key in kwargs]
    return f"{name}({', '.join(kinds)})"


class _MarkupFromStr:
    """Stand-in for ``markupsafe.Markup``: a ``Markup`` built from one ``str``, nothing else.

    Pickle rebuilds a ``Markup`` as ``Markup.__new__(Markup, text)`` (NEWOBJ), so this is a class
    whose ``__new__`` hands back a real ``Markup``. The real one also takes ``(bytes, encoding)``
    and decodes them with any codec (the idna and punycode decoders are quadratic in the size of
    the bytes), and calls ``str()`` on any other object; neither is in a pickle of a session.
    """

    def __new__(cls, *args: object, **kwargs: object) -> Markup:  # type: ignore[misc]
        text = args[0] if len(args) == 1 else ""
        if kwargs or len(args) > 1 or type(text) is not str:
            raise UnsafePickleError(_described("markupsafe.Markup", args, kwargs))
        return Markup(text)


def _decimal_from_str(*args: object) -> decimal.Decimal:
    """Stand-in for ``decimal.Decimal``, which pickles as ``Decimal(text)``.

    The real class also converts an ``int``, in time quadratic in its size; only the ``str``
    form a pickle holds is accepted.
    """
    if len(args) != 1 or type(args[0]) is not str:
        raise UnsafePickleError(_described("decimal.Decimal", args, {}))
    return decimal.Decimal(args[0])


# (module, name) exactly as they appear in the pickle stream -> what to hand back.
# Python 2 spellings are mapped to these first (see find_class).
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
    {
        str,
        bytes,
        int,
        float,
        bool,
        type(None),
        _dt.date,
        _dt.timedelta,
        _dt.timezone,
        decimal.Decimal,
        Markup,
    }
)
_CONTAINER_TYPES: frozenset[type] = frozenset({dict, list, tuple})


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose only reachable callables are the allow-listed constructors."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only allow-listed globals; the module is never imported for a refused one."""
        # Protocol 2 writes Python 2 names (``__builtin__.set``); speak Python 3 names.
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
    """``module.qualname`` of the object's type, as the errors (and the row readers) name it.

    :param obj: any object.
    """
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _check_plain(value: object) -> None:
    """Refuse anything but allow-listed exact types, found without recursion.

    Protocol 4+ builds ``set``, ``frozenset`` and ``bytearray`` from opcodes that never call
    ``find_class``, and BUILD can give an allowed class odd state; this walk catches both.
    Shared references are fine, cycles are refused (the result must be encodable as JSON).
    """
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
        if kind is dict:
            for key, item in obj.items():  # type: ignore[attr-defined]
                stack.append((key, False))
                stack.append((item, False))
        else:
            stack.extend((item, False) for item in obj)  # type: ignore[attr-defined]


#: Tuples nested deeper than this are refused before unpickling: unpickling hashes dict keys
#: and set members, and hashing a tuple recurses in C with no limit, so a deep enough one
#: crashes the whole process (a segmentation fault, not an exception).
_MAX_TUPLE_DEPTH = 1000
# EMPTY_TUPLE, TUPLE, TUPLE1, TUPLE2, TUPLE3: each level of nesting needs one of them run.
_TUPLE_OPCODES = (b")", b"t", b"\x85", b"\x86", b"\x87")
# How many stack items each fixed-size tuple opcode takes (TUPLE takes all above the mark).
_TUPLE_SIZES = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_PUT_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPCODES = frozenset({"GET", "BINGET", "LONG_BINGET"})


def _check_tuple_depth(payload: bytes) -> None:
    """Refuse tuples nested over ``_MAX_TUPLE_DEPTH`` deep by reading the opcodes, running none.

    A pickle holding fewer tuple opcode bytes than the limit cannot nest deeper, so the usual
    row costs five ``bytes.count`` calls; otherwise the unpickler's stack is replayed, keeping
    only each item's tuple depth. Whatever the replay cannot follow fails ``load`` too.
    """
    if sum(payload.count(code) for code in _TUPLE_OPCODES) <= _MAX_TUPLE_DEPTH:
        return
    stack: list[int] = []  # tuple depth of each stack item: 0 for anything but a tuple
    marks: list[int] = []
    memo: dict[Any, int] = {}
    for opcode, arg, _ in pickletools.genops(payload):
        name = opcode.name
        if name in _PUT_OPCODES:
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in _GET_OPCODES:
            stack.append(memo.get(arg, 0))
        elif name == "DUP":
            stack.append(stack[-1])
        elif name == "POP" and marks and marks[-1] == len(stack):
            marks.pop()  # as _pickle does: POP right after MARK drops the mark
        elif name == "TUPLE" or name in _TUPLE_SIZES:
            start = marks.pop() if name == "TUPLE" else len(stack) - _TUPLE_SIZES[name]
            if start < 0:
                raise ValueError("stack underflow")
            depth = 1 + max(stack[start:], default=0)
            del stack[start:]
            if depth > _MAX_TUPLE_DEPTH:
                raise LegacyDataError(
                    f"the pickled data nests tuples more than {_MAX_TUPLE_DEPTH} deep; not converted"
                )
            stack.append(depth)
        else:  # nothing else makes a tuple (the allow-listed callables never return one)
            before = opcode.stack_before
            if pickletools.markobject in before:
                del stack[marks.pop() :]
                count = before.index(pickletools.markobject)
            else:
                count = len(before)
            if count > len(stack):
                raise ValueError("stack underflow")
            del stack[len(stack) - count :]
            for item in opcode.stack_after:
                if item is pickletools.markobject:
                    marks.append(len(stack))
                else:
                    stack.append(0)


def restricted_loads(payload: bytes) -> Any:
    """Unpickle ``payload`` allowing only plain data types, so a crafted row runs nothing.

    :param payload: one ``data`` cell of a flask-pg-session table (any pickle protocol).
    :returns: the unpickled value, made only of the allow-listed types (not always a dict:
        the caller decides whether the shape is a session).
    :raises UnsafePickleError: the pickle names a global or type outside the allow-list;
        raised before any refused callable could run.
    :raises LegacyDataError: the bytes are not a well-formed pickle, or nest tuples deep
        enough to crash the interpreter.
    """
    try:
        _check_tuple_depth(payload)
        value = _RestrictedUnpickler(io.BytesIO(payload)).load()
    except SessionError:
        raise
    except Exception as exc:  # corrupt stream: UnpicklingError, EOFError, ValueError, ...
        raise LegacyDataError(f"not a readable pickle: {type(exc).__name__}: {exc}") from exc
    _check_plain(value)
    return value
