"""Django session engine: ``SESSION_ENGINE = "pgsession_wsgi.django"``, on the shared table.

Django's ``SessionMiddleware`` (or :class:`SessionMiddleware` here, Django's answering a database
outage with a 503) stays in charge of the cookie: it builds a :class:`SessionStore` from the
cookie's value, asks it what changed, saves it and sets the cookie to
:attr:`SessionStore.session_key`. That key is our signed cookie value (the HMAC-signed random id
every front end writes, signed with Django's ``SECRET_KEY``), so a Flask, Quart or ASGI app with
the same secret, cookie name and table reads the same session. The data behind the store is a
:class:`pgsession_wsgi.Session` made by the core (:class:`~pgsession_wsgi.core.SessionCore`):
lazy (a request that does not touch the session costs no statement), tracking changes per key
(concurrent saves merge), with the expiry enforced by the database.

Settings (``settings.py``)::

    SESSION_ENGINE = "pgsession_wsgi.django"
    PGSESSION_DATABASE = "default"        # or PGSESSION_DSN = "postgresql://..."
    MIDDLEWARE = [..., "pgsession_wsgi.django.SessionMiddleware", ...]

Every setting the engine reads is in :data:`SETTINGS`, read through one typed reader. Old
sessions of ``django.contrib.sessions.backends.db`` are moved in as their cookies come back (see
``docs/django.md``, "Moving from Django's database sessions").

Django imports this package as the engine (``SessionStore``) and the middleware; its modules:
``_settings`` (the typed settings, the DSN of a ``DATABASES`` entry), ``_store`` (the store and
the read-through of ``django_session``), ``_runtime`` (one core and one store per process),
``_session_store`` (``SessionStore``, with ``_async_methods``), ``_users`` ("your devices", the
Flask-Login bridge) and ``_middleware`` (``SessionMiddleware``).
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
