"""Server-side sessions for Litestar, where Litestar expects them: a session backend, its
config and a plugin.

:class:`PgSessionConfig` takes Litestar's session options by their names (``key``, ``max_age``,
``path``, ``domain``, ``secure``, ``httponly``, ``samesite``, ``exclude``, ``exclude_opt_key``,
``scopes``) plus the store and the signing key; its ``middleware`` is Litestar's own
``SessionMiddleware`` around :class:`PgSessionBackend`, so ``skip_session``, ``exclude``,
``request.set_session()``, ``request.clear_session()``, ``request.get_session_id()`` and
``SessionAuth`` work as Litestar documents them. :class:`PgSessionPlugin` installs that
middleware and opens and closes the store with the app::

    from litestar import Litestar, Request, get
    from pgsession_wsgi.litestar import AsyncPostgresStore, PgSessionConfig, PgSessionPlugin

    config = PgSessionConfig(store=AsyncPostgresStore(os.environ["DATABASE_URL"]),
                             secret_key=os.environ["SECRET_KEY"])

    @get("/")
    async def index(request: Request) -> dict:
        request.session["visits"] = request.session.get("visits", 0) + 1
        return {"visits": request.session["visits"]}

    app = Litestar([index], plugins=[PgSessionPlugin(config)])

The table, the cookie format and the codec are the other front ends': with the same
``secret_key``, cookie name and table, a login made in a Flask app is seen here and the other
way round. Litestar loads a session before the handler runs, so a request carrying a validly
signed cookie costs one statement (a route excluded from the middleware none); a request without
one, or a handler that leaves its session alone, costs nothing more.

Needs the ``litestar`` extra (``pip install 'pgsession-wsgi[litestar]'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import MissingExtraError

try:
    from litestar.config.app import AppConfig
    from litestar.connection import ASGIConnection
    from litestar.enums import ScopeType
    from litestar.plugins import InitPluginProtocol
except ModuleNotFoundError as missing:  # Litestar, which the [litestar] extra brings
    raise (MissingExtraError.of(missing, __name__) or missing) from None

# The module is split by responsibility (issue 22): the backend and the middleware, which run per
# connection, and the config, checked at start-up. Every name it defined stays importable from here.
from ._adapters import litestar_config as _litestar_config
from ._adapters.litestar_backend import PgSessionBackend as PgSessionBackend
from ._adapters.litestar_backend import PgSessionMiddleware as PgSessionMiddleware
from ._adapters.litestar_backend import SessionStoreUnavailable as SessionStoreUnavailable
from ._adapters.litestar_backend import SessionWebsocketRefused as SessionWebsocketRefused
from ._adapters.litestar_backend import _exchange_of
from ._adapters.litestar_backend import log as log
from ._adapters.litestar_config import PgSessionConfig as PgSessionConfig
from ._adapters.websocket import save_without_cookie
from .async_store import AsyncPostgresStore

__all__ = [
    "OPTION_NAMES",
    "AsyncPostgresStore",
    "PgSessionBackend",
    "PgSessionConfig",
    "PgSessionMiddleware",
    "PgSessionPlugin",
    "SessionStoreUnavailable",
    "SessionWebsocketRefused",
    "save_session",
]

# Defined with the config, which translates by it; documented here, where an app imports it.
#: Litestar's name of each cookie and lifetime option, and the name the core (and the other
#: front ends) give it. ``exclude``, ``exclude_opt_key`` and ``scopes`` are Litestar's own
#: middleware's and need no translation; every other option has the core's name.
OPTION_NAMES: Mapping[str, str] = _litestar_config.OPTION_NAMES


async def save_session(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Save a websocket's session now: the only way its changes are stored.

    A websocket cannot set a cookie, so a change that needs one (a new session,
    ``regenerate()``, ``invalidate()``, a login under ``user_key``) raises
    :class:`~pgsession_wsgi.SessionError` and is not saved; make it in an HTTP request. So does a
    session that ended while the websocket was open. From an HTTP handler this does nothing: the
    session is saved as the response starts.

    :param connection: a Litestar websocket (or request).
    :raises SessionError: the change needs a new cookie, the session had ended, or it could not
        be stored.
    :raises StoreUnavailable: the database cannot be reached.
    :raises OutsideRequestError: the connection has no session of this module's.
    """
    scope = connection.scope
    exchange = _exchange_of(scope)
    session = exchange.adopt(scope.get("session"), scope)
    if not session.accessed or (scope["type"] == ScopeType.HTTP and not exchange.saved):
        return
    await save_without_cookie(exchange.config.core, session, exchange.config.store.execute)


class PgSessionPlugin(InitPluginProtocol):
    """Sessions for the whole app: installs ``config.middleware`` and opens and closes the store
    with the app's lifespan.

    The store opens after the app's own ``on_startup`` hooks (so a pool the app opens there is
    open for a store on it), creating its table: a wrong DSN or a table that is not a
    pgsession-wsgi table stops the app at start, as with Flask and Quart. It closes after the
    app's own ``on_shutdown`` hooks. When a ``SessionAuth`` on this config is in the app's
    middleware (``on_app_init=[auth.on_app_init]`` or ``middleware=[auth.middleware]``), it
    already brings the session middleware, which is then not added twice.

    :param config: the sessions' options.
    """

    __slots__ = ("config",)

    def __init__(self, config: PgSessionConfig) -> None:
        #: The sessions' options; ``plugin.config.backend`` gives the backend.
        self.config = config

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Add the middleware (unless there already) and the store's opening and closing.

        :param app_config: the app's config, as Litestar builds it.
        """
        if not any(self._brings_sessions(middleware) for middleware in app_config.middleware):
            app_config.middleware.insert(0, self.config.middleware)
        app_config.on_startup.append(self.config.store.open)
        app_config.on_shutdown.append(self.config.store.close)
        return app_config

    def _brings_sessions(self, middleware: Any) -> bool:
        """Whether ``middleware`` already puts this config's sessions in front of the routes."""
        kwargs = getattr(middleware, "kwargs", None) or {}
        backend = kwargs.get("backend")
        if isinstance(backend, PgSessionBackend) and backend.config is self.config:
            return True
        auth = kwargs.get("config")  # SessionAuth's middleware
        return getattr(auth, "session_backend_config", None) is self.config
