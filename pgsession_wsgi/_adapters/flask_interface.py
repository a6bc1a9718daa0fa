"""Internal: ``flask.session`` bound to the session in the WSGI environ, and the 503 for a store down.

Usable without the extensions (an app may wire them by hand); :mod:`pgsession_wsgi.flask` re-exports them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from flask import Flask, current_app
from flask import request as flask_request
from flask.globals import request_ctx
from flask.sessions import NullSession, SessionInterface, SessionMixin
from flask.typing import ResponseReturnValue
from flask.wrappers import Request, Response
from werkzeug.exceptions import ServiceUnavailable

from .._core.failure import log_failure
from ..appconfig import add_session_headers
from ..errors import OutsideRequestError, StoreUnavailable
from ..middleware import ENVIRON_KEY, SessionMiddleware
from ..session import Session

__all__ = ["EnvironSessionInterface", "register_store_unavailable_handler"]

log = logging.getLogger("pgsession_wsgi")

# The session this interface opened itself (no middleware ran) and must save. A context variable,
# not an environ key: save_session() runs on every request, and the environ is behind a proxy.
_opened_here: ContextVar[Session | None] = ContextVar("pgsession_opened_by_interface", default=None)


class EnvironSessionInterface(SessionInterface):
    """Makes ``flask.session`` the session ``SessionMiddleware`` put into the WSGI environ.

    The middleware loads and saves it; this interface touches the database only for sessions no
    middleware ran for, as Flask's test client's ``session_transaction()`` opens them.

    :param middleware: opens and saves the sessions no middleware ran for; None refuses them.
    """

    def __init__(self, middleware: SessionMiddleware | None = None) -> None:
        self.middleware = middleware

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        """The environ's session, as ``flask.session``; Flask calls this for every request.

        :raises OutsideRequestError: no middleware ran and none was given to this interface.
        """
        session = request.environ.get(ENVIRON_KEY)
        if session is None:
            if self.middleware is None:
                raise OutsideRequestError(
                    "flask.session needs pgsession_wsgi.SessionMiddleware in front of the app: "
                    "wrap it with app.wsgi_app = SessionMiddleware(app.wsgi_app, store, "
                    "secret_key=...) (or the WSGI entry point, for gunicorn), or use "
                    "pgsession_wsgi.flask.PgSession(app), which does both"
                )
            session = self.middleware.open_session(request.environ)
            request.environ[ENVIRON_KEY] = session
            _opened_here.set(session)
        # Flask reports the app's exceptions itself: one that escapes it was propagated on purpose.
        session.state.reported = True
        # Not a SessionMixin subclass, but a dict with the same attributes (permanent, new,
        # modified, accessed), which is all Flask relies on. (No cast(): a call per request.)
        return session  # type: ignore[return-value]

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Save a session this interface opened; check one the middleware opened, which it saves.

        The middleware saves after Flask's error handling, so the checks that need no database run
        here, inside it: an unstorable value is raised like any error of a view.

        :param response: gets the ``Set-Cookie`` and ``Vary`` headers the save needs.
        :raises UnstorableValue: a value changed in place cannot be stored (nothing is saved).
        """
        middleware = self.middleware
        if middleware is None:
            return
        ours: Session = session  # type: ignore[assignment]  # no cast(): a call on every request
        ours.state.responded = True  # a change from now on is a late one (teardown_request)
        if _opened_here.get() is ours:
            _opened_here.set(None)
            add_session_headers(response, middleware.commit(ours))
        elif ours.accessed:
            middleware.core.check(ours)  # the middleware saves it when the response starts


def _teardown_saver(middleware: SessionMiddleware) -> Callable[[BaseException | None], None]:
    """The ``teardown_request`` function that saves what the app's own teardown functions changed.

    The middleware saves late changes when the body ends, but a test client may leave the body
    unread, and ``with client:`` runs the teardown functions again after it; so it runs here too.
    """

    def save_teardown_change(exc: BaseException | None) -> None:
        # Through the proxy's object, not its attribute: a fifth of the cost, on every request.
        session = flask_request._get_current_object().environ.get(ENVIRON_KEY)  # type: ignore[attr-defined]
        if (
            isinstance(session, Session)
            and session.state.responded
            and middleware.core.needs_late_save(session)
        ):
            middleware._save_after_headers(session)

    return save_teardown_change


class _UnavailableSession(NullSession):
    """Stands in for the session after the store failed: reads see nothing, writes fail.

    Else each later read (an error page, Flask-Login's hook) would wait for the dead store again: a 500.
    """

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable(
            "the session store is unavailable; the session is read-only "
            "and empty for the rest of this request"
        )

    __setitem__ = __delitem__ = clear = pop = popitem = update = setdefault = _fail


def _store_unavailable(exc: StoreUnavailable) -> ResponseReturnValue:
    log_failure(exc, "loading")
    ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
    # Flask >= 3.1 keeps the session in ``_session``; earlier versions in ``session``.
    setattr(ctx, "_session" if hasattr(ctx, "_session") else "session", _UnavailableSession())
    unavailable = ServiceUnavailable(
        "The session store cannot be reached. Please try again shortly.", retry_after=5
    )
    # Goes through the app's own @app.errorhandler(503), if it has one.
    return current_app.handle_http_exception(unavailable)


def register_store_unavailable_handler(app: Flask) -> None:
    """Turn :class:`StoreUnavailable` raised during a request into a 503 via Flask's handlers.

    ``PgSession`` does this itself; call it when you wire ``EnvironSessionInterface`` by hand.
    An app's own handler for ``StoreUnavailable`` is left in place.
    """
    if StoreUnavailable not in app.error_handler_spec.get(None, {}).get(None, {}):
        app.register_error_handler(StoreUnavailable, _store_unavailable)
