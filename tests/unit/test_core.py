"""The request algorithm without a database: each test scripts the store's answers.

The core is sans-I/O: its steps yield the statements they need and are sent the answers, so its
decisions (what to load, which statement, which cookie) are checked here statement by statement.
The same decisions run against a real PostgreSQL in the integration tests. The Session object
itself (its changes, its size, its errors) is tests/unit/test_session.py.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest
from helpers import Script, build_core

from pgsession_wsgi.codec import dumps
from pgsession_wsgi.cookies import CookieSettings, hash_session_id, new_session_id
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
from pgsession_wsgi.errors import ConfigurationError, SessionError, SessionTooLarge
from pgsession_wsgi.session import Session, SessionState

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


def test_wants_load_only_for_a_validly_signed_cookie() -> None:
    """core.xǁSessionCoreǁwants_load__mutmut_1, _2."""
    core = make_core()
    assert core.wants_load(SessionState(f"session={core.signer.sign(new_session_id())}")) is True
    assert core.wants_load(SessionState("session=forged")) is False
    assert core.wants_load(SessionState("")) is False


@pytest.mark.parametrize(
    "header, expires", [("session=garbage", True), ("session=", True), ("other=1", False)]
)
def test_a_bad_cookie_of_ours_is_expired_over_https_and_a_foreign_one_left_alone(
    header: str, expires: bool
) -> None:
    """core.xǁSessionCoreǁread_cookie__mutmut_8, _9 and xǁSessionCoreǁ_save__mutmut_20."""
    core = make_core()
    session = open_session(core, header, Script())
    assert dict(session) == {}
    headers = run(core.save(session), Script())
    cookies = [value for name, value in headers if name == "Set-Cookie"]
    if expires:
        (cookie,) = cookies
        assert "Max-Age=0" in cookie and "Secure" in cookie
    else:
        assert cookies == []


def test_a_session_opened_by_the_core_has_the_policy_s_permanence() -> None:
    """core.xǁSessionCoreǁopen__mutmut_7."""
    assert open_session(make_core(permanent=True), "", Script()).permanent is True
    assert open_session(make_core(permanent=False), "", Script()).permanent is False


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


def test_a_due_touch_is_sent_once() -> None:
    """core.xǁSessionCoreǁ_update__mutmut_22."""
    core = make_core()
    session = open_session(core, cookie_for(core, new_session_id()), Script(LoadedRow({"a": 1}, True)))
    assert session["a"] == 1
    touched = Script(True)
    run(core.save(session), touched)
    assert [type(op) for op in touched.asked] == [Touch]
    assert session["a"] == 1  # used again, unchanged (a streaming body's read)
    again = Script()
    run(core.save(session), again)
    assert again.asked == []


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


def test_the_stored_permanent_flag_decides_the_cookie_of_a_blind_write() -> None:
    """core.xǁSessionCoreǁ_cookie_after_save__mutmut_5, _13: a write that did not read the session
    learns ``_permanent`` from the row; a permanent session's new cookie carries Max-Age."""
    core, sid = make_core(), new_session_id()
    blind = open_session(core, cookie_for(core, sid), Script())
    blind["a"] = 1
    stored_not_permanent = Script(WriteResult(True, True, False))
    headers = run(core.save(blind), stored_not_permanent)
    assert headers == [("Vary", "Cookie")]  # a browser-session cookie has no Max-Age to move

    regenerated = open_session(core, cookie_for(core, sid), Script(LoadedRow({"a": 1}, False)))
    assert regenerated["a"] == 1
    regenerated.regenerate()
    headers = run(core.save(regenerated), Script(WriteResult(True, False, None)))
    (cookie,) = [value for name, value in headers if name == "Set-Cookie"]
    assert "Max-Age=86400" in cookie


def test_a_write_after_a_concurrent_logout_is_dropped() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, False), WriteResult(False, False, None))
    session = open_session(core, cookie_for(core, sid), script)
    session["a"] = session["a"] + 1
    headers = run(core.save(session), script)
    assert script.kinds() == [Load, Write]  # no insert: the logout wins
    assert set_cookie_value(headers) is None


def test_a_dropped_save_says_why_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """core.xǁSessionCoreǁ_update__mutmut_74, _75, _76."""
    core = build_core("core-secret-long-enough-for-no-warning")  # the save's line is the only one
    session = open_session(core, cookie_for(core, new_session_id()), Script(LoadedRow({"a": 1}, False)))
    assert session["a"] == 1  # read first: a blind write to a vanished row would start anew
    session["a"] = 2
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        assert run(core.save(session), Script(WriteResult(False, False, None))) == [("Vary", "Cookie")]
    assert caplog.messages == [
        "session save dropped: the session was invalidated or regenerated by a concurrent request"
    ]
    # session.xǁSessionǁmark_saved__mutmut_6: what was dropped is the new baseline, not a change
    # left to save; the app did change the session in this request, which ``modified`` keeps.
    assert session.unsaved is False and session.modified is True


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


def test_ending_a_session_whose_row_is_gone_or_that_never_had_one_asks_nothing() -> None:
    """core.xǁSessionCoreǁload__mutmut_11 and xǁSessionCoreǁ_save__mutmut_3."""
    core = make_core()
    dead = open_session(core, cookie_for(core, new_session_id()), Script(None))
    assert dict(dead) == {}
    dead.invalidate()
    asked = Script()
    assert run(core.save(dead), asked)[0] == ("Vary", "Cookie")
    assert asked.asked == []
    new = open_session(core, "", Script())
    new.invalidate()
    asked = Script()
    assert run(core.save(new), asked) == [("Vary", "Cookie")]
    assert asked.asked == []


def test_a_session_over_max_size_is_refused_before_any_statement() -> None:
    """core.xǁSessionCoreǁ_save__mutmut_8."""
    core = make_core(max_size=100)
    session = open_session(core, "", Script())
    session["a"] = "x" * 200
    asked = Script()
    with pytest.raises(SessionTooLarge):
        run(core.save(session), asked)
    assert asked.asked == []


def test_the_statements_carry_the_policy_s_limits() -> None:
    """core.xǁSessionCoreǁ_insert_new__mutmut_17 and xǁSessionCoreǁ_update__mutmut_49."""
    core = make_core(max_size=10_000, absolute_timeout=timedelta(hours=5))
    new = open_session(core, "", Script())
    new["a"] = 1
    inserted = Script(None)
    run(core.save(new), inserted)
    (insert,) = inserted.asked
    assert (insert.max_size, insert.absolute) == (10_000, timedelta(hours=5))
    live = open_session(core, cookie_for(core, new_session_id()), Script(LoadedRow({"a": 1}, False)))
    live["a"] = 2
    written = Script(WriteResult(True, False, None))
    run(core.save(live), written)
    (write,) = written.asked
    assert (write.max_size, write.absolute) == (10_000, timedelta(hours=5))


def test_making_a_session_non_permanent_sends_its_cookie_without_max_age() -> None:
    """core.xǁSessionCoreǁ_update__mutmut_94, _95."""
    core = make_core()
    session = open_session(core, cookie_for(core, new_session_id()), Script(LoadedRow({"a": 1}, False)))
    session.permanent = False
    headers = run(core.save(session), Script(WriteResult(True, False, False)))
    (cookie,) = [value for name, value in headers if name == "Set-Cookie"]
    assert "Max-Age" not in cookie


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


# -- saving again after the headers (a streaming body's late change) ---------------------------


def test_a_cookie_once_sent_is_not_sent_again_by_a_later_save() -> None:
    """core.xǁSessionCoreǁ_cookie_for__mutmut_2 (``resign`` is cleared once a cookie is sent)."""
    core = make_core()
    session = open_session(core, "", Script())
    session["a"] = 1
    first = run(core.save(session), Script(None))
    assert any(name == "Set-Cookie" for name, _ in first)
    session["a"] = 2  # a streaming body's late change, saved under the id just issued
    second = run(core.save(session), Script(WriteResult(True, False, None)))
    assert second == [("Vary", "Cookie")]


def test_a_late_save_after_an_insert_writes_under_the_new_id() -> None:
    """core.xǁSessionCoreǁread_cookie__mutmut_1, _2 (the cookie is read once: the id a save
    issued is not replaced by the request cookie's) and xǁSessionCoreǁ_insert_new__mutmut_38."""
    core, dead = make_core(), new_session_id()
    session = open_session(core, cookie_for(core, dead), Script(None))
    assert session.get("a") is None  # the cookie's row is gone: the save inserts under a new id
    session["a"] = 1
    headers = run(core.save(session), Script(None))
    (cookie,) = [value for name, value in headers if name == "Set-Cookie"]
    new_id = cookie.split("=", 1)[1].split(".", 1)[0]
    assert session.id == new_id != dead
    session["a"] = 2  # a streaming body's change after the headers
    late = Script(WriteResult(True, False, None))
    run(core.save(session), late)
    (write,) = late.asked
    assert isinstance(write, Write) and write.id_hash == hash_session_id(new_id)


def test_a_late_save_is_refused_for_each_reason_alone() -> None:
    """core.xǁSessionCoreǁlate_save_refused__mutmut_4, _5 and xǁSessionCoreǁ_new_user__mutmut_10."""
    core, sid = make_core(user_key="uid"), new_session_id()

    def loaded() -> Session:
        session = open_session(core, cookie_for(core, sid), Script(LoadedRow({"a": 1}, False)))
        assert session["a"] == 1
        return session

    assert core.late_save_refused(loaded()) is False
    regenerated = loaded()
    regenerated.regenerate()
    assert core.late_save_refused(regenerated) is True
    ended = loaded()
    ended.invalidate()
    assert core.late_save_refused(ended) is True
    new = open_session(core, "", Script())
    new["a"] = 1
    assert core.late_save_refused(new) is True
    # A value that cannot be stored is the save's to report (a 500), not a refused late save.
    unstorable = loaded()
    unstorable["x"] = []
    unstorable["x"].append(object())
    assert core.late_save_refused(unstorable) is False


def test_only_a_session_used_after_its_save_is_saved_again() -> None:
    """core.xǁSessionCoreǁneeds_late_save__mutmut_1: a value changed in place through a reference
    the app kept, with the session itself untouched after the save, is not looked at (finding
    it would cost an encoding of every value on every request)."""
    core = make_core()
    session = open_session(core, cookie_for(core, new_session_id()), Script(LoadedRow({"cart": [1]}, False)))
    cart = session["cart"]
    run(core.save(session), Script())
    cart.append(2)
    assert core.needs_late_save(session) is False
    session["cart"].append(3)
    assert core.needs_late_save(session) is True


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


def test_setting_the_user_key_to_none_clears_the_user_column() -> None:
    """core.xǁSessionCoreǁ_user_column__mutmut_6."""
    core = make_core(user_key="uid")
    session = open_session(core, cookie_for(core, new_session_id()), Script(LoadedRow({"uid": "u1"}, False)))
    session["uid"] = None
    written = Script(WriteResult(True, False, None))
    run(core.save(session), written)
    (write,) = written.asked
    assert write.user_id is None


def test_user_ids_have_one_text_form() -> None:
    import uuid

    value = uuid.UUID(int=5)
    assert user_id_text(value) == str(value) and user_id_text(7) == "7" and user_id_text("x") == "x"
    for bad in (True, 1.5, (1,)):
        with pytest.raises(SessionError, match="str, int or UUID"):
            user_id_text(bad, "uid")


def test_user_ids_of_other_types_are_refused_saying_what_to_store() -> None:
    """core.x_user_id_text__mutmut_11, _13, _14, _16, _17."""
    with pytest.raises(SessionError) as without_key:
        user_id_text(1.5)
    assert str(without_key.value) == (
        "a user id is a builtins.float; user ids must be str, int or UUID: "
        "store the user's id in one of those types"
    )
    with pytest.raises(SessionError) as with_key:
        user_id_text(1.5, "uid")
    assert str(with_key.value).startswith("the session value under user_key 'uid' is a builtins.float;")


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


@pytest.mark.parametrize(
    "option, message",
    [
        ({"idle_timeout": 0}, "idle_timeout must be positive, not 0"),
        ({"touch_interval": -1}, "touch_interval must be positive, not -1"),
        ({"absolute_timeout": 0}, "absolute_timeout must be positive, not 0"),
        ({"max_size": 0}, "max_size must be a positive number of bytes, or None"),
    ],
)
def test_policy_refusals_name_the_option(option: dict[str, Any], message: str) -> None:
    """core.xǁPolicyǁfrom_options__mutmut_6, _13, _22.._25, _46."""
    with pytest.raises(ConfigurationError) as refused:
        make_core(**option)
    assert str(refused.value) == message


def test_a_max_size_of_one_byte_is_allowed() -> None:
    """core.xǁPolicyǁfrom_options__mutmut_20, _21."""
    assert make_core(max_size=1).policy.max_size == 1


def test_a_secret_is_required() -> None:
    with pytest.raises(ConfigurationError, match="secret_key"):
        build_core(None)


def test_a_missing_secret_says_how_to_pass_one() -> None:
    """core.xǁSessionCoreǁconfigure__mutmut_4, _5, _7, _8."""
    with pytest.raises(ConfigurationError) as refused:
        build_core(None)
    assert str(refused.value) == (
        "secret_key is missing: pass SessionMiddleware(app, store, secret_key=...) "
        "with a long random value, e.g. from secrets.token_hex(32)"
    )


def test_every_cookie_option_reaches_the_cookie_settings() -> None:
    """core.xǁSessionCoreǁconfigure__mutmut_18, _22, _24, _25, _26."""
    core = make_core(cookie_path="/app", cookie_secure=False, cookie_httponly=False, cookie_samesite="Strict")
    assert core.cookie == CookieSettings(
        name="session", path="/app", domain=None, secure=False, httponly=False, samesite="Strict"
    )


@pytest.mark.parametrize(
    "given, expected",
    [(None, "private"), ("public, max-age=60", "private, max-age=60"), ("no-store", None), ("Private", None)],
)
def test_private_cache_control(given: str | None, expected: str | None) -> None:
    assert private_cache_control(given) == expected


@pytest.mark.parametrize(
    "given, expected",
    [
        ('private="Set-Cookie"', None),
        ('private="a=b"', None),
        ("public=a=b, max-age=60", "private, max-age=60"),
    ],
)
def test_cache_control_directives_are_named_by_what_precedes_the_first_equals_sign(
    given: str, expected: str | None
) -> None:
    """core.x_private_cache_control__mutmut_8, _12, _13, _25, _29, _30."""
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


def test_the_async_driver_sends_each_answer_to_the_next_step() -> None:
    """core.x_run_async__mutmut_4: a save of two statements (a blind write whose row is gone,
    then the insert under a new id)."""
    core, sid = make_core(), new_session_id()
    answers = Script(WriteResult(False, False, None), None)

    async def execute(operation: Any) -> Any:
        return answers(operation)

    session = open_session(core, cookie_for(core, sid), Script())
    session["a"] = 1  # written without being read
    headers = asyncio.run(run_async(core.save(session), execute))
    assert [type(op) for op in answers.asked] == [Write, Insert]
    assert any(name == "Set-Cookie" for name, _ in headers)


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
