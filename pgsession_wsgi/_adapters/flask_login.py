"""Internal: Flask-Login with the Flask extensions: a logout that ends the session, the user's sessions.

:mod:`pgsession_wsgi.flask` re-exports the public functions.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, has_request_context
from flask import request as flask_request

from ..appconfig import EXTENSION_KEY
from ..devices import UserSession, mark_current, request_user
from ..errors import ConfigurationError, OutsideRequestError
from ..middleware import ENVIRON_KEY, SessionMiddleware
from ..session import Session

__all__ = ["log_out_other_sessions", "sessions_for_user"]


def _logout_signal() -> Any:
    """Flask-Login's ``user_logged_out`` signal, which ``logout_user()`` sends."""
    try:
        from flask_login import user_logged_out
    except ImportError:
        raise ConfigurationError(
            "PGSESSION_LOGOUT_ENDS_SESSION = True makes Flask-Login's logout_user() end the session, "
            "but Flask-Login is not installed: `pip install flask-login`, or remove the setting and "
            "call flask.session.invalidate() in your logout view"
        ) from None
    return user_logged_out


def _end_session_on_logout(app: Flask, **extra: Any) -> None:
    """Receives ``user_logged_out``: delete the row and expire the cookie, not just a few keys."""
    session = flask_request.environ.get(ENVIRON_KEY) if has_request_context() else None
    if not isinstance(session, Session):
        return
    remember = session.get("_remember")
    session.invalidate()
    if remember == "clear":
        # Flask-Login's hook clears the remember-me cookie on seeing this (else it would log the
        # user in again); it pops the key again, so nothing is stored.
        session["_remember"] = remember


def _request_user(what: str, user_id: Any) -> tuple[SessionMiddleware, Session, Any]:
    """The current app's middleware, the request's session and whose sessions ``what`` means."""
    if not has_request_context():
        raise OutsideRequestError(
            f"{what}() works on the request's session: call it while handling a request (in a view)"
        )
    middleware = current_app.extensions.get(EXTENSION_KEY)
    session = flask_request.environ.get(ENVIRON_KEY)
    if not isinstance(middleware, SessionMiddleware) or not isinstance(session, Session):
        raise ConfigurationError(
            f"{what}() needs pgsession-wsgi on the app {current_app.name!r}: set it up with "
            "PgSession(app) or FlaskPgSession(app)"
        )
    return middleware, session, request_user(session, middleware.policy.user_key, user_id)


def sessions_for_user(user_id: Any = None) -> list[UserSession]:
    """The live sessions of the logged-in user, most recently used first, for a "your devices" page.

    The request's own session is the one with ``current`` set. Works with Flask-Login, or any
    login that stores the user's id under ``PGSESSION_USER_KEY``.

    :param user_id: whose sessions; None for the user logged in on the request's session.
    :raises OutsideRequestError: called outside a request.
    :raises ConfigurationError: the app does not use pgsession-wsgi, or ``PGSESSION_USER_KEY`` is None.
    :raises SessionError: no ``user_id`` given and nobody is logged in.
    :raises StoreUnavailable: the database cannot be reached.
    """
    middleware, session, user = _request_user("sessions_for_user", user_id)
    infos = middleware.store.sessions_for_user(user, key_prefix=middleware.core.key_prefix)
    return mark_current(infos, session)


def log_out_other_sessions(user_id: Any = None) -> int:
    """End every session of the logged-in user except the request's own: "log out other devices".

    Call it after a password change, so that whoever knew the old password is logged out
    everywhere else; ``flask.session.regenerate()`` in the same view renews this session's id too.

    :param user_id: whose sessions; None for the user logged in on the request's session.
    :returns: how many sessions were ended.
    :raises OutsideRequestError: called outside a request.
    :raises ConfigurationError: the app does not use pgsession-wsgi, or ``PGSESSION_USER_KEY`` is None.
    :raises SessionError: no ``user_id`` given and nobody is logged in.
    :raises StoreUnavailable: the database cannot be reached.
    """
    middleware, session, user = _request_user("log_out_other_sessions", user_id)
    return middleware.store.revoke_user(user, keep=session, key_prefix=middleware.core.key_prefix)
