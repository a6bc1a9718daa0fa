"""``SessionMiddleware``: puts a lazy session into each request and saves it before the headers.

Saving happens inside ``start_response``, before the status line can reach the client, so a
failed save becomes an error response instead of a silently lost write.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, cast

from werkzeug.local import LocalProxy

from .cookies import CookieSettings, HmacIdSigner, IdSigner, hash_session_id, new_session_id
from .errors import ConfigurationError, OutsideRequestError, SessionError, StoreUnavailable
from .session import Changes, Session
from .store import KEEP_USER, PostgresStore, user_id_text

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["SessionMiddleware", "current_session", "get_session", "ENVIRON_KEY", "private_cache_control"]

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


#: The session of the request being handled in this thread or context, like Flask's ``request``.
current_session: Session = cast(Session, LocalProxy(_current_or_raise))


def get_session(environ: WSGIEnvironment) -> Session:
    """The session the middleware put into ``environ``."""
    try:
        return cast(Session, environ[ENVIRON_KEY])
    except KeyError:
        raise OutsideRequestError(
            "this WSGI environ has no session: wrap the application with "
            "pgsession_wsgi.SessionMiddleware(app, store, secret_key=...)"
        ) from None


def private_cache_control(value: str | None) -> str | None:
    """The Cache-Control a response that sets a session cookie needs, or None to keep ``value``.

    A shared cache (CDN, proxy) that stored such a response would hand one user's cookie to
    everyone, so ``public`` becomes ``private``; ``private`` and ``no-store`` already suffice.
    """
    directives = [part.strip() for part in (value or "").split(",") if part.strip()]
    names = {part.split("=", 1)[0].strip().lower() for part in directives}
    if "private" in names or "no-store" in names:
        return None
    kept = [part for part in directives if part.split("=", 1)[0].strip().lower() != "public"]
    return ", ".join(["private", *kept])


def _with_session_headers(
    headers: list[tuple[str, str]], extra: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The app's headers plus ours; a response that sets the cookie is made uncacheable by others."""
    if not any(name == "Set-Cookie" for name, _ in extra):
        return [*headers, *extra]
    cache = [value for name, value in headers if name.lower() == "cache-control"]
    private = private_cache_control(", ".join(cache) if cache else None)
    if private is None:
        return [*headers, *extra]
    others = [(name, value) for name, value in headers if name.lower() != "cache-control"]
    return [*others, ("Cache-Control", private), *extra]


def _seconds(value: timedelta | float | int | None, name: str) -> timedelta | None:
    if value is None:
        return None
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta.total_seconds() <= 0:
        raise ConfigurationError(f"{name} must be positive, not {value!r}")
    return delta


class _Binding:
    """What the request's cookie said, worked out only when the session is first used.

    The defaults live on the class: an untouched request sets only the two fields it has.
    """

    parsed = False
    cookie_sent = False
    session_id: str | None = None
    resign = False
    touch_due = False

    def __init__(self, cookie_header: str, scheme: str) -> None:
        self.cookie_header = cookie_header
        self.scheme = scheme


_ERROR_BODIES = {
    503: b"Service Unavailable: the session store cannot be reached. Please try again shortly.\n",
    500: b"Internal Server Error\n",
}


class _SaveFailed(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class SessionMiddleware:
    """Give every request of ``app`` a server-side session stored by ``store``.

    See the README for every option; ``secret_key`` signs the cookie and
    ``fallback_secret_keys`` are older keys still accepted while you rotate.
    With ``user_key`` set, a session whose user changes (a login, or another user logging in
    on the same session) gets a new id by itself unless ``regenerate_on_user_change=False``:
    a cookie planted before the login is worthless after it.
    """

    def __init__(
        self,
        app: WSGIApplication,
        store: PostgresStore,
        secret_key: str | bytes | None = None,
        *,
        cookie_name: str = "session",
        idle_timeout: timedelta | float = timedelta(days=31),
        absolute_timeout: timedelta | float | None = None,
        touch_interval: timedelta | float = timedelta(seconds=60),
        permanent: bool = True,
        refresh_each_request: bool = True,
        cookie_path: str = "/",
        cookie_domain: str | None = None,
        cookie_secure: bool | None = None,
        cookie_httponly: bool = True,
        cookie_samesite: str | None = "Lax",
        fallback_secret_keys: Iterable[str | bytes] = (),
        user_key: str | None = None,
        regenerate_on_user_change: bool = True,
        max_size: int | None = 256 * 1024,
        signer: IdSigner | None = None,
    ) -> None:
        if not isinstance(store, PostgresStore):
            raise ConfigurationError("store must be a pgsession_wsgi.PostgresStore")
        if signer is None:
            if not secret_key:
                raise ConfigurationError(
                    "secret_key is missing: pass SessionMiddleware(app, store, secret_key=...) "
                    "with a long random value, e.g. from secrets.token_hex(32)"
                )
            signer = HmacIdSigner(secret_key, fallback_secret_keys)
        self.app = app
        self.store = store
        self.signer = signer
        self.cookie = CookieSettings(
            name=cookie_name,
            path=cookie_path,
            domain=cookie_domain,
            secure=cookie_secure,
            httponly=cookie_httponly,
            samesite=cookie_samesite,
        )
        self.idle_timeout = cast(timedelta, _seconds(idle_timeout, "idle_timeout"))
        self.absolute_timeout = _seconds(absolute_timeout, "absolute_timeout")
        interval = cast(timedelta, _seconds(touch_interval, "touch_interval"))
        # A touch at most every tenth of the idle timeout keeps expiry within 10% of exact.
        self.touch_interval = min(interval, self.idle_timeout / 10)
        self.permanent = permanent
        self.refresh_each_request = refresh_each_request
        self.user_key = user_key
        self.regenerate_on_user_change = regenerate_on_user_change
        if max_size is not None and max_size < 1:
            raise ConfigurationError("max_size must be a positive number of bytes, or None")
        self.max_size = max_size
        self._max_age = int(self.idle_timeout.total_seconds())

    # -- per request -----------------------------------------------------------------------

    def open_session(self, environ: WSGIEnvironment) -> Session:
        """A lazy session for this request: nothing is parsed or loaded until it is used."""
        binding = _Binding(environ.get("HTTP_COOKIE", ""), environ.get("wsgi.url_scheme", "http"))
        session = Session(lambda: self._load(binding, session), permanent=self.permanent)
        session._binding = binding  # type: ignore[attr-defined]
        return session

    def _resolve(self, binding: _Binding) -> None:
        if binding.parsed:
            return
        binding.parsed = True
        if not binding.cookie_header:
            return
        value = self.cookie.read(binding.cookie_header)
        if value is None:
            binding.cookie_sent = self.cookie.name in binding.cookie_header
            return
        binding.cookie_sent = True
        verified = self.signer.unsign(value)
        if verified is not None:
            binding.session_id, binding.resign = verified

    def _load(self, binding: _Binding, session: Session) -> dict[str, Any] | None:
        self._resolve(binding)
        if binding.session_id is None:
            return None
        row = self.store.load(hash_session_id(binding.session_id), self.touch_interval)
        if row is None:
            binding.session_id = None  # no live row: this id is never used again
            return None
        binding.touch_due = row.touch_due
        session._id = binding.session_id
        return row.data

    def commit(self, session: Session) -> list[tuple[str, str]]:
        """Save ``session`` and return the headers the response needs (Set-Cookie, Vary)."""
        if not session.accessed:
            return []
        binding: _Binding = session._binding  # type: ignore[attr-defined]
        self._resolve(binding)
        headers = [("Vary", "Cookie")]
        cookie = self._save(session, binding)
        session._used_since_save = False
        if cookie is not None:
            headers.append(("Set-Cookie", cookie))
        return headers

    def _save(self, session: Session, binding: _Binding) -> str | None:
        """Write what changed; return a Set-Cookie value, if the cookie must change."""
        old_id = binding.session_id
        if session._invalidated and old_id is not None:
            self.store.delete(hash_session_id(old_id))
            old_id = binding.session_id = None
        changes = session.changes(self.max_size)
        if changes.empty and (session._loaded or old_id is None):
            if old_id is not None and session._row_found is not False:
                self.store.delete(hash_session_id(old_id))
            session._mark_saved(None)
            return self.cookie.delete_header(binding.scheme) if binding.cookie_sent else None
        if old_id is None or session._row_found is False:
            return self._insert_new(session, binding, changes)
        return self._update(session, binding, changes, old_id)

    def _insert_new(self, session: Session, binding: _Binding, changes: Changes) -> str:
        new_id = new_session_id()
        data = changes.full_json if changes.full_json is not None else changes.changed_json
        user = self._user_column(session, changes)
        self.store.insert(
            hash_session_id(new_id),
            data,
            None if user is KEEP_USER else user,
            self.idle_timeout,
            self.absolute_timeout,
            self.max_size,
        )
        cookie = self._cookie_for(new_id, self._is_permanent(session, None), binding)
        binding.session_id = new_id
        session._mark_saved(new_id)
        return cookie

    def _user_column(self, session: Session, changes: Changes) -> Any:
        """What the save writes to the user column: its text, None to clear it, or KEEP_USER."""
        key = self.user_key
        if key is None:
            return KEEP_USER
        if key in changes.changed_keys:
            value = session._peek(key)
            return None if value is None else user_id_text(value, key)
        if changes.replace or key in changes.removed:
            return None
        return KEEP_USER

    def _user_changed(self, user: Any) -> bool:
        """A new user came into the session: the id it had before must stop working."""
        return self.regenerate_on_user_change and user is not KEEP_USER and user is not None

    def _update(self, session: Session, binding: _Binding, changes: Changes, old_id: str) -> str | None:
        user = self._user_column(session, changes)
        regenerate = session._regenerate or self._user_changed(user)
        if not (changes.any or regenerate):
            if binding.touch_due:
                self.store.touch(hash_session_id(old_id), self.idle_timeout, self.absolute_timeout)
                binding.touch_due = False
                return self._cookie_after_save(session, binding, old_id, expiry_moved=True)
            return self._cookie_after_save(session, binding, old_id)
        new_id = new_session_id() if regenerate else None
        result = self.store.write(
            hash_session_id(old_id),
            changes.changed_json,
            changes.removed,
            replace=changes.replace,
            new_hash=hash_session_id(new_id) if new_id is not None else None,
            user_id=user,
            idle=self.idle_timeout,
            absolute=self.absolute_timeout,
            touch_interval=self.touch_interval,
            max_size=self.max_size,
        )
        if not result.updated:
            if session._row_found is None:
                # Written without being read, and the row is gone: the written keys start a
                # new session under a new id (the old id is never reused).
                return self._insert_new(session, binding, changes)
            # Another request invalidated or regenerated this session meanwhile: resurrecting it
            # would undo a logout, so this save is dropped (and the cookie left alone).
            log.warning(
                "session save dropped: the session was invalidated or regenerated by a concurrent request"
            )
            session._mark_saved(None)
            return None
        current_id = new_id or old_id
        cookie = self._cookie_after_save(
            session,
            binding,
            current_id,
            stored_permanent=result.permanent,
            expiry_moved=result.touched,
            must_send=new_id is not None or "_permanent" in (*changes.changed_keys, *changes.removed),
        )
        binding.session_id = current_id
        session._mark_saved(current_id)
        return cookie

    def _cookie_after_save(
        self,
        session: Session,
        binding: _Binding,
        session_id: str,
        *,
        stored_permanent: bool | None = None,
        expiry_moved: bool = False,
        must_send: bool = False,
    ) -> str | None:
        """The cookie goes out only when it changes: a new id or permanence, a re-signature,
        or a permanent session's expiry moving forward (so its Max-Age moves too)."""
        permanent = self._is_permanent(session, stored_permanent)
        if must_send or binding.resign or (expiry_moved and permanent and self.refresh_each_request):
            return self._cookie_for(session_id, permanent, binding)
        return None

    def _is_permanent(self, session: Session, stored: bool | None) -> bool:
        value = session._peek("_permanent")
        if value is None:
            value = stored
        return self.permanent if value is None else bool(value)

    def _cookie_for(self, session_id: str, permanent: bool, binding: _Binding) -> str:
        binding.resign = False
        max_age = self._max_age if permanent else None
        return self.cookie.set_header(self.signer.sign(session_id), max_age, binding.scheme)

    # -- WSGI ------------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        session = self.open_session(environ)
        environ[ENVIRON_KEY] = session
        token = _current.set(session)
        saved = started = False
        extra_headers: list[tuple[str, str]] = []

        def session_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            nonlocal saved, started, extra_headers
            if not saved and session.accessed:
                saved = True
                extra_headers = self._commit_or_fail(session)
            started = True
            if extra_headers:
                headers = _with_session_headers(headers, extra_headers)
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, session_start_response)
        except _SaveFailed as failure:
            _reset(token)
            return self._error_response(start_response, failure.status, started)
        except StoreUnavailable as exc:
            _reset(token)
            log.error("session store unavailable, answering 503: %s", exc)
            return self._error_response(start_response, 503, started)
        except SessionError as exc:
            _reset(token)
            if isinstance(exc, OutsideRequestError):  # a programming error: keep its traceback
                raise
            log.error("session error, answering 500: %s", exc)
            return self._error_response(start_response, 500, started)
        except BaseException:
            _reset(token)
            raise

        def on_close() -> None:
            try:
                # Only a session used after the save (e.g. by a streaming body) can have changed.
                if session._used_since_save and session.modified:
                    self._save_after_headers(session)
            finally:
                _reset(token)

        return _ClosingBody(body, on_close)

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
        binding: _Binding = session._binding  # type: ignore[attr-defined]
        self._resolve(binding)
        if (
            binding.session_id is None
            or session._regenerate
            or session._invalidated
            or self._new_user(session)
        ):
            log.warning(
                "session changed after the response headers were sent and needs a new "
                "cookie, which can no longer be set; the change was not saved"
            )
            return
        try:
            self.commit(session)
        except SessionError as exc:
            log.error("session change made while streaming was not saved: %s", exc)

    def _new_user(self, session: Session) -> bool:
        """Would a save now regenerate the id because a user logged in?"""
        if self.user_key is None or not self.regenerate_on_user_change:
            return False
        try:
            return self._user_changed(self._user_column(session, session.changes(None)))
        except SessionError:
            return False  # the save itself reports it

    def _error_response(self, start_response: StartResponse, status: int, started: bool) -> list[bytes]:
        body = _ERROR_BODIES[status]
        reason = "503 Service Unavailable" if status == 503 else "500 Internal Server Error"
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
        if status == 503:
            headers.append(("Retry-After", "5"))
        # exc_info only replaces a status the app already gave; servers re-raise it otherwise.
        start_response(reason, headers, sys.exc_info() if started else None)
        return [body]


def _reset(token: Any) -> None:
    # try/except rather than contextlib.suppress: this runs on every request.
    try:  # noqa: SIM105
        _current.reset(token)
    except ValueError:  # closed from another context by an async server
        pass


class _ClosingBody:
    """Passes the body through and runs ``on_finish`` once: at its end, or at ``close()``.

    Finishing at the end of the body too unbinds ``current_session`` even under clients that
    never call ``close()`` (Flask's test client, for one).
    """

    __slots__ = ("_body", "_on_finish")

    def __init__(self, body: Iterable[bytes], on_finish: Callable[[], None]) -> None:
        self._body = body
        self._on_finish: Callable[[], None] | None = on_finish

    def __iter__(self) -> Iterator[bytes]:
        yield from self._body
        self._finish()

    def _finish(self) -> None:
        on_finish, self._on_finish = self._on_finish, None
        if on_finish is not None:
            on_finish()

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._finish()
