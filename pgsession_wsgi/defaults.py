"""Internal: the defaults more than one part of pgsession-wsgi offers, each defined once so that
the store, the middlewares, the Flask extensions and the command line never drift apart."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

__all__ = [
    "check_store_options",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_PERMANENT",
    "DEFAULT_PURGE_BATCH_SIZE",
    "DEFAULT_PURGE_INTERVAL",
    "DEFAULT_SCHEMA",
    "DEFAULT_TABLE",
    "DEFAULT_TOUCH_INTERVAL",
    "DEFAULT_USER_KEY",
    "MAX_LIFETIME",
]

#: The session table, and the schema holding it.
DEFAULT_TABLE: Final = "pgsession"
DEFAULT_SCHEMA: Final = "public"
#: How long an unused session lives: Flask's ``PERMANENT_SESSION_LIFETIME``, which a Flask app keeps.
DEFAULT_IDLE_TIMEOUT: Final = timedelta(days=31)
#: The longest lifetime the middleware's timeouts or ``set_expiry`` may give: 100 years. An expiry
#: moves forward by it as it is used, and must stay before year 10000, which no driver reads.
MAX_LIFETIME: Final = timedelta(days=36500)
#: Whether a new session's cookie outlives the browser (``session.permanent``): no, as in Flask,
#: in every front end, so a session shared by a Flask and an ASGI app keeps one cookie lifetime.
DEFAULT_PERMANENT: Final = False
#: The session key holding the logged-in user's id (Flask-Login's), mirrored into the user column
#: by every front end, so a login in one app is listed and revoked in all.
DEFAULT_USER_KEY: Final = "_user_id"
#: A read moves the expiry forward at most this often, so a busy session is not a write per request.
DEFAULT_TOUCH_INTERVAL: Final = timedelta(seconds=60)
#: Seconds between background purges of expired rows.
DEFAULT_PURGE_INTERVAL: Final[float] = 300
#: Rows one purge statement deletes (the background purge and ``pgsession-wsgi cleanup``).
DEFAULT_PURGE_BATCH_SIZE: Final = 1000
#: Connections in each process's pool.
DEFAULT_MAX_CONNECTIONS: Final = 10
#: The largest encoded session, in bytes: the middleware's limit and the migration's, so whatever
#: the migration converts can be saved again.
DEFAULT_MAX_SIZE: Final = 256 * 1024


def check_store_options(
    max_connections: int, pool_timeout: float, connect_timeout: float, purge_interval: float | None
) -> None:
    """Refuse pool and purge settings no store can work with (both stores take the same ones).

    :raises ConfigurationError: a count below 1, or a duration that is not positive.
    """
    from .errors import ConfigurationError

    if max_connections < 1:
        raise ConfigurationError("max_connections must be at least 1")
    if pool_timeout <= 0 or connect_timeout <= 0:
        raise ConfigurationError("pool_timeout and connect_timeout must be positive numbers of seconds")
    if purge_interval is not None and purge_interval <= 0:
        raise ConfigurationError("purge_interval must be a positive number of seconds, or None")
