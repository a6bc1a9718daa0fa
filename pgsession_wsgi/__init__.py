"""Server-side sessions for any WSGI application, stored in PostgreSQL.

Quick start (plain WSGI)::

    from pgsession_wsgi import PostgresStore, SessionMiddleware, get_session

    store = PostgresStore("postgresql://app@db/app")  # creates its table on first use
    app = SessionMiddleware(app, store, secret_key=os.environ["SECRET_KEY"])
    # per request, in the app: session = get_session(environ); session["user"] = 42

Flask apps use :mod:`pgsession_wsgi.flask`; :mod:`pgsession_wsgi.codec` and
:mod:`pgsession_wsgi.core` serve those who add a type or write another front end.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .codec import TypeTag, register_type
from .errors import (
    ConfigurationError,
    InvalidExpiry,
    LegacyTableError,
    MissingExtraError,
    OutsideRequestError,
    PrivilegeError,
    ReadOnlyServer,
    SessionDataError,
    SessionError,
    SessionTooLarge,
    StoreUnavailable,
    TagRegistrationError,
    UnstorableTypeError,
    UnstorableValue,
    UnstorableValueError,
)
from .options import SessionOptions
from .session import Session
from .store_steps import SessionInfo

if TYPE_CHECKING:
    from .middleware import ENVIRON_KEY, SessionMiddleware, current_session, get_session
    from .store import PostgresStore

# The WSGI half is imported at first use (PEP 562), so an ASGI app never loads psycopg2.
_LAZY = {"PostgresStore": "store"} | dict.fromkeys(
    ("ENVIRON_KEY", "SessionMiddleware", "current_session", "get_session"), "middleware"
)

__all__ = [
    "ENVIRON_KEY",
    "ConfigurationError",
    "InvalidExpiry",
    "LegacyTableError",
    "MissingExtraError",
    "OutsideRequestError",
    "PostgresStore",
    "PrivilegeError",
    "ReadOnlyServer",
    "Session",
    "SessionDataError",
    "SessionError",
    "SessionInfo",
    "SessionMiddleware",
    "SessionOptions",
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


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
