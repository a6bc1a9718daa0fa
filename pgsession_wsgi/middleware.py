"""``SessionMiddleware``: server-side sessions for any WSGI application.

It puts a lazy session into each request, runs the core's statements on a :class:`PostgresStore`,
and saves inside ``start_response``, before the status line can reach the client, so a failed save
is an error response instead of a silently lost write::

    app = SessionMiddleware(app, PostgresStore(dsn), secret_key=os.environ["SECRET_KEY"])
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, cast

from werkzeug.local import LocalProxy

from . import defaults
from ._core.failure import ERROR_BODIES
from .cookies import IdSigner
from .core import Policy, SessionCore, run, with_session_headers
from .errors import ConfigurationError, OutsideRequestError, SessionError, StoreUnavailable, UnstorableValue
from .options import SessionOptions
from .session import Session
from .store import PostgresStore

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["SessionMiddleware", "current_session", "get_session", "ENVIRON_KEY"]

log = logging.getLogger("pgsession_wsgi")

#: Where the middleware puts the session in the WSGI environ.
ENVIRON_KEY = "pgsession.session"

_current: ContextVar[Session] = ContextVar("pgsession_current_session")


def _current_or_raise() -> Session:
    try:
        return _current.get()
    except LookupError:
        raise OutsideRequestError(
            "current_session is only bound while SessionMiddleware handles a request; outside "
            "one, pass the session explicitly or use get_session(environ)"
        ) from None


#: The session of the request being handled in this thread or context, like Flask's ``request``,
#: for code that has no environ at hand; outside a request it raises :class:`OutsideRequestError`.
current_session: Session = cast(Session, LocalProxy(_current_or_raise))


def get_session(environ: WSGIEnvironment) -> Session:
    """The session the middleware put into ``environ``, for code that has the environ at hand.

    :param environ: the WSGI environ of a request the middleware handles.
    :raises OutsideRequestError: no :class:`SessionMiddleware` is in front of the app.
    """
    try:
        return cast(Session, environ[ENVIRON_KEY])
    except KeyError:
        raise OutsideRequestError(
            "this WSGI environ has no session: wrap the application with "
            "pgsession_wsgi.SessionMiddleware(app, store, secret_key=...)"
        ) from None


def _propagated(session: Session, exc: SessionError) -> bool:
    """The app's own mistake with its session, that its framework propagated on purpose (Flask's DEBUG)."""
    state = session.state
    return state.reported and (isinstance(exc, UnstorableValue) or exc is state.refused)


class _SaveFailed(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class SessionMiddleware:
    """Give every request of ``app`` a server-side session stored by ``store``.

    The session is ``environ["pgsession.session"]`` (:func:`get_session`), and
    :data:`current_session` while the request runs; nothing touches the database until the app
    touches it. An unreachable store is a 503 and one log line; a value that cannot be stored, a
    500 naming its key.

    The keyword options (``cookie_name``, ``idle_timeout``, ``absolute_timeout``,
    ``touch_interval``, ``permanent``, ``refresh_each_request``, ``cookie_path``,
    ``cookie_domain``, ``cookie_secure``, ``cookie_httponly``, ``cookie_samesite``,
    ``cookie_partitioned``, ``fallback_secret_keys``, ``user_key``, ``regenerate_on_user_change``,
    ``max_size``, ``signer``, ``key_prefix``) are :class:`~pgsession_wsgi.SessionOptions`' fields,
    documented there once for every front end.

    :param secret_key: signs the cookie (HMAC-SHA256); required unless ``signer`` is given.
    :raises ConfigurationError: ``secret_key`` is missing, an option is invalid or contradicts
        another, or ``store`` is no :class:`PostgresStore`.
    """

    def __init__(
        self,
        app: WSGIApplication,
        store: PostgresStore,
        secret_key: str | bytes | None = None,
        *,
        cookie_name: str = "session",
        idle_timeout: timedelta | float = defaults.DEFAULT_IDLE_TIMEOUT,
        absolute_timeout: timedelta | float | None = None,
        touch_interval: timedelta | float = defaults.DEFAULT_TOUCH_INTERVAL,
        permanent: bool = defaults.DEFAULT_PERMANENT,
        refresh_each_request: bool = True,
        cookie_path: str = "/",
        cookie_domain: str | None = None,
        cookie_secure: bool | None = None,
        cookie_httponly: bool = True,
        cookie_samesite: str | None = "Lax",
        cookie_partitioned: bool = False,
        fallback_secret_keys: Iterable[str | bytes] = (),
        user_key: str | None = defaults.DEFAULT_USER_KEY,
        regenerate_on_user_change: bool = True,
        max_size: int | None = defaults.DEFAULT_MAX_SIZE,
        signer: IdSigner | None = None,
        key_prefix: str = "",
    ) -> None:
        if not isinstance(store, PostgresStore):
            raise ConfigurationError("store must be a pgsession_wsgi.PostgresStore")
        #: The wrapped application.
        self.app = app
        #: Where sessions live; also the handle for ``revoke_user``, ``stats`` and the like.
        self.store = store
        # Bound once, not on every request.
        self._loader = self._load
        #: The request algorithm, with the options as checked.
        self.core = SessionCore.from_options(SessionOptions.among(locals()))

    @property
    def policy(self) -> Policy:
        """Lifetimes, size limit and user key, as checked at construction."""
        return self.core.policy

    @property
    def signer(self) -> IdSigner:
        """Turns ids into cookie values and back (from ``secret_key``, or the one given)."""
        return self.core.signer

    def open_session(self, environ: WSGIEnvironment) -> Session:
        """A lazy session for a framework integration that opens one outside the WSGI call; save
        it with :meth:`commit`. Nothing is parsed or loaded until it is used."""
        return self.core.open(
            environ.get("HTTP_COOKIE", ""), environ.get("wsgi.url_scheme", "http"), self._loader
        )

    def _load(self, session: Session) -> dict[str, Any] | None:
        return run(self.core.load(session), self.store.execute)

    def commit(self, session: Session) -> list[tuple[str, str]]:
        """Save a session from :meth:`open_session`; return the headers the response needs.

        :returns: ``Vary`` and maybe ``Set-Cookie``; nothing if the session was never used.
        :raises StoreUnavailable: the database cannot be reached in time.
        :raises SessionError: a value cannot be stored, or the session is over ``max_size``.
        """
        return run(self.core.save(session), self.store.execute)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Run the app with a session bound (under :data:`ENVIRON_KEY`); save it before the status
        line can go out."""
        session = self.core.open(
            environ.get("HTTP_COOKIE", ""), environ.get("wsgi.url_scheme", "http"), self._loader
        )
        environ[ENVIRON_KEY] = session
        # One object per request: the app's start_response, then the body the server iterates.
        exchange = _Exchange(self, session, start_response, _current.set(session))
        try:
            exchange.body = self.app(environ, exchange)
        except _SaveFailed as failure:
            exchange.unbind()
            return self._error_response(start_response, failure.status, exchange.started)
        except StoreUnavailable as exc:
            exchange.unbind()
            log.error("session store unavailable, answering 503: %s", exc)
            return self._error_response(start_response, 503, exchange.started)
        except SessionError as exc:
            exchange.unbind()
            if isinstance(exc, OutsideRequestError) or _propagated(session, exc):
                raise  # a programming error: keep its traceback
            log.error("session error, answering 500: %s", exc)
            return self._error_response(start_response, 500, exchange.started)
        except BaseException:
            exchange.unbind()
            raise
        return exchange

    def _commit_or_fail(self, session: Session) -> list[tuple[str, str]]:
        try:
            return self.commit(session)
        except StoreUnavailable as exc:
            log.error("session store unavailable, answering 503: %s", exc)
            raise _SaveFailed(503) from None
        except SessionError as exc:
            log.error("session not saved, answering 500: %s", exc)
            raise _SaveFailed(500) from None

    def _save_after_headers(self, session: Session) -> None:
        """A streaming body changed the session after the headers went out."""
        if self.core.late_save_refused(session):
            log.warning(
                "session changed after the response headers were sent and needs a new "
                "cookie, which can no longer be set; the change was not saved"
            )
            return
        try:
            self.commit(session)
        except SessionError as exc:
            log.error("session change made while streaming was not saved: %s", exc)

    def _error_response(self, start_response: StartResponse, status: int, started: bool) -> list[bytes]:
        body = ERROR_BODIES[status]
        reason = "503 Service Unavailable" if status == 503 else "500 Internal Server Error"
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
        if status == 503:
            headers.append(("Retry-After", "5"))
        # exc_info only replaces a status the app already gave; servers re-raise it otherwise.
        start_response(reason, headers, sys.exc_info() if started else None)
        return [body]


class _Exchange:
    """One request's ``start_response`` (which saves), then its body; finishes once, at its end."""

    __slots__ = ("_middleware", "_session", "_start_response", "_token", "_extra", "saved", "started", "body")

    def __init__(
        self, middleware: SessionMiddleware, session: Session, start_response: StartResponse, token: Any
    ) -> None:
        self._middleware: SessionMiddleware | None = middleware  # None once finished
        self._session = session
        self._start_response = start_response
        self._token = token
        self._extra: list[tuple[str, str]] = []
        self.saved = self.started = False
        self.body: Iterable[bytes] = ()

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        session = self._session
        if not self.saved and session.accessed:
            self.saved = True
            middleware = self._middleware
            assert middleware is not None  # the app calls start_response before the body ends
            self._extra = middleware._commit_or_fail(session)
        self.started = True
        if self._extra:
            headers = with_session_headers(headers, self._extra)
        return self._start_response(status, headers, exc_info)

    def __iter__(self) -> Iterator[bytes]:
        yield from self.body
        self._finish()  # here too: some clients never call close() (Flask's test client)

    def unbind(self) -> None:
        """Unbind ``current_session`` (once the request is over, or failed)."""
        # Not contextlib.suppress: this runs on every request.
        try:  # noqa: SIM105
            _current.reset(self._token)
        except ValueError:  # closed from another context by an async server
            pass

    def _finish(self) -> None:
        middleware, self._middleware = self._middleware, None
        if middleware is None:
            return
        try:
            # Only a session used after the save can have changed since (the common case: not).
            if self._session.state.used_since_save and middleware.core.needs_late_save(self._session):
                middleware._save_after_headers(self._session)
        finally:
            self.unbind()

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self._finish()
