"""Server-side sessions for any WSGI application, stored in PostgreSQL.

Quick start (plain WSGI)::

    from pgsession_wsgi import PostgresStore, SessionMiddleware, get_session

    store = PostgresStore("postgresql://app@db/app")  # creates its table on first use
    app = SessionMiddleware(app, store, secret_key=os.environ["SECRET_KEY"])
    # per request, in the app: session = get_session(environ); session["user"] = 42

``__all__`` is everything an application imports. Flask apps use :mod:`pgsession_wsgi.flask`;
:mod:`pgsession_wsgi.codec` and :mod:`pgsession_wsgi.core` serve those who add a type or write
another front end. The other modules are internal building blocks.
"""

from .codec import TypeTag, register_type
from .errors import (
    ConfigurationError,
    InvalidExpiry,
    LegacyTableError,
    MissingExtraError,
    OutsideRequestError,
    PrivilegeError,
    SessionDataError,
    SessionError,
    SessionTooLarge,
    StoreUnavailable,
    TagRegistrationError,
    UnstorableTypeError,
    UnstorableValue,
    UnstorableValueError,
)
from .middleware import ENVIRON_KEY, SessionMiddleware, current_session, get_session
from .session import Session
from .store import PostgresStore, SessionInfo

__all__ = [
    "ENVIRON_KEY",
    "ConfigurationError",
    "InvalidExpiry",
    "LegacyTableError",
    "MissingExtraError",
    "OutsideRequestError",
    "PostgresStore",
    "PrivilegeError",
    "Session",
    "SessionDataError",
    "SessionError",
    "SessionInfo",
    "SessionMiddleware",
    "SessionTooLarge",
    "StoreUnavailable",
    "TagRegistrationError",
    "TypeTag",
    "UnstorableTypeError",
    "UnstorableValue",
    "UnstorableValueError",
    "current_session",
    "get_session",
    "register_type",
]

__version__ = "0.2.0.dev0"
