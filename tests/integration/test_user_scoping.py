"""Whose sessions a user id names: apps sharing a table under their own ``key_prefix`` keep their
users apart exactly as they keep their cookies apart, and a UUID matches in any spelling.

The third audit (issue 20, findings 1 and 9): two Flask-Login apps on one table with prefixes
``shop:`` and ``forum:`` saw and ended each other's users' sessions, and ``revoke --user`` with a
UUID in upper case removed nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from apps.support import wsgi_call
from db import sql
from flask import Flask, session
from helpers import ClosingClient, close_extension_stores
from legacy_rows import create_legacy_table, naive_utc, write_row

from pgsession_wsgi import PostgresStore, SessionError, SessionMiddleware, get_session
from pgsession_wsgi.cli import main as cli_main
from pgsession_wsgi.flask import FlaskPgSession, log_out_other_sessions, sessions_for_user
from pgsession_wsgi.flask_pg_session import migrate_flask_pg_session

SECRET = "user-scoping-secret-of-enough-length-0123456789"
PREFIXES = ("shop:", "forum:", "")


def login_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """/login?who=ID logs ID in under "uid"; /who answers the logged-in user."""
    session = get_session(environ)
    query = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
    if environ["PATH_INFO"] == "/login":
        session["uid"] = unquote(query["who"])
    body = str(session.get("uid")).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


@pytest.fixture
def store(make_store: Callable[..., PostgresStore]) -> PostgresStore:
    store = make_store()
    store.create_table()
    return store


def apps_on(store: PostgresStore) -> dict[str, SessionMiddleware]:
    """One app per prefix (and one without), all on the same table and secret."""
    return {
        prefix: SessionMiddleware(login_app, store, secret_key=SECRET, user_key="uid", key_prefix=prefix)
        for prefix in PREFIXES
    }


def test_each_prefix_lists_and_revokes_only_its_own_users_sessions(store: PostgresStore) -> None:
    apps = apps_on(store)
    cookies = {prefix: wsgi_call(app, "/login?who=1").cookie() for prefix, app in apps.items()}
    assert all(cookies.values())

    for prefix in PREFIXES:
        assert len(store.sessions_for_user(1, key_prefix=prefix)) == 1, prefix
    # Ending the shop's user 1 leaves the forum's user 1 (and the unprefixed app's) logged in.
    assert store.revoke_user("1", key_prefix="shop:") == 1
    assert wsgi_call(apps["shop:"], "/who", cookies["shop:"]).body == b"None"
    assert wsgi_call(apps["forum:"], "/who", cookies["forum:"]).body == b"1"
    assert wsgi_call(apps[""], "/who", cookies[""]).body == b"1"
    # And the app without a prefix ends only its own.
    assert store.revoke_user(1) == 1
    assert wsgi_call(apps["forum:"], "/who", cookies["forum:"]).body == b"1"


async def test_the_async_store_scopes_users_as_the_sync_store_writes_them(
    store: PostgresStore, make_async_store: Callable[..., Any]
) -> None:
    apps = apps_on(store)
    for app in apps.values():
        wsgi_call(app, "/login?who=7")
    async_store = make_async_store(table=store.table)
    for prefix in PREFIXES:
        assert len(await async_store.sessions_for_user("7", key_prefix=prefix)) == 1, prefix
    assert await async_store.revoke_user(7, key_prefix="forum:") == 1
    assert len(store.sessions_for_user(7, key_prefix="forum:")) == 0
    assert len(store.sessions_for_user(7, key_prefix="shop:")) == 1


def test_a_prefix_cannot_be_forged_through_a_user_id(store: PostgresStore) -> None:
    """A user of the unprefixed app cannot name himself so that he is the shop's user 1."""
    apps = apps_on(store)
    wsgi_call(apps["shop:"], "/login?who=1")
    forged = wsgi_call(apps[""], "/login?who=shop:%1F1")
    assert forged.status == 500  # refused at the save, naming the key
    # The lookup refuses it too, so no call can reach the shop's user through it.
    with pytest.raises(SessionError, match="U\\+001F"):
        store.revoke_user("shop:\x1f1")
    assert len(store.sessions_for_user(1, key_prefix="shop:")) == 1


def test_cli_revoke_takes_the_apps_key_prefix(
    store: PostgresStore, capsys: pytest.CaptureFixture[str]
) -> None:
    apps = apps_on(store)
    for app in apps.values():
        wsgi_call(app, "/login?who=alice")
    where = ["--dsn", store.dsn, "--schema", store.schema, "--table", store.table]
    assert cli_main(["revoke", *where, "--user", "alice", "--key-prefix", "forum:"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 session(s) of user 'alice' under key prefix 'forum:'" in out
    assert [len(store.sessions_for_user("alice", key_prefix=p)) for p in PREFIXES] == [1, 0, 1]
    assert cli_main(["revoke", *where, "--user", "bob"]) == 0
    assert "--key-prefix" in capsys.readouterr().out  # the hint for an app with a prefix


# -- Flask: two Flask-Login apps on one table --------------------------------------------------


@pytest.fixture
def make_flask(pg_dsn: str, schema: str) -> Iterator[Callable[[str], Flask]]:
    made: list[Flask] = []

    def make(prefix: str) -> Flask:
        app = Flask(f"scoped{len(made)}")
        app.test_client_class = ClosingClient
        app.config.update(
            SECRET_KEY=SECRET,
            SQLALCHEMY_DATABASE_URI=pg_dsn,
            SESSION_PG_SCHEMA=schema,
            SESSION_PG_TABLE="shared",
            SESSION_KEY_PREFIX=prefix,
        )
        FlaskPgSession(app)
        made.append(app)

        @app.route("/login/<who>")
        def login(who: str) -> str:
            session["_user_id"] = who
            return "ok"

        @app.route("/devices")
        def devices() -> dict[str, Any]:
            return {"n": len(sessions_for_user()), "current": [s.current for s in sessions_for_user()]}

        @app.route("/others-out")
        def others_out() -> str:
            return str(log_out_other_sessions())

        @app.route("/me")
        def me() -> str:
            return str(session.get("_user_id"))

        return app

    yield make
    close_extension_stores(made)


def test_flask_apps_with_prefixes_never_see_or_end_each_others_users(
    make_flask: Callable[[str], Flask],
) -> None:
    shop, forum = make_flask("shop:"), make_flask("forum:")
    shop_client, forum_client = shop.test_client(), forum.test_client()
    shop_client.get("/login/1")
    forum_client.get("/login/1")
    # The forum's user 1 sees one device, the one making the request: not the shop's user 1.
    assert forum_client.get("/devices").json == {"n": 1, "current": [True]}
    # "Log out other devices" in the forum ends nothing of the shop.
    assert forum_client.get("/others-out").text == "0"
    assert shop_client.get("/me").text == "1"
    # A second forum device of user 1 is ended by it, and the shop's session still stands.
    other = forum.test_client()
    other.get("/login/1")
    assert forum_client.get("/others-out").text == "1"
    assert other.get("/me").text == "None"
    assert shop_client.get("/me").text == "1"


def test_a_moved_flask_pg_session_row_is_its_prefixs_user(
    pg_dsn: str, schema: str, make_store: Callable[..., PostgresStore]
) -> None:
    """Both ways a flask-pg-session row comes over, the user column is scoped like the app's saves."""
    create_legacy_table(pg_dsn, schema, "old")
    expiry = naive_utc(dt.timedelta(days=3))
    write_row(pg_dsn, schema, "forum:" + str(uuid.uuid4()), {"_user_id": "5"}, expiry, "old")
    migrate_flask_pg_session(pg_dsn, table="old", schema=schema, key_prefix="forum:", into="new")
    store = make_store(table="new")
    assert len(store.sessions_for_user(5, key_prefix="forum:")) == 1
    assert store.sessions_for_user(5) == []
    assert store.sessions_for_user(5, key_prefix="shop:") == []


# -- one spelling for UUIDs -------------------------------------------------------------------


@pytest.mark.parametrize(
    "spell",
    [
        str,
        lambda u: str(u).upper(),
        lambda u: u.hex,
        lambda u: u.hex.upper(),
        lambda u: f"{{{u}}}",
        lambda u: u.urn,
    ],
    ids=["canonical", "upper", "hex", "hex-upper", "braces", "urn"],
)
def test_a_uuid_user_matches_in_every_spelling(
    store: PostgresStore, capsys: pytest.CaptureFixture[str], spell: Callable[[uuid.UUID], str]
) -> None:
    user = uuid.uuid4()
    app = SessionMiddleware(login_app, store, secret_key=SECRET, user_key="uid")
    # Logged in under one spelling (a str, as many apps store it), looked up under another.
    wsgi_call(app, f"/login?who={str(user).upper()}")
    wsgi_call(app, f"/login?who={user.hex}")
    assert len(store.sessions_for_user(spell(user))) == 2
    assert len(store.sessions_for_user(user)) == 2
    assert sql(store.dsn, f"SELECT DISTINCT user_id FROM {store.qualified_name}") == [(str(user),)]
    where = ["--dsn", store.dsn, "--schema", store.schema, "--table", store.table]
    assert cli_main(["revoke", *where, "--user", spell(user)]) == 0
    assert "removed 2 session(s)" in capsys.readouterr().out
    assert store.sessions_for_user(user) == []


def test_strings_that_only_look_like_uuids_are_kept_as_they_are(store: PostgresStore) -> None:
    app = SessionMiddleware(login_app, store, secret_key=SECRET, user_key="uid")
    odd = ["1234", "g" * 32, "{" + "a" * 32, "a" * 8 + "--" + "a" * 24, "a" * 31, "a" * 33]
    for who in odd:
        wsgi_call(app, f"/login?who={who}")
    stored = sorted(row[0] for row in sql(store.dsn, f"SELECT user_id FROM {store.qualified_name}"))
    assert stored == sorted(odd)
