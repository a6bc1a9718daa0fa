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

import logging
import re
from collections.abc import Collection, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, cast

from .errors import ConfigurationError, MissingExtraError, OutsideRequestError, SessionError, StoreUnavailable
from .options import SessionOptions

try:
    from litestar.config.app import AppConfig
    from litestar.connection import ASGIConnection
    from litestar.enums import ScopeType
    from litestar.exceptions import ServiceUnavailableException, WebSocketException
    from litestar.middleware.base import DefineMiddleware
    from litestar.middleware.session.base import BaseBackendConfig, BaseSessionBackend, SessionMiddleware
    from litestar.plugins import InitPluginProtocol
    from litestar.types import ASGIApp, Message, Receive, Scope, ScopeSession, Send
except ModuleNotFoundError as missing:  # Litestar, which the [litestar] extra brings
    raise (MissingExtraError.of(missing, __name__) or missing) from None

from ._asgi_plumbing import (
    add_session_headers,
    as_mapping,
    cookie_header,
    error_response,
    log_failure,
    origin_allowed,
    take_over,
)
from .async_store import AsyncPostgresStore
from .cookies import IdSigner
from .core import SessionCore, run_async
from .defaults import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_SIZE,
    DEFAULT_PERMANENT,
    DEFAULT_TOUCH_INTERVAL,
    DEFAULT_USER_KEY,
)
from .session import Session
from .websocket import (
    CLOSE_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_UNAVAILABLE,
    REFUSED_REASON,
    WebsocketOrigins,
    save_without_cookie,
)

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

log = logging.getLogger("pgsession_wsgi")

#: Litestar's name of each cookie and lifetime option, and the name the core (and the other
#: front ends) give it. ``exclude``, ``exclude_opt_key`` and ``scopes`` are Litestar's own
#: middleware's and need no translation; every other option has the core's name.
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

# Where the backend keeps one connection's session in its scope, between load and save.
_SCOPE_KEY = "pgsession.litestar"

_UNAVAILABLE_DETAIL = "the session store cannot be reached; please try again shortly"


class SessionStoreUnavailable(StoreUnavailable, ServiceUnavailableException):
    """The store could not be reached while loading a request's session: a 503.

    Both a :class:`~pgsession_wsgi.StoreUnavailable` (an app's handler for it, or for
    :class:`~pgsession_wsgi.SessionError`, is used) and Litestar's
    ``ServiceUnavailableException`` (so without one Litestar answers 503, with
    ``Retry-After: 5``; a handler for the status code 503 is used too).
    """


class SessionWebsocketRefused(SessionError, WebSocketException):
    """A websocket handshake refused before its session was loaded; Litestar closes it with
    :attr:`code`: 1008 for a page on another origin (a 403 under a server), 1013 when the store
    cannot be reached, 1011 for any other session error."""


def _no_loader(session: Session) -> None:
    """Never called: the backend loads every session before Litestar hands it to the app."""
    return None


def _in_litestar_names(message: str) -> str:
    """A core message about an option, naming it as :class:`PgSessionConfig` does."""
    for litestar_name, core_name in OPTION_NAMES.items():
        message = re.sub(rf"\b{core_name}\b", litestar_name, message)
    return message


class _Exchange:
    """One connection's session between the backend's load and its save, kept in the scope."""

    __slots__ = ("config", "session", "saved", "replaced")

    def __init__(self, config: PgSessionConfig, session: Session) -> None:
        self.config = config
        self.session = session
        #: The save at ``http.response.start`` ran: a later change is a late one.
        self.saved = False
        #: A failed save was answered with an error response instead of the app's.
        self.replaced = False

    def adopt(self, current: Any, scope: Scope) -> Session:
        """The session to save, after Litestar's ``set_session(data)`` put ``data`` in the scope
        (it replaces the session's data) or ``clear_session()`` put ``Empty`` there (it ends it)."""
        session = self.session
        if current is not session:
            take_over(session, current)
            scope["session"] = session
        return session


def _exchange_of(scope: Scope) -> _Exchange:
    exchange = scope.get(_SCOPE_KEY)
    if not isinstance(exchange, _Exchange):
        raise OutsideRequestError(
            "this connection has no pgsession-wsgi session: add PgSessionPlugin(config) to the "
            "app's plugins (or config.middleware to its middleware), and leave the route out of "
            "exclude / exclude_opt_key"
        )
    return exchange


class PgSessionBackend(BaseSessionBackend["PgSessionConfig"]):
    """Litestar's session backend contract on a pgsession-wsgi store, and the operations of
    Litestar's server-side backends by session id (:meth:`get`, :meth:`set`, :meth:`delete`,
    :meth:`delete_all`, :meth:`delete_expired`).

    A session id is the one ``request.get_session_id()`` answers: the id the cookie carries,
    whose SHA-256 is the row's key. An app gets a backend from :attr:`PgSessionConfig.backend`.
    """

    __slots__ = ()

    # -- Litestar's contract -----------------------------------------------------------------

    async def load_from_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
        """The connection's session, loaded: one statement for a validly signed cookie, none
        otherwise (a bad or missing cookie is a new, empty session).

        :param connection: the request or websocket.
        :raises SessionStoreUnavailable: the store cannot be reached (a 503).
        :raises SessionWebsocketRefused: a websocket from another origin's page, or one whose
            session cannot be loaded.
        :raises SessionError: the stored row cannot be decoded (a 500).
        """
        config = self.config
        scope = connection.scope
        websocket = scope["type"] == ScopeType.WEBSOCKET
        if websocket and not origin_allowed(config.origins, scope):  # type: ignore[arg-type]
            raise SessionWebsocketRefused(detail=REFUSED_REASON, code=CLOSE_POLICY_VIOLATION)
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        session = config.core.open(cookie_header(scope), scheme, _no_loader)  # type: ignore[arg-type]
        try:
            session.preload(await run_async(config.core.load(session), config.store.execute))
        except SessionError as exc:
            status = log_failure(exc, "loading")
            if websocket:
                code = CLOSE_UNAVAILABLE if status == 503 else CLOSE_ERROR
                raise SessionWebsocketRefused(detail="session store unavailable", code=code) from exc
            if status == 503:
                raise SessionStoreUnavailable(
                    detail=_UNAVAILABLE_DETAIL, headers={"Retry-After": "5"}
                ) from exc
            raise
        scope[_SCOPE_KEY] = _Exchange(config, session)  # type: ignore[literal-required]
        return cast("dict[str, Any]", session)

    def get_session_id(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
        """The id of the connection's stored session; None for a session not stored yet.

        :param connection: the request or websocket.
        """
        exchange = connection.scope.get(_SCOPE_KEY)
        return exchange.session.id if isinstance(exchange, _Exchange) else None

    async def store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> None:
        """Save the session as the response starts, and add ``Vary``, ``Set-Cookie`` (when the
        cookie changes) and ``Cache-Control: private`` (when one is set) to ``message``.

        A session the request never used costs nothing and adds no header.

        :param scope_session: the session in the scope: ours, what ``set_session()`` put there,
            or ``Empty`` after ``clear_session()``.
        :param message: the ``http.response.start`` message.
        :param connection: the request.
        :raises StoreUnavailable: the database cannot be reached in time.
        :raises SessionError: a value cannot be stored, or the session is over ``max_size``.
        """
        exchange = _exchange_of(connection.scope)
        session = exchange.adopt(scope_session, connection.scope)
        exchange.saved = True
        headers = await run_async(self.config.core.save(session), self.config.store.execute)
        if headers:
            start = cast("MutableMapping[str, Any]", message)
            start["headers"] = add_session_headers(list(start.get("headers", [])), headers)

    async def save_late(self, scope: Scope) -> None:
        """After the response: save a change a streamed body made once the headers were out,
        if it needs no new cookie (else it is logged and dropped, as on every front end).

        :param scope: the request's scope.
        """
        exchange = scope.get(_SCOPE_KEY)
        if not isinstance(exchange, _Exchange) or not exchange.saved or exchange.replaced:
            return
        session = exchange.adopt(scope.get("session"), scope)
        if not self.config.core.needs_late_save(session):
            return
        try:
            await save_without_cookie(self.config.core, session, self.config.store.execute)
        except SessionError as exc:
            log.warning("session change made after the response headers were sent was not saved: %s", exc)

    # -- by session id -----------------------------------------------------------------------

    def _session_for(self, session_id: str) -> Session:
        """A session for ``session_id`` as if its cookie had come in: the core reads it as any."""
        core = self.config.core
        try:
            cookie = f"{core.cookie.name}={core.signer.sign(session_id)}"
        except ValueError:  # not an id this layer issues (not ASCII): no session
            cookie = ""
        return core.open(cookie, "https", _no_loader)

    async def _loaded(self, session_id: str) -> Session:
        session = self._session_for(session_id)
        session.preload(await run_async(self.config.core.load(session), self.config.store.execute))
        return session

    async def get(self, session_id: str) -> dict[str, Any] | None:
        """The data of the live session ``session_id`` (values as the app stored them), or None.

        :param session_id: an id as ``request.get_session_id()`` gives it.
        :raises StoreUnavailable: the database cannot be reached in time.
        """
        session = await self._loaded(session_id)
        return dict(session) if session.id is not None else None

    async def set(self, session_id: str, data: Any) -> str | None:
        """Replace the data of session ``session_id`` with ``data``; returns the id it lives under.

        That is ``session_id`` while its session is live. Ids are never chosen by the caller: for
        an id with no live session (ended, expired, never issued) the data is stored under a new
        id, returned. Empty data ends the session (None is returned).

        :param session_id: an id as ``request.get_session_id()`` gives it.
        :param data: a mapping, a dataclass, a pydantic model or a msgspec ``Struct`` of storable
            values.
        :raises SessionError: a value cannot be stored, or the session is over ``max_size``.
        :raises StoreUnavailable: the database cannot be reached in time.
        """
        session = await self._loaded(session_id)
        values = as_mapping(data)
        session.clear()
        session.update(values)
        await run_async(self.config.core.save(session), self.config.store.execute)
        return session.id

    async def delete(self, session_id: str) -> None:
        """End session ``session_id`` (its row is deleted); nothing happens for an unknown id.

        :param session_id: an id as ``request.get_session_id()`` gives it.
        :raises StoreUnavailable: the database cannot be reached in time.
        """
        session = self._session_for(session_id)
        session.invalidate()
        await run_async(self.config.core.save(session), self.config.store.execute)

    async def delete_all(self) -> int:
        """End every session in the store's table; how many live ones ended.

        The store's :meth:`~pgsession_wsgi.async_store.AsyncPostgresStore.delete_all`: every
        app's sessions on that table go (a row does not record which app made it), on a store
        of its own connections or on your pool's (``AsyncPostgresStore.from_pool``) alike.

        :raises StoreUnavailable: the database cannot be reached.
        """
        return await self.config.store.delete_all()

    async def delete_expired(self) -> int:
        """Delete the expired rows now (the store's background purge does it too); how many.

        :raises StoreUnavailable: the database cannot be reached.
        """
        return await self.config.store.purge_expired()


@dataclass(eq=False)
class PgSessionConfig(BaseBackendConfig["PgSessionBackend"]):
    """The session options, by Litestar's names where Litestar has one (see
    :data:`OPTION_NAMES`), and the middleware (:attr:`middleware`) that uses them.

    Checked once, here: a wrong option fails at start-up, never per request.

    :param store: where sessions live: an :class:`~pgsession_wsgi.asgi.AsyncPostgresStore`
        (``AsyncPostgresStore.from_pool(pool)`` to borrow your own psycopg pool's connections).
    :param secret_key: signs the cookie; the same key as a Flask or WSGI app's to share its
        sessions. Required (Litestar's server-side sessions sign nothing).
    :param key: the cookie's name (the core's ``cookie_name``); ``"session"``, as Flask's.
    :param max_age: seconds a session lives unused, also a permanent session's cookie's
        ``Max-Age`` (the core's ``idle_timeout``); 31 days, as in every front end (Flask's
        ``PERMANENT_SESSION_LIFETIME``).
    :param scopes: the connections that get a session: ``http`` and ``websocket`` (Litestar's).
    :param path: the cookie's ``Path``.
    :param domain: the cookie's ``Domain``; None sends none (the safest).
    :param secure: ``Secure``; None (the default): when the request came over https.
    :param httponly: ``HttpOnly``.
    :param samesite: ``"lax"``, ``"strict"`` or ``"none"`` (which needs Secure cookies).
    :param exclude: a path pattern, or a list of them, whose requests get no session (Litestar's).
    :param exclude_opt_key: a route whose ``opt`` has this key set true gets no session
        (``@get("/", skip_session=True)``; Litestar's).

    The other options (``absolute_timeout``, ``touch_interval``, ``permanent``,
    ``refresh_each_request``, ``fallback_secret_keys``, ``user_key``,
    ``regenerate_on_user_change``, ``max_size``, ``signer``) are
    :class:`~pgsession_wsgi.SessionOptions`' fields, documented there once for every front
    end, with the same defaults.

    :param websocket_origins: origins whose pages may open a websocket that gets the session,
        besides the app's own (e.g. ``["https://app.example.com"]``).
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
    #: The request algorithm, with the options as checked (made from the fields above).
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
        given: dict[str, Any] = {
            "key": self.key,
            "max_age": self.max_age,
            "path": self.path,
            "domain": self.domain,
            "secure": self.secure,
            "httponly": self.httponly,
            "samesite": _SAMESITE.get(str(self.samesite).lower(), self.samesite),
        }
        try:
            options = {**vars(self), **{OPTION_NAMES[name]: value for name, value in given.items()}}
            self.core = SessionCore.from_options(SessionOptions.among(options))
        except ConfigurationError as exc:
            raise ConfigurationError(_in_litestar_names(str(exc))) from None
        self.origins = WebsocketOrigins(self.websocket_origins, "websocket_origins")

    @property
    def middleware(self) -> DefineMiddleware:
        """Litestar's session middleware around this config's backend, for a ``middleware``
        list of the app, a router or a controller (the plugin puts it on the app)."""
        return DefineMiddleware(PgSessionMiddleware, backend=PgSessionBackend(config=self))

    @property
    def backend(self) -> PgSessionBackend:
        """A backend on this config, for its operations by session id (:meth:`PgSessionBackend.get`...)."""
        return PgSessionBackend(config=self)


class PgSessionMiddleware(SessionMiddleware[PgSessionBackend]):
    """Litestar's ``SessionMiddleware`` (its route exclusions, scopes and ``get_session_id``),
    with what a database-backed save needs besides.

    A save that fails as the response starts answers a 503 (store unreachable, with
    ``Retry-After: 5``) or a 500 (a value that cannot be stored), with one log line, instead of
    the app's response; Litestar would have no response left to send. A change a streamed body
    makes after the headers went out is saved after the body, if it needs no new cookie.

    :param app: the next ASGI app.
    :param backend: a :class:`PgSessionBackend` (``config.middleware`` makes both).
    """

    def __init__(self, app: ASGIApp, backend: PgSessionBackend) -> None:
        super().__init__(app, backend)

    def create_send_wrapper(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Send:
        """Litestar's send wrapper (the backend saves at ``http.response.start``), answering
        the failure of that save with an error response.

        :param connection: the request.
        """
        scope, connection_send = connection.scope, connection.send
        store_in_message = self.backend.store_in_message

        async def send(message: Message) -> None:
            exchange = scope.get(_SCOPE_KEY)
            if isinstance(exchange, _Exchange) and exchange.replaced:
                return  # the rest of a response replaced by an error response
            if message["type"] == "http.response.start":
                try:
                    await store_in_message(scope.get("session"), message, connection)
                except SessionError as exc:
                    status = log_failure(exc, "saving")
                    if isinstance(exchange, _Exchange):
                        exchange.replaced = True
                    await error_response(connection_send, status)  # type: ignore[arg-type]
                    return
            await connection_send(message)

        return send

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Litestar's middleware (the session loaded into the scope, its id into the connection's
        state, the save as the response starts), then the save of a change made while the body
        streamed.

        :param scope: the connection's scope.
        :param receive: the ASGI receive callable.
        :param send: the ASGI send callable.
        """
        # What Litestar's SessionMiddleware.__call__ does, in one pass: its connection class
        # unsubscripted (calling the subscripted generic costs as much again per request).
        connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope, receive=receive, send=send)
        backend = self.backend
        scope["session"] = await backend.load_from_connection(connection)
        connection._connection_state.session_id = backend.get_session_id(connection)
        await self.app(scope, receive, self.create_send_wrapper(connection))
        if scope["type"] == ScopeType.HTTP:
            await backend.save_late(scope)


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
