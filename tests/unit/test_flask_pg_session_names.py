"""Where FlaskPgSession moves a flask-pg-session table's sessions: ``<table>_v2``, within
PostgreSQL's 63-byte names, cut on a character boundary so the suffix always survives."""

from __future__ import annotations

import pytest

from pgsession_wsgi.flask_pg_session import NEW_TABLE_SUFFIX, new_table_name


def test_a_short_name_gets_the_suffix() -> None:
    assert NEW_TABLE_SUFFIX == "_v2"
    assert new_table_name("flask_sessions") == "flask_sessions_v2"


@pytest.mark.parametrize("length", [60, 61, 63, 64, 200])
def test_a_long_name_is_cut_to_63_bytes_with_the_suffix_kept(length: int) -> None:
    name = new_table_name("t" * length)
    assert name == "t" * min(length, 60) + "_v2"
    assert len(name.encode()) == min(length + 3, 63)


def test_a_name_of_wide_characters_is_cut_between_them() -> None:
    # 1 + 2 * 40 bytes: 60 bytes would end inside the 30th "é"; it is left out whole.
    name = new_table_name("a" + "é" * 40)
    assert name == "a" + "é" * 29 + "_v2"
    assert len(name.encode()) == 62
    assert new_table_name("é" * 40) == "é" * 30 + "_v2"  # 60 bytes: no character to drop
    assert new_table_name("a" + "😀" * 20) == "a" + "😀" * 14 + "_v2"  # 4-byte characters
