"""Small helpers the test modules share."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg2
from flask.testing import FlaskClient


def sql(dsn: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on its own autocommit connection; rows if it returns any."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def wait_for(condition: Callable[[], object], what: str, limit: float = 30.0) -> None:
    """Poll until ``condition()`` is true. ``limit`` only stops a hang; it is never what a test checks."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


class ClosingClient(FlaskClient):
    """Reads and closes every response, as a WSGI server does (Flask's client leaves it open)."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)
