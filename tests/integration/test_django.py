"""The Django session engine (``SESSION_ENGINE = "pgsession_wsgi.django"``) against a real
PostgreSQL: Django's own SessionMiddleware and test Client in front, the shared table behind.

What Django documents for every session engine (the mapping, flush, cycle_key, set_expiry...) is
in tests/contracts/test_django_contract.py, run against Django's database backend too; this file
is what is ours: the signed cookie, the table, the lazy load, the merge, the user column, the
move from django_session, and one login shared with a Flask app.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg2
import pytest

pytest.importorskip("django", reason="Django is not installed (pip install 'pgsession-wsgi[django]')")

from apps import django_site  # noqa: E402
from helpers import ClosingClient  # noqa: E402

OUR_COOKIE = re.compile(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}")


@pytest.fixture
def site(pg_dsn: str, schema: str) -> Iterator[str]:
    """Django configured (once per process), this test's schema for Django and the engine."""
    django_site.configure(pg_dsn)
    with django_site.in_schema(schema):
        django_site.create_django_tables(auth=True)
        yield schema


def client() -> Any:
    from django.test import Client

    return Client()


def rows(pg_dsn: str, schema: str) -> list[tuple[bytes, dict[str, Any], str | None]]:
    conn = psycopg2.connect(pg_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f'SELECT id, data, user_id FROM "{schema}".pgsession ORDER BY created_at')
            return [(bytes(row[0]), row[1], row[2]) for row in cur.fetchall()]
    finally:
        conn.close()


def sql(pg_dsn: str, statement: str, *params: Any) -> Any:
    conn = psycopg2.connect(pg_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else cur.rowcount
    finally:
        conn.close()


def cookie_of(web: Any) -> str:
    return str(web.cookies["sessionid"].value)


def make_user(username: str = "alice") -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_user(username, password="pw-" + username)


# -- the cookie and the table --------------------------------------------------------------------


def test_cookie_is_the_signed_id_and_the_row_is_keyed_by_its_hash(site: str, pg_dsn: str) -> None:
    web = client()
    web.get("/write/?colour=blue")
    value = cookie_of(web)
    assert OUR_COOKIE.fullmatch(value)
    session_id = value.split(".")[0]
    [(row_id, data, user)] = rows(pg_dsn, site)
    assert row_id == hashlib.sha256(session_id.encode()).digest()  # the id is never stored
    assert data == {"colour": "blue"}
    assert user is None
    assert web.get("/read/").json() == {"colour": "blue"}


def test_request_that_does_not_touch_the_session_sends_no_statement(
    site: str, pg_dsn: str, wire_counter: Any
) -> None:
    from django.test.utils import override_settings

    with override_settings(PGSESSION_DSN=wire_counter.dsn):
        web = client()
        web.get("/write/?a=1")
        wire_counter.reset()
        response = web.get("/nothing/")
        assert wire_counter.count == 0
        assert "sessionid" not in response.cookies
        web.get("/read/")
        assert wire_counter.count == 1  # one load


def test_settings_of_another_type_name_the_setting(site: str) -> None:
    from django.test.utils import override_settings

    from pgsession_wsgi import ConfigurationError
    from pgsession_wsgi.django import SessionStore

    with override_settings(PGSESSION_MAX_CONNECTIONS="ten"), pytest.raises(ConfigurationError) as error:
        SessionStore()
    assert "PGSESSION_MAX_CONNECTIONS" in str(error.value)


def test_partitions_setting_makes_a_hash_partitioned_table(site: str, pg_dsn: str) -> None:
    """``PGSESSION_PARTITIONS``, as Flask reads it: the store's ``partitions=``."""
    from django.test.utils import override_settings

    from pgsession_wsgi import ConfigurationError
    from pgsession_wsgi.django import SessionStore

    with override_settings(PGSESSION_PARTITIONS="4"):
        web = client()
        web.get("/write/?a=1")
        assert web.get("/read/").json() == {"a": "1"}
    table = f'"{site}".pgsession'
    strategy = sql(pg_dsn, "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = %s::regclass", table)
    assert strategy == [("h",)]
    assert sql(pg_dsn, "SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", table) == [(4,)]
    assert len(rows(pg_dsn, site)) == 1
    for bad in (1, 2000, "many"):
        with override_settings(PGSESSION_PARTITIONS=bad), pytest.raises(ConfigurationError) as error:
            SessionStore()
        assert str(error.value).startswith("PGSESSION_PARTITIONS must be a whole number")


def test_database_alias_must_be_postgresql(site: str) -> None:
    from django.conf import settings
    from django.test.utils import override_settings

    from pgsession_wsgi import ConfigurationError
    from pgsession_wsgi.django import SessionStore

    databases = {**settings.DATABASES, "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Django warns that DATABASES is overridden: on purpose
        other = override_settings(DATABASES=databases, PGSESSION_DATABASE="other")
        with other, pytest.raises(ConfigurationError, match="not PostgreSQL: set PGSESSION_DSN"):
            SessionStore()
    with override_settings(PGSESSION_DATABASE="missing"), pytest.raises(ConfigurationError, match="missing"):
        SessionStore()


def test_dsn_from_databases_carries_name_and_libpq_options(site: str) -> None:
    from pgsession_wsgi.django import database_dsn

    dsn = database_dsn("default")
    assert "search_path" in dsn  # OPTIONS reach libpq
    assert "dbname=" in dsn


def test_unknown_pgsession_setting_is_one_warning(site: str, caplog: pytest.LogCaptureFixture) -> None:
    from django.test.utils import override_settings

    from pgsession_wsgi.django import SessionStore

    with override_settings(PGSESSION_MAX_CONECTIONS=3), caplog.at_level(logging.WARNING, "pgsession_wsgi"):
        SessionStore()
    assert "did you mean PGSESSION_MAX_CONNECTIONS?" in caplog.text


# -- the merge, the expiry, the end --------------------------------------------------------------


def test_concurrent_saves_merge_per_key(site: str, pg_dsn: str) -> None:
    from pgsession_wsgi.django import SessionStore

    first = SessionStore()
    first["cart"] = [1]
    first.save()
    key = first.session_key
    one, two = SessionStore(key), SessionStore(key)
    one["cart"], two["theme"] = [1, 2], "dark"  # both loaded the same row
    one.save()
    two.save()
    assert SessionStore(key).load() == {"cart": [1, 2], "theme": "dark"}


def test_expiry_is_in_sql_idle_and_absolute(site: str, pg_dsn: str) -> None:
    from django.test.utils import override_settings

    with override_settings(SESSION_COOKIE_AGE=600):
        web = client()
        response = web.get("/write/?a=1")
        assert response.cookies["sessionid"]["max-age"] == 600
        [(idle,)] = sql(pg_dsn, f'SELECT expires_at - now() FROM "{site}".pgsession')
        assert timedelta(seconds=590) < idle <= timedelta(seconds=600)
        # an expired row is no session, whatever the cookie says: the database decides
        sql(pg_dsn, f"UPDATE \"{site}\".pgsession SET expires_at = now() - interval '1 second'")
        assert web.get("/read/").json() == {}
    with override_settings(SESSION_COOKIE_AGE=600, PGSESSION_ABSOLUTE_TIMEOUT=300):
        client().get("/write/?b=2")
        [(lifetime,)] = sql(
            pg_dsn, f"SELECT expires_at - created_at FROM \"{site}\".pgsession WHERE data ? 'b'"
        )
        assert lifetime == timedelta(seconds=300)  # capped by the absolute timeout


def test_set_expiry_seconds_is_an_idle_lifetime_of_its_own(site: str, pg_dsn: str) -> None:
    web = client()
    response = web.get("/expiry/?seconds=120")
    assert response.json() == {"age": 120}
    assert response.cookies["sessionid"]["max-age"] == 120
    [(idle_timeout, ends_at)] = sql(pg_dsn, f'SELECT idle_timeout, ends_at FROM "{site}".pgsession')
    assert idle_timeout == timedelta(seconds=120) and ends_at is None


def test_set_expiry_zero_is_a_browser_session_cookie(site: str) -> None:
    web = client()
    response = web.get("/expiry/?browser=1")
    assert response.cookies["sessionid"]["max-age"] == ""
    assert response.cookies["sessionid"]["expires"] == ""


def test_emptied_session_ends_the_row_and_the_cookie(site: str, pg_dsn: str) -> None:
    web = client()
    web.get("/write/?a=1")
    response = web.get("/clear/")
    assert response.cookies["sessionid"]["max-age"] == 0
    assert rows(pg_dsn, site) == []


def test_save_after_a_concurrent_logout_is_refused(site: str) -> None:
    from django.contrib.sessions.backends.base import UpdateError

    from pgsession_wsgi.django import SessionStore

    mine = SessionStore()
    mine["a"] = 1
    mine.save()
    SessionStore(mine.session_key).flush()  # another request logs out
    mine["a"] = 2
    with pytest.raises(UpdateError):
        mine.save()
    assert mine.load() == {}


def test_clearsessions_purges_expired_rows(site: str, pg_dsn: str) -> None:
    from django.core.management import call_command

    web = client()
    web.get("/write/?a=1")
    client().get("/write/?b=2")
    sql(pg_dsn, f"UPDATE \"{site}\".pgsession SET expires_at = now() - interval '1 second' WHERE data ? 'a'")
    call_command("clearsessions")
    assert [data for _, data, _ in rows(pg_dsn, site)] == [{"b": "2"}]


# -- users ----------------------------------------------------------------------------------------


def test_login_moves_the_session_to_a_new_id_and_fills_the_user_column(site: str, pg_dsn: str) -> None:
    user = make_user()
    web = client()
    web.get("/write/?cart=1")
    before = cookie_of(web)
    web.get("/login/?username=alice")
    after = cookie_of(web)
    assert after != before
    [(_, data, user_id)] = rows(pg_dsn, site)  # the old row is gone, the data kept
    assert data["cart"] == "1" and data["_auth_user_id"] == str(user.pk)
    assert user_id == str(user.pk)
    assert web.get("/whoami/").json() == {"user": user.pk}
    # the cookie from before the login opens nothing (fixation)
    old = client()
    old.cookies["sessionid"] = before
    assert old.get("/whoami/").json() == {"user": None}


def test_logout_deletes_the_row(site: str, pg_dsn: str) -> None:
    make_user()
    web = client()
    web.get("/login/?username=alice")
    response = web.get("/logout/")
    assert response.cookies["sessionid"]["max-age"] == 0
    assert rows(pg_dsn, site) == []


def test_devices_and_log_out_other_devices(site: str) -> None:
    user = make_user()
    laptop, phone = client(), client()
    laptop.get("/login/?username=alice")
    phone.get("/login/?username=alice")
    listed = laptop.get("/devices/").json()
    assert len(listed) == 2 and sum(item["current"] for item in listed) == 1
    assert laptop.get("/log_out_others/").json() == {"ended": 1}
    assert phone.get("/whoami/").json() == {"user": None}
    assert laptop.get("/whoami/").json() == {"user": user.pk}


def test_test_client_force_login_works(site: str) -> None:
    user = make_user()
    web = client()
    web.force_login(user)
    assert OUR_COOKIE.fullmatch(cookie_of(web))
    assert web.get("/whoami/").json() == {"user": user.pk}


# -- moving from django.contrib.sessions.backends.db ---------------------------------------------


def old_session(data: dict[str, Any], age: int | None = None) -> str:
    from django.contrib.sessions.backends.db import SessionStore as DbStore

    store = DbStore()
    store.update(data)
    if age is not None:
        store.set_expiry(age)
    store.save()
    return str(store.session_key)


def test_old_django_session_is_moved_once_under_a_new_id(site: str, pg_dsn: str) -> None:
    user = make_user()
    key = old_session(
        {
            "_auth_user_id": str(user.pk),
            "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
            "_auth_user_hash": user.get_session_auth_hash(),
            "cart": [1, 2],
        }
    )
    web = client()
    web.cookies["sessionid"] = key
    assert web.get("/whoami/").json() == {"user": user.pk}  # still logged in
    new = cookie_of(web)
    assert OUR_COOKIE.fullmatch(new)  # the cookie changed to ours
    assert sql(pg_dsn, f'SELECT count(*) FROM "{site}".django_session') == [(0,)]  # old row gone
    [(_, data, user_id)] = rows(pg_dsn, site)
    assert data["cart"] == [1, 2] and user_id == str(user.pk)
    assert web.get("/read/").json()["cart"] == [1, 2]
    # a second request with the old cookie (sent in parallel) reaches the same row
    late = client()
    late.cookies["sessionid"] = key
    assert late.get("/whoami/").json() == {"user": user.pk}
    assert len(rows(pg_dsn, site)) == 1


def test_logout_with_an_old_cookie_ends_the_old_session_wherever_it_is(site: str, pg_dsn: str) -> None:
    key = old_session({"cart": [1]})
    mover = client()
    mover.cookies["sessionid"] = key
    mover.get("/read/")  # moved in
    late = client()
    late.cookies["sessionid"] = key
    late.get("/logout/")  # flush() before the session was read
    assert rows(pg_dsn, site) == []
    assert sql(pg_dsn, f'SELECT count(*) FROM "{site}".django_session') == [(0,)]


def test_expired_old_django_session_is_not_moved(site: str, pg_dsn: str) -> None:
    key = old_session({"cart": [1]})
    sql(pg_dsn, f"UPDATE \"{site}\".django_session SET expire_date = now() - interval '1 second'")
    web = client()
    web.cookies["sessionid"] = key
    assert web.get("/read/").json() == {}
    assert rows(pg_dsn, site) == []


def test_old_session_keeps_its_own_expiry(site: str, pg_dsn: str) -> None:
    key = old_session({"cart": [1]}, age=300)
    web = client()
    web.cookies["sessionid"] = key
    response = web.get("/read/")
    assert response.cookies["sessionid"]["max-age"] == 300
    [(idle_timeout,)] = sql(pg_dsn, f'SELECT idle_timeout FROM "{site}".pgsession')
    assert idle_timeout == timedelta(seconds=300)


def test_an_old_looking_cookie_without_django_s_table_is_no_session(site: str, pg_dsn: str) -> None:
    sql(pg_dsn, f'DROP TABLE "{site}".django_session')
    web = client()
    web.cookies["sessionid"] = "a" * 32
    assert web.get("/read/").json() == {}
    web.get("/write/?a=1")
    assert OUR_COOKIE.fullmatch(cookie_of(web))


def test_read_through_can_be_turned_off(site: str, pg_dsn: str) -> None:
    from django.test.utils import override_settings

    key = old_session({"cart": [1]})
    with override_settings(PGSESSION_MOVE_DJANGO_SESSIONS=False):
        web = client()
        web.cookies["sessionid"] = key
        assert web.get("/read/").json() == {}
    assert sql(pg_dsn, f'SELECT count(*) FROM "{site}".django_session') == [(1,)]


# -- one login across Django and Flask -----------------------------------------------------------


def flask_app(pg_dsn: str, schema: str) -> Any:
    from flask import Flask, jsonify, session
    from flask_login import LoginManager, UserMixin, current_user

    from pgsession_wsgi.flask import PgSession

    app = Flask("flask_side")
    app.test_client_class = ClosingClient
    app.config.update(
        SECRET_KEY=django_site.SECRET,
        SESSION_COOKIE_NAME="sessionid",
        PGSESSION_DSN=pg_dsn,
        PGSESSION_SCHEMA=schema,
        PGSESSION_LOGOUT_ENDS_SESSION=True,
        TESTING=True,
    )
    PgSession(app)
    manager = LoginManager(app)

    class User(UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    manager.user_loader(User)

    @app.get("/me")
    def me() -> Any:
        return jsonify(
            user=current_user.get_id() if current_user.is_authenticated else None,
            django_user=session.get("_auth_user_id"),
        )

    @app.get("/logout")
    def logout() -> Any:
        from flask_login import logout_user

        logout_user()
        return jsonify(ok=True)

    return app


def test_a_django_login_is_seen_by_flask_and_a_flask_logout_by_django(site: str, pg_dsn: str) -> None:
    from django.contrib.auth.signals import user_logged_in

    from pgsession_wsgi.django import mirror_login_for_flask_login

    user = make_user()
    user_logged_in.connect(mirror_login_for_flask_login)
    try:
        web = client()
        web.get("/login/?username=alice")
    finally:
        user_logged_in.disconnect(mirror_login_for_flask_login)
    app = flask_app(pg_dsn, site)
    try:
        flask_client = app.test_client()
        flask_client.set_cookie("sessionid", cookie_of(web))
        assert flask_client.get("/me").json == {"user": str(user.pk), "django_user": str(user.pk)}
        flask_client.get("/logout")  # ends the shared session
        assert web.get("/whoami/").json() == {"user": None}
    finally:
        app.extensions["pgsession_wsgi"].store.close()


def test_flask_reads_the_django_session_without_the_bridge(site: str, pg_dsn: str) -> None:
    user = make_user()
    web = client()
    web.get("/login/?username=alice")
    app = flask_app(pg_dsn, site)
    try:
        flask_client = app.test_client()
        flask_client.set_cookie("sessionid", cookie_of(web))
        # Flask-Login sees nobody (no _user_id), the Django user id is there to read
        assert flask_client.get("/me").json == {"user": None, "django_user": str(user.pk)}
    finally:
        app.extensions["pgsession_wsgi"].store.close()
