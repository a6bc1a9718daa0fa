"""The DSN's parts without a server: libpq's ``options`` as the server reads them, and the connect
arguments built from a DSN, the store's defaults and settings, and libpq's PG* variables.

The same rules, through a real store and connection, are in tests/integration/test_store_dsn.py.
"""

from __future__ import annotations

import pytest

from pgsession_wsgi.dsn import connect_arguments, parse_options
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
