"""``Session``: the dict an app sees, which loads itself lazily and knows what changed.

Change detection compares each value's encoded form with what was loaded, so a nested change
(``session["cart"].append(x)``) is saved without ``modified = True``, and a request that only
reads is never written back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, Sequence, ValuesView
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, Optional, TypeVar, Union

from .codec import check_key, decode_value, dumps, encode_value, same
from .errors import (
    InvalidExpiry,
    SessionDataError,
    SessionTooLarge,
    UnstorableTypeError,
    UnstorableValueError,
)

__all__ = ["Session"]

log = logging.getLogger("pgsession_wsgi")

_MISSING = object()
_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes})
_NOTHING_ASSIGNED: Mapping[str, Any] = MappingProxyType({})
_REENCODE = object()  # in Session._assigned: a container, encoded again at the save
_NOTHING: dict[str, Any] = {}  # never mutated: the default of what was stored and encoded
#: Keys that alone do not make a session worth storing (Flask writes ``_permanent`` eagerly).
META_KEYS = frozenset({"_permanent"})

#: Fetches the stored data of a session (None: no live row); the adapter supplies it.
Loader = Callable[["Session"], Optional[dict[str, Any]]]
#: A session's own lifetime: an idle timeout (rolling), a fixed end, or None for the store's default.
Expiry = Union[timedelta, datetime, None]


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
_dict_getitem = dict.__getitem__
_dict_setitem = dict.__setitem__
_dict_delitem = dict.__delitem__
_dict_contains = dict.__contains__
_dict_len = dict.__len__
_dict_iter = dict.__iter__
_dict_reversed = dict.__reversed__
_dict_keys = dict.keys
_dict_values = dict.values
_dict_items = dict.items
_dict_pop = dict.pop
_dict_setdefault = dict.setdefault
_dict_popitem = dict.popitem
_dict_clear = dict.clear
_dict_update = dict.update
_dict_eq = dict.__eq__
_dict_repr = dict.__repr__


class Session(dict[str, Any]):
    """The dict an app keeps per user (a ``dict`` subclass): loaded on first use, it finds by
    itself what to save.

    It is a ``dict``: ``isinstance(session, dict)``, ``json.dumps(session)``, Starlette's
    ``JSONResponse(request.session)``, ``jsonify(...)``, ``dict(session)``, ``{**session}``,
    ``session | {...}``, ``session |= {...}`` and every dict method work as on a dict, and each
    of them, Python's C code included, loads the session first: nothing is read from the
    database until the app touches the session. Every change goes through the session, so it is
    found by the save, nested ones included (``session["cart"].append(x)``), and saved per key.

    Where it is not just a dict:

    - keys must be ``str`` (``TypeError`` otherwise), and a value the codec cannot store is
      refused where it goes in (:class:`~pgsession_wsgi.UnstorableValue`, naming the key); an
      ``update()`` or ``|=`` with one stores none of its values;
    - ``copy()``, ``session | other``, ``other | session``, ``fromkeys()``, ``copy.copy()``,
      ``copy.deepcopy()`` and pickling give a plain ``dict`` of the data (as ``dict.copy()`` and
      ``|`` do for any dict subclass): a session belongs to its request and its cookie, so it is
      never copied or pickled as one;
    - :meth:`clear` replaces the stored data as a whole (other keys are merged per key);
    - ``repr()`` is a dict's once the session is loaded, and ``<Session (not loaded)>`` before,
      so that printing or logging a session never queries the database.

    Apps get one from :func:`~pgsession_wsgi.get_session` or
    :data:`~pgsession_wsgi.current_session`; adapters make one with
    :meth:`~pgsession_wsgi.core.SessionCore.open`.

    :param loader: fetches the stored data on first use; None for a session known to be new.
    :param permanent: the default of :attr:`permanent` (the middleware's ``permanent``).
    :param state: the request's :class:`SessionState` (the core makes it); a fresh one if None.
    """

    # Slots, not an instance __dict__: attribute access on a dict subclass's __dict__ is about
    # twice as slow as on a plain object's, and on slots twice as fast, which every request feels.
    __slots__ = {
        "accessed": "The app read or wrote the session: only then is the database touched and a "
        "cookie sent.",
        "state": "The request-scoped :class:`SessionState`: what the core reads and updates.",
        "_loader": None,
        "_default_permanent": None,
        "_loaded": None,
        "_raw": None,  # the stored JSON object, values still encoded
        "_encoded": None,  # every key's encoded value, as the last changes() found them
        "_cleared": None,
        "_mutated": None,  # set, deleted or cleared since the load (nested changes are found apart)
        "_differs": None,  # the last changes() found data to send
        "_saved_change": None,  # a save in this request wrote a change: ``modified`` stays True
        # The keys assigned since the load or the last save, each with its encoding if its value
        # is immutable (checked at the assignment, it serves the save), or _REENCODE for a
        # container (it may change in place: the save encodes it again). Every value goes in
        # through __setitem__ or _store, which keep it up to date.
        "_assigned": None,
        "__weakref__": None,
    }
    accessed: bool
    state: SessionState
    _raw: dict[str, Any]
    _encoded: dict[str, Any]
    _assigned: Mapping[str, Any]

    def __init__(
        self, loader: Loader | None = None, *, permanent: bool = True, state: SessionState | None = None
    ) -> None:
        self._loader = loader
        self._default_permanent = permanent
        self._loaded = loader is None
        self.accessed = self._cleared = self._mutated = self._differs = self._saved_change = False
        # The shared empty defaults are only ever replaced, never mutated.
        self._raw = self._encoded = _NOTHING
        self._assigned = _NOTHING_ASSIGNED
        self.state = state if state is not None else SessionState()
        if loader is None:
            self.state.row_found = self.state.found_at_start = False
        else:
            _dict_setdefault(self, _UNLOADED)  # dict.__setitem__'s wrapper costs more to call

    # -- loading ---------------------------------------------------------------------------

    def _load(self) -> None:
        self.preload(self._loader(self) if self._loader is not None else None)

    def preload(self, raw: dict[str, Any] | None) -> None:
        """Give the session its stored data now, for front ends that cannot load lazily.

        An async front end runs the core's load before the app and hands the row over here;
        the session then counts as loaded but not yet accessed.

        :param raw: the stored JSON object (None: no live row).
        :raises SessionDataError: the row cannot be decoded.
        """
        state = self.state
        state.row_found = raw is not None
        if state.found_at_start is None:
            state.found_at_start = state.row_found
        raw = raw or {}
        decoded = {key: decode_value(value) for key, value in raw.items()}  # SessionDataError
        self._raw = raw
        if not self._loaded and _dict_len(self) == 1:  # only the marker: nothing written yet
            _dict_pop(self, _UNLOADED)  # the table it took stays, for the data
            _dict_update(self, decoded)
        else:  # writes made before the load win
            written = self._written()
            _dict_clear(self)
            _dict_update(self, decoded)
            _dict_update(self, written)
        self._loaded = True

    def _written(self) -> dict[str, Any]:
        """What the storage holds besides the marker of a session not loaded yet."""
        if self._loaded:
            return dict(_dict_items(self))
        return {key: value for key, value in _dict_items(self) if key is not _UNLOADED}

    def _ensure_loaded(self) -> None:
        self.accessed = self.state.used_since_save = True
        if not self._loaded:
            self._load()

    # -- reading, as a dict reads --------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        self.accessed = self.state.used_since_save = True
        if not self._loaded:
            self._load()
        return _dict_getitem(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """As ``dict.get``; loads the session first, as every read does.

        ``default`` may be passed by name too, as the session took it before it was a dict.
        """
        self.accessed = self.state.used_since_save = True
        if not self._loaded:
            self._load()
        return _dict_get(self, key, default)

    def __contains__(self, key: object) -> bool:
        self._ensure_loaded()
        return _dict_contains(self, key)

    def __len__(self) -> int:
        self._ensure_loaded()
        return _dict_len(self)

    def __iter__(self) -> Iterator[str]:
        self._ensure_loaded()
        return _dict_iter(self)

    def __reversed__(self) -> Iterator[str]:
        self._ensure_loaded()
        return _dict_reversed(self)

    def keys(self) -> KeysView[str]:  # type: ignore[override]  # typeshed's dict_keys is private
        """As ``dict.keys`` (a live view); ``dict(session)`` and ``{**session}`` read through it."""
        self._ensure_loaded()
        return _dict_keys(self)

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        """As ``dict.values`` (a live view)."""
        self._ensure_loaded()
        return _dict_values(self)

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        """As ``dict.items`` (a live view); ``json.dumps(session)`` reads through it."""
        self._ensure_loaded()
        return _dict_items(self)

    def copy(self) -> dict[str, Any]:
        """The data as a plain ``dict`` (shallow, as ``dict.copy``): not a session."""
        self._ensure_loaded()
        return dict(_dict_items(self))

    @classmethod
    def fromkeys(cls, iterable: Iterable[Any], value: Any = None, /) -> dict[Any, Any]:
        """A plain ``dict``, as ``dict.fromkeys``: a session belongs to a request."""
        return dict.fromkeys(iterable, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, dict):
            return NotImplemented
        self._ensure_loaded()
        if isinstance(other, Session):
            other._ensure_loaded()
        return _dict_eq(self, other)

    def __ne__(self, other: object) -> bool:
        # dict's own __ne__ would compare the storage of a session not loaded yet.
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None

    def __or__(self, other: object) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, dict):
            return NotImplemented
        merged = self.copy()
        merged.update(other)
        return merged

    def __ror__(self, other: object) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, dict):
            return NotImplemented
        merged = dict(other)
        merged.update(self.copy())
        return merged

    def __reduce__(self) -> tuple[Any, ...]:
        # copy.copy(), copy.deepcopy() and pickle: the data, as a plain dict.
        return (dict, (self.copy(),))

    def __repr__(self) -> str:
        if not self._loaded:
            return "<Session (not loaded)>"
        return _dict_repr(self)

    # -- writing, each way through the session's own tracking ----------------------------------

    def __setitem__(self, key: str, value: Any) -> None:
        if type(key) is not str:
            raise TypeError(f"session keys must be str, not {type(key).__name__}")
        # Refused here, in the view that made the mistake, not at the save: UnstorableValue.
        encoded = _encode(key, value)
        # What _store does, written out: this is every write's path.
        self.accessed = self.state.used_since_save = self._mutated = True
        _dict_setitem(self, key, value)
        assigned = self._assigned
        if assigned is _NOTHING_ASSIGNED:
            self._assigned = assigned = {}
        assigned[key] = encoded if type(value) in _IMMUTABLE else _REENCODE  # type: ignore[index]

    def _store(self, key: str, value: Any, encoded: Any) -> None:
        """Put a value the codec accepted (as ``encoded``) under ``key``."""
        self.accessed = self.state.used_since_save = self._mutated = True
        _dict_setitem(self, key, value)
        assigned = self._assigned
        if assigned is _NOTHING_ASSIGNED:
            self._assigned = assigned = {}
        assigned[key] = encoded if type(value) in _IMMUTABLE else _REENCODE  # type: ignore[index]

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """As ``dict.update``; every value is checked before any is stored, so one the codec
        refuses (:class:`~pgsession_wsgi.UnstorableValue`) leaves the session as it was."""
        given = dict(other, **kwargs)  # dict's own reading of a mapping, pairs and keywords
        checked = [(key, value, _encode(_checked_key(key), value)) for key, value in given.items()]
        for key, value, encoded in checked:
            self._store(key, value, encoded)

    def __ior__(self, other: Any) -> Session:  # type: ignore[override,misc]
        self.update(other)
        return self

    def setdefault(self, key: str, default: Any = None) -> Any:
        """As ``dict.setdefault``; a default the codec refuses is not stored."""
        self._ensure_loaded()
        if _dict_contains(self, key):
            return _dict_getitem(self, key)
        self[key] = default
        return default

    def __delitem__(self, key: str) -> None:
        self._ensure_loaded()
        _dict_delitem(self, key)
        self._mutated = True

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """As ``dict.pop``."""
        self._ensure_loaded()
        if _dict_contains(self, key):
            self._mutated = True
            return _dict_pop(self, key)
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[str, Any]:
        """As ``dict.popitem``: the newest key and its value (``KeyError`` when empty)."""
        self._ensure_loaded()
        item = _dict_popitem(self)
        self._mutated = True
        return item

    def clear(self) -> None:
        """Empty the session; the next save replaces the stored value as a whole."""
        self.accessed = self.state.used_since_save = self._mutated = True
        _dict_clear(self)
        self._raw = {}
        self._loaded = True
        self._cleared = True

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
        :raises InvalidExpiry: a ``timedelta`` that is not positive or ends past year 9999, a
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
        if self._loaded and not self._mutated and all(type(v) in _IMMUTABLE for v in _dict_values(self)):
            # Read only, and nothing that could have been changed in place: no work at all.
            self._encoded = self._raw
            self._differs = False
            empty = all(key in META_KEYS for key in _dict_iter(self))
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
        empty = all(key in META_KEYS for key in values)
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


def _checked_expiry(value: Any) -> Expiry:
    """``value`` if a session can have it as its lifetime; refused here, where the app set it."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise InvalidExpiry(
                f"set_expiry() needs a positive timedelta, not {value!r}: to end the session call "
                "session.invalidate(); for a cookie that ends with the browser set "
                "session.permanent = False"
            )
        try:
            datetime.now(timezone.utc) + value
        except OverflowError:
            raise InvalidExpiry(
                f"set_expiry({value!r}) ends after year 9999: give a shorter lifetime"
            ) from None
        return value
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise InvalidExpiry(
                f"set_expiry() needs an aware datetime, not the naive {value!r} (its time zone "
                "cannot be known): e.g. datetime.now(timezone.utc) + timedelta(days=30)"
            )
        if value <= datetime.now(timezone.utc):
            raise InvalidExpiry(
                f"set_expiry({value.isoformat()}) is not in the future: to end the session call "
                "session.invalidate()"
            )
        if not readable_time(value):
            raise InvalidExpiry(
                f"set_expiry({value.isoformat()}) ends after year 9999 in UTC, which no driver "
                "reads back: give an earlier end"
            )
        return value
    raise TypeError(
        "set_expiry() takes a timedelta (an idle lifetime of its own), an aware datetime (a fixed "
        f"end) or None (the middleware's timeouts), not {type(value).__name__}: e.g. "
        "timedelta(days=30)"
    )


# The first and last instants a datetime holds: psycopg2 reads PostgreSQL's -infinity and
# infinity as these, psycopg 3 refuses both, so neither can stand for a time that was stored.
_FIRST_INSTANT = datetime.min.replace(tzinfo=timezone.utc)
_LAST_INSTANT = datetime.max.replace(tzinfo=timezone.utc)


def readable_time(value: datetime) -> bool:
    """Whether an aware ``value`` is a time both drivers read back as itself.

    That is strictly between the first and the last instant a ``datetime`` holds, in UTC: an end
    at 23:00 on 31 December 9999 at UTC-5 is in year 10000 for the database, which no driver
    reads, and the two instants themselves are what psycopg2 reads ``-infinity`` and
    ``infinity`` as.

    :param value: an aware datetime, as set by an app or as read from a row.
    """
    try:
        utc = value.astimezone(timezone.utc)
    except OverflowError:  # before year 1 or after year 9999 in UTC
        return False
    return _FIRST_INSTANT < utc < _LAST_INSTANT


# -- reading rows: the one rule both stores read a fetched row by ------------------------------

#: What a driver raises turning a row's values into Python ones when the row holds what
#: pgsession-wsgi never writes: JSON it never writes (``ValueError``, ``RecursionError``), a time
#: before year 1 or after year 9999 (psycopg2: ``ValueError``), an interval longer than a
#: ``timedelta`` (psycopg2: ``OverflowError``). A store adds its driver's own error for them.
UNREADABLE_VALUE_ERRORS: tuple[type[Exception], ...] = (ValueError, ArithmeticError, RecursionError)

_Row = TypeVar("_Row", bound=Optional[Sequence[Any]])


@contextmanager
def reading_row(*driver_errors: type[Exception]) -> Iterator[None]:
    """Fetch a row inside, then check it with :func:`checked_row`: a row no driver reads as values
    pgsession-wsgi could have written is a :class:`SessionDataError` (a 500 with one log line).

    Only the fetch belongs inside: the errors caught here are a statement's as well.

    :param driver_errors: what the store's driver raises for such a value besides
        :data:`UNREADABLE_VALUE_ERRORS` (psycopg 3: ``psycopg.DataError``).
    :raises SessionDataError: naming the driver's exception, never the row's data.
    """
    try:
        yield
    except (*UNREADABLE_VALUE_ERRORS, *driver_errors) as exc:
        raise SessionDataError(type(exc).__name__) from None


@contextmanager
def skipping_unreadable_row(*driver_errors: type[Exception]) -> Iterator[None]:
    """As :func:`reading_row`, but such a row is left out (with a warning) instead of failing:
    ``sessions_for_user`` lists the sessions it can read, and ``revoke_user`` still deletes all.

    :param driver_errors: as for :func:`reading_row`.
    """
    try:
        with reading_row(*driver_errors):
            yield
    except SessionDataError as exc:
        log.warning("a session was left out of sessions_for_user: %s", exc)


def checked_row(row: _Row) -> _Row:
    """``row`` as fetched (None too), if each time in it is a :func:`readable_time`.

    psycopg2 reads ``infinity`` and ``-infinity`` as the last and first instants a ``datetime``
    holds, where psycopg 3 raises: refused here, both stores read such a row the same way.

    :param row: a fetched row.
    :raises ValueError: a time in it is no time pgsession-wsgi writes; inside :func:`reading_row`,
        a :class:`SessionDataError`.
    """
    if row is not None:
        for value in row:
            if isinstance(value, datetime) and not readable_time(value):
                raise ValueError("a stored time is at or past the end of year 9999 or at year 1")
    return row


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _encode(key: str, value: Any, changed_in_place: bool = False) -> Any:
    """``value`` as the save stores it; refused with the key named and what to do instead.

    :param changed_in_place: the save found it: it was storable when it went in, so it was
        changed in place since (``session[key].append(...)``), which the message says.
    :raises UnstorableTypeError: a type the codec does not know (or a dict key not a str).
    :raises UnstorableValueError: a value that would not read back as itself (NaN...).
    """
    try:
        check_key(key)
        return encode_value(value)
    except TypeError as exc:
        raise UnstorableTypeError(
            f"{_where(key, changed_in_place)} cannot be stored: {exc}. Store plain data (str, int, "
            "float, bool, None, list, dict with str keys, tuple, datetime, date, time, bytes, UUID, "
            "Decimal, Markup) instead, or teach the codec your type",
            key,
        ) from None
    except ValueError as exc:
        raise UnstorableValueError(
            f"{_where(key, changed_in_place)} cannot be stored: {exc}. Store a value that reads "
            "back as itself instead (e.g. None rather than NaN, a str for a huge number, flatter "
            "data)",
            key,
        ) from None


def _checked_key(key: Any) -> str:
    """``key`` if a session can have it: a ``str`` (as in JSON); ``TypeError`` otherwise."""
    if type(key) is not str:
        raise TypeError(f"session keys must be str, not {type(key).__name__}")
    return key


def _encoded(key: str, value: Any, checked: Any) -> Any:
    """``value`` as the save stores it: its encoding as checked at the assignment (``checked``),
    or, for a container (``_REENCODE``), encoded anew: it may have changed in place."""
    if checked is _REENCODE:
        return _encode(key, value, changed_in_place=True)
    return checked


def _where(key: str, changed_in_place: bool) -> str:
    if changed_in_place:
        return f"the session value under key {key!r}, changed in place since it went in,"
    return f"the session value under key {key!r}"


def _object_json(encoded: dict[str, str], keys: list[str]) -> str:
    return "{" + ",".join(f"{dumps(key)}:{encoded[key]}" for key in keys) + "}"
