"""Django session engine on the shared table: ``SESSION_ENGINE = "pgsession_wsgi.django"``.

Django's ``SessionMiddleware`` (or :class:`SessionMiddleware` here, which answers a database outage
with a 503) keeps the cookie. Its value, :attr:`SessionStore.session_key`, is the signed id every
front end writes (signed with ``SECRET_KEY``), so a Flask, Quart or ASGI app with the same secret,
cookie name and table reads the same session. The data is a lazy :class:`pgsession_wsgi.Session`
saved per changed key. Every setting read is in :data:`SETTINGS`; old database sessions of Django
move in as their cookies come back (``docs/django.md``).
"""

from __future__ import annotations

from ..devices import UserSession
from ..errors import MissingExtraError

try:
    from ._middleware import SessionMiddleware
    from ._runtime import close_stores
    from ._session_store import SessionStore
    from ._settings import DJANGO_USER_KEY, SETTINGS, database_dsn
    from ._users import (
        FLASK_LOGIN_USER_KEY,
        log_out_other_sessions,
        mirror_login_for_flask_login,
        sessions_for_user,
    )
except ModuleNotFoundError as missing:  # the [django] extra: say which command installs it
    raise (MissingExtraError.of(missing, __name__) or missing) from None

__all__ = [
    "DJANGO_USER_KEY",
    "FLASK_LOGIN_USER_KEY",
    "SETTINGS",
    "SessionMiddleware",
    "SessionStore",
    "UserSession",
    "close_stores",
    "database_dsn",
    "log_out_other_sessions",
    "mirror_login_for_flask_login",
    "sessions_for_user",
]
