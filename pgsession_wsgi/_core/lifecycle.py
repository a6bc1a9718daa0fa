"""A session's life in its request beyond the dict: the request-scoped facts about it
(:class:`SessionState`), what a save must send (:class:`Changes`), and the ``Session`` methods that
read and change them (its id, its lifetime, ``regenerate``/``invalidate``, the change tracking).

Apart from :mod:`pgsession_wsgi.session`, which keeps the dict protocol every request runs, so that
each reads on its own; ``Session`` inherits these methods, and that module imports every name here
back, where apps and the docs find them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..codec import dumps, same
from ..errors import SessionTooLarge
from .checks import _REENCODE, Expiry, _checked_expiry, _encode, _encoded, _object_json, _utf8_length

_MISSING = object()
_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes})
_NOTHING_ASSIGNED: Mapping[str, Any] = MappingProxyType({})
#: Keys that alone do not make a session worth storing (Flask writes ``_permanent`` eagerly).
META_KEYS = frozenset({"_permanent"})


class SessionState:
    """The request-scoped facts about a session: what its cookie said and what was asked of it.

    The session id lives here and nowhere else. :mod:`pgsession_wsgi.core` reads and updates
    these fields; apps read the session through its mapping and properties instead.

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
    #: Whether a stored session existed when the store was first asked in this request (None: not
    #: asked yet). ``Session.new`` answers from it, so a first visit stays new after its save.
    found_at_start: bool | None = None
    expiry: Expiry = None  #: the session's own lifetime, as loaded or as the app set it
    expiry_set = False  #: the app called ``set_expiry()`` since the load or the last save
    #: What :meth:`~pgsession_wsgi.core.SessionCore.check` found a save must send, for the save to
    #: reuse unless the session was used since (``used_since_save``).
    checked: Changes | None = None
    #: What the check raised: the session is not saved at all, the framework answers the error.
    refused: Exception | None = None
    #: A framework that reports the app's exceptions itself (Flask) handles this request: an
    #: exception escaping it was propagated on purpose (``TESTING``, ``DEBUG``).
    reported = False
    #: The framework made the response and asked for its save (Flask's and Quart's
    #: ``save_session``): a change from then on (``teardown_request``) is a late change. Never set
    #: for a request whose exception went past the framework's error handling: nothing is saved.
    responded = False
    #: A late change was refused (it needs a new cookie), and the adapter said so: no late save
    #: is tried again, so one line tells it however many late points follow (a teardown, then
    #: the end of a streamed body). A save that goes through (a websocket's) clears it.
    late_refused = False

    def __init__(self, cookie_header: str = "", scheme: str = "http") -> None:
        self.cookie_header = cookie_header
        self.scheme = scheme


@dataclass
class Changes:
    """What a save must send: changed keys as JSON text, removed keys, or a whole replacement.

    :param changed_json: the changed keys and their values, a JSON object.
    :param changed_keys: the names of those keys.
    :param removed: keys deleted since the load.
    :param replace: the session was cleared: the stored object is replaced, not merged into.
    :param empty: the session holds nothing worth storing (at most ``_permanent``).
    :param loaded: the stored data was read: the changes are against it.
    :param values: every key's encoded value, when the whole session is known (a loaded
        session): :attr:`full_json` is made from it only if a save asks (an insert).
    """

    changed_json: str
    changed_keys: list[str]
    removed: list[str]
    replace: bool
    empty: bool
    loaded: bool  # the stored data was read: the changes are against it
    values: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def any(self) -> bool:
        """Whether the save has any data to send (else at most a touch of the expiry)."""
        return bool(self.changed_keys or self.removed or self.replace)

    @property
    def full_json(self) -> str | None:
        """The whole session as a JSON object, when it is fully known (a loaded session).

        Only an insert needs it (a loaded session whose row is gone), so it is written only then.
        """
        if self.values is None:
            return None
        return _object_json({key: dumps(value) for key, value in self.values.items()}, list(self.values))


class _Unloaded:
    """The one key a session that is not loaded yet holds in its dict storage, besides writes.

    C code reads a dict subclass's storage directly in places: ``json.dumps`` answers ``{}`` for
    an empty one without asking anything. A session not loaded yet is never empty there, so such
    code goes on to ``items()``, which loads it. It is not a ``str``, so no session key is ever it.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<pgsession_wsgi: session not loaded>"


_UNLOADED: Any = _Unloaded()

# dict's own methods, on the storage, where the session's overrides would track or load again.
_dict_get = dict.get
_dict_iter = dict.__iter__
_dict_values = dict.values
_dict_items = dict.items
_dict_pop = dict.pop
_dict_setdefault = dict.setdefault
_dict_clear = dict.clear


class _SessionLifecycle(dict[str, Any]):
    """The methods of :class:`~pgsession_wsgi.Session` beyond a dict's: its id and lifetime, what
    the app asked of it (:meth:`regenerate`, :meth:`invalidate`) and what changed for the save.

    A base class with no slots of its own: the instance is a ``Session``, whose ``__slots__`` hold
    every attribute named below, and which loads itself (the two methods declared below).
    """

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
        # Session's: load the stored data on first use; what was written before the load.
        def _ensure_loaded(self) -> None: ...
        def _written(self) -> dict[str, Any]: ...

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def id(self) -> str | None:
        """The live session's id, e.g. for ``keep`` in :meth:`PostgresStore.revoke_user`.

        None for a session not stored yet; reading it loads the session. The id is as good as
        the cookie: never log it.
        """
        state = self.state
        if state.row_found is None:
            self._ensure_loaded()
        return state.session_id if state.row_found else None

    def peek(self, key: str) -> Any:
        """The value under ``key`` without loading, for code that must not cost a round trip.

        :param key: a session key.
        :returns: the value if it is in memory; None if absent or not loaded yet.
        """
        return _dict_get(self, key)

    @property
    def loaded(self) -> bool:
        """Whether the data is in memory, so that reading a key costs no round trip.

        True also when no stored session exists, or after :meth:`clear`.
        """
        return self._loaded

    @property
    def new(self) -> bool:
        """True when no stored session existed for this request (or it had expired).

        Tells a first visit from a returning one; reading it loads the session. It keeps its
        answer to the end of the request: a first visit is still new after its save stored it
        (in Flask's ``teardown_request``, after ``with client:``).
        """
        self._ensure_loaded()
        state = self.state
        found = state.found_at_start
        return not (state.row_found if found is None else found)

    @property
    def permanent(self) -> bool:
        """Whether the cookie outlives the browser (``Max-Age``) or ends with it.

        Stored in the session as ``_permanent``, as Flask does; the default is the middleware's
        ``permanent``. Setting the value it already has writes nothing.
        """
        return bool(self.get("_permanent", self._default_permanent))

    @permanent.setter
    def permanent(self, value: bool) -> None:
        if self.permanent != bool(value):
            self["_permanent"] = bool(value)

    @property
    def expiry(self) -> timedelta | datetime | None:
        """This session's own lifetime, as :meth:`set_expiry` set it; None: the store's default.

        A ``timedelta`` is an idle timeout of its own (rolling), a ``datetime`` a fixed end.
        Reading it loads the session, unless it was set or saved in this request.
        """
        state = self.state
        if not state.expiry_set and state.row_found is None:  # known once the store was asked
            self._ensure_loaded()
        return state.expiry

    def set_expiry(self, value: timedelta | datetime | None) -> None:
        """Give this session a lifetime of its own ("remember me"), kept across ``regenerate()``.

        The database enforces it with its own clock, as it does the default, and never beyond
        the middleware's ``absolute_timeout``. A permanent session's cookie gets it as
        ``Max-Age``; the save re-sends the cookie. Needs no load: a login stays one statement.

        :param value: a positive ``timedelta``: the session ends when unused this long (instead
            of ``idle_timeout``); an aware ``datetime`` in the future: it ends then however
            active it is (no idle expiry); None: back to the middleware's timeouts.
        :raises TypeError: ``value`` is none of those types.
        :raises InvalidExpiry: a ``timedelta`` that is not positive or over 100 years, a
            ``datetime`` without a time zone, one not in the future, or one past year 9999 in
            UTC (the last microsecond of 9999 included: psycopg2 reads ``infinity`` as it).
        """
        value = _checked_expiry(value)
        state = self.state
        self.accessed = state.used_since_save = True
        known = state.row_found is not None  # the store was asked: the stored lifetime is in state
        if known and not state.expiry_set and value == state.expiry:
            return  # the stored lifetime already: nothing to write
        state.expiry = value
        state.expiry_set = True

    @property
    def modified(self) -> bool:
        """Whether the app changed the session in this request; nothing ever needs to set it.

        A value set to another one, changed in place, deleted, :meth:`clear`, :meth:`regenerate`,
        :meth:`invalidate` or a new lifetime (:meth:`set_expiry`) count; assigning the value a
        key already has does not. Changes are found by comparing encoded values, so
        ``session["cart"].append(x)`` counts. As in Flask, it stays True once the session is
        saved, to the end of the request (``teardown_request``, ``with client:``).

        Setting it (Flask's ``session.modified = True`` idiom) is accepted and changes nothing:
        there is no change a comparison would miss; and ``False`` drops no change.
        """
        return self._saved_change or self.unsaved

    @modified.setter
    def modified(self, value: bool) -> None:
        self.accessed = self.state.used_since_save = True

    @property
    def unsaved(self) -> bool:
        """Whether a save now would write something: what changed since the load or the last
        save in this request. The adapters' test for a late save (a change made after the
        response started); apps read :attr:`modified`, which a save does not reset.
        """
        if not self.accessed:
            return False
        state = self.state
        return state.regenerate or state.invalidate or state.expiry_set or self.changes(max_size=None).any

    def regenerate(self) -> None:
        """Keep the data under a new id, so that an id known before (a planted cookie) dies.

        Call it at login and on privilege changes; the move is one statement at the save.
        """
        self.accessed = self.state.used_since_save = True
        self.state.regenerate = True

    def invalidate(self) -> None:
        """End the session (logout): delete the stored row, empty this one, expire the cookie.

        A session started after it in the same request has the default lifetime again.
        """
        self.clear()
        self._cleared = False
        state = self.state
        state.invalidate = True
        state.regenerate = state.expiry_set = False
        state.expiry = None

    # -- for the core ----------------------------------------------------------------------

    def changes(self, max_size: int | None) -> Changes:
        """What a save must send, encoded once: the core builds its statement from it.

        A loaded session compares each value's encoded form with what was loaded, so assigning
        an equal value writes nothing; a session written without being read sends every key
        it was given.

        :param max_size: refuse a session whose JSON is surely larger; None for no check.
        :raises UnstorableValue: a value changed in place since it went in cannot be stored
            (the message names the key); one assigned so was refused at the assignment.
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
                    enc = assigned[key]  # as checked at the assignment, unless a container
                    if enc is _REENCODE:
                        enc = _encode(key, value, changed_in_place=True)
                    values[key] = enc
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
            # A lower bound of what the database measures (it prints ", " and ": "), so a session
            # refused here would be refused there too, and without sending it. It counts what
            # this save sends: the database measures the merged row in the write itself.
            size = sum(_utf8_length(text) + _utf8_length(key) + 4 for key, text in texts.items()) + 2
            if size > max_size:
                raise SessionTooLarge(size, max_size)
        return Changes(
            changed_json=_object_json(texts, changed),
            changed_keys=changed,
            removed=removed,
            replace=self._cleared,
            empty=empty,
            loaded=self._loaded,
            values=loaded_values,
        )

    def mark_saved(self, session_id: str | None, whole: bool = False) -> None:
        """Make what was just written the new baseline, so a later save sends only what changed.

        Called by the core after each save: a streaming body may change the session again
        (:attr:`unsaved` then says so). The values stay for the rest of the request (teardown, a
        streamed body, a test client), and so do :attr:`modified` and :attr:`new`, which
        describe the whole request.

        :param session_id: the id the data now lives under; None if no row remains.
        :param whole: the save wrote the whole session (a new row): what is in memory is all
            the row holds, so a session written blind counts as loaded from now on.
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
        if not self._loaded and whole:
            # A new row holds what was written and nothing else: nothing is left to load (an
            # async front end could not load it later, and its values must stay readable).
            _dict_pop(self, _UNLOADED)
            self._loaded = True
            state.row_found = True
            self._raw = self._encoded
            return
        if not self._loaded:
            # What was written blind is stored with the row's other keys; a later read loads
            # them all.
            _dict_clear(self)
            _dict_setdefault(self, _UNLOADED)
        elif session_id is not None:
            self._raw = self._encoded
        else:
            self._raw = {}
        state.row_found = session_id is not None
