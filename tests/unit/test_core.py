"""The request algorithm without a database: each test scripts the store's answers.

The core is sans-I/O: its steps yield the statements they need and are sent the answers, so its
decisions (what to load, which statement, which cookie) are checked here statement by statement.
The same decisions run against a real PostgreSQL in the integration tests.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from helpers import Script, build_core

from pgsession_wsgi.codec import dumps
from pgsession_wsgi.cookies import hash_session_id, new_session_id
from pgsession_wsgi.core import (
    KEEP_USER,
    Delete,
    Insert,
    Load,
    LoadedRow,
    Operation,
    SessionCore,
    Touch,
    Write,
    WriteResult,
    private_cache_control,
    run,
    run_async,
    user_id_text,
)
from pgsession_wsgi.errors import ConfigurationError, SessionError
from pgsession_wsgi.session import Session

SECRET = "core-secret"


def make_core(**options: Any) -> SessionCore:
    return build_core(SECRET, **options)


def open_session(core: SessionCore, cookie: str = "", script: Script | None = None) -> Session:
    script = script if script is not None else Script()
    return core.open(cookie, "https", lambda session: run(core.load(session), script))


def cookie_for(core: SessionCore, session_id: str) -> str:
    return f"session={core.signer.sign(session_id)}"


def set_cookie_value(headers: list[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name == "Set-Cookie":
            return value.split(";", 1)[0].split("=", 1)[1]
    return None


# -- loading --------------------------------------------------------------------------------


def test_no_cookie_asks_nothing() -> None:
    core, script = make_core(), Script()
    session = open_session(core, "", script)
    assert dict(session) == {} and session.new
    assert script.asked == []


@pytest.mark.parametrize("header", ["session=garbage", "session=" + "A" * 43 + "." + "B" * 43, "other=1"])
def test_a_bad_or_foreign_cookie_asks_nothing(header: str) -> None:
    core, script = make_core(), Script()
    assert dict(open_session(core, header, script)) == {}
    assert script.asked == []


def test_a_valid_cookie_is_one_load_by_the_ids_hash() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, False))
    session = open_session(core, cookie_for(core, sid), script)
    assert session["a"] == 1 and not session.new and session.id == sid
    assert script.asked == [Load(hash_session_id(sid), timedelta(seconds=60))]


def test_a_cookie_without_a_live_row_never_keeps_its_id() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(None, None)  # the load finds nothing; the save inserts
    session = open_session(core, cookie_for(core, sid), script)
    assert session.get("a") is None  # the load finds no live row
    session["a"] = 1
    headers = run(core.save(session), script)
    (insert,) = [op for op in script.asked if isinstance(op, Insert)]
    assert insert.id_hash != hash_session_id(sid)
    new_value = set_cookie_value(headers)
    assert new_value is not None and not new_value.startswith(sid)


# -- saving ---------------------------------------------------------------------------------


def test_an_untouched_session_saves_nothing_and_sends_no_header() -> None:
    core, script = make_core(), Script()
    session = open_session(core, "session=x", script)
    assert run(core.save(session), script) == []
    assert script.asked == []


def test_a_read_only_session_writes_nothing_but_varies() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, False))
    session = open_session(core, cookie_for(core, sid), script)
    assert session["a"] == 1
    assert run(core.save(session), script) == [("Vary", "Cookie")]
    assert script.kinds() == [Load]


def test_a_due_touch_is_one_touch_and_refreshes_a_permanent_cookie() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, True), True)
    session = open_session(core, cookie_for(core, sid), script)
    session.get("a")
    headers = run(core.save(session), script)
    assert script.kinds() == [Load, Touch]
    assert set_cookie_value(headers) == core.signer.sign(sid)


def test_a_new_session_is_one_insert_with_the_whole_data() -> None:
    core, script = make_core(), Script(None)
    session = open_session(core, "", script)
    session["a"] = 1
    headers = run(core.save(session), script)
    (insert,) = script.asked
    assert isinstance(insert, Insert) and insert.data_json == '{"a":1}'
    value = set_cookie_value(headers)
    assert value is not None and insert.id_hash == hash_session_id(value.split(".")[0])
    assert ("Vary", "Cookie") in headers


def test_a_change_is_one_write_of_only_the_changed_keys() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1, "b": [1], "c": 3}, False), WriteResult(True, False, None))
    session = open_session(core, cookie_for(core, sid), script)
    session["b"].append(2)
    del session["c"]
    session["a"] = 1  # the same value: not a change
    headers = run(core.save(session), script)
    write = script.asked[1]
    assert isinstance(write, Write)
    assert write.changed_json == dumps({"b": [1, 2]}) and write.removed == ["c"] and not write.replace
    assert write.new_hash is None and write.user_id is KEEP_USER
    assert set_cookie_value(headers) is None  # same id, nothing to resend


def test_a_blind_write_to_a_vanished_row_becomes_an_insert_under_a_new_id() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(WriteResult(False, False, None), None)
    session = open_session(core, cookie_for(core, sid), script)
    session["a"] = 1  # never read
    headers = run(core.save(session), script)
    assert script.kinds() == [Write, Insert]
    assert set_cookie_value(headers) is not None


def test_a_write_after_a_concurrent_logout_is_dropped() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, False), WriteResult(False, False, None))
    session = open_session(core, cookie_for(core, sid), script)
    session["a"] = session["a"] + 1
    headers = run(core.save(session), script)
    assert script.kinds() == [Load, Write]  # no insert: the logout wins
    assert set_cookie_value(headers) is None


def test_regenerate_moves_the_row_in_the_same_write() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, False), WriteResult(True, False, None))
    session = open_session(core, cookie_for(core, sid), script)
    session.get("a")
    session.regenerate()
    headers = run(core.save(session), script)
    write = script.asked[1]
    assert isinstance(write, Write) and write.id_hash == hash_session_id(sid)
    value = set_cookie_value(headers)
    assert value is not None and write.new_hash == hash_session_id(value.split(".")[0])
    assert session.id == value.split(".")[0] != sid


def test_invalidate_deletes_and_expires_the_cookie() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, False), True)
    session = open_session(core, cookie_for(core, sid), script)
    session.invalidate()
    headers = run(core.save(session), script)
    assert script.asked[-1] == Delete(hash_session_id(sid))
    assert set_cookie_value(headers) == "" and session.id is None


def test_a_session_emptied_is_deleted_and_an_empty_new_one_never_stored() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, False), True)
    session = open_session(core, cookie_for(core, sid), script)
    del session["a"]
    run(core.save(session), script)
    assert script.kinds() == [Load, Delete]
    fresh_script = Script(None)
    fresh = open_session(core, "", fresh_script)
    fresh.permanent = False  # only the _permanent flag: not worth a row
    assert run(core.save(fresh), fresh_script) == [("Vary", "Cookie")]
    assert fresh_script.asked == []


def test_check_sends_what_the_save_would_and_the_save_sends_it() -> None:
    """``core.check`` (Flask's and Quart's save_session) encodes what the save sends; the save
    then sends exactly that, or looks again if the session was used after the check."""
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, False), WriteResult(True, False, None))
    session = open_session(core, cookie_for(core, sid), script)
    session["a"] = session["a"] + 1
    session["cart"] = [1]
    core.check(session)
    run(core.save(session), script)
    [write] = [op for op in script.asked if isinstance(op, Write)]
    assert write.changed_json == '{"a":2,"cart":[1]}'

    script = Script(LoadedRow({"a": 1}, False), WriteResult(True, False, None))
    used = open_session(core, cookie_for(core, sid), script)
    used["a"] = used["a"] + 1
    core.check(used)
    used["b"] = [3]  # a use after the check: the save looks again
    used["b"].append(4)
    run(core.save(used), script)
    [write] = [op for op in script.asked if isinstance(op, Write)]
    assert write.changed_json == '{"a":2,"b":[3,4]}'


def test_a_session_check_refused_is_never_saved_and_a_second_check_raises_nothing() -> None:
    from pgsession_wsgi import UnstorableTypeError

    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, False))
    session = open_session(core, cookie_for(core, sid), script)
    session["a"] = 2
    session["tags"] = []
    session["tags"].append({1})
    with pytest.raises(UnstorableTypeError, match="'tags'"):
        core.check(session)
    core.check(session)  # the framework's error handling saves again: nothing more is raised
    assert run(core.save(session), script) == []
    assert script.kinds() == [Load]
    assert not core.needs_late_save(session)


# -- the user column and fixation ------------------------------------------------------------


def test_a_login_under_user_key_regenerates_and_fills_the_user_column() -> None:
    core, sid = make_core(user_key="uid"), new_session_id()
    script = Script(LoadedRow({"cart": 1}, False), WriteResult(True, False, None))
    session = open_session(core, cookie_for(core, sid), script)
    session.get("cart")
    session["uid"] = 42
    run(core.save(session), script)
    write = script.asked[1]
    assert isinstance(write, Write) and write.user_id == "42" and write.new_hash is not None


def test_the_same_user_again_writes_nothing() -> None:
    core, sid = make_core(user_key="uid"), new_session_id()
    script = Script(LoadedRow({"uid": "7"}, False))
    session = open_session(core, cookie_for(core, sid), script)
    assert session["uid"] == "7"
    session["uid"] = "7"
    run(core.save(session), script)
    assert script.kinds() == [Load]


def test_no_regeneration_on_user_change_when_turned_off() -> None:
    core, sid = make_core(user_key="uid", regenerate_on_user_change=False), new_session_id()
    script = Script(LoadedRow({}, False), WriteResult(True, False, None))
    session = open_session(core, cookie_for(core, sid), script)
    session.get("x")
    session["uid"] = "8"
    run(core.save(session), script)
    write = script.asked[1]
    assert isinstance(write, Write) and write.user_id == "8" and write.new_hash is None


def test_removing_the_user_clears_the_column_without_regenerating() -> None:
    core, sid = make_core(user_key="uid"), new_session_id()
    script = Script(LoadedRow({"uid": "7", "x": 1}, False), WriteResult(True, False, None))
    session = open_session(core, cookie_for(core, sid), script)
    del session["uid"]
    run(core.save(session), script)
    write = script.asked[1]
    assert isinstance(write, Write) and write.user_id is None and write.new_hash is None


def test_user_ids_have_one_text_form() -> None:
    import uuid

    value = uuid.UUID(int=5)
    assert user_id_text(value) == str(value) and user_id_text(7) == "7" and user_id_text("x") == "x"
    for bad in (True, 1.5, (1,)):
        with pytest.raises(SessionError, match="str, int or UUID"):
            user_id_text(bad, "uid")


# -- cookies, policy, cache -------------------------------------------------------------------


def test_a_fallback_key_cookie_is_resigned_with_the_current_key() -> None:
    old = make_core()
    rotated = build_core("new-secret", fallback_secret_keys=[SECRET])
    sid = new_session_id()
    script = Script(LoadedRow({"a": 1}, False))
    session = open_session(rotated, cookie_for(old, sid), script)
    session.get("a")
    headers = run(rotated.save(session), script)
    assert set_cookie_value(headers) == rotated.signer.sign(sid)


def test_the_touch_interval_is_at_most_a_tenth_of_the_idle_timeout() -> None:
    core = make_core(idle_timeout=100, touch_interval=timedelta(hours=1))
    assert core.policy.touch_interval == timedelta(seconds=10)


@pytest.mark.parametrize("option", ["idle_timeout", "touch_interval", "absolute_timeout"])
def test_durations_must_be_positive(option: str) -> None:
    with pytest.raises(ConfigurationError, match=option):
        make_core(**{option: 0})


def test_a_secret_is_required() -> None:
    with pytest.raises(ConfigurationError, match="secret_key"):
        build_core(None)


@pytest.mark.parametrize(
    "given, expected",
    [(None, "private"), ("public, max-age=60", "private, max-age=60"), ("no-store", None), ("Private", None)],
)
def test_private_cache_control(given: str | None, expected: str | None) -> None:
    assert private_cache_control(given) == expected


def test_the_async_driver_runs_the_same_steps() -> None:
    core, sid = make_core(), new_session_id()
    answers = iter([LoadedRow({"a": 1}, False), WriteResult(True, False, None)])
    asked: list[Operation] = []

    async def execute(operation: Operation) -> Any:
        asked.append(operation)
        return next(answers)

    def never(session: Session) -> Any:
        raise AssertionError("an async front end loads before the app runs, never lazily")

    async def scenario() -> list[tuple[str, str]]:
        session = core.open(cookie_for(core, sid), "https", never)
        session.preload(await run_async(core.load(session), execute))
        assert not session.accessed  # preloading is not a use: no Vary for an untouched session
        session["a"] = 2
        return await run_async(core.save(session), execute)

    assert asyncio.run(scenario()) == [("Vary", "Cookie")]
    assert [type(op) for op in asked] == [Load, Write]


def test_flask_s_modified_idiom_is_accepted() -> None:
    """``session.modified = True`` (a Flask habit) marks the session used and changes nothing."""
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"cart": [1]}, False), WriteResult(True, False, None))
    session = open_session(core, cookie_for(core, sid), script)
    session["cart"].append(2)
    session.modified = True
    assert session.modified
    run(core.save(session), script)
    assert script.kinds() == [Load, Write]
