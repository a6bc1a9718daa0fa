"""The SQL module without a server: schema and table names are quoted as PostgreSQL quotes them,
checked against its 63-byte limit, and a bad one is named as what it is.

The statements built from them, run for real, are in tests/integration/test_store_operations.py.
"""

from __future__ import annotations

import pytest

from pgsession_wsgi import ConfigurationError
from pgsession_wsgi.sql import Statements, quote_identifier


def test_statements_name_a_bad_schema_as_a_schema() -> None:
    """sql.xǁStatementsǁ__init____mutmut_3, _6, _7."""
    with pytest.raises(ConfigurationError) as refused:
        Statements("", "pgsession", "")
    assert str(refused.value) == "the schema name must be a non-empty string without NUL characters"


def test_identifiers_are_quoted_and_checked_up_to_63_bytes() -> None:
    """sql.x_quote_identifier__mutmut_5 and xǁStatementsǁ__init____mutmut_10, _13, _14 (a bad table
    name is named as a table)."""
    assert quote_identifier('a"b', "table") == '"a""b"'
    assert quote_identifier("t" * 63, "table") == '"' + "t" * 63 + '"'
    Statements("s" * 63, "t" * 63, "")
    with pytest.raises(ConfigurationError) as long:
        Statements("s", "t" * 64, "")
    assert str(long.value) == (
        f"the table name {'t' * 64!r} is longer than PostgreSQL's 63-byte limit: choose a shorter one"
    )
    with pytest.raises(ConfigurationError) as nul:
        Statements("s", "a\x00", "")
    assert str(nul.value) == "the table name must be a non-empty string without NUL characters"
    with pytest.raises(ConfigurationError):
        quote_identifier(5, "table")  # type: ignore[arg-type]
