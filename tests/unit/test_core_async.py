"""The core's async entry points without a database: ``load_async``, its two halves
(``load_operation``, ``loaded``), and ``advance`` / ``resume_async``, with which the async front
ends run a save that may need no statement at all.

Each test scripts the store's answers, as tests/unit/test_core.py does; the same paths run
against a real PostgreSQL in the ASGI, Litestar and Quart integration tests.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from helpers import Script, build_core

from pgsession_wsgi.cookies import hash_session_id, new_session_id
from pgsession_wsgi.core import (
    Insert,
    Load,
    LoadedRow,
    Operation,
    SessionCore,
    Touch,
    Write,
    WriteResult,
    advance,
    resume_async,
    run,
    run_async,
)
from pgsession_wsgi.errors import StoreUnavailable
from pgsession_wsgi.session import Session

SECRET = "core-async-secret"


def cookie_for(core: SessionCore, session_id: str) -> str:
    return f"session={core.signer.sign(session_id)}"


def never(session: Session) -> Any:
    raise AssertionError("an async front end loads before the app runs, never lazily")


class AsyncScript(Script):
    """A :class:`Script` answering as an async store's ``execute`` does."""

    async def execute(self, operation: Operation) -> Any:
        return self(operation)


def test_load_async_asks_one_load_by_the_ids_hash_and_hands_the_row_over() -> None:
    core, sid = build_core(SECRET), new_session_id()
    script = AsyncScript(LoadedRow({"user": "ann"}, True, timedelta(hours=2)))
    session = core.open(cookie_for(core, sid), "https", never)
    asyncio.run(core.load_async(session, script.execute))
    assert script.kinds() == [Load]
    load = script.asked[0]
    assert isinstance(load, Load) and load.id_hash == hash_session_id(sid)
    assert session.loaded and not session.accessed  # loading is not a use
    assert session.state.touch_due and session.state.expiry == timedelta(hours=2)
    assert dict(session) == {"user": "ann"} and not session.new and session.id == sid


@pytest.mark.parametrize("cookie", ["", "session=forged.value", "other=1"], ids=["none", "forged", "foreign"])
def test_load_async_without_a_valid_cookie_awaits_nothing(cookie: str) -> None:
    core = build_core(SECRET)
    script = AsyncScript()
    session = core.open(cookie, "https", never)
    asyncio.run(core.load_async(session, script.execute))
    assert script.asked == []
    assert session.loaded and dict(session) == {} and session.new


def test_load_async_of_an_id_with_no_live_row_never_reuses_it() -> None:
    core, sid = build_core(SECRET), new_session_id()
    script = AsyncScript(None, None)
    session = core.open(cookie_for(core, sid), "https", never)
    asyncio.run(core.load_async(session, script.execute))
    assert session.id is None and session.new
    session["a"] = 1
    asyncio.run(run_async(core.save(session), script.execute))
    assert script.kinds() == [Load, Insert]
    insert = script.asked[1]
    assert isinstance(insert, Insert) and insert.id_hash != hash_session_id(sid)


def test_load_async_lets_the_store_s_failure_through_with_the_session_unloaded() -> None:
    core, sid = build_core(SECRET), new_session_id()

    async def down(operation: Operation) -> Any:
        raise StoreUnavailable("the database is down")

    session = core.open(cookie_for(core, sid), "https", never)
    with pytest.raises(StoreUnavailable):
        asyncio.run(core.load_async(session, down))
    assert not session.loaded


def test_load_is_its_two_halves() -> None:
    """The generator the sync front ends drive asks what ``load_operation`` asks, and answers
    what ``loaded`` answers."""
    core, sid = build_core(SECRET), new_session_id()
    row = LoadedRow({"a": 1}, False, None, None)
    by_steps = Script(row)
    session = core.open(cookie_for(core, sid), "https", never)
    assert run(core.load(session), by_steps) == {"a": 1}
    halves = core.open(cookie_for(core, sid), "https", never)
    operation = core.load_operation(halves.state)
    assert operation == by_steps.asked[0]
    assert core.loaded(halves.state, row) == {"a": 1}
    assert core.loaded(halves.state, None) is None and halves.state.session_id is None


def test_advance_answers_a_save_that_needs_no_statement_without_an_operation() -> None:
    core, sid = build_core(SECRET), new_session_id()
    script = AsyncScript(LoadedRow({"a": 1}, False))
    session = core.open(cookie_for(core, sid), "https", never)
    asyncio.run(core.load_async(session, script.execute))
    assert session["a"] == 1  # read, not changed
    operation, headers = advance(core.save(session))
    assert operation is None and headers == [("Vary", "Cookie")]
    assert script.kinds() == [Load]


def test_advance_then_resume_async_runs_a_save_with_statements() -> None:
    core, sid = build_core(SECRET), new_session_id()
    script = AsyncScript(LoadedRow({"a": 1}, False), WriteResult(True, False, None))
    session = core.open(cookie_for(core, sid), "https", never)
    asyncio.run(core.load_async(session, script.execute))
    session["a"] = 2
    steps = core.save(session)
    operation, answer = advance(steps)
    assert isinstance(operation, Write) and answer is None
    assert asyncio.run(resume_async(steps, operation, script.execute)) == [("Vary", "Cookie")]
    assert script.kinds() == [Load, Write]


@pytest.mark.parametrize("permanent", [True, False])
def test_a_touch_resends_only_a_permanent_cookie(permanent: bool) -> None:
    """A session read and not changed whose expiry was due: one Touch, and a new Max-Age for a
    permanent cookie only (a browser-session cookie has none to move)."""
    core, sid = build_core(SECRET, permanent=permanent), new_session_id()
    script = AsyncScript(LoadedRow({"a": 1}, True), None)
    session = core.open(cookie_for(core, sid), "https", never)
    asyncio.run(core.load_async(session, script.execute))
    assert session["a"] == 1
    headers = asyncio.run(run_async(core.save(session), script.execute))
    assert script.kinds() == [Load, Touch]
    assert any(name == "Set-Cookie" for name, _ in headers) is permanent
