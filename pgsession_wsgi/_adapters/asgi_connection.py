"""Internal: what the ASGI ``SessionMiddleware`` does with one HTTP request or websocket."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NoReturn, Protocol

from ..core import SessionCore, advance, resume_async
from ..errors import OutsideRequestError, SessionError, StoreUnavailable
from ..session import Session
from .asgi_plumbing import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    error_response,
    log_failure,
    origin_allowed,
    take_over,
    with_session_headers_sent,
)
from .websocket import (
    CLOSE_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_UNAVAILABLE,
    FORBIDDEN_BODY,
    REFUSED_REASON,
    WebsocketOrigins,
)

log = logging.getLogger("pgsession_wsgi")

SCOPE_KEY = "pgsession.connection"


class SessionNotLoaded(SessionError, RuntimeError):
    """The app read a session that has a cookie before loading it (``autoload=False``)."""

    __module__ = "pgsession_wsgi.asgi"  # where apps import it from: tracebacks name it so


class SessionExcluded(OutsideRequestError, AttributeError):
    """The app used the session of a connection on a path ``exclude_paths`` lists.

    Also an ``AttributeError``, so ``hasattr()`` probes (as Starlette's ``request.session``) find
    nothing instead of failing.
    """

    __module__ = "pgsession_wsgi.asgi"  # where apps import it from: tracebacks name it so


class _NoSession:
    """``scope["session"]`` on an excluded path: any use says why (formatted only then)."""

    __slots__ = ("path", "prefix")

    def __init__(self, path: str, prefix: str) -> None:
        self.path = path
        self.prefix = prefix

    @property
    def reason(self) -> str:
        return (
            f"no session on {self.path!r}: it is under {self.prefix!r}, which exclude_paths lists; "
            "take it out of exclude_paths to use the session there"
        )

    def refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise SessionExcluded(self.reason)

    __getitem__ = __setitem__ = __delitem__ = __contains__ = __iter__ = __len__ = __getattr__ = refuse

    def __repr__(self) -> str:
        return f"<no session: {self.reason}>"


def _excluded(prefixes: tuple[str, ...], scope: Scope) -> bool:
    """Whether ``prefixes`` leave this connection out; if so its session says why."""
    path = str(scope.get("path", ""))
    for prefix in prefixes:
        if path == prefix or path.startswith(prefix + "/"):
            scope["session"] = _NoSession(path, prefix)
            return True
    return False


class _Middleware(Protocol):
    """What this module uses of :class:`~pgsession_wsgi.asgi.SessionMiddleware` (which imports it)."""

    app: ASGIApp
    store: Any  # an AsyncStore
    core: SessionCore
    autoload: bool
    websocket_origins: WebsocketOrigins

    def open_session(self, scope: Scope) -> Session: ...

    async def load(self, session: Session) -> None: ...

    async def commit(self, session: Session) -> list[tuple[str, str]]: ...


class _Connection:
    """The middleware's state for one HTTP request or websocket, kept in its scope."""

    __slots__ = ("middleware", "session", "websocket", "started", "pending", "unavailable")

    def __init__(self, middleware: _Middleware, session: Session, websocket: bool) -> None:
        self.middleware = middleware
        self.session = session
        self.websocket = websocket
        self.started = False  # the response headers went out: no new cookie can be set
        self.pending: list[tuple[str, str]] = []  # from a save_session() before the response
        # load_session() found the store unreachable: a 5xx the app answers becomes a 503.
        self.unavailable: StoreUnavailable | None = None


def _connection_of(connection: Any) -> tuple[_Connection, Session]:
    """The state in the scope of ``connection`` (a request, a websocket or a scope), and its session."""
    scope = getattr(connection, "scope", connection)
    state = scope.get(SCOPE_KEY) if isinstance(scope, Mapping) else None
    if not isinstance(state, _Connection):
        excluded = scope.get("session") if isinstance(scope, Mapping) else None
        if isinstance(excluded, _NoSession):
            excluded.refuse()
        raise OutsideRequestError(
            "this connection has no session: wrap the app with "
            "pgsession_wsgi.asgi.SessionMiddleware(app, store=..., secret_key=...)"
        )
    return state, _adopt(scope, state)


async def _http(middleware: _Middleware, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one HTTP request, its session saved as the response starts."""
    session = middleware.open_session(scope)
    if middleware.autoload and middleware.core.wants_load(session.state):  # no cookie: nothing to await
        try:
            await middleware.core.load_async(session, middleware.store.execute)
        except SessionError as exc:
            await error_response(send, log_failure(exc, "loading"))
            return
    connection = _Connection(middleware, session, websocket=False)
    scope["session"] = session
    scope[SCOPE_KEY] = connection
    replaced = False  # an error response of ours went out instead of the app's

    async def send_with_session(message: Message) -> None:
        nonlocal replaced
        if replaced:
            return
        if message["type"] == "http.response.start":
            status: int | None = None
            if connection.unavailable is not None and int(message.get("status", 200)) >= 500:
                # load_session() found the store down: a 503 in place of the app's 5xx.
                unavailable, connection.unavailable = connection.unavailable, None
                status = log_failure(unavailable, "loading")
            else:
                session = _adopt(scope, connection)
                try:
                    # Awaits only when the save has a statement to run.
                    headers: list[tuple[str, str]] = []
                    if middleware.core.wants_save(session):
                        steps = middleware.core.save(session)
                        operation, headers = advance(steps)
                        if operation is not None:
                            headers = await resume_async(steps, operation, middleware.store.execute)
                    if connection.pending:
                        headers = _with_pending(connection, headers)
                except SessionError as exc:
                    status = log_failure(exc, "saving")
                else:
                    message = with_session_headers_sent(message, headers)
            if status is not None:
                replaced = connection.started = True
                await error_response(send, status)
                return
            connection.started = True
        await send(message)

    try:
        await middleware.app(scope, receive, send_with_session)
    except SessionError as exc:
        # Starlette and FastAPI let the app's exceptions through: the store failing in
        # `await load_session(request)` is a 503, as it would be had the middleware loaded.
        if connection.started or isinstance(exc, (OutsideRequestError, SessionNotLoaded)):
            raise  # too late for another status, or a programming error: keep the traceback
        connection.started = replaced = True
        await error_response(send, log_failure(exc, "handling the request"))
        return
    if not replaced and connection.started:
        session = _adopt(scope, connection)
        if middleware.core.needs_late_save(session):  # no coroutine made in the common case
            await _save_late(middleware, session)


def _with_pending(connection: _Connection, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The save's headers merged with those of an explicit save before the response."""
    pending, connection.pending = connection.pending, []
    names = {name for name, _ in headers}
    return [*headers, *((name, value) for name, value in pending if name not in names)]


async def _save_late(middleware: _Middleware, session: Session) -> None:
    """A streaming body changed the session after the headers went out (``needs_late_save``)."""
    if middleware.core.late_save_refused(session):
        log.warning(
            "session changed after the response headers were sent and needs a new "
            "cookie, which can no longer be set; the change was not saved"
        )
        return
    try:
        await middleware.commit(session)
    except SessionError as exc:
        log.error("session change made while streaming was not saved: %s", exc)


def _adopt(scope: Scope, connection: _Connection) -> Session:
    """The connection's session, after Litestar's ``set_session()`` or ``clear_session()``."""
    session = connection.session
    current: object = scope.get("session")
    if current is session:
        return session
    if isinstance(current, Session):
        connection.session = current
        return current
    take_over(session, current)
    scope["session"] = session
    return session


async def _websocket(middleware: _Middleware, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one websocket: its ``Origin`` checked, its session loaded."""
    if not origin_allowed(middleware.websocket_origins, scope):
        await receive()  # websocket.connect: the handshake is answered, then refused
        await _refuse_cross_origin(scope, send)
        return
    session = middleware.open_session(scope)
    if middleware.autoload:
        try:
            await middleware.load(session)
        except SessionError as exc:
            status = log_failure(exc, "loading")
            await receive()
            await _refuse_websocket(send, status)
            return
    connection = _Connection(middleware, session, websocket=True)
    scope["session"] = session
    scope[SCOPE_KEY] = connection

    async def watch_accept(message: Message) -> None:
        if message["type"] in ("websocket.accept", "websocket.close", "websocket.http.response.start"):
            connection.started = True
        await send(message)

    try:
        await middleware.app(scope, receive, watch_accept)
    except StoreUnavailable as exc:
        # From `await load_session(websocket)` before accepting: refused as autoload does.
        if connection.started:
            raise
        await _refuse_websocket(send, log_failure(exc, "loading"))


async def _refuse_cross_origin(scope: Scope, send: Send) -> None:
    """A 403 if the server can answer a handshake with an HTTP response, else close code 1008."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await error_response(send, 403, FORBIDDEN_BODY.encode(), "websocket.http")
    else:
        await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION, "reason": REFUSED_REASON})


async def _refuse_websocket(send: Send, status: int) -> None:
    """Close a handshake whose session could not be loaded: 1013 for a 503, else 1011."""
    if status == 503:
        code, reason = CLOSE_UNAVAILABLE, "session store unavailable"
    else:
        code, reason = CLOSE_ERROR, "session error"
    await send({"type": "websocket.close", "code": code, "reason": reason})
