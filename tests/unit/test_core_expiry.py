"""A lifetime per session (``session.set_expiry``), decided by the core without a database.

Each test scripts the store's answers and checks the statement the core asks for and the
``Max-Age`` of the cookie it sends. The database side (the expiry formula, the DB clock, old
tables) is in tests/integration/test_expiry.py.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from helpers import Script, build_core

from pgsession_wsgi import ConfigurationError, InvalidExpiry, SessionError
from pgsession_wsgi._store.layout import check_layout, needs_upgrade
from pgsession_wsgi.cookies import hash_session_id, new_session_id
from pgsession_wsgi.core import (
    Delete,
    Insert,
    Load,
    LoadedRow,
    SessionCore,
    Touch,
    Write,
    WriteResult,
    expiry_columns,
    run,
)
from pgsession_wsgi.session import Session
from pgsession_wsgi.sql import upgrade_statement

SECRET = "expiry-secret"
DAY = timedelta(days=1)
MONTH = timedelta(days=30)


def make_core(**options: Any) -> SessionCore:
    # The middleware's default here: two hours idle; "remember me" is a month.
    return build_core(SECRET, **{"idle_timeout": timedelta(hours=2), **options})


def open_session(core: SessionCore, script: Script, session_id: str | None = None) -> Session:
    cookie = f"session={core.signer.sign(session_id)}" if session_id else ""
    return core.open(cookie, "https", lambda session: run(core.load(session), script))


def max_age(headers: list[tuple[str, str]]) -> int | None:
    """The Max-Age of the one Set-Cookie in ``headers``; None if it has none (a browser session)."""
    (cookie,) = [value for name, value in headers if name == "Set-Cookie"]
    found = re.search(r"Max-Age=(\d+)", cookie)
    return None if found is None else int(found.group(1))


def has_cookie(headers: list[tuple[str, str]]) -> bool:
    return any(name == "Set-Cookie" for name, _ in headers)


def now() -> datetime:
    return datetime.now(timezone.utc)


# -- what set_expiry takes ------------------------------------------------------------------


@pytest.mark.parametrize("value", [30, 2.5, "30 days", date(2100, 1, 1), True])
def test_set_expiry_refuses_other_types_with_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="timedelta.*aware datetime.*None"):
        Session().set_expiry(value)


@pytest.mark.parametrize("value", [timedelta(0), timedelta(seconds=-1)])
def test_a_lifetime_that_is_not_positive_is_refused(value: timedelta) -> None:
    session = Session()
    with pytest.raises(InvalidExpiry, match=r"positive timedelta.*invalidate\(\)"):
        session.set_expiry(value)
    assert not session.state.expiry_set


def test_a_lifetime_past_year_9999_is_refused() -> None:
    with pytest.raises(InvalidExpiry, match="year 9999"):
        Session().set_expiry(timedelta.max)


def test_a_lifetime_is_at_most_100_years() -> None:
    """An idle lifetime moves the end on as the session is used: one ending just before year
    10000 was accepted, and a request a minute later pushed the row past what a driver reads."""
    session = Session()
    session.set_expiry(timedelta(days=36500))
    assert session.expiry == timedelta(days=36500)
    for longer in (
        timedelta(days=36500, microseconds=1),
        datetime.max - datetime.now() - timedelta(seconds=30),
    ):
        with pytest.raises(InvalidExpiry, match=r"longer than 36500 days \(100 years\)"):
            Session().set_expiry(longer)


@pytest.mark.parametrize("option", ["idle_timeout", "absolute_timeout", "touch_interval"])
def test_the_middlewares_durations_are_at_most_100_years(option: str) -> None:
    SessionCore.configure("k" * 32, **{option: timedelta(days=36500)})
    for longer in (timedelta(days=36501), 36500 * 86400 + 1, 1e300):
        with pytest.raises(ConfigurationError, match=f"^{option} must be at most 36500 days"):
            SessionCore.configure("k" * 32, **{option: longer})


@pytest.mark.parametrize(
    "end",
    [
        # 23:00 at UTC-5 on the last day of 9999 is 04:00 on 1 January 10000 in UTC.
        datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5))),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(minutes=-1))),
        # The last instant a datetime holds: psycopg2 reads PostgreSQL's 'infinity' as it.
        datetime.max.replace(tzinfo=timezone.utc),
    ],
    ids=["year-10000-in-utc", "a-minute-past-in-utc", "datetime-max"],
)
def test_a_fixed_end_past_year_9999_in_utc_is_refused(end: datetime) -> None:
    """Issue 20: such an end was written, then no driver could read the row back."""
    session = Session()
    with pytest.raises(InvalidExpiry, match="year 9999"):
        session.set_expiry(end)
    assert session.expiry is None and not session.modified


def test_the_last_end_a_session_can_have_is_just_before_the_end_of_year_9999_in_utc() -> None:
    session = Session()
    last = datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=timezone.utc)
    session.set_expiry(last)
    assert session.expiry == last
    session.set_expiry(last.astimezone(timezone(timedelta(hours=-14))))  # the same instant
    assert session.expiry == last


def test_a_naive_datetime_is_refused_its_zone_cannot_be_known() -> None:
    with pytest.raises(InvalidExpiry, match="aware datetime"):
        Session().set_expiry(datetime.now() + DAY)


def test_a_datetime_not_in_the_future_is_refused() -> None:
    with pytest.raises(InvalidExpiry, match="not in the future"):
        Session().set_expiry(now() - timedelta(seconds=1))


def test_invalid_expiry_is_a_session_error_and_a_value_error() -> None:
    assert issubclass(InvalidExpiry, SessionError) and issubclass(InvalidExpiry, ValueError)


def test_the_expiry_is_what_was_set_and_setting_it_marks_the_session_modified() -> None:
    session = Session()
    assert session.expiry is None and not session.modified
    end = now() + DAY
    session.set_expiry(end)
    assert session.expiry == end and session.modified and session.accessed
    session.set_expiry(MONTH)
    assert session.expiry == MONTH
    session.set_expiry(None)
    assert session.expiry is None


def test_expiry_columns_split_a_lifetime_into_the_rows_two_columns() -> None:
    end = now() + DAY
    assert expiry_columns(None) == (None, None)
    assert expiry_columns(MONTH) == (MONTH, None)
    assert expiry_columns(end) == (None, end)


# -- new sessions ---------------------------------------------------------------------------


def test_a_new_remembered_session_is_one_insert_with_its_idle_lifetime_and_max_age() -> None:
    core, script = make_core(), Script(None)
    session = open_session(core, script)
    session["user"] = 42
    session.set_expiry(MONTH)
    headers = run(core.save(session), script)
    (insert,) = script.asked
    assert isinstance(insert, Insert)
    assert (insert.idle_timeout, insert.ends_at) == (MONTH, None)
    assert insert.idle == timedelta(hours=2)  # the store's default travels too, for the formula
    assert max_age(headers) == MONTH.total_seconds()


def test_a_new_session_with_a_fixed_end_gets_the_seconds_until_it_as_max_age() -> None:
    core, script = make_core(), Script(None)
    session = open_session(core, script)
    session["user"] = 42
    end = now() + timedelta(days=10)
    session.set_expiry(end)
    before = now()
    headers = run(core.save(session), script)
    after = now()
    (insert,) = script.asked
    assert isinstance(insert, Insert) and (insert.idle_timeout, insert.ends_at) == (None, end)
    age = max_age(headers)
    assert age is not None
    assert int((end - after).total_seconds()) <= age <= int((end - before).total_seconds())


def test_a_new_session_without_its_own_lifetime_inserts_none_and_the_default_max_age() -> None:
    core, script = make_core(), Script(None)
    session = open_session(core, script)
    session["user"] = 42
    headers = run(core.save(session), script)
    (insert,) = script.asked
    assert isinstance(insert, Insert) and (insert.idle_timeout, insert.ends_at) == (None, None)
    assert max_age(headers) == 7200


def test_an_empty_session_is_not_stored_for_its_lifetime_alone() -> None:
    core, script = make_core(), Script()
    session = open_session(core, script)
    session.set_expiry(MONTH)
    assert run(core.save(session), script) == [("Vary", "Cookie")]
    assert script.asked == []


def test_a_session_regenerated_before_its_first_save_keeps_its_lifetime() -> None:
    core, script = make_core(), Script(None)
    session = open_session(core, script)
    session["user"] = 42
    session.set_expiry(MONTH)
    session.regenerate()
    headers = run(core.save(session), script)
    (insert,) = script.asked
    assert isinstance(insert, Insert) and insert.idle_timeout == MONTH
    assert max_age(headers) == MONTH.total_seconds()


# -- the cookie's Max-Age -------------------------------------------------------------------


def test_the_max_age_is_capped_by_the_absolute_timeout() -> None:
    core, script = make_core(absolute_timeout=DAY), Script(None)
    session = open_session(core, script)
    session["user"] = 42
    session.set_expiry(MONTH)
    assert max_age(run(core.save(session), script)) == DAY.total_seconds()
    assert core.max_age(now() + MONTH) == DAY.total_seconds()
    assert core.max_age(timedelta(hours=1)) == 3600  # a shorter one stays as it is


def test_the_max_age_is_never_negative() -> None:
    # A fixed end the database clock has not reached yet, but this machine's has.
    assert make_core().max_age(now() - DAY) == 0


def test_a_browser_session_cookie_gets_no_max_age_whatever_its_lifetime() -> None:
    core, script = make_core(), Script(None)
    session = open_session(core, script)
    session["user"] = 42
    session.permanent = False
    session.set_expiry(MONTH)
    headers = run(core.save(session), script)
    assert max_age(headers) is None
    (insert,) = script.asked
    assert isinstance(insert, Insert) and insert.idle_timeout == MONTH  # the server side holds it


# -- stored sessions ------------------------------------------------------------------------


def test_the_load_gives_the_session_its_stored_lifetime() -> None:
    core, sid = make_core(), new_session_id()
    end = now() + DAY
    session = open_session(core, Script(LoadedRow({"a": 1}, False, None, end)), sid)
    assert session.expiry == end
    session = open_session(core, Script(LoadedRow({"a": 1}, False, MONTH, None)), sid)
    assert session.expiry == MONTH
    session = open_session(core, Script(LoadedRow({"a": 1}, False)), sid)
    assert session.expiry is None


def test_setting_the_lifetime_alone_is_one_write_that_re_sends_the_cookie() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, False), WriteResult(True, True, None, MONTH, None))
    session = open_session(core, script, sid)
    assert session["a"] == 1
    session.set_expiry(MONTH)
    headers = run(core.save(session), script)
    assert script.kinds() == [Load, Write]
    write = script.asked[1]
    assert isinstance(write, Write)
    assert write.set_expiry and (write.idle_timeout, write.ends_at) == (MONTH, None)
    assert write.changed_json == "{}" and write.removed == [] and write.new_hash is None
    assert max_age(headers) == MONTH.total_seconds()


def test_the_cookie_is_re_sent_for_a_new_lifetime_even_without_refresh_each_request() -> None:
    core, sid = make_core(refresh_each_request=False), new_session_id()
    script = Script(LoadedRow({"a": 1}, False), WriteResult(True, True, None, MONTH, None))
    session = open_session(core, script, sid)
    session.get("a")
    session.set_expiry(MONTH)
    assert max_age(run(core.save(session), script)) == MONTH.total_seconds()


def test_setting_the_stored_lifetime_again_writes_nothing() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, False, MONTH, None))
    session = open_session(core, script, sid)
    session.get("a")
    session.set_expiry(MONTH)
    assert not session.modified
    assert run(core.save(session), script) == [("Vary", "Cookie")]
    assert script.kinds() == [Load]


def test_none_sets_the_store_default_back() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, False, MONTH, None), WriteResult(True, True, None))
    session = open_session(core, script, sid)
    session.get("a")
    session.set_expiry(None)
    headers = run(core.save(session), script)
    write = script.asked[1]
    assert isinstance(write, Write)
    assert write.set_expiry and (write.idle_timeout, write.ends_at) == (None, None)
    assert max_age(headers) == 7200


def test_a_lifetime_set_without_reading_is_one_write_and_no_load() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(WriteResult(True, True, None, MONTH, None))
    session = open_session(core, script, sid)
    session["user"] = 42
    session.set_expiry(MONTH)
    headers = run(core.save(session), script)
    assert script.kinds() == [Write]
    write = script.asked[0]
    assert isinstance(write, Write) and write.set_expiry and write.idle_timeout == MONTH
    assert max_age(headers) == MONTH.total_seconds()


def test_a_lifetime_set_before_the_load_wins_over_the_stored_one() -> None:
    core, sid = make_core(), new_session_id()
    end = now() + DAY
    script = Script(LoadedRow({"a": 1}, False, MONTH, None), WriteResult(True, True, None, None, end))
    session = open_session(core, script, sid)
    session.set_expiry(end)
    assert session["a"] == 1  # loads now
    assert session.expiry == end
    run(core.save(session), script)
    write = script.asked[1]
    assert isinstance(write, Write) and write.set_expiry and write.ends_at == end


def test_a_blind_write_learns_the_rows_lifetime_for_the_refreshed_cookie() -> None:
    # Not read, no set_expiry: the write's answer says the row has its own month.
    core, sid = make_core(), new_session_id()
    script = Script(WriteResult(True, True, None, MONTH, None))
    session = open_session(core, script, sid)
    session["b"] = 2
    headers = run(core.save(session), script)
    write = script.asked[0]
    assert isinstance(write, Write) and not write.set_expiry
    assert max_age(headers) == MONTH.total_seconds()
    assert session.expiry == MONTH


def test_a_blind_write_learns_the_rows_fixed_end_for_the_refreshed_cookie() -> None:
    """The same with a fixed end (set_expiry(datetime) in an earlier request): the Max-Age is the
    time left until it. _save_decision._update mutant 95 (the end read as None)."""
    core, sid = make_core(), new_session_id()
    end = now() + timedelta(hours=10)
    script = Script(WriteResult(True, True, None, None, end))
    session = open_session(core, script, sid)
    session["b"] = 2
    headers = run(core.save(session), script)
    assert session.expiry == end
    assert 10 * 3600 - 60 <= (max_age(headers) or 0) <= 10 * 3600


def test_a_due_touch_of_a_remembered_session_refreshes_the_cookie_with_its_own_max_age() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, True, MONTH, None), True)
    session = open_session(core, script, sid)
    session.get("a")
    headers = run(core.save(session), script)
    assert script.kinds() == [Load, Touch]
    assert max_age(headers) == MONTH.total_seconds()


def test_regenerate_moves_the_row_and_keeps_its_lifetime() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, False, MONTH, None), WriteResult(True, False, None, MONTH, None))
    session = open_session(core, script, sid)
    session.get("a")
    session.regenerate()
    headers = run(core.save(session), script)
    write = script.asked[1]
    assert isinstance(write, Write) and write.new_hash is not None
    assert not write.set_expiry  # the row moves with its columns: nothing to write
    assert max_age(headers) == MONTH.total_seconds()
    assert session.expiry == MONTH


def test_a_write_to_a_vanished_row_starts_the_new_session_with_the_lifetime() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(WriteResult(False, False, None), None)
    session = open_session(core, script, sid)
    session["user"] = 42
    session.set_expiry(MONTH)
    headers = run(core.save(session), script)
    assert script.kinds() == [Write, Insert]
    insert = script.asked[1]
    assert isinstance(insert, Insert) and insert.id_hash != hash_session_id(sid)
    assert insert.idle_timeout == MONTH
    assert max_age(headers) == MONTH.total_seconds()


def test_invalidate_forgets_the_lifetime() -> None:
    core, sid = make_core(), new_session_id()
    script = Script(LoadedRow({"a": 1}, False, MONTH, None), True, None)
    session = open_session(core, script, sid)
    session.get("a")
    session.invalidate()
    assert session.expiry is None
    session["anonymous"] = 1  # a new session in the same request: the default lifetime
    headers = run(core.save(session), script)
    assert script.kinds() == [Load, Delete, Insert]
    insert = script.asked[2]
    assert isinstance(insert, Insert) and (insert.idle_timeout, insert.ends_at) == (None, None)
    assert max_age(headers) == 7200


def test_a_later_save_writes_the_lifetime_only_once() -> None:
    core, script = make_core(), Script(None, WriteResult(True, False, None, MONTH, None))
    session = open_session(core, script)
    session["a"] = 1
    session.set_expiry(MONTH)
    run(core.save(session), script)
    assert not session.state.expiry_set and session.expiry == MONTH
    session["b"] = 2  # a streaming body's late change
    headers = run(core.save(session), script)
    write = script.asked[1]
    assert isinstance(write, Write) and not write.set_expiry
    assert not has_cookie(headers)


# -- tables of an older version -------------------------------------------------------------

CURRENT = {
    "id": "bytea",
    "data": "jsonb",
    "user_id": "text",
    "created_at": "timestamp with time zone",
    "accessed_at": "timestamp with time zone",
    "expires_at": "timestamp with time zone",
    "idle_timeout": "interval",
    "ends_at": "timestamp with time zone",
}
OLD = {name: kind for name, kind in CURRENT.items() if name not in ("idle_timeout", "ends_at")}


def test_only_a_table_of_ours_that_lacks_only_the_new_columns_is_upgraded() -> None:
    assert needs_upgrade(OLD)
    assert needs_upgrade({name: kind for name, kind in CURRENT.items() if name != "ends_at"})
    assert not needs_upgrade(CURRENT)
    assert not needs_upgrade({name: kind for name, kind in OLD.items() if name != "user_id"})
    assert not needs_upgrade({**OLD, "ends_at": "text"})  # a column of that name, not ours
    assert not needs_upgrade({"session_id": "text", "data": "bytea", "expiry": "timestamp"})
    assert not needs_upgrade({})


def test_an_older_table_is_refused_with_the_statement_that_upgrades_it() -> None:
    where = dict(qualified='"s"."t"', table="t", schema="s")
    with pytest.raises(ConfigurationError) as refused:
        check_layout({name: kind for name, kind in CURRENT.items() if name != "ends_at"}, **where)
    assert "lacks the column(s) ends_at" in str(refused.value)
    assert upgrade_statement('"s"."t"') in str(refused.value)
    assert upgrade_statement('"s"."t"') == (
        'ALTER TABLE "s"."t" ADD COLUMN IF NOT EXISTS idle_timeout interval,'
        " ADD COLUMN IF NOT EXISTS ends_at timestamptz"
    )
    with pytest.raises(ConfigurationError, match="not a pgsession-wsgi table"):
        check_layout({**OLD, "ends_at": "text"}, **where)
    check_layout(CURRENT, **where)
