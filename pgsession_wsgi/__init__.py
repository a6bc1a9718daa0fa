"""Server-side sessions for any WSGI application, stored in PostgreSQL."""

from .codec import TypeTag, register_type
from .errors import (
    ConfigurationError,
    LegacyTableError,
    OutsideRequestError,
    SessionDataError,
    SessionError,
    SessionTooLarge,
    StoreUnavailable,
    TagRegistrationError,
)
from .middleware import ENVIRON_KEY, SessionMiddleware, current_session, get_session
from .session import Session
from .store import PostgresStore, SessionInfo

__all__ = [
    "ENVIRON_KEY",
    "ConfigurationError",
    "LegacyTableError",
    "OutsideRequestError",
    "PostgresStore",
    "Session",
    "SessionDataError",
    "SessionError",
    "SessionInfo",
    "SessionMiddleware",
    "SessionTooLarge",
    "StoreUnavailable",
    "TagRegistrationError",
    "TypeTag",
    "current_session",
    "get_session",
    "register_type",
]

__version__ = "0.1.0"
