"""Internal: the session interface :mod:`pgsession_wsgi.quart` installs, which loads each request's
session before the handler and saves it (into the response, or late), and its stand-in sessions.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Iterable
from types import TracebackType
from typing import Any, cast

from quart import Quart
from quart.sessions import NullSession, SessionInterface, SessionMixin
from quart.wrappers import BaseRequestWebsocket, Response, Websocket
from quart.wrappers.response import IterableBody, ResponseBody
from werkzeug.wrappers import Response as WerkzeugResponse

from .._core.failure import ERROR_BODIES, log_failure
from ..appconfig import add_session_headers
from ..async_store import AsyncPostgresStore
from ..core import SessionCore, run_async
from ..errors import SessionError, StoreUnavailable
from ..session import Session
from .websocket import WebsocketOrigins

log = logging.getLogger("pgsession_wsgi")

#: The config key listing the origins whose pages may open a websocket, besides the app's own.
WEBSOCKET_ORIGINS_KEY = "PGSESSION_WEBSOCKET_ORIGINS"


class _UnavailableSession(NullSession):
    """Stands in when the session could not be loaded: reads see nothing, writes fail.

    ``quart._refuse_unavailable`` answers (503 or 500) before the handler: only earlier hooks meet it.
    """

    def __init__(self, error: SessionError) -> None:
        super().__init__()
        self.error = error

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable(
            "the session store is unavailable; the session is read-only and empty for the rest of "
            "this request"
        )

    __setitem__ = __delitem__ = clear = pop = popitem = update = setdefault = _fail


class _CrossOriginSession(NullSession):
    """Stands in for a websocket whose ``Origin`` is refused (answered with a 403): writes fail."""

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise SessionError(
            f"this websocket's Origin may not use the session: list it in {WEBSOCKET_ORIGINS_KEY} "
            "if that page may"
        )

    __setitem__ = __delitem__ = clear = pop = popitem = update = setdefault = _fail


class PgSessionInterface(SessionInterface):
    """Opens (and loads) each request's session and saves it into the response.

    :param core: the request algorithm, configured from the app's config.
    :param store: the async store the sessions live in.
    :param websocket_origins: origins whose pages may open a websocket besides the app's own
        (``PGSESSION_WEBSOCKET_ORIGINS``); a handshake from any other is refused with a 403.
    :raises ConfigurationError: an entry of ``websocket_origins`` is not an origin.
    """

    def __init__(
        self, core: SessionCore, store: AsyncPostgresStore, websocket_origins: str | Iterable[str] = ()
    ) -> None:
        self.core = core
        self.store = store
        self._origins = WebsocketOrigins(websocket_origins, WEBSOCKET_ORIGINS_KEY)

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> SessionMixin | None:
        """The request's session, loaded now if its cookie is validly signed."""
        if isinstance(request, Websocket) and not self._origins.allows(
            request.headers.getlist("Origin"), request.scheme, request.headers.get("Host"), request.server
        ):
            return _CrossOriginSession()  # answered by _refuse_unavailable: a 403, nothing loaded
        scheme = "https" if request.scheme in ("https", "wss") else "http"
        cookie_header = "; ".join(request.headers.getlist("Cookie"))
        session = self.core.open(cookie_header, scheme, _loaded_up_front)
        try:
            if self.core.wants_load(session.state):
                await self.core.load_async(session, self.store.execute)
        except SessionError as exc:
            return _UnavailableSession(exc)  # answered by _refuse_unavailable, which logs it
        # Not a SessionMixin subclass, but a dict with the same attributes (permanent, new,
        # modified, accessed), which is all Quart relies on.
        return cast(SessionMixin, session)

    async def save_session(
        self, app: Quart, session: SessionMixin, response: Response | WerkzeugResponse | None
    ) -> None:
        """Save the session; its headers go on ``response``.

        A store that cannot be reached is a 503 and one log line of ours.

        :param response: the response about to be sent, or None for an accepted websocket: its
            session is saved if the change keeps the cookie the browser has, else dropped with a
            warning.
        :raises UnstorableValue: a value changed in place cannot be stored (raised inside Quart's
            request handling, like any error of a view; nothing is saved).
        """
        if not isinstance(session, Session):
            return
        session.state.responded = True  # a change from now on is a late one (teardown_request)
        if response is None:
            await self._save_without_cookie(session)
            return
        self.core.check(session)  # through Quart's own error handling, before any statement
        try:
            headers = await run_async(self.core.save(session), self.store.execute)
        except SessionError as exc:
            status = log_failure(exc, "saving")
            response.status_code = status
            response.set_data(ERROR_BODIES[status])
            response.headers["Content-Type"] = "text/plain; charset=utf-8"
            if status == 503:
                response.headers["Retry-After"] = "5"
            return
        add_session_headers(response, headers)
        if isinstance(response, Response) and isinstance(response.response, IterableBody):
            # A streamed body may change the session after the headers went out.
            response.response = _SaveAfterBody(response.response, self, session)

    async def _save_without_cookie(self, session: Session, where: str = "in a websocket") -> None:
        """Save a change made where no cookie can be set; one that needs a new cookie is logged, once."""
        if not self.core.needs_late_save(session):
            return
        if self.core.late_save_refused(session):
            log.warning(
                "session changed %s in a way that needs a new cookie, which can no longer be set; "
                "the change was not saved",
                where,
            )
            return
        try:
            await run_async(self.core.save(session), self.store.execute)
        except SessionError as exc:
            log.error("session change made %s was not saved: %s", where, exc)


class _SaveAfterBody(ResponseBody):
    """A streamed body that saves the session's late changes once it is sent (or cut off)."""

    def __init__(self, body: ResponseBody, interface: PgSessionInterface, session: Session) -> None:
        self._body = body
        self._interface = interface
        self._session = session

    async def __aenter__(self) -> AsyncIterable[Any]:
        return await self._body.__aenter__()

    async def __aexit__(self, exc_type: type, exc_value: BaseException, tb: TracebackType) -> None:
        try:
            await self._body.__aexit__(exc_type, exc_value, tb)
        finally:
            await self._interface._save_without_cookie(self._session, "while streaming")


def _loaded_up_front(session: Session) -> None:
    return None  # open_session loads what there is to load before the handler runs
