"""Internal: :class:`SessionState`, :class:`Changes` and the methods ``Session`` inherits beyond a
dict's (its id, lifetime and change tracking); :mod:`pgsession_wsgi.session` imports them back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..codec import dumps, same
from ..errors import SessionTooLarge
from .checks import Expiry, _checked_expiry, _encode, _encoded, _object_json, _utf8_length

_MISSING = object()
_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes})
_NOTHING_ASSIGNED: Mapping[str, Any] = MappingProxyType({})
#: Keys that alone do not make a session worth storing (Flask writes ``_permanent`` eagerly).
META_KEYS = frozenset({"_permanent"})


class SessionState:
    """The request-scoped facts about a session: what its cookie said and what was asked of it.

    The session id lives here and nowhere else. :mod:`pgsession_wsgi.core` reads and updates these
    fields; apps use the session's mapping and properties instead.

    :param cookie_header: the request's ``Cookie`` header, parsed only when the session is used.
    :param scheme: ``"https"`` or ``"http"``: decides ``Secure`` when it is not forced.
    """

    # Class defaults: an untouched request pays only for the two fields __init__ sets.
    cookie_read = False  #: the Cookie header has been parsed
    cookie_sent = False  #: the request carried our cookie (valid or not)
    session_id: str | None = None  #: the verified id; after a load or save, the live one
    resign = False  #: the cookie verified with a fallback key: send it signed anew
    touch_due = False  #: the load found the expiry due to be pushed forward
    row_found: bool | None = None  #: None until the store was asked
    regenerate = False  #: the app asked for a new id
    invalidate = False  #: the app asked to end the session
    used_since_save = False  #: touched since the last save (a streaming body's late change)
    #: A stored session existed when the store was first asked (None: not asked yet): ``Session.new``.
    found_at_start: bool | None = None
    expiry: Expiry = None  #: the session's own lifetime, as loaded or as the app set it
    expiry_set = False  #: the app called ``set_expiry()`` since the load or the last save
    #: What :meth:`~pgsession_wsgi.core.SessionCore.check` found, reused by the save if unused since.
    checked: Changes | None = None
    #: What the check raised: the session is not saved at all, the framework answers the error.
    refused: Exception | None = None
    #: A framework that reports the app's exceptions itself (Flask) handles this request: an
    #: exception escaping it was propagated on purpose (``TESTING``, ``DEBUG``).
    reported = False
    #: The framework asked for the save (``save_session``): a change from then on is a late change.
    responded = False
    #: A late change was refused and logged: no late save is tried again (until a save goes through).
    late_refused = False

    def __init__(self, cookie_header: str = "", scheme: str = "http") -> None:
        self.cookie_header = cookie_header
        self.scheme = scheme


@dataclass
class Changes:
    """What a save must send: changed keys as JSON text, removed keys, or a whole replacement.

    :param changed_json: the changed keys (``changed_keys``) and their values, a JSON object.
    :param replace: the session was cleared: the stored object is replaced, not merged into.
    :param empty: the session holds nothing worth storing (at most ``_permanent``).
    :param loaded: the stored data was read: the changes are against it.
    :param values: every key's encoded value when the whole session is known, for :attr:`full_json`.
    """

    changed_json: str
    changed_keys: list[str]
    removed: list[str]
    replace: bool
    empty: bool
    loaded: bool
    values: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def any(self) -> bool:
        """Whether the save has any data to send (else at most a touch of the expiry)."""
        return bool(self.changed_keys or self.removed or self.replace)

    @property
    def full_json(self) -> str | None:
        """The whole session as a JSON object when it is fully known; made only if an insert asks."""
        if self.values is None:
            return None
        return _object_json({key: dumps(value) for key, value in self.values.items()}, list(self.values))


class _Unloaded:
    """The key in an unloaded session's storage, so C code reading it directly never finds it
    empty (``json.dumps`` would answer ``{}``) and calls ``items()``, which loads."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<pgsession_wsgi: session not loaded>"


_UNLOADED: Any = _Unloaded()

# dict's own methods, on the storage, where the session's overrides would track or load again.
_dict_get = dict.get
_dict_values = dict.values
_dict_items = dict.items
_dict_pop = dict.pop
_dict_setdefault = dict.setdefault
_dict_clear = dict.clear


class _SessionLifecycle(dict[str, Any]):
    """The methods of :class:`~pgsession_wsgi.Session` beyond a dict's; its slots are Session's."""

    __slots__ = ()
    accessed: bool
    state: SessionState
    _default_permanent: bool
    _loaded: bool
    _raw: dict[str, Any]
    _encoded: dict[str, Any]
    _cleared: bool
    _mutated: bool
    _differs: bool
    _saved_change: bool
    _assigned: Mapping[str, Any]

    if TYPE_CHECKING:
        # Session's own.
        def _ensure_loaded(self) -> None: ...
        def _written(self) -> dict[str, Any]: ...

    @property
    def id(self) -> str | None:
        """The live session's id (``keep`` in :meth:`PostgresStore.revoke_user`), None for one not
        stored yet; reading it loads the session. Never log it: it is as good as the cookie."""
        state = self.state
        if state.row_found is None:
            self._ensure_loaded()
        return state.session_id if state.row_found else None

    def peek(self, key: str) -> Any:
        """The value under ``key`` without loading (no round trip); None if absent or not loaded yet."""
        return _dict_get(self, key)

    @property
    def loaded(self) -> bool:
        """Whether the data is in memory (reading costs no round trip); True too after :meth:`clear`."""
        return self._loaded

    @property
    def new(self) -> bool:
        """True when no stored session existed for this request (or it had expired); reading it
        loads the session. A first visit stays new to the end of the request, after its save too."""
        self._ensure_loaded()
        state = self.state
        found = state.found_at_start
        return not (state.row_found if found is None else found)

    @property
    def permanent(self) -> bool:
        """Whether the cookie outlives the browser (``Max-Age``) or ends with it; stored as
        ``_permanent``, as Flask does (the middleware's ``permanent`` by default; setting the value
        it already has writes nothing)."""
        return bool(self.get("_permanent", self._default_permanent))

    @permanent.setter
    def permanent(self, value: bool) -> None:
        if self.permanent != bool(value):
            self["_permanent"] = bool(value)

    @property
    def expiry(self) -> timedelta | datetime | None:
        """This session's own lifetime, as :meth:`set_expiry` set it; None: the store's default.
        Reading it loads the session, unless it was set or saved in this request."""
        state = self.state
        if not state.expiry_set and state.row_found is None:  # known once the store was asked
            self._ensure_loaded()
        return state.expiry

    def set_expiry(self, value: timedelta | datetime | None) -> None:
        """Give this session a lifetime of its own ("remember me"), kept across ``regenerate()``.

        The database enforces it, never beyond the middleware's ``absolute_timeout``; a permanent
        session's cookie gets it as ``Max-Age``. Needs no load: a login stays one statement.

        :param value: a positive ``timedelta``: the session ends when unused this long (instead
            of ``idle_timeout``); an aware ``datetime`` in the future: it ends then however
            active it is; None: back to the middleware's timeouts.
        :raises TypeError: ``value`` is none of those types.
        :raises InvalidExpiry: a ``timedelta`` that is not positive or over 100 years, a
            ``datetime`` without a time zone, not in the future, or past year 9999 in UTC.
        """
        value = _checked_expiry(value)
        state = self.state
        self.accessed = state.used_since_save = True
        if state.row_found is not None and not state.expiry_set and value == state.expiry:
            return  # the store was asked, and its lifetime is this one already
        state.expiry = value
        state.expiry_set = True

    @property
    def modified(self) -> bool:
        """Whether the app changed the session in this request; nothing ever needs to set it.

        A value changed (in place too: encoded values are compared) or deleted, :meth:`clear`,
        :meth:`regenerate`, :meth:`invalidate` or :meth:`set_expiry` count; assigning the value a
        key already has does not. It stays True after the save, to the end of the request. Setting
        it (Flask's ``session.modified = True``) is accepted and changes nothing.
        """
        return self._saved_change or self.unsaved

    @modified.setter
    def modified(self, value: bool) -> None:
        self.accessed = self.state.used_since_save = True

    @property
    def unsaved(self) -> bool:
        """Whether a save now would write something (the adapters' test for a late save); apps
        read :attr:`modified`, which a save does not reset."""
        if not self.accessed:
            return False
        state = self.state
        return state.regenerate or state.invalidate or state.expiry_set or self.changes(max_size=None).any

    def regenerate(self) -> None:
        """Keep the data under a new id, so that an id known before (a planted cookie) dies: call it
        at login and on privilege changes; the move is one statement at the save."""
        self.accessed = self.state.used_since_save = True
        self.state.regenerate = True

    def invalidate(self) -> None:
        """End the session (logout): delete the stored row, empty this one, expire the cookie. A
        session started after it in the same request has the default lifetime again."""
        self.clear()
        self._cleared = False
        state = self.state
        state.invalidate = True
        state.regenerate = state.expiry_set = False
        state.expiry = None

    def changes(self, max_size: int | None) -> Changes:
        """What a save must send, encoded once: a loaded session's keys whose encoded form differs
        from what was loaded, or every key a session written without being read was given.

        :param max_size: refuse a session whose JSON is surely larger; None for no check.
        :raises UnstorableValue: a value changed in place since it went in cannot be stored.
        :raises SessionTooLarge: the encoded session is over ``max_size``.
        """
        if self._loaded and not self._mutated and _IMMUTABLE.issuperset(map(type, _dict_values(self))):
            # Read only, and nothing that could have been changed in place: no work at all.
            self._encoded = self._raw
            self._differs = False
            empty = META_KEYS.issuperset(super().keys())
            return Changes("{}", [], [], False, empty, True, self._raw)
        values: dict[str, Any] = {}
        changed: list[str] = []
        assigned = self._assigned
        if self._loaded:
            raw = self._raw
            for key, value in _dict_items(self):
                if key in assigned:
                    enc = values[key] = _encoded(key, value, assigned[key])
                elif type(value) in _IMMUTABLE and key in raw:
                    # Loaded and never assigned: it cannot have changed, its stored form stays.
                    values[key] = raw[key]
                    continue
                else:  # loaded, and may have been changed in place
                    enc = values[key] = _encode(key, value, changed_in_place=True)
                if not same(enc, raw.get(key, _MISSING)):
                    changed.append(key)
            removed = [] if self._cleared else [key for key in raw if key not in values]
        else:  # every key was assigned
            values = {key: _encoded(key, value, assigned[key]) for key, value in self._written().items()}
            changed, removed = list(values), []
        self._encoded = values
        # Loaded: the whole session is empty. Not loaded: nothing was written to it.
        empty = META_KEYS.issuperset(values)
        loaded_values = values if self._loaded else None
        self._differs = differs = bool(changed or removed or self._cleared)
        if not differs:
            return Changes("{}", [], [], False, empty, self._loaded, loaded_values)
        texts = {key: dumps(values[key]) for key in changed}
        if max_size is not None:
            # A lower bound of what the database measures (it prints ", " and ": ") of what this
            # save sends: a session refused here would be refused there too, unsent.
            size = sum(_utf8_length(text) + _utf8_length(key) + 4 for key, text in texts.items()) + 2
            if size > max_size:
                raise SessionTooLarge(size, max_size)
        return Changes(
            _object_json(texts, changed), changed, removed, self._cleared, empty, self._loaded, loaded_values
        )

    def mark_saved(self, session_id: str | None, whole: bool = False) -> None:
        """Make what was just written the new baseline, so a later save sends only what changed;
        the values, :attr:`modified` and :attr:`new` stay for the rest of the request.

        :param session_id: the id the data now lives under; None if no row remains.
        :param whole: the save wrote the whole session (a new row), so a session written blind
            counts as loaded from now on.
        """
        state = self.state
        if self._differs or state.regenerate or state.invalidate or state.expiry_set or self._cleared:
            self._saved_change = True  # ``modified`` stays True to the end of the request
        state.session_id = session_id
        state.regenerate = state.invalidate = state.expiry_set = self._cleared = self._differs = False
        if session_id is None:
            state.expiry = None  # no row keeps it
        state.used_since_save = self._mutated = False
        self._assigned = _NOTHING_ASSIGNED
        if whole and state.found_at_start is None:
            state.found_at_start = False  # the save found no row for it: a first visit
        if not self._loaded and whole:  # a new row holds only what was written: nothing is left to load
            _dict_pop(self, _UNLOADED)
            self._loaded = state.row_found = True
            self._raw = self._encoded
            return
        if self._loaded:
            self._raw = self._encoded if session_id is not None else {}
        else:  # what was written blind is stored with the row's other keys: a later read loads all
            _dict_clear(self)
            _dict_setdefault(self, _UNLOADED)
        state.row_found = session_id is not None
