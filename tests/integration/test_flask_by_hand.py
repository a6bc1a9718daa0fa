"""Flask wired by hand, as docs/flask.md shows for apps that build the middleware themselves:
``app.wsgi_app = SessionMiddleware(...)`` and ``app.session_interface = EnvironSessionInterface``.

And the one ordering ``PgSession`` promises an app that registered teardown functions before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, request, session
from helpers import ClosingClient, close_extension_stores

from pgsession_wsgi import OutsideRequestError, PostgresStore, SessionMiddleware, get_session
from pgsession_wsgi.flask import EnvironSessionInterface, PgSession

SECRET = "flask-by-hand-secret-0123456789abcdef"


def app_with_routes(name: str) -> Flask:
    app = Flask(name)
    app.test_client_class = ClosingClient
    app.testing = True

    @app.get("/read")
    def read() -> dict[str, Any]:
        return dict(session)

    @app.get("/write")
    def write() -> str:
        session["k"] = request.args["v"]
        return "ok"

    return app


def test_flask_session_without_the_middleware_says_how_to_add_it() -> None:
    app = app_with_routes("no_middleware")
    app.session_interface = EnvironSessionInterface()
    with pytest.raises(OutsideRequestError) as refused:
        app.test_client().get("/read")
    assert str(refused.value) == (  # _flask_interface.EnvironSessionInterface.open_session 6-17
        "flask.session needs pgsession_wsgi.SessionMiddleware in front of the app: wrap it with "
        "app.wsgi_app = SessionMiddleware(app.wsgi_app, store, secret_key=...) (or the WSGI entry "
        "point, for gunicorn), or use pgsession_wsgi.flask.PgSession(app), which does both"
    )


@pytest.fixture
def wired(make_store: Callable[..., PostgresStore]) -> Iterator[Flask]:
    app = app_with_routes("by_hand")
    middleware = SessionMiddleware(app.wsgi_app, make_store(), secret_key=SECRET)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    app.session_interface = EnvironSessionInterface(middleware)
    yield app


def test_an_interface_given_the_middleware_opens_the_test_clients_sessions(wired: Flask) -> None:
    """Flask's test client opens session_transaction() sessions without the middleware: the
    interface opens and saves them with the one it was given (EnvironSessionInterface.__init__ 1)."""
    client = wired.test_client()
    with client.session_transaction() as sess:
        sess["k"] = "set in a transaction"
    assert client.get("/read").json == {"k": "set in a transaction"}
    client.get("/write?v=2")
    with client.session_transaction() as sess:
        assert dict(sess) == {"k": "2"}


def test_a_session_the_interface_opened_is_the_environs_too(wired: Flask) -> None:
    """get_session(environ) finds the session flask.session is, in a request context no
    middleware ran for (open_session 20)."""
    with wired.test_request_context("/"):
        session["k"] = "v"
        assert get_session(request.environ) is session._get_current_object()  # type: ignore[attr-defined]


def test_an_unstorable_value_reaches_a_testing_apps_test_as_raised(wired: Flask) -> None:
    """Flask propagates a view's exception under TESTING; the middleware lets it through rather
    than answering a 500 of its own (open_session 22, 23: the session marked as reported)."""

    @wired.get("/unstorable")
    def unstorable() -> str:
        session["k"] = object()
        return "not reached"

    with pytest.raises(TypeError, match="cannot be stored"):
        wired.test_client().get("/unstorable")


def test_a_change_in_a_teardown_registered_before_pgsession_is_saved(pg_dsn: str, schema: str) -> None:
    """PgSession's own teardown runs after every one the app has, registered before it or after
    (flask._Extension._setup 49)."""
    app = app_with_routes("teardown_first")
    app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)

    @app.teardown_request
    def remember(exc: BaseException | None) -> None:
        session["torn_down"] = True

    PgSession(app)
    try:
        client = app.test_client()
        client.get("/write?v=1")
        assert client.get("/read").json == {"k": "1", "torn_down": True}
    finally:
        close_extension_stores([app])
