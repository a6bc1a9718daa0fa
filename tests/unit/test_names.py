"""Table and schema names that are not text a database can hold are refused by name, never a crash."""

from __future__ import annotations

import pytest

from pgsession_wsgi import ConfigurationError, PostgresStore


@pytest.mark.parametrize("option", ["schema", "table"])
@pytest.mark.parametrize("name", ["sessions\udcff", "\ud800"], ids=["undecodable-byte", "lone-surrogate"])
def test_a_name_that_is_not_utf8_is_a_configuration_error(option: str, name: str) -> None:
    with pytest.raises(ConfigurationError, match=f"the {option} name is not valid UTF-8"):
        PostgresStore("postgresql://app@127.0.0.1:9/db", **{option: name})
