"""A user's sessions ("your devices", log out the others) and the bridge to Flask-Login."""

from __future__ import annotations

from typing import Any

from ..devices import UserSession, mark_current, request_user
from ..errors import ConfigurationError
from ._session_store import SessionStore

#: Where Flask-Login looks for the user's id; :func:`mirror_login_for_flask_login` writes it.
FLASK_LOGIN_USER_KEY = "_user_id"


def _store_and_user(request: Any, user_id: Any, what: str) -> tuple[SessionStore, Any]:
    store = getattr(request, "session", None)
    if not isinstance(store, SessionStore):
        raise ConfigurationError(
            f"{what}() needs request.session from pgsession_wsgi.django: set "
            "SESSION_ENGINE = 'pgsession_wsgi.django' and keep Django's SessionMiddleware"
        )
    return store, request_user(store.data, store._runtime.core.policy.user_key, user_id)


def sessions_for_user(request: Any, user_id: Any = None) -> list[UserSession]:
    """The live sessions of the logged-in user, most recently used first, the request's marked
    ``current`` ("your devices").

    :param request: the view's ``HttpRequest``.
    :param user_id: whose sessions; None for the user logged in on the request's session.
    :raises ConfigurationError: the engine is another, or ``PGSESSION_USER_KEY`` is None.
    :raises SessionError: no ``user_id`` given and nobody is logged in.
    :raises StoreUnavailable: the database cannot be reached.
    """
    store, user = _store_and_user(request, user_id, "sessions_for_user")
    runtime = store._runtime
    infos = runtime.store.sessions_for_user(user, key_prefix=runtime.core.key_prefix)
    return mark_current(infos, store.data)


def log_out_other_sessions(request: Any, user_id: Any = None) -> int:
    """End every session of the logged-in user except the request's own ("log out other devices").

    :param request: the view's ``HttpRequest``.
    :param user_id: whose sessions; None for the user logged in on the request's session.
    :returns: how many sessions ended.
    :raises ConfigurationError: the engine is another, or ``PGSESSION_USER_KEY`` is None.
    :raises SessionError: no ``user_id`` given and nobody is logged in.
    """
    store, user = _store_and_user(request, user_id, "log_out_other_sessions")
    runtime = store._runtime
    return runtime.store.revoke_user(user, keep=store.data, key_prefix=runtime.core.key_prefix)


def mirror_login_for_flask_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """A receiver of Django's ``user_logged_in``: put the user's id where Flask-Login reads it.

    Connected once (``user_logged_in.connect(mirror_login_for_flask_login)``, e.g. in an
    ``AppConfig.ready()``), it lets a Flask app on the same table, secret and cookie name see a
    Django login as Flask-Login's ``current_user`` (``_user_id``: the primary key as text).
    """
    session = getattr(request, "session", None)
    if session is None:
        return
    session[FLASK_LOGIN_USER_KEY] = str(user.pk)
    session["_fresh"] = True
