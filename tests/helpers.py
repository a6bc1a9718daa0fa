"""Small helpers the test modules share."""

from __future__ import annotations

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


class ClosingClient(FlaskClient):
    """Reads and closes every response, as a WSGI server does (Flask's client leaves it open)."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)
