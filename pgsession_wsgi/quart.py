"""Quart integration: ``quart.session`` stored in PostgreSQL, configured like the Flask extension.

It runs the same core as every other front end on the async store, so a Quart app shares its
sessions (table, cookie, codec) with Flask, WSGI and ASGI apps using the same secret. A request
with a validly signed cookie is loaded before the handler runs (one statement); one without
costs nothing. The pool opens before serving (creating the table, so a wrong DSN or table fails
at startup) and closes after. Usage::

    app.config.update(SECRET_KEY=os.environ["SECRET_KEY"], PGSESSION_DSN="postgresql://app@db/app")
    PgSession(app)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from .errors import MissingExtraError

try:
    from quart import Quart, current_app, has_websocket_context, session, websocket
    from quart.wrappers import Response
except ModuleNotFoundError as missing:  # Quart, which no extra brings: say what to install
    raise (MissingExtraError.of(missing, __name__) or missing) from None

from . import appconfig
from ._adapters.quart_interface import WEBSOCKET_ORIGINS_KEY as WEBSOCKET_ORIGINS_KEY
from ._adapters.quart_interface import PgSessionInterface as PgSessionInterface
from ._adapters.quart_interface import _CrossOriginSession, _UnavailableSession
from ._adapters.websocket import (
    CLOSE_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_UNAVAILABLE,
    FORBIDDEN_BODY,
    REFUSED_REASON,
    WebsocketOrigins,
    save_without_cookie,
)
from ._core.failure import ERROR_BODIES, log_failure
from .appconfig import EXTENSION_KEY, setting
from .async_store import AsyncPostgresStore
from .core import SessionCore
from .defaults import DEFAULT_PURGE_INTERVAL
from .devices import UserSession, mark_current, request_user
from .errors import ConfigurationError, OutsideRequestError, SessionError, StoreUnavailable
from .session import Session

__all__ = [
    "EXTENSION_KEY",
    "WEBSOCKET_UNAVAILABLE",
    "PgSession",
    "PgSessionInterface",
    "UserSession",
    "log_out_other_sessions",
    "save_session",
    "sessions_for_user",
]

log = logging.getLogger("pgsession_wsgi")

#: The close code of a websocket whose session store cannot be reached: "Try Again Later".
WEBSOCKET_UNAVAILABLE = CLOSE_UNAVAILABLE
#: The config keys of the store PgSession opens from the DSN; refused when the app gives its own.
STORE_KEYS = (*appconfig.DSN_STORE_KEYS, "PGSESSION_PREPARED_STATEMENTS")


class PgSession:
    """Server-side Quart sessions in PostgreSQL: ``PgSession(app)`` or ``init_app(app)`` later.

    Reads the same config as :class:`pgsession_wsgi.flask.PgSession`. A store that cannot be
    reached during a request is a 503 (an app's own ``StoreUnavailable`` handler is kept), and a
    websocket is closed with code 1013. Against cross-site websocket hijacking, a handshake from
    an ``Origin`` other than the app's own or one in ``PGSESSION_WEBSOCKET_ORIGINS`` is refused
    with a 403 (or closed with 1008) before its session is loaded.

    :param app: the Quart app to set up now, or None to call :meth:`init_app` later.
    :param store: None (the default) opens a store from ``PGSESSION_DSN``, opened before serving
        and closed after. An :class:`AsyncPostgresStore` the app built (e.g. with ``from_pool``)
        serves every app this instance sets up; a callable ``store(app)`` returning one is called
        for each app, outside any app context (Quart's is async). The app's store decides what
        the DSN store's keys would (setting one is a :class:`ConfigurationError`), and stays the
        app's: PgSession neither opens nor closes it.
    :raises ConfigurationError: ``store`` is neither an ``AsyncPostgresStore`` nor a callable.
    """

    def __init__(
        self,
        app: Quart | None = None,
        *,
        store: AsyncPostgresStore | Callable[[Quart], AsyncPostgresStore] | None = None,
    ) -> None:
        appconfig.check_store_source(store, AsyncPostgresStore, "AsyncPostgresStore.from_pool(pool)")
        self._store_source = store
        self._apps: list[Quart] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Quart) -> PgSessionInterface:
        """Install the session interface, the 503 answers and the pool's lifecycle.

        :raises ConfigurationError: ``SECRET_KEY`` or the DSN is missing, an option is invalid,
            or the app is set up already; with ``store``: a config key of the DSN store is set,
            or the callable returned something other than an ``AsyncPostgresStore``.
        """
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError(f"pgsession-wsgi is already set up on the app {app.name!r}")
        config = app.config
        appconfig.check_keys(config, "quart")
        signer = appconfig.cookie_signer(app)
        source = self._store_source
        if source is None:
            dsn = appconfig.pgsession_dsn(config)
        else:
            appconfig.refuse_store_keys(
                config, STORE_KEYS, "e.g. AsyncPostgresStore.from_pool(pool, table=...)"
            )
        core = SessionCore.configure(
            app.secret_key,
            permanent=False,  # as in Quart: a browser-session cookie until session.permanent = True
            user_key=setting(config, "PGSESSION_USER_KEY"),
            signer=signer,  # it has SECRET_KEY_FALLBACKS
            **appconfig.cookie_options(app),
        )
        origins = WebsocketOrigins(setting(config, WEBSOCKET_ORIGINS_KEY), WEBSOCKET_ORIGINS_KEY).listed
        if source is None:
            arguments = appconfig.store_arguments(partial(setting, config), "quart")
            store = AsyncPostgresStore(dsn, purge_interval=DEFAULT_PURGE_INTERVAL, **arguments)
        else:
            store = source if isinstance(source, AsyncPostgresStore) else source(app)
            store = appconfig.made_store(store, AsyncPostgresStore, "AsyncPostgresStore.from_pool(pool)")
        interface = PgSessionInterface(core, store, origins)
        app.session_interface = interface  # type: ignore[assignment]  # Quart annotates its default
        app.extensions[EXTENSION_KEY] = interface
        if source is None:  # the store this extension opened; one the app gave is the app's
            app.before_serving(store.open)
            app.after_serving(store.close)
        # First, so that no other hook meets a session that could not be loaded.
        app.before_request_funcs.setdefault(None, []).insert(0, _refuse_unavailable)
        # First in the list, so run last (Quart runs them in reverse): after the app's own.
        app.teardown_request_funcs.setdefault(None, []).insert(0, _save_teardown_change)
        app.before_websocket_funcs.setdefault(None, []).insert(0, _refuse_unavailable)
        if StoreUnavailable not in app.error_handler_spec.get(None, {}).get(None, {}):
            app.register_error_handler(StoreUnavailable, _store_unavailable)
        app.register_error_handler(_WebsocketSessionError, _close_with_error)
        self._apps.append(app)
        return interface

    def get_interface(self, app: Quart | None = None) -> PgSessionInterface:
        """The session interface of ``app``; None: of the current app, or of the only one set up.

        :raises OutsideRequestError: no ``app``, no app context, and not exactly one app set up.
        :raises ConfigurationError: pgsession-wsgi is not set up on the app.
        """
        from quart import has_app_context

        return cast(PgSessionInterface, appconfig.extension_of(app, self._apps, current_app, has_app_context))

    @property
    def store(self) -> AsyncPostgresStore:
        """The :class:`AsyncPostgresStore` (for ``revoke_user``...) of the app :meth:`get_interface` finds."""
        return self.get_interface().store

    async def sessions_for_user(self, user_id: Any = None) -> list[UserSession]:
        """The live sessions of the logged-in user: :func:`pgsession_wsgi.quart.sessions_for_user`."""
        return await sessions_for_user(user_id)

    async def log_out_other_sessions(self, user_id: Any = None) -> int:
        """End the user's other sessions: :func:`pgsession_wsgi.quart.log_out_other_sessions`."""
        return await log_out_other_sessions(user_id)


def _request_user(what: str, user_id: Any) -> tuple[PgSessionInterface, Session, Any]:
    """The current app's interface, the request's session and whose sessions ``what`` means."""
    from quart import has_request_context

    if not (has_request_context() or has_websocket_context()):
        raise OutsideRequestError(
            f"{what}() works on the request's session: call it while handling a request (in a view)"
        )
    interface = current_app.extensions.get(EXTENSION_KEY)
    current = session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(interface, PgSessionInterface) or not isinstance(current, Session):
        raise ConfigurationError(
            f"{what}() needs pgsession-wsgi on the app {current_app.name!r}: set it up with PgSession(app)"
        )
    return interface, current, request_user(current, interface.core.policy.user_key, user_id)


async def sessions_for_user(user_id: Any = None) -> list[UserSession]:
    """The live sessions of the logged-in user, most recently used first, for a "your devices" page.

    The request's own session is the one with ``current`` set.

    :param user_id: whose sessions; None for the user logged in on the request's session.
    :raises OutsideRequestError: called outside a request.
    :raises ConfigurationError: the app does not use pgsession-wsgi, or ``PGSESSION_USER_KEY`` is None.
    :raises SessionError: no ``user_id`` given and nobody is logged in.
    :raises StoreUnavailable: the database cannot be reached.
    """
    interface, current, user = _request_user("sessions_for_user", user_id)
    infos = await interface.store.sessions_for_user(user, key_prefix=interface.core.key_prefix)
    return mark_current(infos, current)


async def log_out_other_sessions(user_id: Any = None) -> int:
    """End every session of the logged-in user except the request's own: "log out other devices".

    Call it after a password change; ``quart.session.regenerate()`` in the same view renews this
    session's id too.

    :param user_id: whose sessions; None for the user logged in on the request's session.
    :returns: how many sessions were ended.
    :raises OutsideRequestError: called outside a request.
    :raises ConfigurationError: the app does not use pgsession-wsgi, or ``PGSESSION_USER_KEY`` is None.
    :raises SessionError: no ``user_id`` given and nobody is logged in.
    :raises StoreUnavailable: the database cannot be reached.
    """
    interface, current, user = _request_user("log_out_other_sessions", user_id)
    return await interface.store.revoke_user(user, keep=current, key_prefix=interface.core.key_prefix)


async def save_session() -> None:
    """Save ``quart.session`` now, from a websocket handler: the reliable way to keep its changes.

    Quart cancels a websocket handler when the client disconnects, so changes left for its end
    may never be saved. In an HTTP request this does nothing: the response saves the session.

    :raises SessionError: the change needs a new cookie (a websocket cannot set one: make it in an
        HTTP request), the session ended while the websocket was open, or it cannot be stored.
    :raises StoreUnavailable: the database cannot be reached.
    """
    if not has_websocket_context():
        return
    current = session._get_current_object()  # type: ignore[attr-defined]
    interface = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(current, Session) or not isinstance(interface, PgSessionInterface):
        raise OutsideRequestError(
            "quart.session is not a pgsession-wsgi session: set the app up with PgSession(app) first"
        )
    if not current.accessed:
        return
    await save_without_cookie(interface.core, current, interface.store.execute)


async def _refuse_unavailable() -> Any:
    """Before any other hook: answer for a session that could not be loaded, or a refused origin."""
    current = session._get_current_object()  # type: ignore[attr-defined]
    if isinstance(current, _CrossOriginSession):
        # A 403 where the server can answer a handshake with an HTTP response; else close with 1008.
        if "websocket.http.response" not in (websocket.scope.get("extensions") or {}):
            await _close_websocket(CLOSE_POLICY_VIOLATION, REFUSED_REASON)
        return Response(FORBIDDEN_BODY, status=403, mimetype="text/plain")
    if not isinstance(current, _UnavailableSession):
        return None
    error = current.error
    if isinstance(error, StoreUnavailable):
        raise error  # to _store_unavailable, or the app's own handler
    if has_websocket_context():
        log.error("session error while loading, closing the websocket with 1011: %s", error)
        # An exception, not a return: Quart then runs no handler and sends nothing after the close.
        raise _WebsocketSessionError(error)
    return Response(ERROR_BODIES[log_failure(error, "loading")], status=500, mimetype="text/plain")


async def _save_teardown_change(exc: BaseException | None) -> None:
    """After the app's ``teardown_request`` functions: save a change they made, if a response was made."""
    current = session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(current, Session) or not current.state.responded:
        return
    interface = current_app.extensions.get(EXTENSION_KEY)
    if isinstance(interface, PgSessionInterface):
        await interface._save_without_cookie(current, "in teardown_request")


class _WebsocketSessionError(SessionError):
    """A websocket's session could not be loaded, and not for an outage: closed with 1011."""


async def _close_with_error(error: _WebsocketSessionError) -> Any:
    await _close_websocket(CLOSE_ERROR, "session error")
    return None  # nothing more to send: the handshake is closed


async def _store_unavailable(error: StoreUnavailable) -> Any:
    log_failure(error, "loading")
    if has_websocket_context():
        await _close_websocket(WEBSOCKET_UNAVAILABLE, "session store unavailable")
        return None
    return Response(ERROR_BODIES[503], status=503, headers={"Retry-After": "5"}, mimetype="text/plain")


async def _close_websocket(code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError):  # closed already
        await websocket.close(code, reason)
