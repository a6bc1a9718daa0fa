"""What Litestar runs per connection for ``pgsession_wsgi.litestar``: the session backend
(the load before the handler, the save as the response starts and after a streamed body, the
operations by session id), the middleware around it, the exchange it keeps in the scope between
load and save, and the two exceptions it raises.

Apart from the config (``pgsession_wsgi._adapters.litestar_config``), which is checked once at
start-up, and from the public module, which assembles both for an app (the plugin) and re-exports
every name. The middleware's ``__call__`` and send wrapper are the per-request path.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, MutableMapping
from typing import Any, Protocol, cast

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import ServiceUnavailableException, WebSocketException
from litestar.middleware.session.base import SessionMiddleware
from litestar.middleware.session.server_side import ServerSideSessionBackend
from litestar.types import ASGIApp, Message, Receive, Scope, ScopeSession, Send

from ..async_store import AsyncPostgresStore
from ..core import SessionCore, advance, resume_async, run_async
from ..errors import OutsideRequestError, SessionError, StoreUnavailable
from ..session import Session
from .asgi_plumbing import (
    as_mapping,
    cookie_header,
    error_response,
    log_failure,
    origin_allowed,
    session_headers,
    take_over,
    with_session_headers_sent,
)
from .websocket import (
    CLOSE_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_UNAVAILABLE,
    REFUSED_REASON,
    WebsocketOrigins,
    save_without_cookie,
)


class BackendConfig(Protocol):
    """What the backend reads of its config, a :class:`~pgsession_wsgi.litestar.PgSessionConfig`
    (named by this protocol: the config module imports the backend, not the other way round)."""

    core: SessionCore
    store: AsyncPostgresStore
    origins: WebsocketOrigins

log = logging.getLogger("pgsession_wsgi")

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


def _cookies_of(connection: ASGIConnection[Any, Any, Any, Any], core: SessionCore) -> str:
    """The request's ``Cookie`` header; without one, our cookie from the cookies Litestar keeps in
    the connection's state (where its ``TestClient.get_session_data()`` puts the client's)."""
    header = cookie_header(connection.scope)  # type: ignore[arg-type]
    if header:
        return header
    value = connection.cookies.get(core.cookie.name)
    return f"{core.cookie.name}={value}" if value else ""


class _Exchange:
    """One connection's session between the backend's load and its save, kept in the scope."""

    __slots__ = ("config", "session", "saved", "replaced")

    def __init__(self, config: BackendConfig, session: Session) -> None:
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


class PgSessionBackend(ServerSideSessionBackend):
    """Litestar's session backend contract on a pgsession-wsgi store, and the operations of
    Litestar's server-side backends by session id (:meth:`get`, :meth:`set`, :meth:`delete`,
    :meth:`delete_all`, :meth:`delete_expired`).

    A Litestar ``ServerSideSessionBackend``, so that Litestar's ``litestar sessions delete`` and
    ``litestar sessions clear`` commands work on it. A session id is the one
    ``request.get_session_id()`` answers: the id the cookie carries, whose SHA-256 is the row's
    key. An app gets a backend from :attr:`PgSessionConfig.backend`.
    """

    __slots__ = ()
    config: BackendConfig  # type: ignore[assignment]  # a PgSessionConfig, not Litestar's config

    def __init__(self, config: BackendConfig) -> None:
        """:param config: a :class:`~pgsession_wsgi.litestar.PgSessionConfig`."""
        super().__init__(config)  # type: ignore[arg-type]

    # -- Litestar's contract -----------------------------------------------------------------

    async def load_from_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
        """The connection's session, loaded: one statement for a validly signed cookie, none
        otherwise (a bad or missing cookie is a new, empty session). Without a ``Cookie`` header
        the cookie is looked for where Litestar's test client puts it (``connection.cookies``).

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
        session = config.core.open(_cookies_of(connection, config.core), scheme, _no_loader)
        try:
            if config.core.wants_load(session.state):
                await config.core.load_async(session, config.store.execute)
            else:  # no valid cookie: a new session, nothing to await
                session.preload(None)
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

    def get_session_id(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:  # type: ignore[override]
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

        A session the request never used costs nothing and adds no header. Called outside the
        middleware (``TestClient.set_session_data()``), it first loads the session the
        connection's cookie names, then stores ``scope_session`` as its data.

        :param scope_session: the session in the scope: ours, what ``set_session()`` put there,
            or ``Empty`` after ``clear_session()``.
        :param message: the ``http.response.start`` message.
        :param connection: the request.
        :raises StoreUnavailable: the database cannot be reached in time.
        :raises SessionError: a value cannot be stored, or the session is over ``max_size``.
        """
        scope = connection.scope
        if not isinstance(scope.get(_SCOPE_KEY), _Exchange):
            # Called outside the middleware (Litestar's TestClient.set_session_data does): the
            # session the connection's cookie names is loaded first, and saved with this data.
            await self.load_from_connection(connection)
        headers = self._save_started(scope_session, scope)
        if not isinstance(headers, list):
            headers = await headers
        if headers:  # into the message's own header list, as Litestar's backends write theirs
            start = cast("MutableMapping[str, Any]", message)
            merged = session_headers(start, headers)
            if isinstance(start.get("headers"), list):
                start["headers"][:] = merged
            else:
                start["headers"] = merged

    def _save_started(
        self, scope_session: ScopeSession, scope: Scope
    ) -> list[tuple[str, str]] | Awaitable[list[tuple[str, str]]]:
        """The save of the connection's session up to its first statement, without awaiting: the
        headers the response needs when the save needed no statement (a session never used, or
        read and not changed), else what finishes the save and answers them."""
        exchange = _exchange_of(scope)
        session = exchange.adopt(scope_session, scope)
        exchange.saved = True
        steps = self.config.core.save(session)
        operation, headers = advance(steps)
        if operation is None:
            return cast("list[tuple[str, str]]", headers)
        return resume_async(steps, operation, self.config.store.execute)

    async def save_late(self, scope: Scope) -> None:
        """After the response: save a change a streamed body made once the headers were out,
        if it needs no new cookie (else it is logged and dropped, as on every front end).

        :param scope: the request's scope.
        """
        session = self._late_session(scope)
        if session is not None:
            await self._save_late(session)

    def _late_session(self, scope: Scope) -> Session | None:
        """The session :meth:`save_late` has to save; None (every request's common case) when
        there is nothing to do, so the middleware awaits nothing then."""
        exchange = scope.get(_SCOPE_KEY)
        if not isinstance(exchange, _Exchange) or not exchange.saved or exchange.replaced:
            return None
        session = exchange.adopt(scope.get("session"), scope)
        return session if self.config.core.needs_late_save(session) else None

    async def _save_late(self, session: Session) -> None:
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
        await self.config.core.load_async(session, self.config.store.execute)
        return session

    async def get(self, session_id: str, store: Any = None) -> dict[str, Any] | None:  # type: ignore[override]
        """The data of the live session ``session_id`` (values as the app stored them), or None.

        :param session_id: an id as ``request.get_session_id()`` gives it.
        :param store: unused (Litestar's server-side backends take the app's store here; this
            one has the config's).
        :raises StoreUnavailable: the database cannot be reached in time.
        """
        session = await self._loaded(session_id)
        return dict(session) if session.id is not None else None

    async def set(self, session_id: str, data: Any, store: Any = None) -> str | None:  # type: ignore[override]
        """Replace the data of session ``session_id`` with ``data``; returns the id it lives under.

        That is ``session_id`` while its session is live. Ids are never chosen by the caller: for
        an id with no live session (ended, expired, never issued) the data is stored under a new
        id, returned. Empty data ends the session (None is returned).

        :param session_id: an id as ``request.get_session_id()`` gives it.
        :param data: a mapping, a dataclass, a pydantic model or a msgspec ``Struct`` of storable
            values.
        :param store: unused, as for :meth:`get`.
        :raises SessionError: a value cannot be stored, or the session is over ``max_size``.
        :raises StoreUnavailable: the database cannot be reached in time.
        """
        session = await self._loaded(session_id)
        values = as_mapping(data)
        session.clear()
        session.update(values)
        await run_async(self.config.core.save(session), self.config.store.execute)
        return session.id

    async def delete(self, session_id: str, store: Any = None) -> None:
        """End session ``session_id`` (its row is deleted); nothing happens for an unknown id.
        ``litestar sessions delete SESSION_ID`` calls it.

        :param session_id: an id as ``request.get_session_id()`` gives it.
        :param store: unused, as for :meth:`get`.
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
        backend = self.backend

        async def send(message: Message) -> None:
            exchange = scope.get(_SCOPE_KEY)
            if isinstance(exchange, _Exchange) and exchange.replaced:
                return  # the rest of a response replaced by an error response
            if message["type"] == "http.response.start":
                try:
                    # The save, awaited only when it has a statement to run.
                    headers = backend._save_started(scope.get("session"), scope)
                    if not isinstance(headers, list):
                        headers = await headers
                except SessionError as exc:
                    status = log_failure(exc, "saving")
                    if isinstance(exchange, _Exchange):
                        exchange.replaced = True
                    await error_response(connection_send, status)  # type: ignore[arg-type]
                    return
                # A new message: the app's own, which a response cache may hold, keeps no cookie.
                message = with_session_headers_sent(message, headers)  # type: ignore[arg-type,assignment]
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
            late = backend._late_session(scope)  # save_late, awaited only with something to save
            if late is not None:
                await backend._save_late(late)
