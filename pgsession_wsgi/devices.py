"""A user's sessions as a "your devices" page shows them; the Flask and Quart extensions share it.

:func:`describe_user_agent` turns the login's User-Agent into a few words to store in the session
("Firefox on Linux"); :func:`recorded_devices` reads them back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .cookies import hash_session_id
from .defaults import DEFAULT_TOUCH_INTERVAL
from .errors import ConfigurationError, SessionError
from .session import Session
from .store_steps import SessionInfo

if TYPE_CHECKING:  # Quart's extension uses this module too, and must not load psycopg2
    from .store import PostgresStore

__all__ = [
    "UNKNOWN_BROWSER",
    "UserSession",
    "describe_user_agent",
    "mark_current",
    "recorded_devices",
    "request_user",
]

#: How many hex digits of ``id_hash`` a fingerprint shows.
FINGERPRINT_LENGTH = 8


@dataclass(frozen=True)
class UserSession:
    """One live session of a user, marked when it is the one making the current request.

    :param id_hash: the hex SHA-256 of the session id (never the id): tells sessions apart, opens none.
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

    :param user_key: the session key mirrored into the user column (``PGSESSION_USER_KEY``).
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
    """The store's rows for a user (its ``sessions_for_user``), each marked whether it is ``session``."""
    session_id = session.id if session is not None else None
    current = hash_session_id(session_id).hex() if session_id else None
    return [
        UserSession(info.id_hash, info.created_at, info.accessed_at, info.expires_at, info.id_hash == current)
        for info in infos
    ]


# -- describing a device -----------------------------------------------------------------------

#: What :func:`describe_user_agent` says of a browser it does not recognise.
UNKNOWN_BROWSER = "Unknown browser"

# A browser names the products it imitates too (Edge says Chrome and Safari, Chrome says Safari):
# the first whose product token is present wins. Names are matched as whole product tokens.
_BROWSERS = (
    (("Edg", "EdgA", "EdgiOS"), "Edge"),
    (("OPR", "OPiOS"), "Opera"),
    (("SamsungBrowser",), "Samsung Internet"),
    (("Vivaldi",), "Vivaldi"),
    (("YaBrowser",), "Yandex Browser"),
    (("Firefox", "FxiOS"), "Firefox"),
    (("CriOS", "HeadlessChrome", "Chrome"), "Chrome"),
    (("Chromium",), "Chromium"),
)
# Read from the first parenthesised comment, where browsers put the platform; the first matching
# part wins (an Android phone says Linux too, an iPhone "like Mac OS X").
_SYSTEMS = (
    ("Windows", "Windows"),
    ("iPhone", "iOS"),
    ("CPU iPhone OS", "iOS"),
    ("iPod", "iOS"),
    ("iPad", "iPadOS"),
    ("CrOS", "ChromeOS"),
    ("Android", "Android"),
    ("Macintosh", "macOS"),
    ("Linux", "Linux"),
)
# Longer headers are cut: real ones are a few hundred characters.
_MAX_AGENT = 1000
_PRODUCT = re.compile(r"(?:^|[\s;(),])([A-Za-z][A-Za-z0-9]*)/")
_COMMENT = re.compile(r"\(([^()]*)\)")


def describe_user_agent(user_agent: str | None) -> str:
    """A few words for a device list, from the User-Agent header of the request that logged in.

    ``"Firefox on Linux"``, ``"Safari on iOS"``, ``"Firefox"``, ``"Unknown browser"``. Only the
    major browsers and systems; the answer is always one of its own phrases, never text taken
    from the header (which anyone can set: it is a hint for the user, not a proof).

    :param user_agent: the header's value; None or "" when there was none.
    """
    agent = (user_agent or "")[:_MAX_AGENT]
    products = set(_PRODUCT.findall(agent))
    browser = next((name for tokens, name in _BROWSERS if products.intersection(tokens)), None)
    if browser is None and {"Safari", "Version"} <= products:
        browser = "Safari"  # Safari proper says Version/; the in-app views of iOS apps do not
    comment = _COMMENT.search(agent)
    parts = [part.strip() for part in comment.group(1).split(";")] if comment else []
    system = next((name for prefix, name in _SYSTEMS for part in parts if part.startswith(prefix)), None)
    browser = browser or UNKNOWN_BROWSER
    return f"{browser} on {system}" if system else browser


def recorded_devices(store: PostgresStore, sessions: Iterable[UserSession], key: str) -> dict[str, str]:
    """What each listed session recorded under ``key`` (at its login), by ``id_hash``.

    One primary-key SELECT per session; no session is touched or extended.

    :param sessions: the listed sessions (``sessions_for_user()``).
    :param key: the session key the app stored ``describe_user_agent(...)`` under at login.
    :returns: the text stored under ``key``, by ``id_hash``; a session that recorded none (or no
        text), or that ended since it was listed, is left out.
    """
    found: dict[str, str] = {}
    for user_session in sessions:
        row = store.load(bytes.fromhex(user_session.id_hash), DEFAULT_TOUCH_INTERVAL)
        value = row.data.get(key) if row is not None else None
        if isinstance(value, str):  # a str is stored as itself; anything else is not a description
            found[user_session.id_hash] = value
    return found
