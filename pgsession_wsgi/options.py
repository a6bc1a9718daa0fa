"""The options of a request's session, defined once for every front end.

Each front end takes them in its own framework's words and maps them onto :class:`SessionOptions`,
from which :meth:`pgsession_wsgi.core.SessionCore.from_options` builds the core, checking every value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import defaults

if TYPE_CHECKING:
    from .cookies import IdSigner

__all__ = ["SessionOptions"]


@dataclass(frozen=True)
class SessionOptions:
    """Every option of a request's session, under the names the WSGI and ASGI middlewares take.

    Other front ends map their own names onto these (``pgsession_wsgi.asgi.STARLETTE_OPTIONS``,
    ``pgsession_wsgi.litestar.OPTION_NAMES``, ``pgsession_wsgi.appconfig.SETTINGS``). Values are
    checked when a core is built from them, so a wrong one fails at start-up.

    :param secret_key: signs the cookie (HMAC-SHA256); required unless ``signer`` is given. Apps
        with the same key and table share their sessions.
    :param cookie_name: ``"__Host-session"`` is recommended on an https site: browsers then keep
        it only if Secure, with ``Path=/`` and no ``Domain``, so no subdomain can overwrite it
        (those options are checked, and it is always sent Secure, as ``__Secure-`` names are).
    :param idle_timeout: a session unused this long is gone (``timedelta`` or seconds); also a
        permanent session's cookie's ``Max-Age``; 31 days by default. Every duration here is at
        most 100 years (:data:`~pgsession_wsgi.defaults.MAX_LIFETIME`).
    :param absolute_timeout: a session older than this is gone however active it is; None: never.
    :param touch_interval: the expiry is pushed forward at most this often (and at most every
        tenth of ``idle_timeout``), so a busy session is not a write per request.
    :param permanent: the default of ``session.permanent``: False (as in Flask) sends a cookie
        that ends with the browser, True one with ``Max-Age``. The server forgets an unused
        session after ``idle_timeout`` either way.
    :param refresh_each_request: re-send a permanent session's cookie when its expiry moves.
    :param cookie_path: the cookie's ``Path``.
    :param cookie_domain: the cookie's ``Domain``; None sends none (the safest).
    :param cookie_secure: ``Secure``; None: when the request came over https (or wss).
    :param cookie_httponly: ``HttpOnly`` (True: scripts cannot read the cookie).
    :param cookie_samesite: ``"Lax"``, ``"Strict"``, ``"None"`` (needs Secure) or None.
    :param cookie_partitioned: ``Partitioned`` (CHIPS), for an app embedded in other sites' pages.
        Always sent Secure (browsers drop it otherwise), so ``cookie_secure=False`` is refused.
    :param fallback_secret_keys: older keys still accepted while you rotate; never used to sign.
    :param user_key: the session key holding the user's id (a ``str``, ``int`` or ``UUID``),
        mirrored into the table for ``store.sessions_for_user`` and ``store.revoke_user``; None
        for none. ``"_user_id"`` (Flask-Login's) in every front end, so all see one login.
    :param regenerate_on_user_change: with ``user_key``, a save whose user changes (a login) moves
        the session to a new id by itself, so a cookie planted before it is worthless.
    :param max_size: the most bytes a stored session may take, checked by the database on the
        merged row; None for no limit.
    :param signer: reads and writes another cookie format instead of ``secret_key``'s (the
        flask-pg-session drop-in uses it).
    :param key_prefix: keeps apart the sessions (and users) of apps sharing one table, one prefix
        per app; "" for none. Pass the same ``key_prefix=`` to ``store.sessions_for_user`` and
        ``store.revoke_user``.
    """

    secret_key: str | bytes | None = field(default=None, repr=False)
    cookie_name: str = "session"
    idle_timeout: timedelta | float = defaults.DEFAULT_IDLE_TIMEOUT
    absolute_timeout: timedelta | float | None = None
    touch_interval: timedelta | float = defaults.DEFAULT_TOUCH_INTERVAL
    permanent: bool = defaults.DEFAULT_PERMANENT
    refresh_each_request: bool = True
    cookie_path: str = "/"
    cookie_domain: str | None = None
    cookie_secure: bool | None = None
    cookie_httponly: bool = True
    cookie_samesite: str | None = "Lax"
    cookie_partitioned: bool = False
    fallback_secret_keys: Iterable[str | bytes] = field(default=(), repr=False)
    user_key: str | None = defaults.DEFAULT_USER_KEY
    regenerate_on_user_change: bool = True
    max_size: int | None = defaults.DEFAULT_MAX_SIZE
    signer: IdSigner | None = field(default=None, repr=False)
    key_prefix: str = ""

    @classmethod
    def among(cls, arguments: Mapping[str, Any]) -> SessionOptions:
        """The options found among a front end's arguments (such as a middleware's ``locals()``),
        by these names; the others are left, and a name missing keeps its default."""
        return cls(**{name: arguments[name] for name in _NAMES if name in arguments})


_NAMES = tuple(option.name for option in fields(SessionOptions))
