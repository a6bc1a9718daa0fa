"""The DSN's parts without a server: libpq's ``options`` as the server reads them, and the connect
arguments built from a DSN, the store's defaults and settings, and libpq's PG* variables.

The same rules, through a real store and connection, are in tests/integration/test_store_dsn.py.
"""

from __future__ import annotations

import traceback

import pytest

from pgsession_wsgi.dsn import connect_arguments, normalize_dsn, parse_options, store_connect_arguments
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
        "dbname=x",
    ],
)
def test_unusual_but_valid_dsns_are_accepted(dsn: str) -> None:
    assert normalize_dsn(dsn) == dsn
