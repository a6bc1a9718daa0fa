"""The restricted unpickler for flask-pg-session rows: what it rebuilds, what it refuses.

The database test drives the real flask-pg-session 0.1.0 under Flask's test client, so the
rows read back are exactly what a deployed app left behind.
"""

from __future__ import annotations

import builtins
import datetime as dt
import decimal
import os
import pickle
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from markupsafe import Markup

from pgsession_wsgi.errors import SessionError
from pgsession_wsgi.flask_pg_session import (
    LegacyDataError,
    LegacyRow,
    UnsafePickleError,
    is_legacy_table,
    read_legacy_rows,
    restricted_loads,
)

PROTOCOLS = [2, 3, 4, 5]


def _every_allowed_type() -> dict[str, Any]:
    """A session-like dict holding each allowed type, nested in each allowed container."""
    utc_plus_2 = dt.timezone(dt.timedelta(hours=2), "CEST")
    leaf: dict[str, Any] = {
        "str": "héllo ✓",
        "empty_str": "",
        "bytes": b"\x00\xffraw",
        "empty_bytes": b"",
        "int": -(2**70),
        "float": 1.25,
        "true": True,
        "false": False,
        "none": None,
        "naive": dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
        "aware": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        "named_tz": dt.datetime(2024, 6, 1, 12, 0, tzinfo=utc_plus_2),
        "date": dt.date(1999, 12, 31),
        "time": dt.time(8, 30, 15, 250),
        "aware_time": dt.time(8, 30, tzinfo=dt.timezone(dt.timedelta(minutes=-90))),
        "timedelta": dt.timedelta(days=-3, seconds=7, microseconds=1),
        "timezone": dt.timezone.utc,
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "decimal": decimal.Decimal("-12.3400"),
        "markup": Markup("<b>hi</b>"),
        "empty_tuple": (),
        "empty_list": [],
        "empty_dict": {},
    }
    return {
        **leaf,
        "_flashes": [("message", Markup("<i>saved</i>")), ("error", "plain")],
        "nested": {"list": [leaf, (leaf, [1, (2, {"deep": leaf})])], "tuple": (leaf,)},
        7: "non-str key",
    }


def _assert_same(actual: Any, expected: Any) -> None:
    """Equal and of exactly the same type all the way down (Markup stays Markup, tuple tuple)."""
    assert type(actual) is type(expected), (actual, expected)
    assert actual == expected
    if isinstance(expected, dict):
        for key in expected:
            _assert_same(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        for got, want in zip(actual, expected):
            _assert_same(got, want)
    elif isinstance(expected, (dt.datetime, dt.time)):
        assert actual.tzinfo == expected.tzinfo
        assert actual.tzname() == expected.tzname()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_round_trips_every_allowed_type(protocol: int) -> None:
    value = _every_allowed_type()
    _assert_same(restricted_loads(pickle.dumps(value, protocol=protocol)), value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shared_references_are_fine(protocol: int) -> None:
    shared = [1, 2]
    value = restricted_loads(pickle.dumps({"a": shared, "b": shared}, protocol=protocol))
    assert value == {"a": [1, 2], "b": [1, 2]}


class Custom:
    """An application class a session might have held: refused, never imported."""

    def __init__(self) -> None:
        self.x = 1


class _Call:
    """Pickles as a call of ``func(*args)``: the shape of every pickle exploit."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _refused(payload: bytes) -> UnsafePickleError:
    with pytest.raises(UnsafePickleError) as info:
        restricted_loads(payload)
    assert isinstance(info.value, SessionError)
    assert "the row was not converted" in str(info.value)
    assert info.value.global_name in str(info.value)
    return info.value


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("value", "name"),
    [
        (_Call(os.system, "true"), f"{os.system.__module__}.system"),
        (_Call(subprocess.check_call, ["true"]), "subprocess.check_call"),
        (_Call(builtins.eval, "1+1"), "builtins.eval"),
        (Custom(), f"{__name__}.Custom"),
        ({1, 2}, "builtins.set"),
        (frozenset({1}), "builtins.frozenset"),
        (bytearray(b"x"), "builtins.bytearray"),
    ],
    ids=["os.system", "subprocess", "eval", "custom", "set", "frozenset", "bytearray"],
)
def test_refuses_non_data(protocol: int, value: Any, name: str) -> None:
    error = _refused(pickle.dumps({"nested": [value]}, protocol=protocol))
    assert error.global_name == name


@pytest.mark.parametrize("protocol", [p for p in PROTOCOLS if p >= 4])  # FROZENSET is protocol 4's
def test_a_dict_key_is_checked_as_a_value_is(protocol: int) -> None:
    """A frozenset (or a set) is refused as a key too (unpickle._check_plain mutant 65)."""
    error = _refused(pickle.dumps({"nested": {frozenset({1}): "x"}}, protocol=protocol))
    assert error.global_name == "builtins.frozenset"
    error = _refused(pickle.dumps({frozenset({2}): "at the top"}, protocol=protocol))
    assert error.global_name == "builtins.frozenset"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_refuses_tzinfo_other_than_fixed_offsets(protocol: int) -> None:
    import zoneinfo
    try:
        paris = zoneinfo.ZoneInfo("Europe/Paris")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone database")
    value = {"when": dt.datetime(2024, 1, 1, tzinfo=paris)}
    # ZoneInfo pickles as getattr(ZoneInfo, "_unpickle")(key, 1): getattr is refused first.
    name = _refused(pickle.dumps(value, protocol=protocol)).global_name
    assert name == "builtins.getattr" or name.startswith("zoneinfo.")


def test_refuses_os_system_by_its_portable_name() -> None:
    # A hand-written protocol 0 exploit naming os.system (not posix.system).
    error = _refused(b"cos\nsystem\n(S'true'\ntR.")
    assert error.global_name == "os.system"


def test_refuses_dotted_attribute_lookup_on_an_allowed_module() -> None:
    # Protocol 4 STACK_GLOBAL accepts dotted names; datetime.datetime.now is not a class.
    payload = b"\x80\x04\x8c\x08datetime\x8c\x0cdatetime.now\x93)R."
    assert _refused(payload).global_name == "datetime.datetime.now"


def test_refuses_codecs_encode_with_another_codec() -> None:
    payload = b"c_codecs\nencode\n(Vx\nVrot13\ntR."
    assert "_codecs.encode" in _refused(payload).global_name


def test_refuses_codecs_encode_without_a_codec() -> None:
    # _codecs.encode(text) alone encodes to UTF-8: not the latin-1 form protocol 2 writes.
    payload = b"c_codecs\nencode\n(Vx\ntR."
    assert _refused(payload).global_name == "_codecs.encode(str, 'utf-8')"


def test_a_refusal_says_what_was_refused_what_is_allowed_and_that_the_row_stays() -> None:
    assert str(_refused(b"cos\nsystem\n(S'true'\ntR.")) == (
        "refused to unpickle os.system: only plain data types (dict, list, tuple, str, bytes, int, "
        "float, bool, None, datetime types, UUID, Decimal, Markup) are allowed; the row was not converted"
    )


def test_refuses_bytes_with_arguments() -> None:
    # bytes(10**12) would try to allocate a terabyte.
    payload = b"c__builtin__\nbytes\n(I1000000000000\ntR."
    assert _refused(payload).global_name == "builtins.bytes(<arguments>)"


# Markup and Decimal are rebuilt from the str their pickles hold, and from nothing else: given
# bytes and a codec, Markup decodes them (the idna and punycode decoders are quadratic), and
# Decimal converts an int (quadratic in its size). The refusal names the call by the types of its
# arguments (and the names of keyword ones), never their values.
_MARKUP_FROM_OTHER_THAN_STR: dict[str, tuple[bytes, str]] = {
    "bytes, idna (REDUCE)": (
        pickle.dumps({"m": _Call(Markup, b"xn--" + b"a" * 50, "idna")}, protocol=4), "bytes, str"),
    "bytes, punycode (REDUCE)": (
        pickle.dumps({"m": _Call(Markup, b"abc-9999", "punycode")}, protocol=2), "bytes, str"),
    "str, encoding (REDUCE)": (pickle.dumps({"m": _Call(Markup, "abc", "utf-8")}, protocol=4), "str, str"),
    "bytes (REDUCE)": (pickle.dumps({"m": _Call(Markup, b"abc")}, protocol=4), "bytes"),
    "int (REDUCE)": (pickle.dumps({"m": _Call(Markup, 10**100)}, protocol=4), "int"),
    "list (REDUCE)": (pickle.dumps({"m": _Call(Markup, [1, [2, 3]])}, protocol=4), "list"),
    "Markup (REDUCE)": (pickle.dumps({"m": _Call(Markup, Markup("<b>"))}, protocol=4), "Markup"),
    # NEWOBJ, as pickle writes Markup, with bytes and a codec: Markup.__new__(Markup, b, "idna").
    "bytes, idna (NEWOBJ)": (
        b"\x80\x03cmarkupsafe\nMarkup\nC\x07xn--abcX\x04\x00\x00\x00idna\x86\x81.", "bytes, str"),
    # NEWOBJ_EX: Markup.__new__(Markup, b"xn--abc", encoding="idna").
    "bytes, encoding= (NEWOBJ_EX)": (
        b"\x80\x04\x8c\nmarkupsafe\x8c\x06Markup\x93C\x07xn--abc\x85}\x8c\x08encoding\x8c\x04idnas\x92.",
        "bytes, encoding=",
    ),
}


@pytest.mark.parametrize(
    ("payload", "kinds"), _MARKUP_FROM_OTHER_THAN_STR.values(), ids=list(_MARKUP_FROM_OTHER_THAN_STR)
)
def test_markup_is_built_from_a_str_only(payload: bytes, kinds: str) -> None:
    error = _refused(payload)
    assert error.global_name == f"markupsafe.Markup({kinds})"
    values = ("xn--", "idna", "punycode", "abc", "utf-8", "<b>", "[1")
    assert not [value for value in values if value in str(error)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_markup_from_a_str_still_loads(protocol: int) -> None:
    for payload in (
        pickle.dumps({"m": Markup("<i>saved</i>")}, protocol=protocol),  # NEWOBJ, as pickle writes it
        pickle.dumps({"m": _Call(Markup, "<i>saved</i>")}, protocol=protocol),  # REDUCE
        pickle.dumps({"m": _Call(Markup)}, protocol=protocol),  # Markup() is Markup("")
    ):
        value = restricted_loads(payload)
        assert type(value["m"]) is Markup
        assert value["m"] in ("<i>saved</i>", "")


@pytest.mark.parametrize(
    ("args", "kinds"),
    [((10**50,), "int"), ((-7,), "int"), ((True,), "bool"), (((0, (1, 2), -1),), "tuple"), ((1.5,), "float"),
     (("1", None), "str, NoneType"), ((b"1",), "bytes")],
    ids=["big-int", "int", "bool", "tuple", "float", "context", "bytes"],
)
def test_decimal_is_built_from_a_str_only(args: tuple[Any, ...], kinds: str) -> None:
    payload = pickle.dumps({"d": _Call(decimal.Decimal, *args)}, protocol=4)
    error = _refused(payload)
    assert error.global_name == f"decimal.Decimal({kinds})"
    assert "10000000000" not in str(error) and "1.5" not in str(error)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_decimal_from_a_str_still_loads(protocol: int) -> None:
    value = {"d": decimal.Decimal("-12.3400"), "inf": decimal.Decimal("-Infinity")}
    _assert_same(restricted_loads(pickle.dumps(value, protocol=protocol)), value)


def test_refuses_persistent_ids() -> None:
    assert _refused(b"\x80\x02X\x01\x00\x00\x00xQ.").global_name == "persistent_load"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_malicious_pickle_does_not_run(protocol: int, tmp_path: Path) -> None:
    by_shell = tmp_path / "by_shell"
    by_open = tmp_path / "by_open"
    payload = pickle.dumps(
        {"a": _Call(os.system, f"touch {by_shell}"), "b": _Call(builtins.open, str(by_open), "w")},
        protocol=protocol,
    )
    _refused(payload)
    assert not by_shell.exists()
    assert not by_open.exists()
    # The payload is a real exploit: the unrestricted loader does run it.
    pickle.loads(payload)  # noqa: S301
    assert by_shell.exists()
    assert by_open.exists()


def test_malicious_global_is_refused_before_the_module_is_imported() -> None:
    name = "pgsession_never_imported_" + uuid.uuid4().hex
    error = _refused(f"c{name}\nboom\n(tR.".encode())
    assert error.global_name == f"{name}.boom"


@pytest.mark.parametrize("payload", [b"", b"not a pickle", pickle.dumps({"a": 1})[:-3]])
def test_corrupt_payload_is_a_legacy_data_error(payload: bytes) -> None:
    with pytest.raises(LegacyDataError):
        restricted_loads(payload)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cycles_are_refused(protocol: int) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(LegacyDataError, match="cycle"):
        restricted_loads(pickle.dumps({"loop": loop}, protocol=protocol))


_SHARED = [1]
# What the check meets first, before a set (protocol 4 builds a set with no global to refuse).
_MET_FIRST = {
    "a scalar": 1,
    "a datetime": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    "a UUID": uuid.UUID(int=7),
    "a list seen before": _SHARED,
}


@pytest.mark.parametrize("first", list(_MET_FIRST.values()), ids=list(_MET_FIRST))
def test_a_value_after_one_the_check_lets_through_is_checked_too(first: Any) -> None:
    """The check walks the data from the last value back: whatever it meets first and lets
    through, it goes on to the set (unpickle._check_plain mutants 10, 14, 23, 47, 58)."""
    value = {"unsafe": {1, 2}, "shared": _SHARED, "first": first}
    assert _refused(pickle.dumps(value, protocol=4)).global_name == "builtins.set"


def _forged_uuid(number: bytes) -> bytes:
    """``{"u": UUID}`` made by NEWOBJ, then BUILD ``{"int": <number's opcodes>}`` (or no BUILD)."""
    state = b"}X\x03\x00\x00\x00int" + number + b"sb" if number else b""
    return b"\x80\x02}X\x01\x00\x00\x00ucuuid\nUUID\n)\x81" + state + b"s."


@pytest.mark.parametrize(
    "number",
    [b"", b"J\xff\xff\xff\xff", b"\x8a\x11" + (1 << 128).to_bytes(17, "little", signed=True)],
    ids=["no int at all", "-1", "2**128"],
)
def test_a_uuid_without_a_128_bit_value_is_refused_with_why(number: bytes) -> None:
    """(unpickle._check_plain mutants 30, 39, 41, 42, 44, 46)"""
    with pytest.raises(LegacyDataError) as refused:
        restricted_loads(_forged_uuid(number))
    assert str(refused.value) == "a pickled UUID has no valid 128-bit value"


@pytest.mark.parametrize("number", [0, (1 << 128) - 1], ids=["0", "2**128 - 1"])
def test_a_uuid_at_either_end_of_128_bits_loads(number: int) -> None:
    """(unpickle._check_plain mutants 37, 38)"""
    for protocol in (2, 4):
        loaded = restricted_loads(pickle.dumps({"u": uuid.UUID(int=number)}, protocol=protocol))
        assert loaded == {"u": uuid.UUID(int=number)}


def test_a_cycle_is_refused_with_why() -> None:
    """(unpickle._check_plain mutant 54)"""
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(LegacyDataError) as refused:
        restricted_loads(pickle.dumps({"loop": loop}, protocol=4))
    assert str(refused.value) == "the pickled data refers to itself (a cycle)"


def test_uuid_with_forged_state_is_refused() -> None:
    # NEWOBJ uuid.UUID then BUILD {"int": "x"}: UUID.__setstate__ accepts any value.
    payload = b"\x80\x02cuuid\nUUID\n)\x81}X\x03\x00\x00\x00intX\x01\x00\x00\x00xsb."
    with pytest.raises(LegacyDataError, match="UUID"):
        restricted_loads(payload)


def _tuple_chain_through_the_memo(levels: int) -> bytes:
    """``{((...((),)...),): 1}`` nested ``levels`` deep, each level fetched back from the memo.

    Every tuple is popped off the stack and read again with LONG_BINGET, so the depth check
    has to follow the memo to see it.
    """
    body = b"\x80\x04}" + b")\x94"  # {}, () memoized as 0
    for index in range(levels):
        body += b"0j" + struct.pack("<I", index) + b"\x85\x94"  # POP, GET index, TUPLE1, MEMOIZE
    return body + b"K\x01s."  # the chain as a key: 1


def _depth(value: Any) -> int:
    depth = 0
    while value:
        value, depth = value[0], depth + 1
    return depth


_DEEP_TUPLES: dict[str, Callable[[int], bytes]] = {
    "memo chain as a key": _tuple_chain_through_the_memo,
    "TUPLE1 as a value": lambda levels: b"\x80\x04}K\x01)" + b"\x85" * levels + b"s.",
    "MARK and TUPLE as a value": lambda levels: (
        b"\x80\x02}K\x01" + b"(" * levels + b")" + b"t" * levels + b"s."
    ),
}


@pytest.mark.parametrize("build", _DEEP_TUPLES.values(), ids=_DEEP_TUPLES)
def test_tuples_nested_too_deep_are_refused_without_unpickling(build: Callable[[int], bytes]) -> None:
    value = restricted_loads(build(900))  # the same shape, shallower: a valid pickle
    (key, item), *_ = value.items()
    assert _depth(key if isinstance(key, tuple) else item) == 900
    with pytest.raises(LegacyDataError, match="nests tuples more than"):
        restricted_loads(build(5000))


@pytest.mark.parametrize("protocol", [0, 1, *PROTOCOLS])
def test_many_shallow_tuples_are_fine(protocol: int) -> None:
    # Over the byte count that triggers the opcode replay: every protocol's tuple, mark and
    # memo opcodes go through it and must not be mistaken for nesting.
    shared = ("s", 1)
    value = {
        "pairs": [(i, str(i), ()) for i in range(1500)],
        "shared": [shared, (shared, shared), shared],
        "nested": ((((("t" * 3000,),),),),),
        ("key", (1, 2)): {"a": [(), (None,)]},
    }
    assert restricted_loads(pickle.dumps(value, protocol=protocol)) == value


def test_a_tuple_key_deep_enough_to_crash_python_is_refused() -> None:
    # Unpickling hashes dict keys, and hashing a tuple recurses in C without a limit: two
    # million levels are a segmentation fault, so this runs in a child process.
    script = (
        "import sys\n"
        "from pgsession_wsgi.flask_pg_session import LegacyDataError, restricted_loads\n"
        "payload = b'\\x80\\x04})' + b'\\x85' * 2_000_000 + b'K\\x01s.'\n"
        "try:\n"
        "    restricted_loads(payload)\n"
        "except LegacyDataError as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "refused: the pickled data nests tuples more than" in done.stdout


# -- reading a real flask-pg-session table ---------------------------------------------------


@pytest.fixture
def pg_conn(pg_dsn: str) -> Iterator[Any]:
    conn = psycopg2.connect(pg_dsn, connect_timeout=3)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def schema(pg_conn: Any) -> Iterator[str]:
    """A throwaway schema; flask-pg-session creates it (CREATE SCHEMA IF NOT EXISTS) itself."""
    name = f"t_{uuid.uuid4().hex}"
    yield name
    with pg_conn.cursor() as cur:
        cur.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_reads_rows_written_by_real_flask_pg_session(pg_conn: Any, schema: str, pg_dsn: str) -> None:
    import flask
    import flask_pg_session
    import itsdangerous

    app = flask.Flask(__name__)
    app.config.update(
        SECRET_KEY="legacy-secret",
        SQLALCHEMY_DATABASE_URI=pg_dsn,
        SESSION_PG_SCHEMA=schema,
        SESSION_KEY_PREFIX="app:",
        SESSION_USE_SIGNER=True,
        SESSION_AUTODELETE_EXPIRED=False,
    )
    extension = flask_pg_session.FlaskPgSession(app)
    stored = _every_allowed_type()
    del stored[7]  # Flask's session is str-keyed; non-str keys are covered above.

    @app.route("/store")
    def store() -> str:
        flask.session.update(stored)
        return "ok"

    @app.route("/browser-session")
    def browser_session() -> str:
        flask.session.permanent = False
        flask.session["kind"] = "until the browser closes"
        return "ok"

    def cookie_of(client: Any, path: str) -> str:
        response = client.get(path)
        assert response.status_code == 200
        signed = client.get_cookie("session").value
        return str(
            itsdangerous.Signer("legacy-secret", salt="flask-session", key_derivation="hmac")
            .unsign(signed)
            .decode()
        )

    try:
        live_ids = [cookie_of(app.test_client(), "/store") for _ in range(3)]
        browser_id = cookie_of(app.test_client(), "/browser-session")
        app.config["PERMANENT_SESSION_LIFETIME"] = dt.timedelta(seconds=-60)
        expired_id = cookie_of(app.test_client(), "/store")
    finally:
        extension.pool.closeall()

    table = "flask_sessions"
    with pg_conn.cursor() as cur:
        target = f'"{schema}".{table}'
        cur.execute(f"SELECT count(*) FROM {target} WHERE session_id = %s", ("app:" + expired_id,))
        assert cur.fetchone()[0] == 1  # written, but expired
        # Rows flask-pg-session would not write itself: an exploit, a non-dict, other prefix.
        evil = pickle.dumps({"x": _Call(os.system, "true")}, protocol=4)
        cur.execute(
            f"INSERT INTO {target} (session_id, data, expiry) VALUES"
            " ('app:evil', %s, now() AT TIME ZONE 'UTC' + interval '1 day'),"
            " ('app:list', %s, now() AT TIME ZONE 'UTC' + interval '1 day'),"
            " ('other:x', %s, now() AT TIME ZONE 'UTC' + interval '1 day')",
            (evil, pickle.dumps([1]), pickle.dumps({"a": 1})),
        )

    assert is_legacy_table(pg_conn, table, schema)
    rows = {
        row.session_id: row
        for row in read_legacy_rows(pg_conn, table, schema, key_prefix="app:", batch_size=2)
    }
    assert set(rows) == {*live_ids, browser_id, "evil", "list"}

    before = dt.datetime.now(dt.timezone.utc)
    for session_id in live_ids:
        row = rows[session_id]
        assert isinstance(row, LegacyRow)
        assert row.error is None
        expected = dict(stored, _permanent=True)  # Flask's SessionMixin keeps this key
        _assert_same(row.data, expected)
        assert row.expiry is not None and row.expiry.tzinfo is dt.timezone.utc
        assert dt.timedelta(days=30) < row.expiry - before <= dt.timedelta(days=31)
        assert row.created is not None and abs(row.created - before) < dt.timedelta(minutes=5)

    browser = rows[browser_id]
    assert browser.data == {"kind": "until the browser closes", "_permanent": False}
    assert browser.expiry is None

    assert rows["evil"].data is None
    assert "posix.system" in (rows["evil"].error or "") or "os.system" in (rows["evil"].error or "")
    assert rows["list"].data is None and "not a dict" in (rows["list"].error or "")

    everything = list(read_legacy_rows(pg_conn, table, schema))
    assert {row.session_id for row in everything} == {
        *("app:" + i for i in live_ids),
        "app:" + browser_id,
        "app:evil",
        "app:list",
        "other:x",
    }


def test_is_legacy_table_tells_tables_apart(pg_conn: Any, schema: str) -> None:
    with pg_conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
        cur.execute(
            f'CREATE TABLE "{schema}".legacy (session_id varchar(255) PRIMARY KEY,'
            " created timestamp, data bytea, expiry timestamp)"
        )
        cur.execute(
            f'CREATE TABLE "{schema}".ours (id bytea PRIMARY KEY, session_id text,'
            " data bytea, expiry timestamp)"
        )
        cur.execute(f'CREATE TABLE "{schema}".jsonish (session_id text, data jsonb, expiry date)')
    assert is_legacy_table(pg_conn, "legacy", schema)
    assert not is_legacy_table(pg_conn, "ours", schema)
    assert not is_legacy_table(pg_conn, "jsonish", schema)
    assert not is_legacy_table(pg_conn, "missing", schema)
    assert not is_legacy_table(pg_conn, "legacy", "no_such_schema_" + uuid.uuid4().hex)


def test_read_legacy_rows_reads_naive_times_as_utc_whatever_the_local_zone(
    pg_conn: Any, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flask-pg-session's naive ``expiry`` and ``created`` are UTC, not the process's local time
    (rows._as_utc mutant 2, which made them aware through astimezone, i.e. as local time); a
    batch below one is refused with its message (read_legacy_rows mutants 4-6)."""
    written = dt.datetime(2100, 1, 2, 3, 4, 5)
    with pg_conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
        cur.execute(
            f'CREATE TABLE "{schema}".legacy (session_id varchar(255) PRIMARY KEY,'
            " created timestamp, data bytea, expiry timestamp)"
        )
        cur.execute(f'INSERT INTO "{schema}".legacy VALUES (%s, %s, %s, %s)',
                    ("s", written, pickle.dumps({"n": 1}), written))
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    try:
        [row] = read_legacy_rows(pg_conn, "legacy", schema)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert row.expiry == row.created == written.replace(tzinfo=dt.timezone.utc)
    with pytest.raises(ValueError) as refused:
        list(read_legacy_rows(pg_conn, "legacy", schema, batch_size=0))
    assert str(refused.value) == "batch_size must be at least 1"


@pytest.mark.parametrize("build", _DEEP_TUPLES.values(), ids=_DEEP_TUPLES)
def test_tuples_nested_exactly_the_limit_deep_are_read_one_more_is_refused(
    build: Callable[[int], bytes],
) -> None:
    """1,000 nested tuples, the empty one inside counted, are read; 1,001 are refused
    (unpickle._tuple_of mutants 9, 10)."""
    value = restricted_loads(build(999))
    (key, item), *_ = value.items()
    assert _depth(key if isinstance(key, tuple) else item) == 999  # and the empty tuple inside
    with pytest.raises(LegacyDataError) as refused:
        restricted_loads(build(1000))
    assert str(refused.value) == "the pickled data nests tuples more than 1000 deep; not converted"


@pytest.mark.parametrize("inner", [b"X\x01\x00\x00\x00s", b"K\x05"], ids=["str", "int"])
def test_a_str_or_int_inside_the_deepest_tuple_adds_no_depth(inner: bytes) -> None:
    """1,000 tuples around a str or an int are read, 1,001 refused: only tuples count towards
    the depth (unpickle._pushed mutants 2, 13)."""

    def build(levels: int) -> bytes:
        return b"\x80\x04}K\x01" + inner + b"\x85" * levels + b"s."

    value, depth = restricted_loads(build(1000))[1], 0
    while isinstance(value, tuple):
        value, depth = value[0], depth + 1
    assert (depth, value) == (1000, "s" if inner.startswith(b"X") else 5)
    with pytest.raises(LegacyDataError) as refused:
        restricted_loads(build(1001))
    assert str(refused.value) == "the pickled data nests tuples more than 1000 deep; not converted"


def test_a_table_altered_to_timestamptz_reads_its_times_in_utc(pg_conn: Any, schema: str) -> None:
    """flask-pg-session writes naive UTC; a table its app altered to timestamptz hands back aware
    times in the connection's zone, which are turned to UTC (rows._as_utc mutant 4)."""
    target = f'"{schema}".flask_sessions'
    with pg_conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
        cur.execute(
            f"CREATE TABLE {target} (session_id varchar(255) PRIMARY KEY, created timestamptz"
            " DEFAULT now(), data bytea, expiry timestamptz)"
        )
        cur.execute(
            f"INSERT INTO {target} (session_id, data, expiry) VALUES (%s, %s, now() + interval '1 day')",
            ("4b4e5a1c-1d2e-4f3a-8b9c-0d1e2f3a4b5c", pickle.dumps({"a": 1})),
        )
        cur.execute("SET TimeZone = 'America/New_York'")
    assert is_legacy_table(pg_conn, "flask_sessions", schema)
    (row,) = read_legacy_rows(pg_conn, "flask_sessions", schema)
    before = dt.datetime.now(dt.timezone.utc)
    assert row.data == {"a": 1}
    assert row.expiry is not None and row.expiry.tzinfo is dt.timezone.utc
    assert row.created is not None and row.created.tzinfo is dt.timezone.utc
    assert dt.timedelta(hours=23) < row.expiry - before <= dt.timedelta(days=1)
