"""Internal: what Litestar runs per connection for :mod:`pgsession_wsgi.litestar`: the backend,
its middleware, the exchange kept in the scope between load and save, and the two exceptions."""

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

log = logging.getLogger("pgsession_wsgi")

_SCOPE_KEY = "pgsession.litestar"
_UNAVAILABLE_DETAIL = "the session store cannot be reached; please try again shortly"


class BackendConfig(Protocol):
    """What the backend reads of a :class:`~pgsession_wsgi.litestar.PgSessionConfig` (whose module
    imports this one)."""

    core: SessionCore
    store: AsyncPostgresStore
    origins: WebsocketOrigins


class SessionStoreUnavailable(StoreUnavailable, ServiceUnavailableException):
    """The store could not be reached while loading a request's session: a 503.

    Both a :class:`~pgsession_wsgi.StoreUnavailable` and Litestar's
    ``ServiceUnavailableException``, so an app's handler for either (or for the status 503) is
    used; without one Litestar answers 503 with ``Retry-After: 5``.
    """


class SessionWebsocketRefused(SessionError, WebSocketException):
    """A websocket handshake refused before its session was loaded; Litestar closes it with
    :attr:`code`: 1008 for a page on another origin (a 403 under a server), 1013 when the store
    cannot be reached, 1011 for any other session error."""


def _no_loader(session: Session) -> None:
    """Never called: the backend loads every session before Litestar hands it to the app."""


class _Exchange:
    """One connection's session between the backend's load and its save, kept in the scope."""

    __slots__ = ("config", "session", "saved", "replaced")

    def __init__(self, config: BackendConfig, session: Session) -> None:
        self.config = config
        self.session = session
        self.saved = False  # the save at http.response.start ran: a later change is a late one
        self.replaced = False  # a failed save was answered with an error response

    def adopt(self, current: Any, scope: Scope) -> Session:
        """The session to save, after Litestar's ``set_session()`` or ``clear_session()``."""
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
    """Litestar's session backend on a pgsession-wsgi store, with the operations by session id
    of Litestar's server-side backends (so ``litestar sessions delete`` and ``clear`` work).

    A session id is the one ``request.get_session_id()`` answers: the id the cookie carries. An
    app gets a backend from :attr:`PgSessionConfig.backend`.
    """

    __slots__ = ()
    config: BackendConfig  # type: ignore[assignment]  # a PgSessionConfig, not Litestar's config

    def __init__(self, config: BackendConfig) -> None:
        """:param config: a :class:`~pgsession_wsgi.litestar.PgSessionConfig`."""
        super().__init__(config)  # type: ignore[arg-type]

    async def load_from_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
        """The connection's session, loaded: one statement for a validly signed cookie, none otherwise.

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
        cookies = cookie_header(scope)  # type: ignore[arg-type]
        if not cookies:  # our cookie, where Litestar's test client puts it
            value = connection.cookies.get(config.core.cookie.name)
            cookies = f"{config.core.cookie.name}={value}" if value else ""
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        session = config.core.open(cookies, scheme, _no_loader)
        try:
            if config.core.wants_load(session.state):
                await config.core.load_async(session, config.store.execute)
            else:  # no valid cookie: nothing to await
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
        """The id of the connection's stored session; None for a session not stored yet."""
        exchange = connection.scope.get(_SCOPE_KEY)
        return exchange.session.id if isinstance(exchange, _Exchange) else None

    async def store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> None:
        """Save the session as the response starts, adding its headers to ``message``.

        :param scope_session: ours, what ``set_session()`` put there, or ``Empty`` after
            ``clear_session()``.
        :raises StoreUnavailable: the database cannot be reached in time.
        :raises SessionError: a value cannot be stored, or the session is over ``max_size``.
        """
        scope = connection.scope
        if not isinstance(scope.get(_SCOPE_KEY), _Exchange):
            # Called outside the middleware (Litestar's TestClient.set_session_data does).
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
        """The save's headers if it needs no statement, else an awaitable of them (to await less)."""
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
        if it needs no new cookie (else it is logged and dropped)."""
        session = self._late_session(scope)
        if session is not None:
            await self._save_late(session)

    def _late_session(self, scope: Scope) -> Session | None:
        """The session :meth:`save_late` has to save; None (the common case) lets it await nothing."""
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

    def _session_for(self, session_id: str) -> Session:
        """A session for ``session_id`` as if its cookie had come in."""
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

        :param store: unused (this backend has the config's).
        :raises StoreUnavailable: the database cannot be reached in time.
        """
        session = await self._loaded(session_id)
        return dict(session) if session.id is not None else None

    async def set(self, session_id: str, data: Any, store: Any = None) -> str | None:  # type: ignore[override]
        """Replace the data of session ``session_id`` with ``data``; returns the id it lives under.

        Ids are never chosen by the caller: for an id with no live session the data is stored
        under a new id. Empty data ends the session (None is returned).

        :param data: a mapping, a dataclass, a pydantic model or a msgspec ``Struct``.
        :param store: unused.
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

        :param store: unused.
        :raises StoreUnavailable: the database cannot be reached in time.
        """
        session = self._session_for(session_id)
        session.invalidate()
        await run_async(self.config.core.save(session), self.config.store.execute)

    async def delete_all(self) -> int:
        """End every session in the store's table, every app's; how many live ones ended.

        :raises StoreUnavailable: the database cannot be reached.
        """
        return await self.config.store.delete_all()

    async def delete_expired(self) -> int:
        """Delete the expired rows now (the store's purge does it too); how many.

        :raises StoreUnavailable: the database cannot be reached.
        """
        return await self.config.store.purge_expired()


class PgSessionMiddleware(SessionMiddleware[PgSessionBackend]):
    """Litestar's ``SessionMiddleware``, with what a database-backed save needs besides.

    A save that fails as the response starts answers a 503 (store unreachable) or a 500, with one
    log line, instead of the app's response. A change a streamed body makes after the headers went
    out is saved after the body, if it needs no new cookie.
    """

    def __init__(self, app: ASGIApp, backend: PgSessionBackend) -> None:
        super().__init__(app, backend)

    def create_send_wrapper(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Send:
        """Litestar's send wrapper, answering a failed save with an error response."""
        scope, connection_send = connection.scope, connection.send
        backend = self.backend

        async def send(message: Message) -> None:
            exchange = scope.get(_SCOPE_KEY)
            if isinstance(exchange, _Exchange) and exchange.replaced:
                return  # the rest of a response replaced by an error response
            if message["type"] == "http.response.start":
                try:
                    headers = backend._save_started(scope.get("session"), scope)
                    if not isinstance(headers, list):
                        headers = await headers
                except SessionError as exc:
                    status = log_failure(exc, "saving")
                    if isinstance(exchange, _Exchange):
                        exchange.replaced = True
                    await error_response(connection_send, status)  # type: ignore[arg-type]
                    return
                message = with_session_headers_sent(message, headers)  # type: ignore[arg-type,assignment]
            await connection_send(message)

        return send

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Litestar's middleware, then the save of a change made while the body streamed."""
        # What Litestar's SessionMiddleware.__call__ does, in one pass: its connection class
        # unsubscripted (calling the subscripted generic costs as much again per request).
        connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope, receive=receive, send=send)
        backend = self.backend
        scope["session"] = await backend.load_from_connection(connection)
        connection._connection_state.session_id = backend.get_session_id(connection)
        await self.app(scope, receive, self.create_send_wrapper(connection))
        if scope["type"] == ScopeType.HTTP:
            late = backend._late_session(scope)  # save_late, awaiting only with something to save
            if late is not None:
                await backend._save_late(late)
