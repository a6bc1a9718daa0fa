"""Rows holding a time or a duration no Python value holds (issue 20), on a real PostgreSQL.

pgsession-wsgi never writes them (``set_expiry`` refuses an end past year 9999 in UTC), but a
row written by raw SQL may hold ``'infinity'``, a timestamp of year 10000 or an interval of a
hundred million years. psycopg2 raises ``ValueError`` or ``OverflowError`` reading some of them
and reads ``±infinity`` as the first and last instants a ``datetime`` holds; psycopg 3 raises
``DataError``. Both stores read such a row the same way: loading or writing the session is a
:class:`SessionDataError` (a 500 with one log line), and ``sessions_for_user`` leaves it out.
A row nested 5,000 deep is a 500 the same way on every Python, whether its json parses it or not.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import pytest
from apps.asgi_support import MakeAsyncStore, http_client
from db import sql
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from webtest import TestApp

from pgsession_wsgi import PostgresStore, SessionDataError, SessionMiddleware, get_session
from pgsession_wsgi.asgi import SessionMiddleware as AsgiSessionMiddleware
from pgsession_wsgi.cookies import hash_session_id, new_session_id
from pgsession_wsgi.core import KEEP_USER, Insert, Load, Write

SECRET = "out-of-range-rows-secret-0123456789abcdef"
IDLE = timedelta(hours=2)
TOUCH = timedelta(seconds=60)

# (column, value): each is a row no driver reads as a time pgsession-wsgi could have written.
UNREADABLE = [
    ("ends_at", "infinity"),
    ("ends_at", "-infinity"),
    ("ends_at", "10000-01-01 04:00:00+00"),  # set_expiry(9999-12-31 23:00 at UTC-5) of 0.2.0.dev0
    ("ends_at", "9999-12-31 23:59:59.999999+00"),  # what psycopg2 reads 'infinity' as
    ("ends_at", "0001-01-01 00:00:00+00"),  # what psycopg2 reads '-infinity' as
    ("ends_at", "4713-01-01 00:00:00+00 BC"),
    ("idle_timeout", "100000000 years"),  # longer than a timedelta
]
UNREADABLE_IDS = [f"{column}={value}" for column, value in UNREADABLE]


def set_column(store: Any, id_hash: bytes, column: str, value: str) -> None:
    kind = "interval" if column == "idle_timeout" else "timestamptz"
    sql(store, f"UPDATE {{t}} SET {column} = %s::{kind} WHERE id = %s", (value, id_hash))


async def settle(result: Any) -> Any:
    """What a call of either store answers: awaited for the async store."""
    return await result if inspect.isawaitable(result) else result


async def answer(store: Any, operation: Any) -> Any:
    return await settle(store.execute(operation))


@pytest.fixture(params=["sync", "async"])
def any_store(request: pytest.FixtureRequest) -> Any:
    if request.param == "sync":
        return request.getfixturevalue("make_store")()
    return request.getfixturevalue("make_async_store")()


# -- loading and writing such a row ------------------------------------------------------------


@pytest.mark.parametrize("column, value", UNREADABLE, ids=UNREADABLE_IDS)
async def test_both_stores_read_such_a_row_as_session_data_error(
    any_store: Any, column: str, value: str
) -> None:
    id_hash = hash_session_id(new_session_id())
    await answer(any_store, Insert(id_hash, '{"a": 1}', "alice", IDLE, None, None))
    set_column(any_store, id_hash, column, value)
    with pytest.raises(SessionDataError):
        await answer(any_store, Load(id_hash, TOUCH))
    # A write that did not read the session first reads the row's lifetime back.
    write = Write(id_hash, '{"b": 2}', [], False, None, KEEP_USER, IDLE, None, TOUCH, None)
    with pytest.raises(SessionDataError):
        await answer(any_store, write)


@pytest.mark.parametrize("data", ["[1]", "[]", '"text"', "1", "null"])
async def test_both_stores_read_data_that_is_no_json_object_as_session_data_error(
    any_store: Any, data: str
) -> None:
    """A session is always stored as a JSON object; an array or a scalar is someone else's row."""
    id_hash = hash_session_id(new_session_id())
    await answer(any_store, Insert(id_hash, '{"a": 1}', None, IDLE, None, None))
    sql(any_store, "UPDATE {t} SET data = %s::jsonb WHERE id = %s", (data, id_hash))
    with pytest.raises(SessionDataError, match="not a JSON object"):
        await answer(any_store, Load(id_hash, TOUCH))


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """/read: the session as JSON; /set?k=v: written without reading it first."""
    session = get_session(environ)
    query = dict(part.split("=", 1) for part in environ.get("QUERY_STRING", "").split("&") if "=" in part)
    body: Any = "ok"
    if environ["PATH_INFO"] == "/read":
        body = dict(session)
    else:
        session.update(query)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


@pytest.mark.parametrize("column, value", UNREADABLE, ids=UNREADABLE_IDS)
def test_the_wsgi_middleware_answers_500_with_one_log_line_each_time(
    make_store: Callable[..., PostgresStore], column: str, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()
    client = TestApp(SessionMiddleware(wsgi_app, store, secret_key=SECRET))
    client.get("/set?user=alice")
    session_id = str(client.cookies["session"]).split(".")[0]
    set_column(store, hash_session_id(session_id), column, value)
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        client.get("/read", status=500)  # anything escaping the middleware would raise here
        client.get("/set?more=1", status=500)  # a blind write
    records = [r for r in caplog.records if r.name == "pgsession_wsgi" and r.levelno >= logging.ERROR]
    assert len(records) == 2
    assert all("could not be decoded" in record.getMessage() for record in records)
    assert session_id not in caplog.text


async def read(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.session))


async def test_the_asgi_middleware_answers_500_for_a_session_ending_at_infinity(
    make_async_store: MakeAsyncStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_async_store()
    session_id = new_session_id()
    await store.execute(Insert(hash_session_id(session_id), '{"user": "alice"}', None, IDLE, None, None))
    set_column(store, hash_session_id(session_id), "ends_at", "infinity")
    app = AsgiSessionMiddleware(Starlette(routes=[Route("/read", read)]), store=store, secret_key=SECRET)
    async with http_client(app) as client:
        client.cookies["session"] = app.core.signer.sign(session_id)
        with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
            response = await client.get("/read")
    assert response.status_code == 500
    assert "could not be decoded" in caplog.text


# -- listing a user's sessions -----------------------------------------------------------------

# (column, value) of the other sessions of the user: each is left out of the list.
UNLISTABLE = [
    ("expires_at", "infinity"),
    ("expires_at", "10000-01-01 04:00:00+00"),
    ("expires_at", "9999-12-31 23:59:59.999999+00"),
    ("accessed_at", "infinity"),
    ("accessed_at", "-infinity"),
    ("created_at", "-infinity"),
    ("created_at", "4713-01-01 00:00:00+00 BC"),
]


async def test_sessions_for_user_leaves_out_the_sessions_it_cannot_read(
    any_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    readable = [hash_session_id(new_session_id()) for _ in range(2)]
    unreadable = [hash_session_id(new_session_id()) for _ in UNLISTABLE]
    for id_hash in unreadable[:3] + readable[:1] + unreadable[3:] + readable[1:]:  # bad rows all around
        await answer(any_store, Insert(id_hash, "{}", "alice", IDLE, None, None))
    for id_hash, (column, value) in zip(unreadable, UNLISTABLE):
        set_column(any_store, id_hash, column, value)
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        listed = await settle(any_store.sessions_for_user("alice"))
    assert sorted(info.id_hash for info in listed) == sorted(id_hash.hex() for id_hash in readable)
    records = [record for record in caplog.records if record.name == "pgsession_wsgi"]
    assert len(records) == len(UNLISTABLE)
    assert all("left out" in record.getMessage() for record in records)
    # revoke_user still finds them all: "log out everywhere" leaves none of them behind.
    assert await settle(any_store.revoke_user("alice")) == len(readable) + len(unreadable)


async def test_a_left_out_sessions_line_names_what_the_driver_raised(
    any_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A year past 9999 is a ValueError to psycopg2 and a DataError to psycopg 3, raised as the
    row is fetched; the one line names it (psycopg2_driver._row_at mutant 7: NoneType)."""
    id_hash = hash_session_id(new_session_id())
    await answer(any_store, Insert(id_hash, "{}", "alice", IDLE, None, None))
    set_column(any_store, id_hash, "expires_at", "10000-01-01 04:00:00+00")
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        assert await settle(any_store.sessions_for_user("alice")) == []
    [line] = [record.getMessage() for record in caplog.records if record.name == "pgsession_wsgi"]
    assert "a stored session could not be decoded (ValueError)" in line or (
        "a stored session could not be decoded (DataError)" in line), line


# -- a row nested deeper than anything encode writes -------------------------------------------


def test_a_row_nested_5000_deep_is_a_500_whichever_python_parses_it(
    make_store: Callable[..., PostgresStore], caplog: pytest.LogCaptureFixture
) -> None:
    """Python 3.11's json raises RecursionError on it, 3.13's may parse it: either way the codec's
    own depth limit, not the interpreter's, makes it a SessionDataError."""
    store = make_store()
    client = TestApp(SessionMiddleware(wsgi_app, store, secret_key=SECRET))
    client.get("/set?user=alice")
    session_id = str(client.cookies["session"]).split(".")[0]
    deep = '{"v": ' + "[" * 5000 + "]" * 5000 + "}"
    sql(store, "UPDATE {t} SET data = %s::jsonb WHERE id = %s", (deep, hash_session_id(session_id)))
    with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
        client.get("/read", status=500)
    assert "could not be decoded" in caplog.text


async def test_the_asgi_middleware_answers_500_for_a_row_nested_5000_deep(
    make_async_store: MakeAsyncStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_async_store()
    session_id = new_session_id()
    deep = '{"v": ' + "[" * 5000 + "]" * 5000 + "}"
    await store.execute(Insert(hash_session_id(session_id), deep, None, IDLE, None, None))
    app = AsgiSessionMiddleware(Starlette(routes=[Route("/read", read)]), store=store, secret_key=SECRET)
    async with http_client(app) as client:
        client.cookies["session"] = app.core.signer.sign(session_id)
        with caplog.at_level(logging.ERROR, logger="pgsession_wsgi"):
            response = await client.get("/read")
    assert response.status_code == 500
    assert "could not be decoded" in caplog.text
