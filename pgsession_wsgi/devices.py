"""A user's sessions as a "your devices" page shows them; the Flask and Quart extensions share it.

The extensions list and end the logged-in user's sessions through their store. What they share
is here: whose sessions a request means, and which of the listed sessions is the request's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .cookies import hash_session_id
from .errors import ConfigurationError, SessionError
from .session import Session
from .store import SessionInfo

__all__ = ["UserSession", "mark_current", "request_user"]

#: How many hex digits of ``id_hash`` a fingerprint shows.
FINGERPRINT_LENGTH = 8


@dataclass(frozen=True)
class UserSession:
    """One live session of a user, marked when it is the one making the current request.

    Like :class:`~pgsession_wsgi.SessionInfo` it never carries the session id, only its hash.

    :param id_hash: the hex SHA-256 of the session id: tells sessions apart, opens none.
    :param created_at: when the session began (a regenerated id keeps it).
    :param accessed_at: when its expiry was last pushed forward (at most every touch interval).
    :param expires_at: when it ends unless it is used again.
    :param current: it is the request's own session ("this device").
    """

    id_hash: str
    created_at: datetime
    accessed_at: datetime
    expires_at: datetime
    current: bool

    @property
    def fingerprint(self) -> str:
        """A short label to tell a user's sessions apart on a page; like ``id_hash``, it opens none."""
        return self.id_hash[:FINGERPRINT_LENGTH]


def request_user(session: Session, user_key: str | None, user_id: Any) -> Any:
    """Whose sessions a call means: ``user_id`` if given, else the user logged in on ``session``.

    :param session: the request's session.
    :param user_key: the session key mirrored into the user column (``PGSESSION_USER_KEY``).
    :param user_id: the user asked for explicitly, or None for the session's own user.
    :raises ConfigurationError: ``user_key`` is None: sessions are not tagged with their user.
    :raises SessionError: no ``user_id`` given and nobody is logged in on the session.
    """
    if user_key is None:
        raise ConfigurationError(
            "sessions are not tagged with their user because PGSESSION_USER_KEY is None: set it to "
            "the session key holding the user id (Flask-Login's '_user_id' is the default)"
        )
    if user_id is not None:
        return user_id
    value = session.get(user_key)
    if value is None:
        raise SessionError(
            f"no user is logged in on this session (nothing under {user_key!r}): call this from a "
            "view that requires a login, or pass user_id="
        )
    return value


def mark_current(infos: list[SessionInfo], session: Session | None) -> list[UserSession]:
    """The store's rows for a user, each marked whether it is ``session``.

    :param infos: what the store's ``sessions_for_user`` returned.
    :param session: the request's session; None marks none.
    """
    session_id = session.id if session is not None else None
    current = hash_session_id(session_id).hex() if session_id else None
    return [
        UserSession(info.id_hash, info.created_at, info.accessed_at, info.expires_at, info.id_hash == current)
        for info in infos
    ]
