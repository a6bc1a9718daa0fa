"""The config keys Flask's and Quart's extensions read: each of a type, checked naming the key, the
value's type and what it should be; a misspelled ``PGSESSION_*`` key is a warning naming the
nearest one (issue 21, points 4b and 4d).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from db import sql
from flask import Flask, session
from helpers import ClosingClient, close_extension_stores
from quart import Quart
from quart import session as quart_session

from pgsession_wsgi import ConfigurationError
from pgsession_wsgi.flask import EXTENSION_KEY, FlaskPgSession
from pgsession_wsgi.flask import PgSession as FlaskExtension
from pgsession_wsgi.quart import PgSession as QuartExtension

ROOT = Path(__file__).resolve().parents[2]
SECRET = secrets.token_hex(32)


@pytest.fixture
def set_up(pg_dsn: str, schema: str) -> Iterator[Callable[..., Any]]:
    """``set_up(extension, **config)``: the app, set up by "flask", "quart" or "flask-pg-session"."""
    flask_apps: list[Flask] = []

    def make(extension: str, **config: Any) -> Any:
        if extension == "quart":
            quart = Quart("quart_app")
            quart.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
            quart.config.update(config)
            QuartExtension(quart)  # the store opens before serving (test_app()), never here

            @quart.get("/write")
            async def write_quart() -> str:
                quart_session["n"] = 1
                return "ok"

            return quart
        app = Flask(f"flask_app{len(flask_apps)}")
        app.test_client_class = ClosingClient
        flask_apps.append(app)
        app.config.update(SECRET_KEY=SECRET)
        if extension == "flask":
            app.config.update(PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
            app.config.update(config)
            FlaskExtension(app)
        else:
            app.config.update(SQLALCHEMY_DATABASE_URI=pg_dsn, SESSION_PG_SCHEMA=schema)
            app.config.update(config)
            FlaskPgSession(app)

        @app.get("/write")
        def write() -> str:
            session["n"] = 1
            return "ok"

        return app

    yield make
    close_extension_stores(flask_apps)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    records = caplog.records
    return [r.getMessage() for r in records if r.name == "pgsession_wsgi" and r.levelno >= logging.WARNING]


# -- a value of the wrong type: one ConfigurationError naming the key ------------------------------

BAD_VALUES = [
    # (key, value, what the message says it should be, the extensions reading it)
    ("PGSESSION_MAX_CONNECTIONS", "ten", "whole number", ("flask", "quart")),
    ("PGSESSION_MAX_CONNECTIONS", 2.5, "whole number", ("flask", "quart")),
    ("PGSESSION_MAX_CONNECTIONS", True, "whole number", ("flask", "quart")),
    ("PGSESSION_MAX_CONNECTIONS", 0, "at least 1", ("flask", "quart")),
    ("SESSION_PG_MAX_DB_CONN", "ten", "whole number", ("flask-pg-session",)),
    ("PGSESSION_TABLE", 5, "text", ("flask", "quart", "flask-pg-session")),
    ("PGSESSION_SCHEMA", ["a"], "text", ("flask", "quart")),
    ("SESSION_PG_TABLE", 5, "text", ("flask-pg-session",)),
    ("SESSION_KEY_PREFIX", 5, "text", ("flask-pg-session",)),
    ("PGSESSION_USER_KEY", 5, "text", ("flask", "quart", "flask-pg-session")),
    ("PGSESSION_UNLOGGED", "maybe", "True or False", ("flask", "quart", "flask-pg-session")),
    ("PGSESSION_SYNCHRONOUS_COMMIT", "sometimes", "True or False", ("flask", "quart")),
    ("PGSESSION_PREPARED_STATEMENTS", 2, "True or False", ("flask", "quart")),
    ("PGSESSION_LOGOUT_ENDS_SESSION", "yes please", "True or False", ("flask", "flask-pg-session")),
    ("SESSION_USE_SIGNER", "maybe", "True or False", ("flask-pg-session",)),
    ("SESSION_PERMANENT", "maybe", "True or False", ("flask-pg-session",)),
    ("SESSION_AUTODELETE_EXPIRED", "maybe", "True or False", ("flask-pg-session",)),
    ("SESSION_REFRESH_EACH_REQUEST", "maybe", "True or False", ("flask", "quart", "flask-pg-session")),
    ("SESSION_COOKIE_HTTPONLY", "maybe", "True or False", ("flask", "quart", "flask-pg-session")),
    ("SESSION_COOKIE_SECURE", "maybe", "True or False", ("flask", "quart", "flask-pg-session")),
    ("SESSION_COOKIE_NAME", 5, "text", ("flask", "quart", "flask-pg-session")),
    ("SESSION_COOKIE_DOMAIN", 5, "text", ("flask", "quart", "flask-pg-session")),
    ("SESSION_COOKIE_PATH", 5, "text", ("flask", "quart", "flask-pg-session")),
    ("SESSION_COOKIE_SAMESITE", 5, "text", ("flask", "quart", "flask-pg-session")),
    ("PERMANENT_SESSION_LIFETIME", "a week", "seconds", ("flask", "quart", "flask-pg-session")),
    ("PERMANENT_SESSION_LIFETIME", -5, "positive", ("flask", "quart", "flask-pg-session")),
    ("PGSESSION_WEBSOCKET_ORIGINS", 5, "origin", ("quart",)),
]
CASES = [(key, value, should, ext) for key, value, should, exts in BAD_VALUES for ext in exts]


CASE_IDS = [f"{c[3]}-{c[0]}={c[1]!r}" for c in CASES]


@pytest.mark.parametrize("key, value, should, extension", CASES, ids=CASE_IDS)
def test_a_value_of_the_wrong_type_is_refused_naming_the_key_its_type_and_what_it_should_be(
    set_up: Callable[..., Any], key: str, value: Any, should: str, extension: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        set_up(extension, **{key: value})
    message = str(raised.value)
    assert message.startswith(key), message
    assert should in message
    assert type(value).__name__ in message
    assert repr(value) in message  # not a secret: the value is shown too


@pytest.mark.parametrize("extension", ["flask", "quart"])
@pytest.mark.parametrize("value", [12345, b"postgresql://app:hunter2@db/app", ["postgresql://app:hunter2@db/app"]])
def test_a_database_url_of_the_wrong_type_is_refused_without_showing_it(
    set_up: Callable[..., Any], extension: str, value: Any
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        set_up(extension, PGSESSION_DSN=value)
    message = str(raised.value)
    assert message.startswith("PGSESSION_DSN") and type(value).__name__ in message
    assert "12345" not in message and "hunter2" not in message


def test_a_flask_pg_session_database_url_of_the_wrong_type_is_refused_without_showing_it(
    set_up: Callable[..., Any],
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        set_up("flask-pg-session", SQLALCHEMY_DATABASE_URI=["postgresql://app:hunter2@db/app"])
    message = str(raised.value)
    assert message.startswith("SQLALCHEMY_DATABASE_URI") and "list" in message and "hunter2" not in message


# -- values from the environment, as text, mean what they say --------------------------------------


def is_unlogged(pg_dsn: str, schema: str, table: str = "pgsession") -> bool:
    rows = sql(
        pg_dsn,
        "SELECT relpersistence FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, table),
    )
    return bool(rows[0][0] == "u")


@pytest.mark.parametrize("text, unlogged", [("true", True), ("no", False), ("False", False), ("1", True)])
def test_a_flag_given_as_text_means_what_it_says(
    set_up: Callable[..., Any], pg_dsn: str, schema: str, text: str, unlogged: bool
) -> None:
    """``bool("no")`` is True: read as a flag, "no" keeps the table logged."""
    set_up("flask", PGSESSION_UNLOGGED=text)
    assert is_unlogged(pg_dsn, schema) is unlogged


@pytest.mark.parametrize("extension", ["flask", "quart"])
async def test_httponly_off_as_text_is_off(set_up: Callable[..., Any], extension: str) -> None:
    app = set_up(extension, SESSION_COOKIE_HTTPONLY="false")
    if extension == "quart":
        async with app.test_app() as serving:  # opens the store, and closes it after
            cookie = (await serving.test_client().get("/write")).headers["Set-Cookie"]
    else:
        cookie = app.test_client().get("/write").headers["Set-Cookie"]
    assert "HttpOnly" not in cookie


def test_numbers_given_as_text_are_read(set_up: Callable[..., Any]) -> None:
    app = set_up("flask", PGSESSION_MAX_CONNECTIONS="3", PERMANENT_SESSION_LIFETIME="3600")
    store = app.extensions[EXTENSION_KEY].store
    assert app.extensions[EXTENSION_KEY].policy.idle_timeout == timedelta(hours=1)
    assert store.table == "pgsession"


# -- a misspelled PGSESSION_* key: one warning naming the nearest -----------------------------------


@pytest.mark.parametrize("extension", ["flask", "quart", "flask-pg-session"])
def test_a_misspelled_key_is_one_warning_naming_the_nearest_setting(
    set_up: Callable[..., Any], caplog: pytest.LogCaptureFixture, extension: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        set_up(extension, PGSESSION_MAX_CONECTIONS=5)
    assert warnings_of(caplog) == [
        "PGSESSION_MAX_CONECTIONS is not a pgsession-wsgi setting; did you mean PGSESSION_MAX_CONNECTIONS?"
    ]


def test_a_key_like_none_of_ours_is_a_warning_without_a_guess(
    set_up: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        set_up("flask", PGSESSION_FROBNICATE=True, PGSESSION_USER_KYE="uid")
    assert warnings_of(caplog) == [
        "PGSESSION_FROBNICATE is not a pgsession-wsgi setting; the settings are listed in the docs "
        "(Flask: Configuration)",
        "PGSESSION_USER_KYE is not a pgsession-wsgi setting; did you mean PGSESSION_USER_KEY?",
    ]


@pytest.mark.parametrize(
    "extension, key, value",
    [
        ("quart", "PGSESSION_LOGOUT_ENDS_SESSION", True),
        ("flask", "PGSESSION_WEBSOCKET_ORIGINS", ["https://app.example.com"]),
        ("flask-pg-session", "PGSESSION_SCHEMA", "elsewhere"),
        ("flask-pg-session", "PGSESSION_MAX_CONNECTIONS", 3),
    ],
)
def test_a_setting_this_extension_does_not_read_is_a_warning_too(
    set_up: Callable[..., Any], caplog: pytest.LogCaptureFixture, extension: str, key: str, value: Any
) -> None:
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        set_up(extension, **{key: value})
    (message,) = warnings_of(caplog)
    assert message.startswith(f"{key} has no effect on ")


def is_partitioned(pg_dsn: str, schema: str, table: str) -> bool:
    query = "SELECT to_regclass(%s) IN (SELECT partrelid FROM pg_partitioned_table)"
    rows = sql(pg_dsn, query, (f"{schema}.{table}",))
    return bool(rows[0][0])


def test_a_setting_flask_pg_session_does_not_read_changes_nothing(
    set_up: Callable[..., Any], pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the warning: PgSession's PGSESSION_PARTITIONS leaves FlaskPgSession's table plain
    (flask.FlaskPgSession._settings mutants 88, 90: every store setting read)."""
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        app = set_up("flask-pg-session", PGSESSION_PARTITIONS=4)
    assert warnings_of(caplog)[0].startswith("PGSESSION_PARTITIONS has no effect on ")
    table = app.extensions[EXTENSION_KEY].store.table
    assert app.test_client().get("/write").status_code == 200
    assert not is_partitioned(pg_dsn, schema, table)
    set_up("flask", PGSESSION_PARTITIONS=4, PGSESSION_TABLE="partitioned")  # PgSession reads it
    assert is_partitioned(pg_dsn, schema, "partitioned")


@pytest.mark.parametrize("extension", ["flask", "quart", "flask-pg-session"])
def test_a_correct_config_sets_up_without_a_warning(
    set_up: Callable[..., Any], caplog: pytest.LogCaptureFixture, extension: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        set_up(extension, PGSESSION_USER_KEY=None, PGSESSION_UNLOGGED=False)
    assert warnings_of(caplog) == []


# -- the table is the one place: every key in it is documented --------------------------------------


def test_every_setting_is_documented_on_the_flask_page_with_its_default() -> None:
    from pgsession_wsgi.appconfig import SETTINGS

    page = (ROOT / "docs" / "flask.md").read_text(encoding="utf-8")
    rows = {m[1]: m[2] for m in re.finditer(r"^\| `([A-Z_]+)` \| ([^|]*) \|", page, re.MULTILINE)}
    missing = [s.key for s in SETTINGS.values() if s.key.startswith("PGSESSION_") and s.key not in rows]
    assert missing == []
    for setting in SETTINGS.values():
        assert setting.doc and setting.kind, setting.key
