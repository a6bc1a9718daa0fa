"""The cookie's signing key in every front end: a weak one is one warning at setup (never showing
the key), a key that is neither text nor bytes is a ConfigurationError naming the setting.

Issue 21, points 3 and 4c. The four front ends are set up as an app would set them up: plain WSGI
and ASGI with ``secret_key=`` / ``fallback_secret_keys=``, Flask and Quart from ``SECRET_KEY`` and
``SECRET_KEY_FALLBACKS``; Flask's ``FlaskPgSession`` (flask-pg-session's signer) too.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from helpers import close_extension_stores
from quart import Quart

from pgsession_wsgi import ConfigurationError, PostgresStore, SessionMiddleware
from pgsession_wsgi.asgi import AsyncPostgresStore
from pgsession_wsgi.asgi import SessionMiddleware as AsgiSessionMiddleware
from pgsession_wsgi.flask import FlaskPgSession
from pgsession_wsgi.flask import PgSession as FlaskPgSessionExtension
from pgsession_wsgi.quart import PgSession as QuartPgSession

STRONG = secrets.token_hex(32)
#: What the messages call the key and the fallbacks, by front end.
NAMES = {
    "wsgi": ("secret_key", "fallback_secret_keys"),
    "asgi": ("secret_key", "fallback_secret_keys"),
    "flask": ("SECRET_KEY", "SECRET_KEY_FALLBACKS"),
    "quart": ("SECRET_KEY", "SECRET_KEY_FALLBACKS"),
    "flask-pg-session": ("SECRET_KEY", "SECRET_KEY_FALLBACKS"),
}
WEAK = [
    "a",
    "abc",
    "change-me",  # the docs' own example used to be this
    "Zebra-7-short",
    b"development",
    "x" * 31,  # one byte short
    "CHANGE-ME",
    "Please-Change-Me-Before-You-Deploy-This-App",  # long, but a placeholder
    "your-secret-key",
]


def _wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return []


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    return None


@pytest.fixture
def set_up(pg_dsn: str, schema: str) -> Iterator[Callable[..., object]]:
    """``set_up(front_end, secret, fallbacks)``: the front end set up as an app does it."""
    stores: list[PostgresStore] = []
    flask_apps: list[Flask] = []

    def make(front_end: str, secret: Any, fallbacks: Any = ()) -> object:
        if front_end == "wsgi":
            store = PostgresStore(pg_dsn, schema=schema, purge_interval=None)
            stores.append(store)
            return SessionMiddleware(_wsgi_app, store, secret_key=secret, fallback_secret_keys=fallbacks)
        if front_end == "asgi":
            # Not opened: the middleware opens it at lifespan startup, which this test never runs.
            store_async = AsyncPostgresStore(pg_dsn, schema=schema, purge_interval=None)
            return AsgiSessionMiddleware(
                _asgi_app, store_async, secret_key=secret, fallback_secret_keys=fallbacks
            )
        config = {"SECRET_KEY": secret, "SECRET_KEY_FALLBACKS": list(fallbacks)}
        if front_end == "quart":
            quart = Quart("quart_app")
            quart.config.update(config, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
            return QuartPgSession(quart)  # opens its store only before serving
        flask = Flask(f"flask_app{len(flask_apps)}")
        flask_apps.append(flask)
        if front_end == "flask":
            flask.config.update(config, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
            return FlaskPgSessionExtension(flask)
        flask.config.update(
            config, SQLALCHEMY_DATABASE_URI=pg_dsn, SESSION_PG_SCHEMA=schema, SESSION_USE_SIGNER=True
        )
        return FlaskPgSession(flask)

    yield make
    close_extension_stores(flask_apps)
    for store in stores:
        store.close()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    records = caplog.records
    return [r.getMessage() for r in records if r.name == "pgsession_wsgi" and r.levelno >= logging.WARNING]


FRONT_ENDS = list(NAMES)


@pytest.mark.parametrize("front_end", FRONT_ENDS)
@pytest.mark.parametrize("weak", WEAK, ids=repr)
def test_a_weak_secret_key_is_one_warning_that_names_the_setting_and_not_the_key(
    set_up: Callable[..., object], caplog: pytest.LogCaptureFixture, front_end: str, weak: str | bytes
) -> None:
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        set_up(front_end, weak)
    (message,) = warnings_of(caplog)
    key_name, _ = NAMES[front_end]
    assert message.startswith(f"{key_name} (")
    assert "secrets.token_hex(32)" in message  # how to make a real one
    text = weak.decode() if isinstance(weak, bytes) else weak
    if len(text) > 3:  # "a" or "abc" are in any sentence
        assert text not in message and text.lower() not in message.lower()


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_a_strong_secret_key_and_strong_fallbacks_are_not_warned_about(
    set_up: Callable[..., object], caplog: pytest.LogCaptureFixture, front_end: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        set_up(front_end, STRONG, [secrets.token_bytes(32), secrets.token_urlsafe(32)])
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_weak_fallback_keys_are_named_by_position_in_the_one_warning(
    set_up: Callable[..., object], caplog: pytest.LogCaptureFixture, front_end: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        set_up(front_end, STRONG, [secrets.token_hex(32), "Old-Key-9", "changeme"])
    (message,) = warnings_of(caplog)
    key_name, fallbacks_name = NAMES[front_end]
    assert f"{fallbacks_name}[1]" in message and f"{fallbacks_name}[2]" in message
    assert f"{fallbacks_name}[0]" not in message and not message.startswith(f"{key_name} (")
    assert "Old-Key-9" not in message


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_a_weak_key_and_weak_fallbacks_are_still_one_warning(
    set_up: Callable[..., object], caplog: pytest.LogCaptureFixture, front_end: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        set_up(front_end, "dev", ["secret"])
    (message,) = warnings_of(caplog)
    key_name, fallbacks_name = NAMES[front_end]
    assert message.startswith(f"{key_name} (") and f"{fallbacks_name}[0]" in message


@pytest.mark.parametrize("front_end", FRONT_ENDS)
@pytest.mark.parametrize("secret", [12345, 1.5, ["a-list"], object()], ids=lambda v: type(v).__name__)
def test_a_secret_key_neither_text_nor_bytes_is_refused_naming_the_setting(
    set_up: Callable[..., object], front_end: str, secret: object
) -> None:
    key_name, _ = NAMES[front_end]
    with pytest.raises(ConfigurationError) as raised:
        set_up(front_end, secret)
    message = str(raised.value)
    assert message.startswith(key_name) and type(secret).__name__ in message
    assert "12345" not in message  # a key's value is never shown, even a wrong one


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_a_fallback_key_neither_text_nor_bytes_is_refused_naming_the_setting(
    set_up: Callable[..., object], front_end: str
) -> None:
    _, fallbacks_name = NAMES[front_end]
    with pytest.raises(ConfigurationError) as raised:
        set_up(front_end, STRONG, [secrets.token_hex(32), 424242])
    message = str(raised.value)
    assert message.startswith(f"{fallbacks_name}[1]") and "int" in message
    assert "424242" not in message


def test_djangos_startproject_key_is_named_as_such_not_as_a_placeholder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A ``django-insecure-`` key is random but written into settings.py (Django's own check
    --deploy flags it): the warning says where it came from, not that it is a placeholder."""
    from pgsession_wsgi.cookies import check_secret_keys

    key = "django-insecure-" + secrets.token_urlsafe(38)
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        check_secret_keys(key, (), {"secret_key": "SECRET_KEY"})
    (message,) = warnings_of(caplog)
    assert message.startswith("SECRET_KEY (the key `django-admin startproject` wrote into settings.py) is ")
    assert key not in message
