"""Statements per request, counted on the wire by a proxy in front of PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from session_app import session_app
from webtest import TestApp
from wire import RoundTripCounter

from pgsession_wsgi import PostgresStore, SessionMiddleware, get_session

SECRET = "round-trips"


@pytest.fixture
def counted(
    make_store: Callable[..., PostgresStore],
    wire_counter: RoundTripCounter,
) -> Callable[..., tuple[TestApp, RoundTripCounter]]:
    def make(app: Any = session_app, **options: Any) -> tuple[TestApp, RoundTripCounter]:
        store = make_store(dsn=wire_counter.dsn)
        store.create_table()
        client = TestApp(SessionMiddleware(app, store, secret_key=SECRET, **options))
        wire_counter.reset()
        return client, wire_counter

    return make


def statements_for(client: TestApp, counter: RoundTripCounter, path: str) -> int:
    counter.reset()
    client.get(path)
    return counter.count


def test_untouched_session_costs_nothing(counted: Callable[..., Any]) -> None:
    client, counter = counted()
    client.get("/set?a=1")
    assert statements_for(client, counter, "/none") == 0


def test_new_session_with_data_costs_one(counted: Callable[..., Any]) -> None:
    client, counter = counted()
    assert statements_for(client, counter, "/set?a=1") == 1


def test_read_only_costs_one(counted: Callable[..., Any]) -> None:
    client, counter = counted()
    client.get("/set?a=1")
    assert statements_for(client, counter, "/read") == 1
    assert statements_for(client, counter, "/read") == 1


def test_read_and_write_costs_two(counted: Callable[..., Any]) -> None:
    client, counter = counted()
    client.get("/inc")
    assert statements_for(client, counter, "/inc") == 2


def test_blind_write_costs_one(counted: Callable[..., Any]) -> None:
    client, counter = counted()
    client.get("/set?a=1")
    assert statements_for(client, counter, "/set?b=2") == 1
    assert client.get("/read").json == {"a": "1", "b": "2"}


def test_blind_write_to_a_vanished_row_starts_a_new_session(
    counted: Callable[..., Any],
) -> None:
    client, counter = counted()
    client.get("/set?a=1")
    old_cookie = str(client.cookies["session"])
    client.app.store.delete(__import__("hashlib").sha256(old_cookie.split(".")[0].encode()).digest())
    # The merge finds no row, one more statement asks whether the row is gone or the merge was
    # over max_size (a rare path: the common write stays one statement), then the insert.
    assert statements_for(client, counter, "/set?b=2") == 3
    assert str(client.cookies["session"]) != old_cookie
    assert client.get("/read").json == {"b": "2"}


def test_bad_signature_costs_nothing(counted: Callable[..., Any]) -> None:
    client, counter = counted()
    client.set_cookie("session", "A" * 43 + "." + "B" * 43)
    assert statements_for(client, counter, "/read") == 0


def test_touch_is_capped_by_touch_interval(counted: Callable[..., Any]) -> None:
    import time

    client, counter = counted(touch_interval=timedelta(seconds=1))
    client.get("/set?a=1")
    assert statements_for(client, counter, "/read") == 1  # just written: no touch due
    time.sleep(1.2)
    assert statements_for(client, counter, "/read") == 2  # load + touch
    assert statements_for(client, counter, "/read") == 1  # touched: not due again yet


def test_table_is_created_once_per_process(
    make_store: Callable[..., PostgresStore], wire_counter: RoundTripCounter
) -> None:
    store = make_store(dsn=wire_counter.dsn)
    client = TestApp(SessionMiddleware(session_app, store, secret_key=SECRET))
    client.get("/set?a=1")
    assert any("CREATE TABLE" in s for s in wire_counter.statements)
    wire_counter.reset()
    client.get("/set?a=2")
    client.get("/read")
    assert not any("CREATE" in s for s in wire_counter.statements)
    assert wire_counter.count == 2


def test_writes_are_single_autocommit_statements(counted: Callable[..., Any]) -> None:
    client, counter = counted()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        get_session(environ)["k"] = "v"
        start_response("200 OK", [])
        return [b""]

    client, counter = counted(app)
    client.get("/")
    client.get("/")
    assert not any(s.strip().upper() in ("BEGIN", "COMMIT") for s in counter.statements)
