"""The DSN's parts without a server: libpq's ``options`` as the server reads them, and the connect
arguments built from a DSN, the store's defaults and settings, and libpq's PG* variables.

The same rules, through a real store and connection, are in tests/integration/test_store_dsn.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback

import pytest

import pgsession_wsgi
from pgsession_wsgi.dsn import (
    connect_arguments,
    hide_password,
    lent_settings,
    normalize_dsn,
    parse_options,
    store_connect_arguments,
)
from pgsession_wsgi.errors import ConfigurationError
from pgsession_wsgi.store import normalize_dsn as normalize_dsn_from_store

LIBPQ_VARIABLES = ("PGAPPNAME", "PGCONNECT_TIMEOUT", "PGOPTIONS")


@pytest.fixture(autouse=True)
def _no_libpq_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own PGAPPNAME or PGOPTIONS must not decide these tests."""
    for name in LIBPQ_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("-c statement_timeout=10s", {"statement_timeout": "10s"}),
        ("-cstatement_timeout=10s", {"statement_timeout": "10s"}),
        ("--statement_timeout=10s", {"statement_timeout": "10s"}),
        ("--statement-timeout=10s", {"statement_timeout": "10s"}),
        ("-c Statement_Timeout=10s", {"statement_timeout": "10s"}),
        ("  -c  a=1\t-cb=2\n--c=3  ", {"a": "1", "b": "2", "c": "3"}),
        (r"-c search_path=a\ b,c", {"search_path": "a b,c"}),
        (r"-c x=back\\slash", {"x": "back\\slash"}),
        ("-c x='quoted' -c y=it's", {"x": "'quoted'", "y": "it's"}),  # the server has no quotes
        ("-c x=#not-a-comment", {"x": "#not-a-comment"}),
        ("-c x=1 -c x=2", {"x": "2"}),
        ("-c x=", {"x": ""}),
        ("-B 100 -e -F -c x=1", {"x": "1"}),
        ("-c noequals -c", {}),
        ("--", {}),
        ("-c x=1\\", {"x": "1"}),  # a lone trailing backslash is dropped, as by the server
        ("-c x=a\\\\", {"x": "a\\"}),  # an escaped one is kept
        ("-c x=a\\\\\\", {"x": "a\\"}),  # an escaped one and a lone one
        ("-c search_path=XYZ", {"search_path": "XYZ"}),  # no letter is a quote, comment or blank
        ("-c x=a=b", {"x": "a=b"}),
        ("", {}),
    ],
)
def test_parse_options(options: str, expected: dict[str, str]) -> None:
    assert parse_options(options) == expected


DEFAULTS = {"application_name": "ours", "connect_timeout": 5, "keepalives_idle": 10}
SETTINGS = {"statement_timeout": "5000", "synchronous_commit": "off"}


def test_connect_arguments_fill_in_only_where_the_user_is_silent() -> None:
    kwargs, owned = connect_arguments(
        "host=db application_name=shop options='-c synchronous_commit=on -c work_mem=4MB'",
        defaults=DEFAULTS,
        settings=SETTINGS,
        environ={"PGCONNECT_TIMEOUT": "9"},
    )
    assert kwargs == {
        "dsn": "host=db application_name=shop options='-c synchronous_commit=on -c work_mem=4MB'",
        "keepalives_idle": 10,
        "options": "-c statement_timeout=5000 -c synchronous_commit=on -c work_mem=4MB",
    }
    assert owned == {"statement_timeout": "5000"}


def test_connect_arguments_merge_pgoptions_and_treat_empty_variables_as_unset() -> None:
    kwargs, owned = connect_arguments(
        "postgresql+psycopg2://db/x",
        defaults=DEFAULTS,
        settings={"search_path": "a b"},
        environ={"PGOPTIONS": "-c work_mem=4MB", "PGAPPNAME": ""},
    )
    assert kwargs == {
        "dsn": "postgresql://db/x",
        "application_name": "ours",
        "connect_timeout": 5,
        "keepalives_idle": 10,
        "options": r"-c search_path=a\ b -c work_mem=4MB",
    }
    assert owned == {"search_path": "a b"}
    assert parse_options(kwargs["options"]) == {"search_path": "a b", "work_mem": "4MB"}


def test_connect_arguments_pass_no_options_when_the_user_set_every_setting() -> None:
    kwargs, owned = connect_arguments(
        "host=db",
        defaults={},
        settings=SETTINGS,
        environ={"PGOPTIONS": "--statement-timeout=1s -c synchronous_commit=on"},
    )
    assert kwargs == {"dsn": "host=db"}  # libpq reads PGOPTIONS itself
    assert owned == {}


def test_bad_dsns_are_configuration_errors_without_the_password() -> None:
    with pytest.raises(ConfigurationError, match="cannot be parsed") as caught:
        connect_arguments("host=db password=s3cret 'unterminated", defaults={}, settings={})
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="needs PostgreSQL"):
        connect_arguments("mysql://u:s3cret@db/x", defaults={}, settings={})


def test_normalize_dsn_is_still_importable_from_the_store() -> None:
    assert normalize_dsn_from_store("postgres+psycopg2://db/x") == "postgres://db/x"


# -- a DSN's password is in no message, nor in the traceback's chain ------------------------------

PASSWORD = "Zq8-dsn-Secret"


def everything_printed(exc: BaseException) -> str:
    """What a log or a crash would show: the traceback with its __cause__/__context__ chain, the repr."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) + repr(exc)


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://u:{PASSWORD}%zz@h/db",  # libpq: invalid percent-encoded token: "<password>%zz"
        f"postgresql://u:{PASSWORD}@[::1/db",  # libpq quotes the whole URI
        f"postgresql://u:{PASSWORD}@h/db?bogus=1",
        f"host=h password={PASSWORD} 'unterminated",
        f"host=h password='{PASSWORD}",
        f"host=h password={PASSWORD} = =",
    ],
)
def test_an_unparseable_dsn_is_refused_without_its_password(dsn: str) -> None:
    for build in (
        normalize_dsn,
        lambda dsn: connect_arguments(dsn, defaults={}, settings={}),
        lambda dsn: store_connect_arguments(
            dsn, connect_timeout=5, statement_timeout=5, synchronous_commit=True
        ),
    ):
        with pytest.raises(ConfigurationError) as caught:
            build(dsn)
        assert str(caught.value).startswith("the DSN cannot be parsed: use postgresql://")
        assert PASSWORD not in everything_printed(caught.value)


@pytest.mark.parametrize(
    ("dsn", "advice"),
    [
        # Undecodable bytes from the command line or the environment arrive as lone surrogates.
        (f"postgresql://u:{PASSWORD}\udcff@h/db", "UTF-8"),
        (f"host=h user=\udcff password={PASSWORD}", "UTF-8"),
        (f"host=h password={PASSWORD}\x00 port=1", "NUL"),  # libpq would read up to the NUL only
        # An unencoded '/' ends the user:password part early: libpq reads "u:<first half>" as
        # host:port and quotes the "port", i.e. the password's first half, when connecting.
        (f"postgresql://u:{PASSWORD}/more@h/db", "%2F"),
        (f"postgresql://u:{PASSWORD}/more@h1,h2:5433/db", "%2F"),
        ("host=h port=5432x", "port"),
        # An unencoded '@': the host becomes "<second half>@h", quoted by a failed name lookup.
        (f"postgresql://u:first@{PASSWORD}@127.0.0.1:1/db", "%40"),
        (f"host=/run/pg,{PASSWORD}@h", "%40"),  # each host of a list is checked
    ],
)
def test_a_dsn_libpq_would_misread_is_refused_without_its_password(dsn: str, advice: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        normalize_dsn(dsn)
    assert advice in str(caught.value)
    assert PASSWORD not in everything_printed(caught.value)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:p%2Fw%40d%3Ax@h:5432/db",
        "postgresql://u:pa?ss#@h/db",  # libpq ends the password at '@' only
        "postgresql://h1:5432,h2/db",
        "postgresql://h1,h2:5433/db",
        "postgresql://[::1]:5432/db",
        "postgresql://h:+5432/db",
        "host=a,b port=1,",
        "host=h port=' 5432 '",
        "host=/run/user@1000/pg port=5432",  # a socket directory may hold '@'
        "host=@abstract",  # an abstract Unix socket (PostgreSQL 14+)
        "host=h,@abstract",
        "host=/run/pg,/run/user@1000/pg",
        "dbname=x",
    ],
)
def test_unusual_but_valid_dsns_are_accepted(dsn: str) -> None:
    assert normalize_dsn(dsn) == dsn


# -- each refusal's message, as the user reads it ---------------------------------------------------

URL_ADVICE = "postgresql://user:password@host:5432/dbname"
NEEDS_POSTGRESQL = f"pgsession-wsgi needs PostgreSQL: {URL_ADVICE}"


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("", "the DSN is empty: pass a PostgreSQL URL such as postgresql://user@host/db"),
        (" \t", "the DSN is empty: pass a PostgreSQL URL such as postgresql://user@host/db"),
        (None, "the DSN is empty: pass a PostgreSQL URL such as postgresql://user@host/db"),
        (
            f"postgresql://u:{PASSWORD}\udcff@h/db",
            "the DSN holds bytes that are not valid UTF-8 (undecodable bytes from the command line or "
            "the environment): write it in UTF-8, percent-encoding other bytes in a URL (%FF)",
        ),
        (
            f"host=h password={PASSWORD}\x00",
            "the DSN holds a NUL character, at which libpq would silently cut it: remove it",
        ),
        (f"mysql://u:{PASSWORD}@h/x", f"the DSN is a mysql:// URL; {NEEDS_POSTGRESQL}"),
        # A scheme in capitals is still another database's URL, not something to parse.
        (f"MySQL://u:{PASSWORD}@h/x", f"the DSN is a MySQL:// URL; {NEEDS_POSTGRESQL}"),
        (
            f"host=h password={PASSWORD} 'unterminated",
            f"the DSN cannot be parsed: use {URL_ADVICE} or 'host=... dbname=... user=...'",
        ),
        (
            f"postgresql://u:{PASSWORD}/more@h/db",
            "the DSN's port is not a number: give one such as 5432; in a URL, percent-encode a '/' "
            "in the user name or password as %2F (postgresql://user:pa%2Fss@host:5432/dbname)",
        ),
        (
            f"postgresql://u:first@{PASSWORD}@h/db",
            "the DSN's host holds an '@': in a URL, percent-encode an '@' in the user name or "
            "password as %40 (postgresql://user:pa%40ss@host:5432/dbname)",
        ),
    ],
)
def test_each_refusal_says_what_is_wrong_and_how_to_write_it(dsn: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        normalize_dsn(dsn)
    assert str(caught.value) == message
    assert PASSWORD not in everything_printed(caught.value)


# -- connect arguments: the store's own and libpq's environment -----------------------------------


def test_connect_arguments_without_user_options_send_all_settings() -> None:
    kwargs, owned = connect_arguments("host=db", defaults={}, settings=SETTINGS, environ={})
    assert kwargs == {"dsn": "host=db", "options": "-c statement_timeout=5000 -c synchronous_commit=off"}
    assert owned == SETTINGS


def test_connect_arguments_read_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGAPPNAME", "mine")
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "")
    kwargs, owned = connect_arguments("host=db", defaults=DEFAULTS, settings={})
    assert kwargs == {"dsn": "host=db", "connect_timeout": 5, "keepalives_idle": 10}
    assert owned == {}


@pytest.mark.parametrize("defaults", [{"dsn": "host=other"}, {"options": "-c x=1"}])
def test_connect_arguments_take_neither_dsn_nor_options_as_defaults(defaults: dict[str, str]) -> None:
    with pytest.raises(ValueError) as caught:
        connect_arguments("host=db", defaults=defaults, settings={}, environ={})
    assert str(caught.value) == (
        "defaults cannot hold dsn or options: pass the DSN itself and options as settings"
    )


STORE_DEFAULTS = {
    "application_name": "pgsession-wsgi",
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


def test_the_stores_connect_arguments() -> None:
    kwargs, owned = store_connect_arguments(
        "host=db", connect_timeout=0.5, statement_timeout=None, synchronous_commit=True
    )
    # libpq takes whole seconds and reads 1 as 2; no statement timeout is 0, the server's "none".
    assert kwargs == {
        "dsn": "host=db", "connect_timeout": 2, **STORE_DEFAULTS, "options": "-c statement_timeout=0"
    }
    assert owned == {"statement_timeout": "0"}

    kwargs, owned = store_connect_arguments(
        "host=db", connect_timeout=7.2, statement_timeout=2.5, synchronous_commit=False
    )
    assert kwargs == {
        "dsn": "host=db",
        "connect_timeout": 8,
        **STORE_DEFAULTS,
        "options": "-c statement_timeout=2500 -c synchronous_commit=off",
    }
    assert owned == {"statement_timeout": "2500", "synchronous_commit": "off"}


@pytest.mark.parametrize(
    ("statement_timeout", "synchronous_commit", "expected"),
    [
        (None, True, {}),
        (0, True, {"statement_timeout": "0"}),
        (2.5, True, {"statement_timeout": "2500"}),
        (None, False, {"synchronous_commit": "off"}),
        (0.25, False, {"statement_timeout": "250", "synchronous_commit": "off"}),
    ],
)
def test_lent_settings(
    statement_timeout: float | None, synchronous_commit: bool, expected: dict[str, str]
) -> None:
    assert lent_settings(statement_timeout, synchronous_commit) == expected


# -- hide_password: the server's messages without the DSN's password ------------------------------


@pytest.mark.parametrize(
    ("text", "connect_kwargs", "expected"),
    [
        # The password as a keyword argument, the DSN naming none.
        (
            f'password authentication failed for user "{PASSWORD}"',
            {"dsn": "host=h user=u", "password": PASSWORD},
            'password authentication failed for user "********"',
        ),
        # The password in the DSN only, URL or key=value; a bare occurrence too.
        (
            f'database "{PASSWORD}" does not exist; role {PASSWORD} neither',
            {"dsn": f"postgresql://u:{PASSWORD}@h/db"},
            'database "********" does not exist; role ******** neither',
        ),
        (
            f"role {PASSWORD} does not exist",
            {"dsn": f"host=h password={PASSWORD}"},
            "role ******** does not exist",
        ),
        # Four characters are hidden bare; three only when quoted, for they may be a word of the message.
        ('role "abcd" is not abcd', {"password": "abcd"}, 'role "********" is not ********'),
        ('role "not" is not allowed', {"password": "not"}, 'role "********" is not allowed'),
        # Nothing to hide.
        ("connection refused", {"dsn": "host=h user=u"}, "connection refused"),
        ("connection refused", {"dsn": "host=h 'unparseable"}, "connection refused"),
        ("connection refused", {}, "connection refused"),
    ],
)
def test_hide_password(text: str, connect_kwargs: dict[str, str], expected: str) -> None:
    assert hide_password(text, connect_kwargs) == expected


# -- the driver that reads the DSN: the one loaded, psycopg2 if none ------------------------------

ONLY_ONE_DRIVER = r"""
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == sys.argv[1]:
            raise ImportError(f"no module named {name!r} (not installed)")
sys.meta_path.insert(0, Missing())
if sys.argv[1] == "psycopg2":
    import psycopg  # what the async store loads
from pgsession_wsgi.dsn import connect_arguments, hide_password, normalize_dsn
dsn = "postgresql://u:Zq8-dsn-Secret@h:5433/db?application_name=shop"
kwargs, owned = connect_arguments(dsn, defaults={"application_name": "ours"}, settings={}, environ={})
assert kwargs == {"dsn": dsn}, kwargs
assert normalize_dsn("host=h port=5432") == "host=h port=5432"
assert hide_password("role Zq8-dsn-Secret", kwargs) == "role ********"
assert sys.argv[1] not in sys.modules
print("ok")
"""


@pytest.mark.parametrize("missing", ["psycopg", "psycopg2"])
def test_the_dsn_is_read_without_the_driver_that_is_not_installed(missing: str) -> None:
    """psycopg 3 is optional (the asgi extra): the sync side never needs it; the async store,
    with psycopg loaded, never loads psycopg2."""
    package_root = os.path.dirname(os.path.dirname(pgsession_wsgi.__file__))
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", ONLY_ONE_DRIVER, missing],
        env=environ, capture_output=True, text=True, timeout=60, check=False,
    )
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


@pytest.mark.parametrize("front_end", ["asgi", "litestar", "quart"])
def test_an_async_front_end_never_loads_psycopg2(front_end: str) -> None:
    """An ASGI app runs on psycopg 3 only: importing its front end loads neither psycopg2 nor
    the sync store (Quart's used to, through the "your devices" helpers it shares with Flask)."""
    package_root = os.path.dirname(os.path.dirname(pgsession_wsgi.__file__))
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    code = (
        f"import sys, pgsession_wsgi.{front_end}\n"
        "loaded = sorted(m for m in ('psycopg2', 'pgsession_wsgi.store') if m in sys.modules)\n"
        "print(loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr
