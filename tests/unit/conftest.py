"""Unit tests run with no database at all: the fixtures that would reach one fail here instead."""

from __future__ import annotations

import pytest

NO_DATABASE = "tests/unit runs without a database: a test that needs one belongs in tests/integration"


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """Replaces the shared database (and so ``schema``, ``make_store``, ``wire_counter``)."""
    pytest.fail(NO_DATABASE, pytrace=False)


@pytest.fixture
def owned_server() -> None:
    """Replaces the private embedded server."""
    pytest.fail(NO_DATABASE, pytrace=False)
