"""Server-side sessions for ASGI apps (Starlette, FastAPI, Litestar), on psycopg 3 async.

Shares the table, cookie format and codec with the WSGI side, so one login can span a Flask app
and a FastAPI app. Reading a cookie lazily would block the event loop, so with ``autoload=True``
a validly signed cookie is loaded (one statement) before the app runs; with ``autoload=False``
the app calls ``await load_session(request)`` where it needs the session. A drop-in for
Starlette's ``SessionMiddleware`` (see :data:`STARLETTE_OPTIONS`) and for starsessions' helpers.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from ._adapters import asgi_connection as _asgi_connection
from ._adapters import asgi_options as _asgi_options
from ._adapters.asgi_connection import (
    SessionExcluded,
    SessionNotLoaded,
    _connection_of,
    _excluded,
    _http,
    _websocket,
)
from ._adapters.asgi_options import _UNSET, _default
from ._adapters.asgi_plumbing import ASGIApp, Message, Receive, Scope, Send, cookie_header
from ._adapters.websocket import CLOSE_UNAVAILABLE, WebsocketOrigins, save_without_cookie
from .cookies import IdSigner
from .core import Operation, Policy, SessionCore, run_async
from .defaults import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_SIZE,
    DEFAULT_PERMANENT,
    DEFAULT_TOUCH_INTERVAL,
    DEFAULT_USER_KEY,
)
from .errors import ConfigurationError, StoreUnavailable
from .options import SessionOptions
from .session import Session

if TYPE_CHECKING:
    import starlette.datastructures

    from .async_store import AsyncPostgresStore

__all__ = [
    "SCOPE_KEY",
    "STARLETTE_OPTIONS",
    "WEBSOCKET_UNAVAILABLE",
    "AsyncPostgresStore",
    "AsyncStore",
    "SessionExcluded",
    "SessionMiddleware",
    "SessionNotLoaded",
    "get_session_id",
    "get_session_remaining_seconds",
    "is_loaded",
    "load_session",
    "regenerate_session_id",
    "save_session",
]

log = logging.getLogger("pgsession_wsgi")

#: Where the middleware keeps its per-connection state in the scope; the session itself is
#: ``scope["session"]``.
SCOPE_KEY = _asgi_connection.SCOPE_KEY

#: The close code (1013, "Try Again Later") of a websocket handshake refused because the store
#: cannot be reached (1011 for any other session error).
WEBSOCKET_UNAVAILABLE = CLOSE_UNAVAILABLE

#: Starlette's ``SessionMiddleware`` arguments, also taken by their names, and the option of ours
#: each sets. ``max_age`` also sets ``permanent``: seconds make a cookie with that ``Max-Age``
#: (``permanent=True``), None a browser-session cookie. ``same_site="lax"`` is our ``"Lax"``.
#: Passing both a Starlette name and the option it sets is a
#: :class:`~pgsession_wsgi.ConfigurationError`.
STARLETTE_OPTIONS: Mapping[str, str] = _asgi_options.STARLETTE_OPTIONS


class AsyncStore(Protocol):
    """What the middleware needs of a store: :class:`AsyncPostgresStore` is one."""

    async def open(self) -> None:
        """Open the pool (and create the table); called at lifespan startup."""

    async def close(self) -> None:
        """Close the pool; called at lifespan shutdown."""

    async def execute(self, operation: Operation) -> Any:
        """Run one statement the core asks for (a :class:`~pgsession_wsgi.core.Load`, ``Write``...)."""


def __getattr__(name: str) -> Any:
    # The store needs psycopg 3 (the [asgi] extra); import it only when it is asked for.
    if name == "AsyncPostgresStore":
        from .async_store import AsyncPostgresStore

        return AsyncPostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SessionMiddleware:
    """Give every HTTP and websocket connection of ``app`` a server-side session.

    The session is ``scope["session"]`` (``request.session``), saved at ``http.response.start``:
    an unreachable store is a 503, a value that cannot be stored a 500, each with one log line. A
    websocket's session is loaded at connect (closed with :data:`WEBSOCKET_UNAVAILABLE` if the
    store is down) and saved only by ``await save_session(ws)``. A websocket handshake from a page
    on another origin than the app's or ``websocket_origins`` is refused (a 403, or close code 1008).

    The store opens at lifespan startup, after the app's own handlers (a store unreachable then is
    retried by the first request), and closes after its shutdown handlers.

    The other keyword options (``cookie_name``, ``idle_timeout``, ``absolute_timeout``,
    ``touch_interval``, ``permanent``, ``refresh_each_request``, ``cookie_path``,
    ``cookie_domain``, ``cookie_secure``, ``cookie_httponly``, ``cookie_samesite``,
    ``cookie_partitioned``, ``fallback_secret_keys``, ``user_key``, ``regenerate_on_user_change``,
    ``max_size``, ``signer``) are :class:`~pgsession_wsgi.SessionOptions`' fields, documented there
    once for every front end, with the same defaults; or Starlette's names for them
    (``session_cookie``, ``max_age``, ``path``, ``same_site``, ``https_only``, ``domain``,
    ``partitioned``: see :data:`STARLETTE_OPTIONS`).

    :param app: the ASGI application to wrap.
    :param store: an async store; a sync ``PostgresStore`` would block the event loop: refused.
    :param secret_key: signs the cookie (Starlette's ``Secret`` too); the same key as a WSGI or
        Flask app's to share its sessions.
    :param autoload: load a validly signed session before the app runs; False leaves it to
        :func:`load_session`.
    :param websocket_origins: origins besides the app's own whose pages may open a websocket,
        each ``scheme://host[:port]``.
    :param exclude_paths: path prefixes (or one) whose connections get no session: nothing is
        loaded, saved or sent even with a cookie, and using it raises :class:`SessionExcluded`.
        Matched by segment: ``"/static"`` covers ``/static/app.css``, not ``/statics``.
    :raises ConfigurationError: ``store`` is not async, ``secret_key`` is missing, an option
        is invalid or contradicts another, or a Starlette name and the option it sets were both
        passed.
    """

    def __init__(
        self,
        app: ASGIApp,
        store: AsyncStore,
        secret_key: str | bytes | starlette.datastructures.Secret | None = None,
        *,
        autoload: bool = True,
        cookie_name: str = _default("session"),
        idle_timeout: timedelta | float = _default(DEFAULT_IDLE_TIMEOUT),  # noqa: B008 (immutable)
        absolute_timeout: timedelta | float | None = None,
        touch_interval: timedelta | float = DEFAULT_TOUCH_INTERVAL,
        permanent: bool = _default(DEFAULT_PERMANENT),
        refresh_each_request: bool = True,
        cookie_path: str = _default("/"),
        cookie_domain: str | None = _default(None),
        cookie_secure: bool | None = _default(None),
        cookie_httponly: bool = True,
        cookie_samesite: str | None = _default("Lax"),
        fallback_secret_keys: Iterable[str | bytes] = (),
        user_key: str | None = DEFAULT_USER_KEY,
        regenerate_on_user_change: bool = True,
        max_size: int | None = DEFAULT_MAX_SIZE,
        signer: IdSigner | None = None,
        websocket_origins: Iterable[str] = (),
        cookie_partitioned: bool = _default(False),
        exclude_paths: str | Iterable[str] = (),
        session_cookie: str = _UNSET,
        max_age: timedelta | float | None = _UNSET,
        path: str = _UNSET,
        same_site: str = _UNSET,
        https_only: bool = _UNSET,
        domain: str | None = _UNSET,
        partitioned: bool = _UNSET,
    ) -> None:
        if isinstance(store, (str, bytes)) or _asgi_options._is_starlette_secret(store):
            raise ConfigurationError(
                "SessionMiddleware(app, store, secret_key=...): the second argument is the store, "
                "not the secret key as in Starlette's: pass store=AsyncPostgresStore(dsn), "
                "secret_key=..."
            )
        if not inspect.iscoroutinefunction(getattr(store, "execute", None)):
            raise ConfigurationError(
                "the ASGI SessionMiddleware needs an async store (a sync one would block the event "
                f"loop), not {type(store).__name__}: pass pgsession_wsgi.asgi.AsyncPostgresStore(dsn)"
            )
        #: The wrapped application.
        self.app = app
        #: Where sessions live; also the handle for ``revoke_user``, ``stats`` and the like.
        self.store = store
        #: Load a validly signed session before the app runs.
        self.autoload = autoload
        #: Which pages may open a websocket that gets the session.
        self.websocket_origins = WebsocketOrigins(websocket_origins, "websocket_origins")
        #: The path prefixes whose connections get no session (``exclude_paths``, checked).
        self.exclude_paths = _asgi_options._path_prefixes(exclude_paths)
        options, renamed = _asgi_options._resolve_options(locals())
        if _asgi_options._is_starlette_secret(secret_key):
            secret_key = str(secret_key)
        try:
            #: The request algorithm, with the options as checked.
            self.core = SessionCore.from_options(SessionOptions.among({**locals(), **options}))
        except ConfigurationError as exc:
            if not renamed:
                raise
            raise ConfigurationError(_asgi_options._in_names_given(str(exc), renamed)) from None

    @property
    def policy(self) -> Policy:
        """Lifetimes, size limit and user key, as checked at construction."""
        return self.core.policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a session in ``scope["session"]``; saved before the headers go out."""
        kind = scope["type"]
        if (
            kind in ("http", "websocket")
            and self.exclude_paths
            # One C call for the paths no prefix can match; _excluded decides for the others.
            and str(scope.get("path", "")).startswith(self.exclude_paths)
            and _excluded(self.exclude_paths, scope)
        ):
            await self.app(scope, receive, send)
        elif kind == "http":
            await _http(self, scope, receive, send)
        elif kind == "websocket":
            await _websocket(self, scope, receive, send)
        elif kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
        else:
            await self.app(scope, receive, send)

    def open_session(self, scope: Scope) -> Session:
        """A session for this ``http`` or ``websocket`` scope, not loaded yet (see :meth:`load`)."""
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        return self.core.open(cookie_header(scope), scheme, self._not_loaded)

    def _not_loaded(self, session: Session) -> None:
        if self.core.wants_load(session.state):
            raise SessionNotLoaded(
                "this session has a cookie but was not loaded: call `await load_session(request)` "
                "before reading it, or create the middleware with autoload=True"
            )

    async def load(self, session: Session) -> None:
        """Load ``session`` (from :meth:`open_session`) if it has a valid cookie and is not loaded yet.

        :raises StoreUnavailable: the database cannot be reached in time.
        :raises SessionDataError: the stored row cannot be decoded.
        """
        if not session.loaded and self.core.wants_load(session.state):
            await self.core.load_async(session, self.store.execute)

    async def commit(self, session: Session) -> list[tuple[str, str]]:
        """Save ``session``; return the headers the response needs (``Vary``, ``Set-Cookie``).

        :raises StoreUnavailable: the database cannot be reached in time.
        :raises SessionError: a value cannot be stored, or the session is over ``max_size``.
        """
        return await run_async(self.core.save(session), self.store.execute)

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                # After the app's own startup, so a pool it lends the store (from_pool) is open.
                # A table that is not ours raises here, failing the startup.
                try:
                    await self.store.open()
                except StoreUnavailable as exc:
                    # Not fatal: the store opens at the first request instead (503s until then).
                    log.warning("session store not reachable at startup, will retry on use: %s", exc)
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.store.close()
            await send(message)

        return lifespan_send


async def load_session(connection: Any) -> Session:
    """Load the connection's session now (with ``autoload=False``); returns it.

    One statement for a validly signed cookie, none otherwise. If the store cannot be reached the
    response is a 503, whatever the framework makes of the exception.

    :param connection: a Starlette/FastAPI/Litestar request or websocket, or an ASGI scope.
    :raises StoreUnavailable: the database cannot be reached.
    :raises OutsideRequestError: no :class:`SessionMiddleware` handles this connection.
    """
    state, session = _connection_of(connection)
    try:
        await state.middleware.load(session)
    except StoreUnavailable as exc:
        state.unavailable = exc
        raise
    return session


async def save_session(connection: Any) -> None:
    """Save the session now: from a websocket handler, the only way its changes are stored.

    A websocket cannot set a cookie, so a change that needs one (a new session, ``regenerate()``,
    ``invalidate()``, a login under ``user_key``) is refused: make it in an HTTP request. A session
    that ended while the websocket was open is not started again under an id the browser could
    never be sent. From an HTTP handler this saves early (the response still gets its cookie).

    :param connection: a websocket (or request) object, or an ASGI scope.
    :raises SessionError: the change needs a new cookie, the session had ended, or it could not
        be stored.
    :raises StoreUnavailable: the database cannot be reached.
    """
    state, session = _connection_of(connection)
    if not session.accessed:
        return
    if not (state.websocket or state.started):
        state.pending = [*state.pending, *await state.middleware.commit(session)]
        return
    await save_without_cookie(state.middleware.core, session, state.middleware.store.execute)


# starsessions' helpers, by its names and with its meanings (the differences: docs/asgi.md).
def is_loaded(connection: Any) -> bool:
    """Whether the connection's session can be read now without :func:`load_session`.

    True once loaded, and without a validly signed cookie (nothing to load); False for a stored
    session not loaded yet (``autoload=False``).

    :param connection: a Starlette/FastAPI/Litestar request or websocket, or an ASGI scope.
    :raises OutsideRequestError: no :class:`SessionMiddleware` handles this connection.
    """
    state, session = _connection_of(connection)
    return session.loaded or not state.middleware.core.wants_load(session.state)


def get_session_id(connection: Any) -> str | None:
    """The id of the connection's stored session; None for a session not stored yet.

    The id the cookie carries (without its signature): as good as the cookie, so never log it.
    After :func:`regenerate_session_id` it is the new id once the session is saved.

    :param connection: a Starlette/FastAPI/Litestar request or websocket, or an ASGI scope.
    :raises SessionNotLoaded: a stored session not loaded yet (``autoload=False``).
    :raises OutsideRequestError: no :class:`SessionMiddleware` handles this connection.
    """
    return _connection_of(connection)[1].id


def regenerate_session_id(connection: Any) -> None:
    """Move the session to a new id, keeping its data; the old id stops working.

    ``request.session.regenerate()``: call it at login and on privilege changes. The new id is
    drawn by the save, so :func:`get_session_id` gives it only after the save.

    :param connection: a Starlette/FastAPI/Litestar request, or an ASGI scope.
    :raises OutsideRequestError: no :class:`SessionMiddleware` handles this connection.
    """
    _connection_of(connection)[1].regenerate()


def get_session_remaining_seconds(connection: Any) -> int:
    """The seconds the session has left if it is not used again after this request.

    The session's own lifetime (``set_expiry()``), else ``idle_timeout``, capped by
    ``absolute_timeout``: an upper bound, as the database ends the session by its own clock.

    :param connection: a Starlette/FastAPI/Litestar request or websocket, or an ASGI scope.
    :raises SessionNotLoaded: a stored session not loaded yet (``autoload=False``).
    :raises OutsideRequestError: no :class:`SessionMiddleware` handles this connection.
    """
    state, session = _connection_of(connection)
    core = state.middleware.core
    seconds = core.max_age(session.expiry)
    absolute = core.policy.absolute_timeout
    return seconds if absolute is None else min(seconds, int(absolute.total_seconds()))
