"""The request algorithm, with no I/O: what to load, which statement to run, which cookie to send.

It knows neither WSGI nor a database driver. :meth:`SessionCore.load` and :meth:`SessionCore.save`
are generators: each yields the statements it needs (:class:`Load`, :class:`Insert`,
:class:`Write`, :class:`Touch`, :class:`Delete`), is sent each result and returns its answer, so
every front end, sync or async, shares one copy of every rule::

    core = SessionCore.from_options(options)
    session = core.open(cookie_header, scheme, lambda s: run(core.load(s), store.execute))
    headers = run(core.save(session), store.execute)  # async: await run_async(...)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

# Defined in _core and documented here (__all__); the other names stay importable from here.
from ._core import operations as _operations
from ._core import policy as _policy
from ._core.operations import (
    Delete,
    Insert,
    Load,
    LoadedRow,
    Steps,
    Touch,
    Write,
    WriteResult,
    advance,
    expiry_columns,
    resume_async,
    run,
    run_async,
    stored_expiry,
    user_id_text,
)
from ._core.operations import T as T
from ._core.policy import Policy, private_cache_control, with_session_headers
from ._core.save_decision import _SaveDecision
from ._core.save_decision import log as log
from .cookies import CookieSettings, HmacIdSigner, IdSigner, hash_session_id, prefixed_id
from .errors import ConfigurationError, SessionError
from .options import SessionOptions
from .session import Expiry, Session, SessionState

# Bound again here: the API reference documents a module's data only where its source assigns it.

#: The ``user_id`` of a :class:`Write` that leaves the stored user id as it is.
KEEP_USER: Any = _operations.KEEP_USER
#: Separates an app's ``key_prefix`` from a user id in the user column. User ids cannot hold it
#: (nor NUL), so an id stored under one prefix, or none, never reads as another app's.
USER_PREFIX_SEPARATOR = _operations.USER_PREFIX_SEPARATOR
#: Any statement the core may ask a store to run.
Operation = _operations.Operation
#: The app's response headers :func:`with_session_headers` reads or replaces (lower case): a front
#: end may pass only these.
MERGED_HEADERS = _policy.MERGED_HEADERS

__all__ = [
    "MERGED_HEADERS",
    "KEEP_USER",
    "USER_PREFIX_SEPARATOR",
    "Delete",
    "Insert",
    "Load",
    "LoadedRow",
    "Operation",
    "Policy",
    "SessionCore",
    "Touch",
    "Write",
    "WriteResult",
    "advance",
    "expiry_columns",
    "private_cache_control",
    "resume_async",
    "run",
    "run_async",
    "user_id_text",
    "with_session_headers",
]


class SessionCore(_SaveDecision):
    """Every decision of a request's session, for any front end.

    :param policy: lifetimes, size limit and user key, from :meth:`Policy.from_options`.
    :param signer: turns ids into cookie values and back.
    :param key_prefix: keeps apart the sessions of apps sharing one table: an id is stored under
        the SHA-256 of the prefix, a NUL and the id, so one app's cookie opens none of another's
        sessions. ``SessionState.session_id`` holds that prefixed form; the cookie, the id alone.
    :raises ConfigurationError: ``key_prefix`` holds a NUL character.
    """

    def __init__(
        self, policy: Policy, cookie: CookieSettings, signer: IdSigner, key_prefix: str = ""
    ) -> None:
        if "\x00" in key_prefix:
            raise ConfigurationError("key_prefix cannot hold a NUL character: choose another prefix")
        self.policy = policy
        self.cookie = cookie
        self.signer = signer
        #: The prefix given; "" for none.
        self.key_prefix = key_prefix
        self._id_head = prefixed_id("", key_prefix)
        self._max_age = int(policy.idle_timeout.total_seconds())

    @classmethod
    def from_options(cls, options: SessionOptions) -> SessionCore:
        """A core from the options every front end maps its own onto.

        :raises ConfigurationError: a missing secret or an option that contradicts another.
        """
        signer = options.signer
        if signer is None:
            if not options.secret_key:
                raise ConfigurationError(
                    "secret_key is missing: pass SessionMiddleware(app, store, secret_key=...) "
                    "with a long random value, e.g. from secrets.token_hex(32)"
                )
            signer = HmacIdSigner(options.secret_key, options.fallback_secret_keys)
        cookie = CookieSettings(
            name=options.cookie_name,
            path=options.cookie_path,
            domain=options.cookie_domain,
            secure=options.cookie_secure,
            httponly=options.cookie_httponly,
            samesite=options.cookie_samesite,
            partitioned=options.cookie_partitioned,
        )
        return cls(Policy.from_options(options), cookie, signer, options.key_prefix)

    @classmethod
    def configure(cls, secret_key: str | bytes | None, **options: Any) -> SessionCore:
        """:meth:`from_options` with the options as keywords (any
        :class:`~pgsession_wsgi.SessionOptions` field), for code that drives the core itself.

        :raises ConfigurationError: a missing secret or an option that contradicts another.
        """
        return cls.from_options(SessionOptions(secret_key, **options))

    def open(self, cookie_header: str, scheme: str, loader: Callable[[Session], Any]) -> Session:
        """A lazy session for one request (``cookie_header`` "" if none): nothing is parsed or
        loaded until it is used.

        :param loader: runs :meth:`load` with the adapter's store when the app first reads.
        """
        return Session(loader, permanent=self.policy.permanent, state=SessionState(cookie_header, scheme))

    def read_cookie(self, state: SessionState) -> None:
        """Verify the request's cookie once, setting ``state.session_id`` and ``state.resign``; a
        bad cookie leaves no id, and costs no statement."""
        if state.cookie_read:
            return
        state.cookie_read = True
        header = state.cookie_header
        if not header:
            return
        value = self.cookie.read(header)
        if value is None:
            state.cookie_sent = self.cookie.name in header
            return
        state.cookie_sent = True
        verified = self.signer.unsign(value)
        # With a prefix, an id holding the separator could pass for another prefix's id.
        if verified is not None and not (self._id_head and "\x00" in verified[0]):
            state.session_id, state.resign = self._id_head + verified[0], verified[1]

    def wants_load(self, state: SessionState) -> bool:
        """Whether loading would ask the store anything: only for a validly signed cookie."""
        self.read_cookie(state)
        return state.session_id is not None

    def load(self, session: Session) -> Steps[dict[str, Any] | None]:
        """The stored data of ``session`` from :meth:`open`, values still encoded, which the loader
        hands to the session (None: no live row, and its id is never used again)."""
        operation = self.load_operation(session.state)
        if operation is None:
            return None
        return self.loaded(session.state, (yield operation))

    async def load_async(self, session: Session, execute: Callable[[Operation], Awaitable[Any]]) -> None:
        """:meth:`load` with an async store's ``execute``, for a front end that loads before the app:
        one await for a validly signed cookie, none otherwise.

        :param session: a session from :meth:`open`, not loaded yet.
        :raises StoreUnavailable: the database cannot be reached in time.
        :raises SessionDataError: the stored row cannot be decoded.
        """
        state = session.state
        operation = self.load_operation(state)
        session.preload(None if operation is None else self.loaded(state, await execute(operation)))

    def load_operation(self, state: SessionState) -> Load | None:
        """The :class:`Load` that reads the session of a validly signed cookie; None without one."""
        self.read_cookie(state)
        stored_id = state.session_id
        if stored_id is None:
            return None
        return Load(hash_session_id(stored_id), self.policy.touch_interval, stored_id[len(self._id_head) :])

    def loaded(self, state: SessionState, row: LoadedRow | None) -> dict[str, Any] | None:
        """The stored object (values still encoded) from the answer to :meth:`load_operation`; None
        for no live row, whose id is then never used again. Sets ``state``'s id, touch and lifetime."""
        if row is None:
            state.session_id = None
            return None
        state.touch_due = row.touch_due
        if not state.expiry_set:  # one the app set before the load wins, as its writes do
            state.expiry = stored_expiry(row.idle_timeout, row.ends_at)
        return row.data

    def save(self, session: Session) -> Steps[list[tuple[str, str]]]:
        """Write what changed; return the headers to add (``Vary``, maybe ``Set-Cookie``).

        :param session: a session from :meth:`open`; one never used needs no statement.
        :raises SessionError: a value cannot be stored (naming its key), or it is too large.
        """
        if not self.wants_save(session):
            return []
        state = session.state
        self.read_cookie(state)
        headers = [("Vary", "Cookie")]
        cookie = yield from self._save(session, state)
        state.used_since_save = state.late_refused = False
        if cookie is not None:
            headers.append(("Set-Cookie", cookie))
        return headers

    def wants_save(self, session: Session) -> bool:
        """Whether :meth:`save` has anything to do: not for a session never used, nor for one
        :meth:`check` refused (the framework answers for that error)."""
        return session.accessed and session.state.refused is None

    def check(self, session: Session) -> None:
        """Run now what of the save can fail without the database, for a framework whose request
        handling ends before the save (Flask's and Quart's ``save_session``).

        The save reuses what this found unless the session was used since. A session refused here
        is not saved at all, and asking again raises nothing.

        :raises UnstorableValue: a value cannot be stored (naming its key).
        :raises SessionTooLarge: the changes alone are over ``max_size``.
        :raises SessionError: the value under ``user_key`` is no user id.
        """
        state = session.state
        if not session.accessed or state.refused is not None:
            return
        try:
            changes = session.changes(self.policy.max_size)
            if changes.changed_keys:  # only a changed user id can be no user id
                self._user_column(session, changes)
        except SessionError as exc:
            state.refused = exc
            raise
        state.checked = changes
        state.used_since_save = False  # a use from now on makes the save look again

    def late_save_refused(self, session: Session) -> bool:
        """Whether a change made after the headers went out needs a cookie it can no longer get: a
        new session, a regenerated or ended one, or a login under ``user_key``. The adapter logs it
        (or raises) and does not save; :meth:`needs_late_save` is False from then on, so a request
        with several late points says it once (a save that goes through forgets it).
        """
        state = session.state
        self.read_cookie(state)
        if state.session_id is None or state.regenerate or state.invalidate or self._new_user(session):
            state.late_refused = True
            return True
        return False

    def needs_late_save(self, session: Session) -> bool:
        """Whether a session saved before its body finished changed since (a streaming body, a
        teardown); never for one :meth:`check` refused or a late change already refused."""
        state = session.state
        if not state.used_since_save or state.refused is not None or state.late_refused:
            return False
        try:
            return session.unsaved
        except SessionError:
            # A value changed in place into one the codec refuses: the late save meets the error
            # inside the adapter's handling, which logs it, once.
            state.late_refused = True
            return True

    def max_age(self, expiry: Expiry) -> int:
        """The ``Max-Age`` of a permanent session's cookie, in whole seconds, never negative: the
        session's own lifetime (a fixed end: the time left), capped by ``absolute_timeout``; else
        ``idle_timeout``.

        :param expiry: the session's own lifetime (``session.expiry``); None for the default.
        """
        return self._max_age_of(expiry)
