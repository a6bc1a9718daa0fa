"""Server-side sessions for ASGI apps (Starlette, FastAPI, Litestar), on psycopg 3 async.

The ASGI adapter of :mod:`pgsession_wsgi.core`, sharing the table, the cookie format and the
codec with the WSGI side, so one login can span a Flask app and a FastAPI app::

    from pgsession_wsgi.asgi import AsyncPostgresStore, SessionMiddleware

    store = AsyncPostgresStore("postgresql://app@db/app")
    app.add_middleware(SessionMiddleware, store=store, secret_key=os.environ["SECRET_KEY"])

    @app.get("/")
    async def home(request: Request) -> dict:
        request.session["visits"] = request.session.get("visits", 0) + 1
        return {"visits": request.session["visits"]}

A cookie cannot be read lazily without blocking the event loop, so with ``autoload=True`` a
request carrying a validly signed cookie is loaded (one statement) before the app runs; a request
with no cookie or a bad signature costs nothing. With ``autoload=False`` the app calls
``await load_session(request)`` where it needs the session, and may write without loading (a
blind write, one statement).

It is a drop-in for Starlette's ``SessionMiddleware`` (its arguments by their names, mapped in
:data:`STARLETTE_OPTIONS`) and for starsessions' helpers (:func:`load_session`,
:func:`regenerate_session_id`, :func:`get_session_id`, :func:`get_session_remaining_seconds`,
:func:`is_loaded`); routes that never use the session are left out with ``exclude_paths``.
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
    _adopt,
    _connection_of,
    _excluded,
    _http,
    _websocket,
)
from ._adapters.asgi_options import (
    _UNSET,
    _default,
    _in_names_given,
    _is_starlette_secret,
    _path_prefixes,
    _resolve_options,
)
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

#: Where the middleware keeps its per-connection state in the scope (for :func:`load_session`
#: and :func:`save_session`); the session itself is ``scope["session"]``.
SCOPE_KEY = _asgi_connection.SCOPE_KEY

#: The close code of a websocket handshake refused because the session could not be loaded:
#: 1013, "Try Again Later" (the store is unreachable; 1011 for any other session error).
WEBSOCKET_UNAVAILABLE = CLOSE_UNAVAILABLE

#: Starlette's ``SessionMiddleware`` arguments, which this middleware takes by their names too,
#: and the option of ours each sets (``secret_key`` has the same name and meaning in both, and may
#: be Starlette's ``Secret``). ``max_age`` also sets ``permanent``: seconds make a cookie with that
#: ``Max-Age`` (``permanent=True``) and are the idle timeout on the server; None makes a
#: browser-session cookie (``permanent=False``) and leaves ``idle_timeout`` to ours. ``same_site``
#: is spelled ``"lax"``, ours ``"Lax"``. Passing a Starlette name and the option of ours it sets
#: is a :class:`~pgsession_wsgi.ConfigurationError` naming both.
STARLETTE_OPTIONS: Mapping[str, str] = _asgi_options.STARLETTE_OPTIONS


class AsyncStore(Protocol):
    """What the middleware needs of a store: :class:`AsyncPostgresStore` is one."""

    async def open(self) -> None:
        """Open the pool (and create the table); called at lifespan startup."""

    async def close(self) -> None:
        """Close the pool; called at lifespan shutdown."""

    async def execute(self, operation: Operation) -> Any:
        """Run one statement the core asks for.

        :param operation: a :class:`~pgsession_wsgi.core.Load`, ``Insert``, ``Write``, ``Touch``
            or ``Delete``.
        """


def __getattr__(name: str) -> Any:
    # The store needs psycopg 3 (the [asgi] extra); import it only when it is asked for.
    if name == "AsyncPostgresStore":
        from .async_store import AsyncPostgresStore

        return AsyncPostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SessionMiddleware:
    """Give every HTTP and websocket connection of ``app`` a server-side session.

    The session is ``scope["session"]``, so ``request.session`` works unchanged in Starlette,
    FastAPI and Litestar. It is saved when ``http.response.start`` is sent, before the headers go
    out: a store that cannot be reached is a 503 and one log line, a value that cannot be stored a
    500 and one log line naming its key. Litestar's ``request.set_session(data)`` replaces the
    session's data and ``request.clear_session()`` ends it (row deleted, cookie expired).

    A websocket's session is loaded at connect; if the store cannot be reached the handshake is
    closed with code :data:`WEBSOCKET_UNAVAILABLE` (1013, "Try Again Later"). A websocket cannot
    set cookies, so its session is saved only when the handler calls ``await save_session(ws)``.

    A browser sends the session cookie with a websocket handshake whatever page opens it, so a
    handshake's ``Origin`` is checked (against cross-site websocket hijacking): one without
    ``Origin`` (not a browser), or from the app's own origin (the request's scheme, ``ws`` as
    ``http`` and ``wss`` as ``https``, and its ``Host`` header), or from an origin listed in
    ``websocket_origins`` goes on; any other is refused before the session is loaded, with a
    403 where the server can answer a handshake with an HTTP response, else closed with code
    1008 ("Policy Violation"), and one warning line. Behind a proxy, the app must see the
    browser's scheme and ``Host`` (uvicorn's ``--proxy-headers``), or list the public origin.

    The store's pool opens at lifespan startup, once the app's own startup handlers have run (so
    a pool of the app's, lent with ``AsyncPostgresStore.from_pool``, is open by then), or at first
    use, and closes at lifespan shutdown, after the app's own shutdown handlers. A store that
    cannot be reached at startup is logged and retried by the first request; a table that is not
    a pgsession-wsgi table fails startup.

    Starlette's ``SessionMiddleware`` arguments are taken by their names too (``session_cookie``,
    ``max_age``, ``path``, ``same_site``, ``https_only``, ``domain``, ``partitioned``), each
    setting the option of ours :data:`STARLETTE_OPTIONS` maps it to, so that moving from
    Starlette's sessions is changing the import and adding ``store=``. A route that never uses the
    session is left out with ``exclude_paths``: no statement, no header, even with a cookie.

    :param app: the ASGI application to wrap.
    :param store: an async store (:class:`AsyncPostgresStore`); a sync ``PostgresStore`` would
        block the event loop and is refused.
    :param secret_key: signs the cookie; the same key as a WSGI or Flask app's to share its
        sessions (with the same table: the other defaults agree). Starlette's ``Secret`` too.
    :param autoload: load a validly signed session before the app runs (one statement); False
        leaves it to :func:`load_session`.

    The keyword options of the WSGI middleware (``cookie_name``, ``idle_timeout``,
    ``absolute_timeout``, ``touch_interval``, ``permanent``, ``refresh_each_request``,
    ``cookie_path``, ``cookie_domain``, ``cookie_secure``, ``cookie_httponly``,
    ``cookie_samesite``, ``cookie_partitioned``, ``fallback_secret_keys``, ``user_key``,
    ``regenerate_on_user_change``, ``max_size``, ``signer``) are
    :class:`~pgsession_wsgi.SessionOptions`' fields, documented there once for every front
    end, with the same defaults. The others are this middleware's own:

    :param websocket_origins: origins whose pages may open a websocket besides the app's own,
        each ``scheme://host[:port]`` (e.g. ``["https://app.example.com"]``).
    :param exclude_paths: path prefixes whose requests and websockets get no session: nothing
        is loaded, saved or sent (no statement, no ``Set-Cookie``, no ``Vary``) even with a valid
        cookie, and using the session there raises :class:`SessionExcluded`.
        Matched against ``scope["path"]`` segment by segment: ``"/static"`` leaves out
        ``/static`` and ``/static/app.css``, not ``/statics``. One prefix may be given alone.
    :param session_cookie: Starlette's name for ``cookie_name``.
    :param max_age: Starlette's: seconds make a permanent cookie with that ``Max-Age`` and are
        the server's ``idle_timeout`` (a session unused that long is gone); None makes a
        browser-session cookie (``permanent=False``) and keeps ``idle_timeout``.
    :param path: Starlette's name for ``cookie_path``.
    :param same_site: Starlette's name for ``cookie_samesite``: ``"lax"``, ``"strict"`` or
        ``"none"`` (which needs Secure).
    :param https_only: Starlette's name for ``cookie_secure``: True sends ``Secure`` always,
        False never (not given: when the request came over https).
    :param domain: Starlette's name for ``cookie_domain``.
    :param partitioned: Starlette's name for ``cookie_partitioned``.
    :raises ConfigurationError: ``store`` is not async, ``secret_key`` is missing, an option
        is invalid or contradicts another, or a Starlette name and the option of ours it sets
        were both passed.
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
        if isinstance(store, (str, bytes)) or _is_starlette_secret(store):
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
        self.exclude_paths = _path_prefixes(exclude_paths)
        options, renamed = _resolve_options(
            {
                "cookie_name": cookie_name,
                "idle_timeout": idle_timeout,
                "permanent": permanent,
                "cookie_path": cookie_path,
                "cookie_domain": cookie_domain,
                "cookie_secure": cookie_secure,
                "cookie_samesite": cookie_samesite,
                "cookie_partitioned": cookie_partitioned,
            },
            {
                "session_cookie": session_cookie,
                "max_age": max_age,
                "path": path,
                "same_site": same_site,
                "https_only": https_only,
                "domain": domain,
                "partitioned": partitioned,
            },
        )
        if _is_starlette_secret(secret_key):
            secret_key = str(secret_key)
        try:
            #: The request algorithm, with the options as checked.
            self.core = SessionCore.from_options(SessionOptions.among({**locals(), **options}))
        except ConfigurationError as exc:
            if not renamed:
                raise
            raise ConfigurationError(_in_names_given(str(exc), renamed)) from None

    @property
    def policy(self) -> Policy:
        """Lifetimes, size limit and user key, as checked at construction."""
        return self.core.policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a session in ``scope["session"]``; saved before the headers go out.

        :param scope: the connection's scope (``http``, ``websocket`` or ``lifespan``).
        :param receive: the server's receive callable.
        :param send: the server's send callable.
        """
        kind = scope["type"]
        if (
            kind in ("http", "websocket")
            and self.exclude_paths
            # One C call for the paths no prefix can match; _excluded decides for the others.
            and str(scope.get("path", "")).startswith(self.exclude_paths)
            and _excluded(self.exclude_paths, scope)
        ):
            await self.app(scope, receive, send)  # no session: nothing read, loaded or sent
        elif kind == "http":
            await _http(self, scope, receive, send)
        elif kind == "websocket":
            await _websocket(self, scope, receive, send)
        elif kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
        else:
            await self.app(scope, receive, send)

    # -- per connection --------------------------------------------------------------------

    def open_session(self, scope: Scope) -> Session:
        """A session for this connection, not loaded yet (see :meth:`load`).

        :param scope: an ``http`` or ``websocket`` scope; its ``Cookie`` header and scheme are read.
        """
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        return self.core.open(cookie_header(scope), scheme, self._not_loaded)

    def _not_loaded(self, session: Session) -> None:
        if self.core.wants_load(session.state):
            raise SessionNotLoaded(
                "this session has a cookie but was not loaded: call `await load_session(request)` "
                "before reading it, or create the middleware with autoload=True"
            )
        return None  # no (valid) cookie: a new session, nothing to load

    async def load(self, session: Session) -> None:
        """Load ``session`` now if it has a valid cookie and is not loaded yet.

        :param session: a session from :meth:`open_session`.
        :raises StoreUnavailable: the database cannot be reached in time.
        :raises SessionDataError: the stored row cannot be decoded.
        """
        if not session.loaded and self.core.wants_load(session.state):
            await self.core.load_async(session, self.store.execute)

    async def commit(self, session: Session) -> list[tuple[str, str]]:
        """Save ``session``; return the headers the response needs (``Vary``, ``Set-Cookie``).

        :param session: a session from :meth:`open_session`.
        :raises StoreUnavailable: the database cannot be reached in time.
        :raises SessionError: a value cannot be stored, or the session is over ``max_size``.
        """
        return await run_async(self.core.save(session), self.store.execute)

    # -- lifespan --------------------------------------------------------------------------

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                # Once the app's own startup is done: a pool it lends the store (from_pool) is
                # open by then. A table that is not ours raises here, failing the startup.
                try:
                    await self.store.open()
                except StoreUnavailable as exc:
                    # Not fatal: the store opens at the first request instead (503s until then).
                    log.warning("session store not reachable at startup, will retry on use: %s", exc)
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.store.close()  # after the app's own shutdown handlers
            await send(message)

        return lifespan_send


# -- for apps ---------------------------------------------------------------------------------


async def load_session(connection: Any) -> Session:
    """Load the connection's session now (with ``autoload=False``); returns it.

    Costs one statement for a validly signed cookie, nothing otherwise or when already loaded.
    If the store cannot be reached the response is a 503 whatever the framework makes of the
    exception (Starlette and FastAPI pass it through, Litestar answers a 500 that becomes a 503).

    :param connection: a Starlette/FastAPI/Litestar request or websocket, or an ASGI scope.
    :raises StoreUnavailable: the database cannot be reached.
    :raises OutsideRequestError: no :class:`SessionMiddleware` handles this connection.
    """
    scope, state = _connection_of(connection)
    session = _adopt(scope, state)
    try:
        await state.middleware.load(session)
    except StoreUnavailable as exc:
        state.unavailable = exc
        raise
    return session


async def save_session(connection: Any) -> None:
    """Save the session now: from a websocket handler, the only way its changes are stored.

    A websocket cannot set a cookie, so a change that needs one (a new session, ``regenerate()``,
    ``invalidate()``, a login under ``user_key``) raises :class:`SessionError` and is not saved;
    make it in an HTTP request. A session that ended while the websocket was open (logged out
    or revoked by another request, or expired) is not saved either, nor started again under a
    new id the browser could never be sent: that raises :class:`SessionError` too. From an HTTP
    handler this saves early (the response still gets its cookie); the middleware saves HTTP
    responses by itself anyway.

    :param connection: a websocket (or request) object, or an ASGI scope.
    :raises SessionError: the change needs a new cookie, the session had ended, or it could not
        be stored.
    :raises StoreUnavailable: the database cannot be reached.
    """
    scope, state = _connection_of(connection)
    session = _adopt(scope, state)
    if not session.accessed:
        return
    if not (state.websocket or state.started):
        state.pending = [*state.pending, *await state.middleware.commit(session)]
        return
    await save_without_cookie(state.middleware.core, session, state.middleware.store.execute)


# starsessions' helpers, by its names and with its meanings (the differences: docs/asgi.md).


def is_loaded(connection: Any) -> bool:
    """Whether the connection's session can be read now without :func:`load_session`.

    starsessions' name. True once it is loaded (``autoload=True`` does it before the app runs),
    and for a connection without a validly signed cookie, which has nothing to load; False for
    a stored session not loaded yet (``autoload=False``), which :class:`SessionNotLoaded` guards.

    :param connection: a Starlette/FastAPI/Litestar request or websocket, or an ASGI scope.
    :raises OutsideRequestError: no :class:`SessionMiddleware` handles this connection.
    """
    scope, state = _connection_of(connection)
    session = _adopt(scope, state)
    return session.loaded or not state.middleware.core.wants_load(session.state)


def get_session_id(connection: Any) -> str | None:
    """The id of the connection's stored session; None for a session not stored yet.

    starsessions' name. It is the id the cookie carries (without its signature), whose SHA-256
    keys the row: as good as the cookie, so never log it. After :func:`regenerate_session_id` it
    is the new id once the session is saved (as the response starts).

    :param connection: a Starlette/FastAPI/Litestar request or websocket, or an ASGI scope.
    :raises SessionNotLoaded: a stored session not loaded yet (``autoload=False``).
    :raises OutsideRequestError: no :class:`SessionMiddleware` handles this connection.
    """
    scope, state = _connection_of(connection)
    return _adopt(scope, state).id


def regenerate_session_id(connection: Any) -> None:
    """Move the session to a new id, keeping its data; the old id stops working.

    starsessions' name, and ``request.session.regenerate()``: call it at login and on privilege
    changes. The new id is drawn by the save (one statement, as the response starts), so this
    returns None; :func:`get_session_id` gives the new id after the save.

    :param connection: a Starlette/FastAPI/Litestar request, or an ASGI scope.
    :raises OutsideRequestError: no :class:`SessionMiddleware` handles this connection.
    """
    scope, state = _connection_of(connection)
    _adopt(scope, state).regenerate()


def get_session_remaining_seconds(connection: Any) -> int:
    """The seconds the session has left if it is not used again after this request.

    starsessions' name. The session's own lifetime (``set_expiry()``: an idle timeout of its own,
    or the time to its fixed end), else ``idle_timeout``, never more than ``absolute_timeout``.
    An upper bound: the database ends the session by its own clock, up to ``touch_interval``
    sooner for a session whose expiry this request did not push, and ``absolute_timeout`` after
    its creation (which the load does not read) for one that old.

    :param connection: a Starlette/FastAPI/Litestar request or websocket, or an ASGI scope.
    :raises SessionNotLoaded: a stored session not loaded yet (``autoload=False``).
    :raises OutsideRequestError: no :class:`SessionMiddleware` handles this connection.
    """
    scope, state = _connection_of(connection)
    core = state.middleware.core
    seconds = core.max_age(_adopt(scope, state).expiry)
    absolute = core.policy.absolute_timeout
    return seconds if absolute is None else min(seconds, int(absolute.total_seconds()))
