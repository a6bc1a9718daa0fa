"""Safe reading of flask-pg-session's pickled rows, for migrating them to pgsession-wsgi.

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
from collections.abc import Iterator
from typing import Any, Callable, NamedTuple

from markupsafe import Markup
from psycopg2 import sql

from .errors import SessionError

__all__ = [
    "LegacyDataError",
    "LegacyRow",
    "UnsafePickleError",
    "is_legacy_table",
    "read_legacy_rows",
    "restricted_loads",
]


class UnsafePickleError(SessionError):
    """A pickle asked for a global or type outside the allow-list; nothing of it was run."""

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


# (module, name) exactly as they appear in the pickle stream -> what to hand back.
# Python 2 spellings are mapped to these first (see find_class).
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("datetime", "datetime"): _dt.datetime,
    ("datetime", "date"): _dt.date,
    ("datetime", "time"): _dt.time,
    ("datetime", "timedelta"): _dt.timedelta,
    ("datetime", "timezone"): _dt.timezone,
    ("uuid", "UUID"): uuid.UUID,
    ("decimal", "Decimal"): decimal.Decimal,
    ("markupsafe", "Markup"): Markup,
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


def _type_name(obj: object) -> str:
    """``module.qualname`` of the object's type, as the error names it."""
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
                raise UnsafePickleError(_type_name(tz))
            continue
        if kind is uuid.UUID:
            number = getattr(obj, "int", None)
            if type(number) is not int or not 0 <= number < 1 << 128:
                raise LegacyDataError("a pickled UUID has no valid 128-bit value")
            continue
        if kind not in _CONTAINER_TYPES:
            raise UnsafePickleError(_type_name(obj))
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
    """Unpickle ``payload`` allowing only plain data types.

    Raises :class:`UnsafePickleError` (naming the refused ``module.name``) before any
    refused callable could run, and :class:`LegacyDataError` for bytes that are not a
    well-formed pickle or that nest tuples deep enough to crash the interpreter.
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


class LegacyRow(NamedTuple):
    """One live flask-pg-session row, decoded (``data``) or with the reason it was not.

    ``session_id`` is the id the cookie carries (the stored column minus ``key_prefix``).
    ``expiry`` is aware UTC, or ``None`` for a non-permanent session (flask-pg-session
    writes NULL then and serves the row until the browser drops its cookie).
    ``created`` is the row's ``created`` column as aware UTC, when present.
    """

    session_id: str
    data: dict[str, Any] | None
    expiry: _dt.datetime | None
    error: str | None
    created: _dt.datetime | None = None


def _as_utc(value: _dt.datetime | None) -> _dt.datetime | None:
    """flask-pg-session writes naive UTC ``timestamp``; make it aware (or normalise to UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=_dt.timezone.utc)
    return value.astimezone(_dt.timezone.utc)


def _decode(payload: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
    """Decode one ``data`` cell into (dict, None) or (None, reason)."""
    if payload is None:
        return None, "the row has no data (NULL)"
    try:
        value = restricted_loads(bytes(payload))
    except SessionError as exc:
        return None, str(exc)
    except Exception as exc:  # MemoryError and the like: this row is lost, not the others
        return None, f"the pickled data cannot be read ({type(exc).__name__}); not converted"
    if type(value) is not dict:
        return None, f"the pickled data is a {_type_name(value)}, not a dict; not converted"
    return value, None


def read_legacy_rows(
    conn: Any,
    table: str,
    schema: str = "public",
    *,
    key_prefix: str = "",
    batch_size: int = 500,
) -> Iterator[LegacyRow]:
    """Yield the live rows of a flask-pg-session table, ``batch_size`` rows per query.

    Live means ``expiry`` is NULL or later than the database's current UTC time, taken once
    at the start so the cut-off is the same for every batch. Batches are keyset-paginated on
    the primary key, so the table is never held in memory, no transaction or server-side
    cursor stays open between batches (works in autocommit and behind PgBouncer), and the
    caller may write on the same connection between rows. Only rows whose stored id starts
    with ``key_prefix`` (flask-pg-session's ``SESSION_KEY_PREFIX``) are read.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    query = sql.SQL(
        "SELECT session_id, data, expiry, created FROM {target}"
        " WHERE session_id > %(after)s"
        " AND left(session_id, char_length(%(prefix)s)) = %(prefix)s"
        " AND (expiry IS NULL OR expiry > %(cutoff)s)"
        " ORDER BY session_id LIMIT %(limit)s"
    ).format(target=target)
    with conn.cursor() as cur:
        # The column is "timestamp without time zone" holding UTC: compare in UTC, not in
        # the server's TimeZone (flask-pg-session's own `expiry < NOW()` gets that wrong).
        cur.execute("SELECT now() AT TIME ZONE 'UTC'")
        cutoff = cur.fetchone()[0]
    after = ""
    while True:
        with conn.cursor() as cur:
            params = {"after": after, "prefix": key_prefix, "cutoff": cutoff, "limit": batch_size}
            cur.execute(query, params)
            batch = cur.fetchall()
        for stored_id, payload, expiry, created in batch:
            data, error = _decode(payload)
            yield LegacyRow(
                session_id=stored_id[len(key_prefix) :],
                data=data,
                expiry=_as_utc(expiry),
                error=error,
                created=_as_utc(created),
            )
        if len(batch) < batch_size:
            return
        after = batch[-1][0]


def is_legacy_table(conn: Any, table: str, schema: str = "public") -> bool:
    """True if ``schema.table`` looks like flask-pg-session's table and not like ours.

    Requires ``session_id``, ``data bytea`` and ``expiry`` columns and no ``id bytea`` column
    (pgsession-wsgi's primary key), so the migration never reads our own table by mistake.
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname, format_type(a.atttypid, NULL)"
            " FROM pg_catalog.pg_attribute a"
            " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')"
            " AND a.attnum > 0 AND NOT a.attisdropped",
            (schema, table),
        )
        columns = dict(cur.fetchall())
    return (
        "session_id" in columns
        and columns.get("data") == "bytea"
        and "expiry" in columns
        and columns.get("id") != "bytea"
    )


# -- converting a flask-pg-session table --------------------------------------------------------

import hashlib as _hashlib  # noqa: E402  (appended section: kept apart from the readers above)
import re as _re  # noqa: E402
from dataclasses import dataclass as _dataclass  # noqa: E402

from .errors import ConfigurationError as _ConfigurationError  # noqa: E402


class NothingToMigrate(_ConfigurationError):
    """The table is missing or already a pgsession-wsgi table: there is nothing to convert."""


@_dataclass
class MigrationReport:
    """What :func:`migrate_flask_pg_session` did.

    ``refused`` holds ``(id_hash_prefix, reason)`` pairs: the first 12 hex digits of the SHA-256
    of the session id (never the id itself, which would be a usable cookie).
    ``skipped_empty`` counts live rows holding nothing but Flask's ``_permanent`` flag (never
    stored by pgsession-wsgi); ``other_prefix`` counts live rows under another
    ``SESSION_KEY_PREFIX``, left behind in the renamed table.
    """

    migrated: int
    refused: list[tuple[str, str]]
    renamed_to: str
    skipped_empty: int = 0
    other_prefix: int = 0


#: Suffix of the name the old table is kept under.
RENAMED_SUFFIX = "_flask_pg_session_old"
# The only ids flask-pg-session issues, str(uuid4()). It also stored sessions under any id a
# client sent (fixation): converting such a row would keep serving the attacker-chosen id.
_ISSUED_ID = _re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
#: The default ``max_size``: the same as :class:`SessionMiddleware`'s, so what is converted
#: can be saved again.
DEFAULT_MAX_SIZE = 256 * 1024
# What the size estimate counts per value, and the longest reason put in the report.
_NODE_BYTES = 2
_MAX_REASON = 200
# Encoded rows held for one INSERT at most (a batch of large rows is sent early).
_MAX_BATCH_CHARS = 16 * 1024 * 1024


def _renamed(table: str) -> str:
    suffix = RENAMED_SUFFIX.encode()
    head = table.encode("utf-8")[: 63 - len(suffix)].decode("utf-8", "ignore")
    return head + RENAMED_SUFFIX


def _estimate_exceeds(value: object, limit: int) -> bool:
    """True as soon as ``value`` is sure to encode to more than ``limit`` bytes.

    Shared references are counted once per use, as the JSON would copy them, but nothing is
    copied: a 100-byte pickle whose references expand to gigabytes is stopped after at most
    ``limit / 2`` values. Iterative, so depth costs no recursion. The count (2 bytes per value
    plus text, byte and digit lengths) never exceeds the real encoded size, so a row that fits
    is never refused here.
    """
    total = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bytes or kind is Markup:
            total += len(item)
        elif kind is int:
            bits = abs(item).bit_length()
            total += (bits - 1) * 30102 // 100000 if bits else 0  # digits - 1, rounded down
        elif kind is decimal.Decimal:
            total += len(item.as_tuple().digits)
        elif kind is dict:
            total += 2 * _NODE_BYTES * len(item)
            if total > limit:
                return True
            stack.extend(item)
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            total += _NODE_BYTES * len(item)
            if total > limit:
                return True
            stack.extend(item)
        if total > limit:
            return True
    return False


def _short(text: str) -> str:
    """One printable line of at most ``_MAX_REASON`` characters, safe to print to a terminal.

    Reasons quote pickled names and session keys, which are attacker-controlled text.
    """
    line = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text[: _MAX_REASON * 2])
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."


def _encode_row(data: dict[Any, Any], max_size: int) -> tuple[str | None, str | None]:
    """``(json, None)`` for a convertible session dict, ``(None, reason)`` otherwise.

    Never raises: whatever one row does (RecursionError, MemoryError, ...) refuses that row.
    """
    try:
        return _encode_row_or_raise(data, max_size)
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None, f"the data cannot be converted ({detail})"


def _encode_row_or_raise(data: dict[Any, Any], max_size: int) -> tuple[str | None, str | None]:
    from .codec import dumps, encode_value

    if _estimate_exceeds(data, max_size):
        return None, f"the data would encode to more than max_size ({max_size} bytes); not converted"
    encoded: dict[str, Any] = {}
    for key, value in data.items():
        if type(key) is not str:
            return None, f"a session key is a {type(key).__name__}, not a str"
        if "\x00" in key:
            return None, "a session key contains a NUL character"
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return None, "a session key contains a lone surrogate (not valid UTF-8)"
        try:
            encoded[key] = encode_value(value)
        except (TypeError, ValueError) as exc:
            return None, f"the value under key {key!r} cannot be stored: {exc}"
    text = dumps(encoded)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # jsonb (and the UTF-8 connection) cannot carry it
        return None, "the data holds a lone surrogate (not valid UTF-8)"
    if size > max_size:
        return None, f"the data encodes to {size} bytes, more than max_size ({max_size} bytes)"
    return text, None


def _columns(cur: Any, qualified: str) -> dict[str, str]:
    cur.execute(
        "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute"
        " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
        (qualified,),
    )
    return dict(cur.fetchall())


def migrate_flask_pg_session(
    dsn: str,
    table: str = "flask_sessions",
    schema: str = "public",
    *,
    key_prefix: str = "",
    lifetime: _dt.timedelta = _dt.timedelta(days=31),
    batch_size: int = 500,
    max_size: int = DEFAULT_MAX_SIZE,
) -> MigrationReport:
    """Convert a flask-pg-session table into a pgsession-wsgi table of the same name.

    In one transaction, under the advisory lock ``PostgresStore.create_table`` takes (so an app
    starting meanwhile waits and then finds the new table): the old table is renamed to
    ``<table>_flask_pg_session_old`` and kept, the new one is created, and every live row is
    copied, keyed by the SHA-256 of its session id so existing cookies keep working. Pickles
    are read with :func:`restricted_loads`; a row it refuses is reported, never executed.
    Rows with NULL expiry (non-permanent sessions) get ``now() + lifetime``. Each row is
    converted or refused on its own, with the reason in the report: an id flask-pg-session did
    not issue (not a uuid4), data that cannot be stored, or data whose JSON would exceed
    ``max_size`` bytes (judged before building it: a tiny pickle can expand enormously through
    shared references). Any other failure rolls everything back. Raises
    :class:`NothingToMigrate` when the table is missing or already ours.
    """
    import psycopg2

    from .dsn import connect_arguments
    from .errors import StoreUnavailable
    from .pool import _first_line
    from .session import META_KEYS
    from .store import PostgresStore, quote_identifier

    if lifetime.total_seconds() <= 0:
        raise _ConfigurationError(f"lifetime must be positive, not {lifetime!r}")
    if batch_size < 1:
        raise _ConfigurationError("batch_size must be at least 1")
    if max_size < 1:
        raise _ConfigurationError(f"max_size must be a positive number of bytes, not {max_size!r}")
    # Validates the names and gives the exact DDL and advisory lock the app itself uses.
    target = PostgresStore(dsn, table, schema, create_table=False, purge_interval=None)
    target.close()
    renamed = _renamed(table)
    qualified = f"{quote_identifier(schema, 'schema')}.{quote_identifier(table, 'table')}"
    old_qualified = f"{quote_identifier(schema, 'schema')}.{quote_identifier(renamed, 'table')}"
    try:
        # The DSN (and PGAPPNAME, PGCONNECT_TIMEOUT) win over these, as for the store.
        defaults = {"connect_timeout": 10, "application_name": "pgsession-wsgi migrate"}
        conn = psycopg2.connect(**connect_arguments(dsn, defaults=defaults, settings={})[0])
    except psycopg2.OperationalError as exc:
        raise StoreUnavailable(f"cannot connect to PostgreSQL ({_first_line(exc)})") from None
    report = MigrationReport(migrated=0, refused=[], renamed_to=old_qualified)
    try:
        with conn, conn.cursor() as cur:  # one transaction: commit at the end, or roll back
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (target._lock_key,))
            columns = _columns(cur, qualified)
            if not columns:
                raise NothingToMigrate(f"there is no table {qualified}: nothing to migrate")
            if columns.get("id") == "bytea" and columns.get("data") == "jsonb":
                raise NothingToMigrate(f"{qualified} is already a pgsession-wsgi table: nothing to migrate")
            if not is_legacy_table(conn, table, schema):
                raise _ConfigurationError(
                    f"{qualified} is not a flask-pg-session table (columns: "
                    f"{', '.join(sorted(columns))}); check --table and --schema"
                )
            if _columns(cur, old_qualified):
                raise _ConfigurationError(
                    f"cannot keep the old table as {old_qualified}: a table of that name already "
                    "exists; rename or drop it first"
                )
            _rename(cur, schema, table, renamed)
            cur.execute(target.ddl())
            _copy_rows(
                conn,
                cur,
                report,
                renamed,
                schema,
                key_prefix,
                lifetime,
                batch_size,
                target._qualified,
                META_KEYS,
                max_size,
            )
            if key_prefix:
                cur.execute(
                    f"SELECT count(*) FROM {old_qualified}"
                    " WHERE left(session_id, char_length(%(p)s)) <> %(p)s"
                    " AND (expiry IS NULL OR expiry > now() AT TIME ZONE 'UTC')",
                    {"p": key_prefix},
                )
                (count,) = cur.fetchone() or (0,)
                report.other_prefix = int(count)
    finally:
        conn.close()
    return report


def _rename(cur: Any, schema: str, table: str, renamed: str) -> None:
    """Rename the old table and its primary key, so the new table's key gets the plain name."""
    from .store import quote_identifier

    schema_part = quote_identifier(schema, "schema")
    qualified = f"{schema_part}.{quote_identifier(table, 'table')}"
    cur.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p'",
        (qualified,),
    )
    primary = cur.fetchone()
    cur.execute(f"ALTER TABLE {qualified} RENAME TO {quote_identifier(renamed, 'table')}")
    if primary is not None:
        new_key = renamed.encode("utf-8")[:58].decode("utf-8", "ignore") + "_pkey"
        cur.execute(
            f"ALTER TABLE {schema_part}.{quote_identifier(renamed, 'table')}"
            f" RENAME CONSTRAINT {quote_identifier(primary[0], 'constraint')}"
            f" TO {quote_identifier(new_key, 'constraint')}"
        )


def _copy_rows(
    conn: Any,
    cur: Any,
    report: MigrationReport,
    old_table: str,
    schema: str,
    key_prefix: str,
    lifetime: _dt.timedelta,
    batch_size: int,
    new_qualified: str,
    meta_keys: frozenset[str],
    max_size: int,
) -> None:
    import psycopg2

    insert = f"INSERT INTO {new_qualified} (id, data, created_at, accessed_at, expires_at) VALUES %s"
    template = "(%s, %s::jsonb, COALESCE(%s, now()), now(), COALESCE(%s, now() + %s))"
    pending: list[tuple[Any, ...]] = []
    pending_size = 0

    def flush() -> None:
        nonlocal pending_size
        if pending:
            _insert_batch(cur, insert, template, pending)
            report.migrated += len(pending)
            pending.clear()
            pending_size = 0

    def refuse(label: str, reason: str) -> None:
        report.refused.append((label, _short(reason)))

    for row in read_legacy_rows(conn, old_table, schema, key_prefix=key_prefix, batch_size=batch_size):
        digest = _hashlib.sha256(row.session_id.encode("utf-8")).digest()
        label = digest.hex()[:12]
        if not _ISSUED_ID.fullmatch(row.session_id):
            refuse(label, "the session id is not a uuid4, the only id flask-pg-session issues; not converted")
            continue
        if row.data is None:
            refuse(label, row.error or "unreadable data")
            continue
        if all(key in meta_keys for key in row.data):
            report.skipped_empty += 1
            continue
        data_json, reason = _encode_row(row.data, max_size)
        if data_json is None:
            refuse(label, reason or "cannot be stored")
            continue
        pending.append((psycopg2.Binary(digest), data_json, row.created, row.expiry, lifetime))
        pending_size += len(data_json)
        # Rows may be up to max_size each: bound the batch's memory too, not only its count.
        if len(pending) >= batch_size or pending_size >= _MAX_BATCH_CHARS:
            flush()
    flush()


def _insert_batch(cur: Any, insert: str, template: str, rows: list[tuple[Any, ...]]) -> None:
    import psycopg2.extras

    psycopg2.extras.execute_values(cur, insert, rows, template=template, page_size=len(rows))


__all__ += ["DEFAULT_MAX_SIZE", "MigrationReport", "NothingToMigrate", "migrate_flask_pg_session"]
