"""Statements per request, counted on the wire by a proxy in front of PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from db import sql
from session_app import session_app
from webtest import TestApp
from wire import RoundTripCounter, statement_kind

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
        options.setdefault("secret_key", SECRET)
        client = TestApp(SessionMiddleware(app, store, **options))
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


class AnyValueSigner:
    """Takes any cookie value as a valid id: only the cookie layer's own limits stand between a
    cookie and a database lookup."""

    def sign(self, session_id: str) -> str:
        return session_id

    def unsign(self, value: str) -> tuple[str, bool] | None:
        return value, False


# Cookie values as the WSGI environ carries them (bytes decoded as Latin-1).
MALFORMED = {
    "garbage": "garbage",
    "two-parts": "a.b",
    "short-signature": "A" * 43 + "." + "B" * 42,
    "two-dots": "A" * 43 + ".." + "B" * 43,
    "unclosed-quote": '"' + "A" * 43 + "." + "B" * 43,
}
NON_ASCII = {"utf-8": "\u00c3\u00a9t\u00c3\u00a9", "latin-1-in-id": "A" * 42 + "\u00e9." + "B" * 43}
OVERSIZED = {"oversized": "A" * 5000, "oversized-signature": "A" * 43 + "." + "B" * 5000}


def cookie_params(*groups: dict[str, str]) -> list[Any]:
    return [pytest.param(value, id=name) for group in groups for name, value in group.items()]


@pytest.mark.parametrize("value", cookie_params(MALFORMED, NON_ASCII, OVERSIZED))
def test_malformed_non_ascii_and_oversized_cookies_cost_nothing(
    counted: Callable[..., Any], value: str
) -> None:
    client, counter = counted()
    response = client.get("/read", extra_environ={"HTTP_COOKIE": f"session={value}"})
    assert response.json == {}
    assert counter.count == 0, counter.statements


@pytest.mark.parametrize("value", cookie_params(NON_ASCII, OVERSIZED))
def test_non_ascii_and_oversized_cookies_never_reach_the_signer(
    counted: Callable[..., Any], value: str
) -> None:
    """Refused by the cookie layer itself, whatever the signer would say (a custom one too)."""
    client, counter = counted(secret_key=None, signer=AnyValueSigner())
    response = client.get("/read", extra_environ={"HTTP_COOKIE": f"session={value}"})
    assert response.json == {}
    assert counter.count == 0, counter.statements
    # The same signer with an acceptable value does look it up: the test can see a lookup.
    client.get("/read", extra_environ={"HTTP_COOKIE": "session=plain"})
    assert counter.count == 1


def test_regenerate_costs_one(counted: Callable[..., Any]) -> None:
    client, counter = counted()
    client.get("/set?user=alice")
    old_cookie = str(client.cookies["session"])
    assert statements_for(client, counter, "/regen") == 1, counter.statements
    assert statement_kind(counter.statements[0]) == "UPDATE"  # moves the row to the new id
    assert str(client.cookies["session"]) != old_cookie
    assert client.get("/read").json == {"user": "alice"}


def test_invalidate_costs_one(counted: Callable[..., Any]) -> None:
    client, counter = counted()
    client.get("/set?user=alice")
    counter.reset()
    response = client.get("/logout")
    assert counter.count == 1, counter.statements
    assert statement_kind(counter.statements[0]) == "DELETE"
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    assert client.app.store.stats()["live"] == 0


def test_writes_through_pgbouncer_stay_one_statement(
    make_pgbouncer: Callable[[str], Any], make_store: Callable[..., PostgresStore], pg_dsn: str
) -> None:
    """Behind PgBouncer the startup options are lost and every statement carries a ``SET LOCAL``
    prefix: in the same query message, so a save is still one round trip."""
    bouncer = make_pgbouncer(pg_dsn)
    with RoundTripCounter(bouncer.dsn) as counter:  # the store -> counter -> PgBouncer -> server
        store = make_store(dsn=counter.dsn)
        try:
            store.create_table()
            client = TestApp(SessionMiddleware(session_app, store, secret_key=SECRET))
            assert statements_for(client, counter, "/set?a=1") == 1, counter.statements
            assert statements_for(client, counter, "/set?b=2") == 1, counter.statements
            [write] = counter.statements
            assert write.startswith("SET LOCAL statement_timeout") and "UPDATE" in write
            assert statements_for(client, counter, "/regen") == 1, counter.statements
            assert statements_for(client, counter, "/inc") == 2, counter.statements  # load, write
            assert client.get("/read").json == {"a": "1", "b": "2", "n": 1}
            assert statements_for(client, counter, "/logout") == 1, counter.statements
        finally:
            store.close()


def test_touch_is_capped_by_touch_interval(counted: Callable[..., Any], pg_dsn: str) -> None:
    client, counter = counted(touch_interval=timedelta(minutes=1))
    client.get("/set?a=1")
    assert statements_for(client, counter, "/read") == 1  # just written: no touch due
    store = client.app.store
    # Two minutes pass (by the database clock the statements compare against).
    sql(pg_dsn, f"UPDATE {store.qualified_name} SET accessed_at = accessed_at - interval '2 minutes'")
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
