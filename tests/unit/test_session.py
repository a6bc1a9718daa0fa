"""The Session object without a database: a dict that loads its data only when first used,
compares and answers as its data does, names what failed, and hands the save only what changed,
measured as PostgreSQL prints it.

Where a save runs, the core drives it and the store's answers are scripted (as in
tests/unit/test_core.py). The session as a dict through every adapter, on a real PostgreSQL, is
tests/integration/test_session_is_a_dict.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import Script, build_core

from pgsession_wsgi.cookies import hash_session_id, new_session_id
from pgsession_wsgi.core import Delete, LoadedRow, SessionCore, WriteResult, run
from pgsession_wsgi.errors import SessionDataError, SessionError, SessionTooLarge
from pgsession_wsgi.session import Session, SessionState

SECRET = "session-secret-long-enough-for-no-warning"


def make_core(**options: Any) -> SessionCore:
    return build_core(SECRET, **options)


def open_session(core: SessionCore, cookie: str, script: Script) -> Session:
    return core.open(cookie, "https", lambda session: run(core.load(session), script))


def cookie_for(core: SessionCore, session_id: str) -> str:
    return f"session={core.signer.sign(session_id)}"


# -- a dict that loads when first used --------------------------------------------------------


def test_a_session_made_without_the_core_is_new_loaded_and_permanent() -> None:
    """session.xǁSessionStateǁ__init____mutmut_1, _2, _3 and xǁSessionǁ__init____mutmut_1, _5,
    _12, _13: ``Session()`` is a session known to be new, as a test or a front end builds it."""
    # SessionState is the front end's seam (core.open makes one per request); these are its defaults.
    state = SessionState()
    assert (state.cookie_header, state.scheme) == ("", "http")
    session = Session()
    assert session.loaded is True and session.permanent is True
    assert repr(session) == "{}" and session.new
    assert session.new is True


def test_a_session_compares_and_answers_membership_by_its_data() -> None:
    """session.xǁSessionǁ__contains____mutmut_1, xǁSessionǁ__eq____mutmut_1, _2."""
    session = Session(lambda s: {"a": 1})
    assert "a" in session and "b" not in session
    assert session == {"a": 1} and session != {"a": 2}
    assert session == Session(lambda s: {"a": 1}) and session != Session(lambda s: {"a": 2})


def test_a_cleared_session_never_loads_the_stored_data_back() -> None:
    """session.xǁSessionǁclear__mutmut_5, _6."""
    loads: list[Session] = []

    def loader(session: Session) -> dict[str, Any]:
        loads.append(session)
        return {"a": 1}

    session = Session(loader)
    session.clear()
    assert dict(session) == {} and loads == []


def test_the_repr_is_a_dicts_once_loaded_never_loads_and_never_shows_the_id() -> None:
    """session.xǁSessionǁ__repr____mutmut_1.._12 (issue 23: the session is a dict)."""
    stored = Session(lambda s: {"b": 1, "a": 2})
    assert repr(stored) == "<Session (not loaded)>"
    assert not stored.loaded
    assert stored["a"] == 2
    assert repr(stored) == "{'b': 1, 'a': 2}"
    new = Session(lambda s: None)
    new["x"] = 1
    assert new.get("y") is None
    assert repr(new) == str(new) == "{'x': 1}"


def test_session_errors_name_what_failed() -> None:
    """session.xǁSessionǁpreload__mutmut_7, _8, xǁSessionǁ__setitem____mutmut_3, _4 and
    x__encode__mutmut_4."""
    damaged = Session(lambda s: {"a": {" d": "not a date"}})
    with pytest.raises(SessionDataError) as undecodable:
        damaged.get("a")
    assert str(undecodable.value).startswith("a stored session could not be decoded (ValueError);")
    with pytest.raises(TypeError) as key:
        Session()[1] = "x"  # type: ignore[index]
    assert str(key.value) == "session keys must be str, not int"
    unstorable = Session()
    with pytest.raises(SessionError) as refused:
        unstorable["x"] = object()
    assert (
        ". Store plain data (str, int, float, bool, None, list, dict with str keys, tuple, datetime, "
        "date, time, bytes, UUID, Decimal, Markup) instead" in str(refused.value)
    )


# -- what a save is handed: the changes and their size ----------------------------------------


def test_a_new_key_set_to_none_is_a_change() -> None:
    """session.xǁSessionǁchanges__mutmut_40, _42."""
    session = Session(lambda s: {"a": 1})
    assert session["a"] == 1
    session["b"] = None
    changes = session.changes(None)
    assert changes.changed_keys == ["b"] and changes.changed_json == '{"b":null}'


def test_the_size_check_counts_utf8_bytes_not_characters() -> None:
    """session.x__utf8_length__mutmut_2: 60 two-byte characters are 120 bytes."""
    session = Session()
    session["k"] = "é" * 60
    with pytest.raises(SessionTooLarge):
        session.changes(max_size=100)
    session["k"] = "e" * 60
    session.changes(max_size=100)


def test_the_size_estimate_is_what_postgresql_prints() -> None:
    """session.xǁSessionǁchanges__mutmut_74, _76, _77, _80, _81, _82, _83: {"k": "v"} is 10 bytes
    as jsonb prints it, so 10 passes and 9 does not."""
    session = Session()
    session["k"] = "v"
    session.changes(max_size=10)
    with pytest.raises(SessionTooLarge) as refused:
        session.changes(max_size=9)
    assert (refused.value.size, refused.value.limit) == (10, 9)


# -- after a save ------------------------------------------------------------------------------


def test_a_regenerate_without_changes_sends_an_empty_change_and_keeps_the_baseline() -> None:
    """session.xǁSessionǁchanges__mutmut_7, _8, _11, _21 (the read-only shortcut) and _58 (the
    compared path): the write moves the row and changes nothing, and a later save still works."""
    core = make_core()
    for set_again in (False, True):
        session = open_session(core, cookie_for(core, new_session_id()), Script(LoadedRow({"a": 1}, False)))
        assert session["a"] == 1
        if set_again:
            session["a"] = 1  # set to what it was: compared, not taken on trust
        session.regenerate()
        moved = Script(WriteResult(True, False, None))
        run(core.save(session), moved)
        (write,) = moved.asked
        assert (write.changed_json, write.removed, write.replace) == ("{}", [], False)
        assert write.new_hash is not None
        session["b"] = 2
        later = Script(WriteResult(True, False, None))
        run(core.save(session), later)
        (write,) = later.asked
        assert (write.changed_json, write.new_hash) == ('{"b":2}', None)


def test_a_session_holding_only_meta_keys_is_deleted() -> None:
    """session.xǁSessionǁchanges__mutmut_13, _25 (read only) and _60 (set to the same value)."""
    core = make_core()
    for set_again in (False, True):
        sid = new_session_id()
        session = open_session(core, cookie_for(core, sid), Script(LoadedRow({"_permanent": True}, False)))
        assert session.get("x") is None
        if set_again:
            session["_permanent"] = True
        deleted = Script(True)
        run(core.save(session), deleted)
        assert deleted.asked == [Delete(hash_session_id(sid))]


def test_after_a_save_the_session_keeps_its_data_and_sends_only_later_changes() -> None:
    """session.xǁSessionǁmark_saved__mutmut_7, _9, _11."""
    core = make_core()
    session = open_session(core, cookie_for(core, new_session_id()), Script(LoadedRow({"a": 1}, False)))
    assert session["a"] == 1
    session["b"] = 2
    run(core.save(session), Script(WriteResult(True, False, None)))
    assert dict(session) == {"a": 1, "b": 2}
    session["c"] = 3
    later = Script(WriteResult(True, False, None))
    run(core.save(session), later)
    (write,) = later.asked
    assert write.changed_json == '{"c":3}'
    # Emptied and deleted: a later change starts from nothing.
    emptied = open_session(core, cookie_for(core, new_session_id()), Script(LoadedRow({"a": 1}, False)))
    del emptied["a"]
    run(core.save(emptied), Script(True))
    emptied["b"] = 1
    assert emptied.changes(None).changed_keys == ["b"]
