"""Django's session API, as Django documents it for every session engine, against Django's own
database backend (``django.contrib.sessions.backends.db``, "theirs") and ``pgsession_wsgi.django``
("ours"): the same test, only ``SESSION_ENGINE`` differs.

What the docs promise: ``request.session`` is a mapping (``get``, ``pop``, ``setdefault``,
``update``, ``in``, ``keys``/``values``/``items``) with ``modified`` and ``accessed``; ``flush()``
ends the session and forgets its key; ``cycle_key()`` keeps the data under a new key;
``set_expiry()`` takes seconds, a ``datetime``, a ``timedelta``, 0 (browser close) or None (the
global policy), and ``get_expiry_age()``, ``get_expiry_date()`` and
``get_expire_at_browser_close()`` answer from it; ``exists``, ``save``, ``delete``, ``load`` and
``clear_expired`` as the backend API says. Django's SessionMiddleware sets the cookie only for a
modified session (or with ``SESSION_SAVE_EVERY_REQUEST``), with the ``SESSION_COOKIE_*`` settings,
``Max-Age`` from ``SESSION_COOKIE_AGE`` unless ``SESSION_EXPIRE_AT_BROWSER_CLOSE``, and deletes it
after ``flush()``.

The tests marked ours-only are the differences kept on purpose, listed in docs/django.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

pytest.importorskip("django", reason="Django is not installed (pip install 'pgsession-wsgi[django]')")

from apps import django_site  # noqa: E402

from contracts.support import ours_only  # noqa: E402

ENGINES = {"theirs": "django.contrib.sessions.backends.db", "ours": "pgsession_wsgi.django"}
both = pytest.mark.parametrize("flavour", ["theirs", "ours"])


@pytest.fixture
def engine(flavour: str, pg_dsn: str, schema: str) -> Iterator[Any]:
    """The flavour's ``SessionStore`` class, with Django's table and ours in this test's schema."""
    from importlib import import_module

    django_site.configure(pg_dsn)
    with django_site.in_schema(schema, SESSION_ENGINE=ENGINES[flavour]):
        django_site.create_django_tables()
        yield import_module(ENGINES[flavour]).SessionStore


def client() -> Any:
    from django.test import Client

    return Client()


# -- the mapping and its flags -------------------------------------------------------------------


@both
def test_reading_a_missing_key_is_an_access_not_a_change(engine: Any) -> None:
    session = engine()
    assert session.get("cat") is None
    assert session.accessed is True and session.modified is False
    assert "cat" not in session
    assert session.pop("cat", "none") == "none"
    assert session.modified is False


@both
def test_writes_are_changes_and_come_back_under_the_key(engine: Any) -> None:
    session = engine()
    session["cat"] = "dog"
    assert session.modified is True
    session.update({"fish": 1})
    assert session.setdefault("bird", [1]) == [1]
    assert session.setdefault("bird", [2]) == [1]
    session.save()
    again = engine(session.session_key)
    assert dict(again.items()) == {"cat": "dog", "fish": 1, "bird": [1]}
    assert sorted(again.keys()) == ["bird", "cat", "fish"]
    assert again.has_key("fish") and "fish" in again
    assert again.pop("fish") == 1
    assert again.modified is True
    with pytest.raises(KeyError):
        again.pop("fish")


@both
def test_clear_empties_and_is_a_change(engine: Any) -> None:
    session = engine()
    session["x"] = 1
    session.save()
    again = engine(session.session_key)
    again.clear()
    assert list(again.items()) == []
    assert again.accessed is True and again.modified is True


@both
def test_new_store_is_empty_until_written(engine: Any) -> None:
    session = engine()
    assert session.is_empty() is True
    assert session.session_key is None
    session["x"] = 1
    assert session.is_empty() is False


# -- keys: save, exists, delete, flush, cycle_key, load ---------------------------------------------


@both
def test_save_gives_a_key_that_exists(engine: Any) -> None:
    session = engine()
    session["x"] = 1
    session.save()
    assert session.session_key
    assert session.exists(session.session_key) is True
    session.delete(session.session_key)
    assert session.exists(session.session_key) is False


@both
def test_flush_forgets_the_key_and_ends_the_stored_session(engine: Any) -> None:
    session = engine()
    session["x"] = 1
    session.save()
    key = session.session_key
    session.flush()
    assert session.exists(key) is False
    assert session.session_key is None
    assert session.modified is True and session.accessed is True
    assert engine(key).load() == {}


@both
def test_cycle_key_keeps_the_data_under_a_new_key(engine: Any) -> None:
    session = engine()
    session["a"], session["b"] = "c", "d"
    session.save()
    key = session.session_key
    session.cycle_key()
    assert session.session_key != key
    assert session.exists(key) is False
    assert dict(session.items()) == {"a": "c", "b": "d"}
    session.save()
    assert engine(session.session_key).load() == {"a": "c", "b": "d"}


@both
def test_cycle_key_on_a_store_not_loaded_yet(engine: Any) -> None:
    session = engine()
    session["a"] = 1
    session.save()
    fresh = engine(session.session_key)
    assert not hasattr(fresh, "_session_cache")
    fresh.cycle_key()
    assert dict(fresh.items()) == {"a": 1}


@both
def test_unknown_key_loads_nothing_and_is_not_reused(engine: Any) -> None:
    session = engine("x" * 40)
    assert session.load() == {}
    session["a"] = 1
    session.save()
    assert session.session_key != "x" * 40


@both
def test_save_after_a_concurrent_delete_does_not_bring_the_session_back(engine: Any) -> None:
    from django.contrib.sessions.backends.base import UpdateError

    first = engine()
    first["a"] = 1
    first.save(must_create=True)
    engine(first.session_key).delete()
    first["a"] = 2
    with pytest.raises(UpdateError):
        first.save()
    assert first.load() == {}


@both
def test_test_client_session_can_be_prepared_and_saved(engine: Any) -> None:
    web = client()
    session = web.session
    session["prepared"] = "yes"
    session.save()
    web.cookies["sessionid"] = session.session_key
    assert web.get("/read/").json() == {"prepared": "yes"}


@both
def test_clear_expired_removes_expired_sessions(engine: Any) -> None:
    session = engine()
    session["a"] = 1
    session.set_expiry(1)
    session.save()
    live = engine()
    live["b"] = 2
    live.save()
    import time

    time.sleep(1.2)
    engine.clear_expired()
    assert session.exists(session.session_key) is False
    assert live.exists(live.session_key) is True


# -- expiry -------------------------------------------------------------------------------------


@both
def test_expiry_in_seconds(engine: Any) -> None:
    from django.utils import timezone

    session = engine()
    now = timezone.now()
    session.set_expiry(10)
    assert session.get_expiry_age(modification=now) == 10
    assert session.get_expiry_date(modification=now) == now + timedelta(seconds=10)


@both
def test_expiry_as_a_datetime_and_a_timedelta(engine: Any) -> None:
    from django.utils import timezone

    session = engine()
    now = timezone.now()
    session.set_expiry(now + timedelta(seconds=30))
    assert session.get_expiry_age(modification=now) == 30
    assert session.get_expiry_date() == now + timedelta(seconds=30)
    session.set_expiry(timedelta(seconds=60))
    assert 58 <= session.get_expiry_age() <= 60


@both
def test_expiry_none_and_zero_use_the_cookie_age(engine: Any) -> None:
    from django.conf import settings

    session = engine()
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE
    session.set_expiry(10)
    session.set_expiry(None)
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE
    session.set_expiry(0)
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE


@both
@pytest.mark.parametrize("at_close", [False, True])
@pytest.mark.parametrize("made", ["under the setting", "before the setting changed"])
def test_expire_at_browser_close(engine: Any, at_close: bool, made: str) -> None:
    from django.test.utils import override_settings

    # Django reads the setting when asked: a session made before override_settings follows it.
    earlier = engine() if made == "before the setting changed" else None
    with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=at_close):
        session = earlier if earlier is not None else engine()
        assert session.get_expire_at_browser_close() is at_close
        session.set_expiry(10)
        assert session.get_expire_at_browser_close() is False
        session.set_expiry(0)
        assert session.get_expire_at_browser_close() is True
        session.set_expiry(None)
        assert session.get_expire_at_browser_close() is at_close


@both
def test_pop_takes_its_default_by_name(engine: Any) -> None:
    session = engine()
    session["a"] = 1
    assert session.pop("missing", default="none") == "none"
    assert session.pop("a", default=None) == 1
    assert "a" not in session
    with pytest.raises(KeyError):
        session.pop("a")


@both
def test_expiry_survives_a_save(engine: Any) -> None:
    session = engine()
    session["a"] = 1
    session.set_expiry(300)
    session.save()
    assert engine(session.session_key).get_expiry_age() == 300


# -- Django's SessionMiddleware in front ------------------------------------------------------------


@both
def test_untouched_session_sends_no_cookie_and_no_vary(engine: Any) -> None:
    response = client().get("/nothing/")
    assert "sessionid" not in response.cookies
    assert "Vary" not in response.headers


@both
def test_read_only_request_varies_on_cookie_without_setting_it(engine: Any) -> None:
    response = client().get("/read/")
    assert "sessionid" not in response.cookies
    assert response.headers["Vary"] == "Cookie"


@both
def test_write_sets_the_cookie_with_the_settings(engine: Any) -> None:
    from django.conf import settings

    response = client().get("/write/?a=1")
    morsel = response.cookies["sessionid"]
    assert morsel["max-age"] == settings.SESSION_COOKIE_AGE
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["path"] == "/"
    assert not morsel["secure"]


@both
def test_cookie_settings_are_django_s(engine: Any) -> None:
    from django.test.utils import override_settings

    with override_settings(
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_DOMAIN="example.com",
        SESSION_COOKIE_AGE=100,
    ):
        web = client()
        response = web.get("/write/?a=1")
        morsel = response.cookies["sid"]
        assert morsel["secure"] is True and not morsel["httponly"]
        assert (morsel["samesite"], morsel["path"], morsel["domain"], morsel["max-age"]) == (
            "Strict",
            "/app",
            "example.com",
            100,
        )


@both
def test_expire_at_browser_close_sends_no_max_age(engine: Any) -> None:
    from django.test.utils import override_settings

    with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=True):
        morsel = client().get("/write/?a=1").cookies["sessionid"]
        assert morsel["max-age"] == "" and morsel["expires"] == ""


@both
def test_save_every_request_sends_the_cookie_on_reads(engine: Any) -> None:
    from django.test.utils import override_settings

    web = client()
    web.get("/write/?a=1")
    assert "sessionid" not in web.get("/read/").cookies
    with override_settings(SESSION_SAVE_EVERY_REQUEST=True):
        response = web.get("/read/")
        assert response.cookies["sessionid"].value == web.cookies["sessionid"].value
        assert response.json() == {"a": "1"}


@both
def test_logout_deletes_the_cookie(engine: Any) -> None:
    web = client()
    web.get("/write/?a=1")
    response = web.get("/logout/")
    assert response.cookies["sessionid"]["max-age"] == 0
    assert web.get("/read/").json() == {}


@both
def test_session_is_carried_between_requests(engine: Any) -> None:
    web = client()
    web.get("/write/?a=1")
    web.get("/write/?b=2")
    assert web.get("/read/").json() == {"a": "1", "b": "2"}


@both
def test_async_methods(engine: Any) -> None:
    import django

    if django.VERSION < (5, 0):
        pytest.skip("Django's sessions have async methods (aget, aset, asave...) since 5.0")
    session = engine()

    async def work() -> dict[str, Any]:
        await session.aset("a", 1)
        await session.asave()
        again = engine(session.session_key)
        return {"a": await again.aget("a"), "age": await again.aget_expiry_age()}

    from django.conf import settings

    assert asyncio.run(work()) == {"a": 1, "age": settings.SESSION_COOKIE_AGE}


# -- differences kept on purpose (docs/django.md) -----------------------------------------------------


@ours_only("an emptied session ends: its row is deleted and the cookie expired, as in every front end")
def test_emptied_session_ends(engine: Any, flavour: str) -> None:
    web = client()
    web.get("/write/?a=1")
    key = web.cookies["sessionid"].value
    response = web.get("/clear/")
    assert response.cookies["sessionid"]["max-age"] == 0
    assert engine().exists(key) is False


@ours_only("a key is our signed random id; Django accepts any key of 8 characters or more")
def test_only_signed_keys_are_keys(engine: Any, flavour: str) -> None:
    assert engine("12345678").session_key is None
    assert engine("a" * 32).session_key is None


@ours_only("modified is found by comparing values: modified = False drops no change")
def test_modified_false_drops_no_change(engine: Any, flavour: str) -> None:
    session = engine()
    session["a"] = 1
    session.modified = False
    assert session.modified is True


@ours_only("assigning the value a key already holds (once read) is no change")
def test_equal_assignment_is_no_change(engine: Any, flavour: str) -> None:
    session = engine()
    session["a"] = 1
    session.save()
    again = engine(session.session_key)
    again["a"] = again["a"]
    assert again.modified is False


@ours_only("values go through pgsession-wsgi's codec, not SESSION_SERIALIZER: more types come back")
def test_values_come_back_as_their_types(engine: Any, flavour: str) -> None:
    from datetime import datetime, timezone
    from decimal import Decimal

    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    session = engine()
    session.update({"when": when, "price": Decimal("9.99"), "pair": (1, 2)})
    session.save()
    assert engine(session.session_key).load() == {"when": when, "price": Decimal("9.99"), "pair": (1, 2)}


@ours_only("an expiry in the past is refused (InvalidExpiry); Django stores a dead session")
def test_expiry_in_the_past_is_refused(engine: Any, flavour: str) -> None:
    from pgsession_wsgi import InvalidExpiry

    with pytest.raises(InvalidExpiry):
        engine().set_expiry(-timedelta(seconds=10))
