"""The "Log out everywhere" example of docs/wsgi.md says what a user would see.

tests/test_docs.py runs every example and checks only that it does not fail; this one reads
what this example answers, browser by browser, starting with the very first request.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from docs_examples import blocks
from webtest import TestApp

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "wsgi.md"


def the_example() -> str:
    """The first Python block under the page's "Log out everywhere" heading."""
    text = PAGE.read_text(encoding="utf-8")
    heading = text.splitlines().index("## Log out everywhere") + 1
    return next(b.code for b in blocks(text, str(PAGE)) if b.line > heading and b.language == "python")


@pytest.fixture
def database_url(pg_dsn: str) -> Iterator[str]:
    """A database of its own: the example uses the default table, public.pgsession."""
    name = f"docs_logout_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield psycopg2.extensions.make_dsn(pg_dsn, dbname=name)
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture
def example(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("SECRET_KEY", "docs-example-secret")
    namespace: dict[str, Any] = {"__name__": "wsgi_md_example"}
    exec(compile(the_example(), str(PAGE), "exec"), namespace)  # noqa: S102  (our own docs)
    yield namespace
    namespace["store"].close()


def count(page: Any) -> int:
    match = re.fullmatch(r"(\d+) session\(s\)", page.text)
    assert match, page.text
    return int(match.group(1))


def test_the_count_includes_the_request_of_the_very_first_visit(example: dict[str, Any]) -> None:
    laptop = TestApp(example["app"])
    assert count(laptop.get("/")) == 1  # this session, saved before it was counted
    assert count(laptop.get("/")) == 1  # the same one again
    phone = TestApp(example["app"])
    assert count(phone.get("/")) == 2
    assert count(laptop.get("/")) == 2
    assert count(phone.get("/log-out-other-devices")) == 1  # the laptop's session ended
    assert len(example["store"].sessions_for_user(42)) == 1
    assert count(phone.get("/")) == 1
