"""Server-side sessions for Litestar: a session backend, its config and a plugin.

:class:`PgSessionConfig` takes Litestar's session options by their names; its ``middleware`` is
Litestar's own ``SessionMiddleware`` around :class:`PgSessionBackend` (so ``skip_session``,
``set_session()`` and ``SessionAuth`` work as Litestar documents them), which
:class:`PgSessionPlugin` installs, opening and closing the store with the app. Needs the
``litestar`` extra.
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

#: Litestar's name of each cookie and lifetime option, and the core's for it. The other options
#: have the core's names, but for Litestar's own ``exclude``, ``exclude_opt_key`` and ``scopes``.
OPTION_NAMES: Mapping[str, str] = _litestar_config.OPTION_NAMES


async def save_session(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Save a websocket's session now: the only way its changes are stored.

    A websocket cannot set a cookie, so a change that needs one (a new session, ``regenerate()``,
    ``invalidate()``, a login under ``user_key``) is refused: make it in an HTTP request. From an
    HTTP handler this does nothing: the session is saved as the response starts.

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
    """Sessions for the whole app: installs ``config.middleware`` (unless a ``SessionAuth`` on this
    config brings it already), opens the store after the app's ``on_startup`` hooks (a wrong DSN or
    a foreign table stops the app at start) and closes it after its ``on_shutdown`` hooks."""

    __slots__ = ("config",)

    def __init__(self, config: PgSessionConfig) -> None:
        #: The sessions' options; ``plugin.config.backend`` gives the backend.
        self.config = config

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Add the middleware (unless there already) and the store's opening and closing."""
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
