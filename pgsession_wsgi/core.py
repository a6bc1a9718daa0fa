"""The request algorithm, with no I/O: what to load, which statement to run, which cookie to send.

The core knows neither WSGI nor a database driver. Its two steps, :meth:`SessionCore.load` and
:meth:`SessionCore.save`, are generators: each yields the statements it needs (:class:`Load`,
:class:`Insert`, :class:`Write`, :class:`Touch`, :class:`Delete`), receives each result, and
returns its answer. An adapter runs them with a store, sync or async, so that every front end
shares one copy of every rule below::

    core = SessionCore.from_options(options)  # a SessionOptions, from the front end's own
    session = core.open(cookie_header, scheme, lambda s: run(core.load(s), store.execute))
    ...                                                   # the app uses the session
    headers = run(core.save(session), store.execute)              # WSGI: psycopg2
    headers = await run_async(core.save(session), store.execute)  # ASGI: psycopg 3
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar, Union
from uuid import UUID

from .cookies import CookieSettings, HmacIdSigner, IdSigner, hash_session_id, new_session_id, prefixed_id
from .errors import ConfigurationError, SessionError
from .options import SessionOptions
from .session import Changes, Expiry, Session, SessionState

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
    "expiry_columns",
    "private_cache_control",
    "run",
    "run_async",
    "user_id_text",
    "with_session_headers",
]

log = logging.getLogger("pgsession_wsgi")

T = TypeVar("T")


# -- the statements the core asks for, and their answers -----------------------------------------

# The operations and their answers are plain dataclasses, not frozen ones: a request builds up
# to four of them, and a frozen dataclass costs about five times as much to build (its __init__
# sets each field through object.__setattr__). Treat them as values all the same.

#: The ``user_id`` of a :class:`Write` that leaves the stored user id as it is.
KEEP_USER: Any = object()


#: What stands between an app's ``key_prefix`` and a user id in the user column. User ids cannot
#: hold it (nor NUL, which a text column cannot store), so an id stored under one prefix, or
#: under none, can never read as another app's.
USER_PREFIX_SEPARATOR = "\x1f"

# The spellings of a UUID that apps and operators write: any case, with or without the hyphens,
# braces or a urn:uuid: head. Each is stored and looked up as str(UUID): lower case, hyphenated.
_UUID_SPELLING = re.compile(
    r"(?:urn:uuid:)?(\{)?[0-9a-f]{8}(?:-?[0-9a-f]{4}){3}-?[0-9a-f]{12}(?(1)\})",
    re.IGNORECASE,
)


def user_id_text(value: Any, key: str | None = None, *, key_prefix: str = "") -> str:
    """The one text form a user id is stored and looked up under.

    A str is kept as it is, unless it spells a UUID (any case, hyphens or none, braces): then it
    is the UUID's canonical form, as a :class:`uuid.UUID` and an int are their ``str()``. Anything
    else is refused, so "log out everywhere" can never miss a session because the app stored the
    id in one type or spelling and looks it up in another. With ``key_prefix``, the text is
    scoped to that prefix, so apps sharing a table under their own prefixes never see or end
    each other's users' sessions.

    :param value: the user id.
    :param key: the session key it was found under, for the error message; None for a lookup.
    :param key_prefix: the app's ``key_prefix`` (``SESSION_KEY_PREFIX``); "" for none.
    :raises SessionError: ``value`` is not a str, int or UUID, or holds NUL or U+001F.
    """
    kind = type(value)
    where = f"the session value under user_key {key!r}" if key is not None else "a user id"
    if kind is str:
        text = str(value)
        if _UUID_SPELLING.fullmatch(text):
            text = str(UUID(text))
        elif "\x00" in text or USER_PREFIX_SEPARATOR in text:
            raise SessionError(
                f"{where} holds a NUL or U+001F character, which user ids cannot: store the "
                "user's id without control characters"
            )
    elif kind is int or kind is UUID:
        text = str(value)
    else:
        raise SessionError(
            f"{where} is a {kind.__module__}.{kind.__qualname__}; user ids must be str, int or UUID: "
            "store the user's id in one of those types"
        )
    return f"{key_prefix}{USER_PREFIX_SEPARATOR}{text}" if key_prefix else text


@dataclass
class LoadedRow:
    """A live row, as :class:`Load` is answered: its data and whether a touch is due.

    :param data: the stored JSON object, parsed (its values still encoded).
    :param touch_due: the expiry is due to be pushed forward at the save.
    :param idle_timeout: the session's own idle lifetime (``set_expiry(timedelta)``), or None.
    :param ends_at: the session's fixed end (``set_expiry(datetime)``), or None.
    """

    data: dict[str, Any]
    touch_due: bool
    idle_timeout: timedelta | None = None
    ends_at: datetime | None = None


@dataclass
class WriteResult:
    """How a :class:`Write` went: the core decides from it whether a cookie must go out.

    :param updated: the live row was there and was written.
    :param touched: its expiry moved forward.
    :param permanent: the stored ``_permanent`` flag; None if unset.
    :param idle_timeout: the row's own idle lifetime after the write, or None.
    :param ends_at: the row's fixed end after the write, or None.
    """

    updated: bool
    touched: bool
    permanent: bool | None
    idle_timeout: timedelta | None = None
    ends_at: datetime | None = None


@dataclass
class Load:
    """Read the live row under ``id_hash``; answered with a :class:`LoadedRow` or None.

    :param id_hash: the SHA-256 of the session id, the row's key.
    :param touch_interval: how old ``accessed_at`` may get before a touch is due.
    :param session_id: the id as the cookie carries it (without the core's ``key_prefix``), for a
        store that may also find the session elsewhere, e.g. in flask-pg-session's table, keyed by
        the id itself; None if not known. Never log it: it is as good as the cookie.
    """

    id_hash: bytes
    touch_interval: timedelta
    # Kept out of repr() and ==: an operation printed in a log must not carry a usable cookie.
    session_id: str | None = field(default=None, repr=False, compare=False)


@dataclass
class Insert:
    """Store a new session; answered with None, or :class:`SessionTooLarge` raised.

    :param id_hash: the SHA-256 of the new id.
    :param data_json: the whole session, a JSON object.
    :param user_id: the text of the user column (:func:`user_id_text`), or None.
    :param idle: the row expires this long after its last touch.
    :param absolute: the row expires this long after its creation at the latest; None: never.
    :param max_size: the most bytes the stored data may take; None for no limit.
    :param idle_timeout: the session's own idle lifetime, used instead of ``idle``; None: ``idle``.
    :param ends_at: the session's fixed end, used instead of any idle expiry; None: none.
    """

    id_hash: bytes
    data_json: str
    user_id: str | None
    idle: timedelta
    absolute: timedelta | None
    max_size: int | None
    idle_timeout: timedelta | None = None
    ends_at: datetime | None = None


@dataclass
class Write:
    """Merge changes into a live row (maybe moving it); answered with a :class:`WriteResult`.

    :param id_hash: the SHA-256 of the current id.
    :param changed_json: the changed keys, a JSON object merged over the stored one.
    :param removed: the keys to delete from the stored object.
    :param replace: start from an empty object instead (after ``clear()``).
    :param new_hash: the SHA-256 of a new id to move the row to; None to keep the id.
    :param user_id: the user column's new text, None to clear it, or :data:`KEEP_USER`.
    :param idle: as for :class:`Insert`; applied only when a touch is due.
    :param absolute: as for :class:`Insert`.
    :param touch_interval: as for :class:`Load`.
    :param max_size: as for :class:`Insert`, measured on the merged row.
    :param set_expiry: store ``idle_timeout`` and ``ends_at`` and recompute the expiry from
        them now, due or not; False keeps the row's own.
    :param idle_timeout: as for :class:`Insert`; written only with ``set_expiry``.
    :param ends_at: as for :class:`Insert`; written only with ``set_expiry``.
    """

    id_hash: bytes
    changed_json: str
    removed: list[str]
    replace: bool
    new_hash: bytes | None
    user_id: Any  # text, None to clear, or KEEP_USER
    idle: timedelta
    absolute: timedelta | None
    touch_interval: timedelta
    max_size: int | None
    set_expiry: bool = False
    idle_timeout: timedelta | None = None
    ends_at: datetime | None = None


@dataclass
class Touch:
    """Push a live row's expiry forward (by its own lifetime, if it has one); True if it was there.

    :param id_hash: the SHA-256 of the session id.
    :param idle: as for :class:`Insert`.
    :param absolute: as for :class:`Insert`.
    """

    id_hash: bytes
    idle: timedelta
    absolute: timedelta | None


@dataclass
class Delete:
    """Remove a row; answered with True if it was there.

    :param id_hash: the SHA-256 of the session id.
    """

    id_hash: bytes


def expiry_columns(expiry: Expiry) -> tuple[timedelta | None, datetime | None]:
    """A session's own lifetime as the row holds it: ``(idle_timeout, ends_at)``.

    :param expiry: what ``session.set_expiry()`` was given (None: the store's defaults).
    """
    if isinstance(expiry, datetime):
        return None, expiry
    return expiry, None


def _stored_expiry(idle_timeout: timedelta | None, ends_at: datetime | None) -> Expiry:
    # A fixed end wins, as it does in the expiry formula (COALESCE(ends_at, ...)).
    return ends_at if ends_at is not None else idle_timeout


#: Any statement the core may ask a store to run.
Operation = Union[Load, Insert, Write, Touch, Delete]
#: A step of the core: yields operations, is sent their results, returns ``T``.
Steps = Generator[Operation, Any, T]


def run(steps: Steps[T], execute: Callable[[Operation], Any]) -> T:
    """Drive ``steps`` with a blocking ``execute`` (for example ``PostgresStore.execute``).

    :param steps: a step of the core, such as ``core.save(session)``.
    :param execute: runs one operation and returns its answer.
    :returns: what the step returns.
    """
    try:
        operation = next(steps)
        while True:
            operation = steps.send(execute(operation))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_async(steps: Steps[T], execute: Callable[[Operation], Awaitable[Any]]) -> T:
    """Drive ``steps`` with an awaitable ``execute`` (an async store).

    :param steps: a step of the core, such as ``core.save(session)``.
    :param execute: a coroutine function that runs one operation and returns its answer.
    :returns: what the step returns.
    """
    try:
        operation = next(steps)
        while True:
            operation = steps.send(await execute(operation))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


# -- policy -----------------------------------------------------------------------------------


def _duration(value: timedelta | float | None, name: str) -> timedelta | None:
    if value is None:
        return None
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta.total_seconds() <= 0:
        raise ConfigurationError(f"{name} must be positive, not {value!r}")
    return delta


@dataclass(frozen=True)
class Policy:
    """How long sessions live, when they are written, and what they may hold; set once.

    Build it with :meth:`from_options`, which checks every value. The fields are the
    :class:`~pgsession_wsgi.SessionOptions` of the same names, durations as ``timedelta``.
    """

    idle_timeout: timedelta
    absolute_timeout: timedelta | None
    touch_interval: timedelta
    permanent: bool
    refresh_each_request: bool
    user_key: str | None
    regenerate_on_user_change: bool
    max_size: int | None

    @classmethod
    def from_options(cls, options: SessionOptions) -> Policy:
        """Check and normalise the lifetimes, size limit and user key, so a bad one fails at start-up.

        Durations may be given in seconds; ``touch_interval`` is capped at a tenth of
        ``idle_timeout``.

        :param options: the session's options (only the fields above are read).
        :raises ConfigurationError: a duration that is not positive, or a ``max_size`` below 1.
        """
        max_size = options.max_size
        idle = _duration(options.idle_timeout, "idle_timeout")
        interval = _duration(options.touch_interval, "touch_interval")
        assert idle is not None and interval is not None
        if max_size is not None and max_size < 1:
            raise ConfigurationError("max_size must be a positive number of bytes, or None")
        return cls(
            idle_timeout=idle,
            absolute_timeout=_duration(options.absolute_timeout, "absolute_timeout"),
            # A touch at most every tenth of the idle timeout keeps expiry within 10% of exact.
            touch_interval=min(interval, idle / 10),
            permanent=options.permanent,
            refresh_each_request=options.refresh_each_request,
            user_key=options.user_key,
            regenerate_on_user_change=options.regenerate_on_user_change,
            max_size=max_size,
        )


def private_cache_control(value: str | None) -> str | None:
    """The Cache-Control a response that sets a session cookie needs, or None to keep ``value``.

    A shared cache (CDN, proxy) that stored such a response would hand one user's cookie to
    everyone, so ``public`` becomes ``private``; ``private`` and ``no-store`` already suffice.

    :param value: the response's Cache-Control (its headers joined with ", "), or None.
    """
    directives = [part.strip() for part in (value or "").split(",") if part.strip()]
    names = {part.split("=", 1)[0].strip().lower() for part in directives}
    if "private" in names or "no-store" in names:
        return None
    kept = [part for part in directives if part.split("=", 1)[0].strip().lower() != "public"]
    return ", ".join(["private", *kept])


#: The app's response headers :func:`with_session_headers` reads or replaces (lower case); it
#: leaves every other one as it is, so a front end may pass only these.
MERGED_HEADERS = frozenset(("vary", "cache-control"))


def with_session_headers(
    headers: list[tuple[str, str]], extra: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The app's response headers with a save's added, for every front end.

    ``Vary`` stays one header: ``Cookie`` joins the app's own tokens (its ``Vary`` lines merged
    into one), unless one of them is already ``Cookie`` (in any case) or ``*``. A response that
    sets the cookie gets a private ``Cache-Control`` (:func:`private_cache_control`).

    :param headers: the app's headers, names in any case.
    :param extra: what :meth:`SessionCore.save` returned (``Vary``, maybe ``Set-Cookie``).
    """
    merged = list(headers)
    for name, value in extra:
        if name == "Vary":
            merged = _with_vary(merged, value)
            continue
        if name == "Set-Cookie":
            cache = [sent for header, sent in merged if header.lower() == "cache-control"]
            private = private_cache_control(", ".join(cache) if cache else None)
            if private is not None:
                merged = [header for header in merged if header[0].lower() != "cache-control"]
                merged.append(("Cache-Control", private))
        merged.append((name, value))
    return merged


def _with_vary(headers: list[tuple[str, str]], token: str) -> list[tuple[str, str]]:
    sent = [value for name, value in headers if name.lower() == "vary"]
    if not sent:  # the common case: the app sends no Vary of its own
        return [*headers, ("Vary", token)]
    tokens = [part.strip() for value in sent for part in value.split(",") if part.strip()]
    if "*" in tokens or token.lower() in (part.lower() for part in tokens):
        return headers
    others = [header for header in headers if header[0].lower() != "vary"]
    return [*others, ("Vary", ", ".join([*tokens, token]))]


# -- the algorithm ----------------------------------------------------------------------------


class SessionCore:
    """Every decision of a request's session, for any front end.

    :param policy: lifetimes, size limit and user key, from :meth:`Policy.from_options`.
    :param cookie: the cookie's name and attributes.
    :param signer: turns ids into cookie values and back.
    :param key_prefix: keeps apart the sessions of apps that share one table: an id is stored
        under the SHA-256 of ``key_prefix``, a NUL and the id (of the id alone when empty), so
        one app's cookie opens none of another's sessions. ``SessionState.session_id`` (and
        ``Session.id``) hold that prefixed form; the cookie carries the id alone.
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
        # What goes before a cookie's id in its stored form (see prefixed_id); "" without a prefix.
        self._id_head = prefixed_id("", key_prefix)
        self._max_age = int(policy.idle_timeout.total_seconds())

    @classmethod
    def from_options(cls, options: SessionOptions) -> SessionCore:
        """A core from the session's options, which every front end maps its own onto.

        :param options: the options, as :class:`~pgsession_wsgi.SessionOptions` documents.
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
        """:meth:`from_options` with the options as keywords, for code that drives the core itself.

        :param secret_key: signs the cookie; required unless ``signer`` is given.
        :param options: any other :class:`~pgsession_wsgi.SessionOptions` field.
        :raises ConfigurationError: a missing secret or an option that contradicts another.
        """
        return cls.from_options(SessionOptions(secret_key, **options))

    def open(self, cookie_header: str, scheme: str, loader: Callable[[Session], Any]) -> Session:
        """A lazy session for one request: nothing is parsed or loaded until it is used.

        :param cookie_header: the request's ``Cookie`` header ("" if none).
        :param scheme: ``"https"`` or ``"http"``: decides ``Secure`` when not forced.
        :param loader: runs :meth:`load` with the adapter's store when the app first reads.
        """
        state = SessionState(cookie_header, scheme)
        return Session(loader, permanent=self.policy.permanent, state=state)

    # -- loading ---------------------------------------------------------------------------

    def read_cookie(self, state: SessionState) -> None:
        """Verify the request's cookie once; a bad one leaves no id (and costs no statement).

        :param state: the request's state; ``session_id`` and ``resign`` are set on it.
        """
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
        """Whether loading would ask the store anything: only for a validly signed cookie.

        :param state: the request's state.
        """
        self.read_cookie(state)
        return state.session_id is not None

    def load(self, session: Session) -> Steps[dict[str, Any] | None]:
        """The stored data of ``session`` (None: no live row, and its id is never used again).

        :param session: a session from :meth:`open`.
        :returns: the stored object, values still encoded; the loader hands it to the session.
        """
        state = session.state
        self.read_cookie(state)
        if state.session_id is None:
            return None
        stored_id = state.session_id
        row: LoadedRow | None = yield Load(
            hash_session_id(stored_id), self.policy.touch_interval, stored_id[len(self._id_head) :]
        )
        if row is None:
            state.session_id = None
            return None
        state.touch_due = row.touch_due
        if not state.expiry_set:  # one the app set before the load wins, as its writes do
            state.expiry = _stored_expiry(row.idle_timeout, row.ends_at)
        return row.data

    # -- saving ----------------------------------------------------------------------------

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
        :meth:`check` refused (the framework answers for that error).

        :param session: a session from :meth:`open`.
        """
        return session.accessed and session.state.refused is None

    def check(self, session: Session) -> None:
        """Run now what of the save can fail without the database, for a framework whose own
        request handling ends before the save (Flask's and Quart's ``save_session``): every value
        is encoded and the size and the user id are checked, so that a value changed in place
        into something unstorable (``session["cart"].append({1})``) fails there like any error
        of the view's: propagated with ``TESTING``/``DEBUG``, else a 500 with the framework's log
        line. The save then reuses what this found, unless the session was used since.

        A session refused here is not saved at all (the framework answers for the error), and
        asking again (the framework's error handling saves once more) raises nothing.

        :param session: a session from :meth:`open`; one never used needs no check.
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
        """A change made after the headers went out that needs a cookie it can no longer get.

        True for a new session, a regenerated or ended one, or a login under ``user_key``;
        the adapter logs it (or raises) and does not save. The refusal is remembered
        (``state.late_refused``): :meth:`needs_late_save` is False from then on, so a request
        with several late points (Quart's teardown, then its streamed body's end; Flask's
        teardown, run again when a test's ``with client:`` block ends, then the body's end) says
        it once. A save that goes through (a websocket's explicit save) forgets it.

        :param session: a session that :meth:`needs_late_save`.
        """
        state = session.state
        self.read_cookie(state)
        if state.session_id is None or state.regenerate or state.invalidate or self._new_user(session):
            state.late_refused = True
            return True
        return False

    def needs_late_save(self, session: Session) -> bool:
        """Only a session used after the save (by a streaming body, a teardown) can have changed
        since; one :meth:`check` refused is never saved, and a late change refused once
        (:meth:`late_save_refused`) is not looked at again.

        :param session: a session saved before its response body finished.
        """
        state = session.state
        if not state.used_since_save or state.refused is not None or state.late_refused:
            return False
        try:
            return session.unsaved
        except SessionError:
            # A value changed in place into one the codec refuses: the late save meets the same
            # error inside the adapter's handling, which logs it, rather than here, outside; and
            # only once, however many late points the request still has.
            state.late_refused = True
            return True

    def _save(self, session: Session, state: SessionState) -> Steps[str | None]:
        old_id = state.session_id
        if state.invalidate and old_id is not None:
            yield Delete(hash_session_id(old_id))
            old_id = state.session_id = None
        changes, state.checked = state.checked, None
        if changes is None or state.used_since_save:  # not checked, or used since the check
            changes = session.changes(self.policy.max_size)
        if changes.empty and (changes.loaded or old_id is None):
            if old_id is not None and state.row_found is not False:
                yield Delete(hash_session_id(old_id))
            session.mark_saved(None)
            return self.cookie.delete_header(state.scheme) if state.cookie_sent else None
        if old_id is None or state.row_found is False:
            return (yield from self._insert_new(session, state, changes))
        return (yield from self._update(session, state, changes, old_id))

    def _insert_new(self, session: Session, state: SessionState, changes: Changes) -> Steps[str]:
        policy = self.policy
        new_id = self._id_head + new_session_id()
        data = changes.full_json if changes.full_json is not None else changes.changed_json
        user = self._user_column(session, changes)
        idle_timeout, ends_at = expiry_columns(state.expiry)
        yield Insert(
            hash_session_id(new_id),
            data,
            None if user is KEEP_USER else user,
            policy.idle_timeout,
            policy.absolute_timeout,
            policy.max_size,
            idle_timeout,
            ends_at,
        )
        cookie = self._cookie_for(new_id, self._is_permanent(session, None), state)
        session.mark_saved(new_id, whole=True)
        return cookie

    def _update(
        self, session: Session, state: SessionState, changes: Changes, old_id: str
    ) -> Steps[str | None]:
        policy = self.policy
        blind = state.row_found is None  # written without being read
        user = self._user_column(session, changes)
        regenerate = state.regenerate or self._user_changed(user)
        set_expiry = state.expiry_set
        if not (changes.any or regenerate or set_expiry):
            if state.touch_due:
                yield Touch(hash_session_id(old_id), policy.idle_timeout, policy.absolute_timeout)
                state.touch_due = False
                return self._cookie_after_save(session, state, old_id, expiry_moved=True)
            return self._cookie_after_save(session, state, old_id)
        new_id = self._id_head + new_session_id() if regenerate else None
        idle_timeout, ends_at = expiry_columns(state.expiry)
        result: WriteResult = yield Write(
            hash_session_id(old_id),
            changes.changed_json,
            changes.removed,
            changes.replace,
            hash_session_id(new_id) if new_id is not None else None,
            user,
            policy.idle_timeout,
            policy.absolute_timeout,
            policy.touch_interval,
            policy.max_size,
            set_expiry,
            idle_timeout,
            ends_at,
        )
        if not result.updated:
            if blind:
                # Written without being read, and the row is gone: the written keys start a
                # new session under a new id (the old id is never reused).
                return (yield from self._insert_new(session, state, changes))
            # Another request invalidated or regenerated this session meanwhile: resurrecting it
            # would undo a logout, so this save is dropped (and the cookie left alone).
            log.warning(
                "session save dropped: the session was invalidated or regenerated by a concurrent request"
            )
            session.mark_saved(None)
            return None
        current_id = new_id or old_id
        if not set_expiry:  # a blind write learns the row's own lifetime here, for Max-Age
            state.expiry = _stored_expiry(result.idle_timeout, result.ends_at)
        cookie = self._cookie_after_save(
            session,
            state,
            current_id,
            stored_permanent=result.permanent,
            expiry_moved=result.touched,
            # A new lifetime is a new Max-Age: the browser must hear of it.
            must_send=new_id is not None
            or set_expiry
            or "_permanent" in (*changes.changed_keys, *changes.removed),
        )
        session.mark_saved(current_id)
        return cookie

    # -- the user column -------------------------------------------------------------------

    def _user_column(self, session: Session, changes: Changes) -> Any:
        """What the save writes to the user column: its text, None to clear it, or KEEP_USER."""
        key = self.policy.user_key
        if key is None:
            return KEEP_USER
        if key in changes.changed_keys:
            value = session.peek(key)
            return None if value is None else user_id_text(value, key, key_prefix=self.key_prefix)
        if changes.replace or key in changes.removed:
            return None
        return KEEP_USER

    def _user_changed(self, user: Any) -> bool:
        """A new user came into the session: the id it had before must stop working."""
        return self.policy.regenerate_on_user_change and user is not KEEP_USER and user is not None

    def _new_user(self, session: Session) -> bool:
        """Would a save now regenerate the id because a user logged in?"""
        if self.policy.user_key is None or not self.policy.regenerate_on_user_change:
            return False
        try:
            return self._user_changed(self._user_column(session, session.changes(None)))
        except SessionError:
            return False  # the save itself reports it

    # -- the cookie ------------------------------------------------------------------------

    def _cookie_after_save(
        self,
        session: Session,
        state: SessionState,
        session_id: str,
        *,
        stored_permanent: bool | None = None,
        expiry_moved: bool = False,
        must_send: bool = False,
    ) -> str | None:
        """The cookie goes out only when it changes: a new id or permanence, a re-signature,
        or a permanent session's expiry moving forward (so its Max-Age moves too)."""
        permanent = self._is_permanent(session, stored_permanent)
        if must_send or state.resign or (expiry_moved and permanent and self.policy.refresh_each_request):
            return self._cookie_for(session_id, permanent, state)
        return None

    def _is_permanent(self, session: Session, stored: bool | None) -> bool:
        value = session.peek("_permanent")
        if value is None:
            value = stored
        return self.policy.permanent if value is None else bool(value)

    def _cookie_for(self, session_id: str, permanent: bool, state: SessionState) -> str:
        state.resign = False
        max_age = self.max_age(state.expiry) if permanent else None
        cookie_id = session_id[len(self._id_head) :]
        return self.cookie.set_header(self.signer.sign(cookie_id), max_age, state.scheme)

    def max_age(self, expiry: Expiry) -> int:
        """The ``Max-Age`` of a permanent session's cookie, in whole seconds, never negative.

        The session's own lifetime if it has one (a fixed end: the time left until it), capped
        by ``absolute_timeout``; else ``idle_timeout``. The database, not this number, decides
        when the session ends; the cookie only must not outlive it by much, nor die before it.

        :param expiry: the session's own lifetime (``session.expiry``); None for the default.
        """
        if expiry is None:
            return self._max_age
        if isinstance(expiry, datetime):
            seconds = (expiry - datetime.now(timezone.utc)).total_seconds()
        else:
            seconds = expiry.total_seconds()
        absolute = self.policy.absolute_timeout
        if absolute is not None:
            seconds = min(seconds, absolute.total_seconds())
        return max(0, int(seconds))
