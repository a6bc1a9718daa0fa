"""Internal: the config of :mod:`pgsession_wsgi.litestar`, its options by Litestar's names
translated to the core's and checked once, and the middleware it hands an app."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from litestar.enums import ScopeType
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.session.base import BaseBackendConfig

from ..async_store import AsyncPostgresStore
from ..cookies import IdSigner
from ..core import SessionCore
from ..defaults import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_SIZE,
    DEFAULT_PERMANENT,
    DEFAULT_TOUCH_INTERVAL,
    DEFAULT_USER_KEY,
)
from ..errors import ConfigurationError
from ..options import SessionOptions
from .asgi_options import _in_names_given
from .litestar_backend import PgSessionBackend, PgSessionMiddleware
from .websocket import WebsocketOrigins

OPTION_NAMES: Mapping[str, str] = {
    "key": "cookie_name",
    "max_age": "idle_timeout",
    "path": "cookie_path",
    "domain": "cookie_domain",
    "secure": "cookie_secure",
    "httponly": "cookie_httponly",
    "samesite": "cookie_samesite",
}

# Litestar spells SameSite in lower case; the core as the Set-Cookie attribute is written.
_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


@dataclass(eq=False)
class PgSessionConfig(BaseBackendConfig["PgSessionBackend"]):
    """The session options, by Litestar's names where it has one (see :data:`OPTION_NAMES`), and
    the :attr:`middleware` that uses them; checked once, here, so a wrong option fails at start-up.

    The options without a Litestar name are :class:`~pgsession_wsgi.SessionOptions`' fields, with
    the same defaults.

    :param store: where sessions live: an :class:`~pgsession_wsgi.asgi.AsyncPostgresStore`.
    :param secret_key: signs the cookie (Litestar's server-side sessions sign nothing); the same
        key as a Flask or WSGI app's to share its sessions.
    :param max_age: seconds a session lives unused, also a permanent session's cookie's
        ``Max-Age`` (the core's ``idle_timeout``).
    :param secure: ``Secure``; None (the default): when the request came over https.
    :param exclude: a path pattern, or a list of them, whose requests get no session (Litestar's).
    :param exclude_opt_key: a route whose ``opt`` has this key set true gets no session
        (``@get("/", skip_session=True)``; Litestar's).
    :param websocket_origins: origins besides the app's own whose pages may open a websocket.
    :raises ConfigurationError: ``store`` is not an ``AsyncPostgresStore``, ``secret_key`` is
        missing, or an option is invalid or contradicts another (named as here).
    """

    store: AsyncPostgresStore
    secret_key: str | bytes | None = field(default=None, repr=False)
    key: str = "session"
    max_age: int = int(DEFAULT_IDLE_TIMEOUT.total_seconds())
    # Not Litestar's Scopes alias (a set of Literals), which the API reference cannot render.
    scopes: Collection[ScopeType] = field(default_factory=lambda: {ScopeType.HTTP, ScopeType.WEBSOCKET})  # type: ignore[assignment]
    path: str = "/"
    domain: str | None = None
    secure: bool | None = None  # type: ignore[assignment]
    httponly: bool = True
    samesite: Literal["lax", "strict", "none"] = "lax"
    exclude: str | list[str] | None = None
    exclude_opt_key: str = "skip_session"
    absolute_timeout: timedelta | float | None = None
    touch_interval: timedelta | float = DEFAULT_TOUCH_INTERVAL
    permanent: bool = DEFAULT_PERMANENT
    refresh_each_request: bool = True
    fallback_secret_keys: Iterable[str | bytes] = field(default=(), repr=False)
    user_key: str | None = DEFAULT_USER_KEY
    regenerate_on_user_change: bool = True
    max_size: int | None = DEFAULT_MAX_SIZE
    signer: IdSigner | None = field(default=None, repr=False)
    websocket_origins: Iterable[str] = ()
    #: The request algorithm, with the options as checked.
    core: SessionCore = field(init=False, repr=False)
    #: The pages that may open a websocket getting the session (from ``websocket_origins``).
    origins: WebsocketOrigins = field(init=False, repr=False)

    _backend_class = PgSessionBackend

    def __post_init__(self) -> None:
        if not isinstance(self.store, AsyncPostgresStore):
            raise ConfigurationError(
                f"PgSessionConfig needs an async store, not {type(self.store).__name__}: pass "
                "store=pgsession_wsgi.asgi.AsyncPostgresStore(dsn) (or AsyncPostgresStore.from_pool(pool))"
            )
        if self.signer is None and not self.secret_key:
            raise ConfigurationError(
                "PgSessionConfig needs secret_key=...: a long random value (e.g. from "
                "secrets.token_hex(32)) read from the environment; the same as your Flask app's "
                "SECRET_KEY to share its sessions"
            )
        options = {**vars(self), **{ours: getattr(self, name) for name, ours in OPTION_NAMES.items()}}
        options[OPTION_NAMES["samesite"]] = _SAMESITE.get(str(self.samesite).lower(), self.samesite)
        try:
            self.core = SessionCore.from_options(SessionOptions.among(options))
        except ConfigurationError as exc:
            renamed = {core_name: name for name, core_name in OPTION_NAMES.items()}
            raise ConfigurationError(_in_names_given(str(exc), renamed)) from None
        self.origins = WebsocketOrigins(self.websocket_origins, "websocket_origins")

    @property
    def middleware(self) -> DefineMiddleware:
        """Litestar's session middleware around this config's backend, for a ``middleware`` list."""
        return DefineMiddleware(PgSessionMiddleware, backend=PgSessionBackend(config=self))

    def get_store_from_app(self, app: Any) -> AsyncPostgresStore:
        """The config's own store, whatever the app's ``stores`` hold (for ``litestar sessions``)."""
        return self.store

    @property
    def backend(self) -> PgSessionBackend:
        """A backend on this config, for its operations by session id."""
        return PgSessionBackend(config=self)
