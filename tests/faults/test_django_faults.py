"""The Django engine with its database down, on a private PostgreSQL the test owns and stops.

``pgsession_wsgi.django.SessionMiddleware`` answers a ``StoreUnavailable`` (from the save, or
from a view's read of ``request.session``) with a 503, ``Retry-After: 5`` and one log line, as the
WSGI and ASGI front ends do; Django's own ``SessionMiddleware`` lets it become Django's 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("django", reason="Django is not installed (pip install 'pgsession-wsgi[django]')")

from apps import django_site  # noqa: E402

from pgsession_wsgi.embedded import EmbeddedPostgres  # noqa: E402

pytestmark = pytest.mark.slow

OURS = "pgsession_wsgi.django.SessionMiddleware"
DJANGOS = "django.contrib.sessions.middleware.SessionMiddleware"


@pytest.fixture
def down_site(pg_dsn: str, owned_server: EmbeddedPostgres) -> Iterator[str]:
    """Django's sessions on the owned server; yields a session cookie made while it was up, then
    stops the server."""
    from django.test import Client
    from django.test.utils import override_settings

    from pgsession_wsgi.django import close_stores

    django_site.configure(pg_dsn)
    with override_settings(PGSESSION_DSN=owned_server.dsn, MIDDLEWARE=[OURS]):
        web = Client()
        assert web.get("/write/", {"a": "1"}).status_code == 200
        cookie = str(web.cookies["sessionid"].value)
    close_stores()
    owned_server.stop()
    try:
        yield cookie
    finally:
        close_stores()


def request(middleware: str, path: str, cookie: str, server: EmbeddedPostgres, asgi: bool = False) -> Any:
    """One GET through Django's test client (WSGI) or its async client (ASGI), errors answered."""
    from django.test import AsyncClient, Client
    from django.test.utils import override_settings

    with override_settings(PGSESSION_DSN=server.dsn, MIDDLEWARE=[middleware]):
        if asgi:
            async_web = AsyncClient(raise_request_exception=False)
            async_web.cookies["sessionid"] = cookie
            return asyncio.run(async_web.get(path))
        web = Client(raise_request_exception=False)
        web.cookies["sessionid"] = cookie
        return web.get(path)


@pytest.mark.parametrize("asgi", [False, True], ids=["wsgi", "asgi"])
@pytest.mark.parametrize(
    "path", ["/read/", "/write/?b=2"], ids=["a view's read of request.session", "the save"]
)
def test_ours_answers_503_with_retry_after_and_one_log_line_where_djangos_answers_500(
    down_site: str, owned_server: EmbeddedPostgres, path: str, asgi: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = request(OURS, path, down_site, owned_server, asgi)
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert b"session store cannot be reached" in response.content
    assert "Set-Cookie" not in response
    lines = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(lines) == 1, [record.getMessage() for record in lines]
    assert lines[0].name == "pgsession_wsgi"
    assert lines[0].getMessage().startswith("session store unavailable, answering 503: ")

    caplog.clear()
    response = request(DJANGOS, path, down_site, owned_server, asgi)
    assert response.status_code == 500
    assert "Retry-After" not in response
    assert any(record.name == "django.request" and record.exc_info for record in caplog.records)


def test_other_session_errors_stay_djangos_500(
    pg_dsn: str, owned_server: EmbeddedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    """Only an outage is a 503: a value the codec refuses is Django's 500 under either middleware."""
    from pgsession_wsgi import UnstorableValue
    from pgsession_wsgi.django import close_stores

    django_site.configure(pg_dsn)
    try:
        for middleware in (OURS, DJANGOS):
            caplog.clear()
            response = request(middleware, "/unstorable/", "", owned_server)
            assert response.status_code == 500
            assert "Retry-After" not in response
            assert not [record for record in caplog.records if record.name == "pgsession_wsgi"]
            raised = [record.exc_info[0] for record in caplog.records if record.exc_info]
            assert len(raised) == 1 and raised[0] is not None and issubclass(raised[0], UnstorableValue)
    finally:
        close_stores()


def test_ours_is_djangos_while_the_database_is_up(
    pg_dsn: str, owned_server: EmbeddedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    """A drop-in: the same session, cookie and answers as Django's middleware gives."""
    from django.test import Client
    from django.test.utils import override_settings

    from pgsession_wsgi.django import close_stores

    django_site.configure(pg_dsn)
    try:
        with override_settings(PGSESSION_DSN=owned_server.dsn, MIDDLEWARE=[OURS]):
            web = Client()
            assert web.get("/write/", {"a": "1"}).status_code == 200
            cookie = web.cookies["sessionid"]
            assert cookie["httponly"] and cookie["samesite"] == "Lax"
            assert web.get("/read/").json() == {"a": "1"}
            assert web.get("/logout/").status_code == 200
            assert web.cookies["sessionid"]["max-age"] == 0
        with override_settings(PGSESSION_DSN=owned_server.dsn, MIDDLEWARE=[DJANGOS]):
            web = Client()
            web.get("/write/", {"a": "2"})
            written = web.cookies["sessionid"].value
        with override_settings(PGSESSION_DSN=owned_server.dsn, MIDDLEWARE=[OURS]):
            web = Client()
            web.cookies["sessionid"] = written
            assert web.get("/read/").json() == {"a": "2"}
    finally:
        close_stores()
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
