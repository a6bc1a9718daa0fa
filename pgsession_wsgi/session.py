"""``Session``: the dict an app sees, which loads itself lazily and knows what changed.

Change detection compares each value's encoded form with what was loaded, so a nested change
(``session["cart"].append(x)``) is saved without ``modified = True``, and a request that only
reads is never written back. The dict protocol is here; the lifecycle, change tracking and checks
are in ``pgsession_wsgi._core``, and importable from here.
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, ValuesView
from typing import Any, Optional

from ._core.checks import _REENCODE, _checked_key, _encode
from ._core.checks import UNREADABLE_VALUE_ERRORS as UNREADABLE_VALUE_ERRORS
from ._core.checks import Expiry as Expiry
from ._core.checks import checked_row as checked_row
from ._core.checks import readable_time as readable_time
from ._core.checks import reading_row as reading_row
from ._core.checks import skipping_unreadable_row as skipping_unreadable_row
from ._core.lifecycle import _IMMUTABLE, _NOTHING_ASSIGNED, _UNLOADED, _SessionLifecycle
from ._core.lifecycle import _MISSING as _MISSING
from ._core.lifecycle import META_KEYS as META_KEYS
from ._core.lifecycle import Changes as Changes
from ._core.lifecycle import SessionState as SessionState
from .codec import decode_value

__all__ = ["Session"]

_NOTHING: dict[str, Any] = {}  # never mutated: the default of what was stored and encoded

#: Fetches the stored data of a session (None: no live row); the adapter supplies it.
Loader = Callable[["Session"], Optional[dict[str, Any]]]

# dict's own methods, on the storage, where the session's overrides would track or load again.
_dict_get = dict.get
_dict_getitem = dict.__getitem__
_dict_setitem = dict.__setitem__
_dict_delitem = dict.__delitem__
_dict_contains = dict.__contains__
_dict_len = dict.__len__
_dict_iter = dict.__iter__
_dict_keys = dict.keys
_dict_values = dict.values
_dict_items = dict.items
_dict_pop = dict.pop
_dict_setdefault = dict.setdefault
_dict_clear = dict.clear
_dict_update = dict.update


# dict is named again, after the private base (a dict too), for the reference to show it as the base.
class Session(_SessionLifecycle, dict[str, Any]):
    """The dict an app keeps per user: loaded on first use, it finds by itself what to save.

    It is a ``dict``, and every dict operation (Python's C code's too) loads it first: nothing is
    read from the database until the app touches it. Where it is not just a dict:

    - keys must be ``str``, and a value the codec cannot store is refused where it goes in
      (:class:`~pgsession_wsgi.UnstorableValue`, naming the key; an ``update()`` then stores none);
    - ``copy()``, ``|``, ``fromkeys()``, ``copy.copy()``, ``copy.deepcopy()`` and pickling give a
      plain ``dict`` of the data: a session belongs to its request and cookie;
    - :meth:`clear` replaces the stored data as a whole (other changes are merged per key);
    - ``repr()`` of a session not loaded is ``<Session (not loaded)>``, never a query.

    Apps get one from :func:`~pgsession_wsgi.get_session` or
    :data:`~pgsession_wsgi.current_session`; adapters make one with
    :meth:`~pgsession_wsgi.core.SessionCore.open`.

    :param loader: fetches the stored data on first use; None for a session known to be new.
    :param permanent: the default of :attr:`permanent` (the middleware's ``permanent``).
    :param state: the request's :class:`SessionState` (the core makes it); a fresh one if None.
    """

    # Slots: attributes in a dict subclass's __dict__ are slow to reach, and every request reaches them.
    __slots__ = {
        "accessed": "The app read or wrote the session: only then is the database touched, a cookie sent.",
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
        # The keys assigned since the load or the last save: each with its encoding if immutable,
        # else _REENCODE (a container may change in place: the save encodes it again).
        "_assigned": None,
        "__weakref__": None,
    }

    def __init__(
        self, loader: Loader | None = None, *, permanent: bool = True, state: SessionState | None = None
    ) -> None:
        self._loader = loader
        self._default_permanent = permanent
        self._loaded = loader is None
        self.accessed = self._cleared = self._mutated = self._differs = self._saved_change = False
        self._raw = self._encoded = _NOTHING
        self._assigned = _NOTHING_ASSIGNED
        self.state = state if state is not None else SessionState()
        if loader is None:
            self.state.row_found = self.state.found_at_start = False
        else:
            _dict_setdefault(self, _UNLOADED)  # dict.__setitem__'s wrapper costs more to call

    def _load(self) -> None:
        self.preload(self._loader(self) if self._loader is not None else None)

    def preload(self, raw: dict[str, Any] | None) -> None:
        """Give the session its stored data now (``raw``, None for no live row), for front ends
        that cannot load lazily (async); it then counts as loaded but not yet accessed.

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

    def __getitem__(self, key: str) -> Any:
        self.accessed = self.state.used_since_save = True
        if not self._loaded:
            self._load()
        return _dict_getitem(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """As ``dict.get`` (``default`` may be passed by name too); loads the session first."""
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
        return dict.__reversed__(self)

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
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        # dict's own __ne__ would compare the storage of a session not loaded yet.
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None

    def __or__(self, other: object) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, dict):
            return NotImplemented
        return {**self.copy(), **other}

    def __ror__(self, other: object) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, dict):
            return NotImplemented
        return {**other, **self.copy()}

    def __reduce__(self) -> tuple[Any, ...]:
        # copy.copy(), copy.deepcopy() and pickle: the data, as a plain dict.
        return (dict, (self.copy(),))

    def __repr__(self) -> str:
        if not self._loaded:
            return "<Session (not loaded)>"
        return dict.__repr__(self)

    def __setitem__(self, key: str, value: Any) -> None:
        if type(key) is not str:
            raise TypeError(f"session keys must be str, not {type(key).__name__}")
        # Refused here, in the view that made the mistake, not at the save: UnstorableValue.
        encoded = _encode(key, value)
        # What update() does, written out: this is every write's path.
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
        if not checked:
            return
        self.accessed = self.state.used_since_save = self._mutated = True
        assigned = self._assigned
        if assigned is _NOTHING_ASSIGNED:
            self._assigned = assigned = {}
        for key, value, encoded in checked:
            _dict_setitem(self, key, value)
            assigned[key] = encoded if type(value) in _IMMUTABLE else _REENCODE  # type: ignore[index]

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
        item = dict.popitem(self)
        self._mutated = True
        return item

    def clear(self) -> None:
        """Empty the session; the next save replaces the stored value as a whole."""
        self.accessed = self.state.used_since_save = self._mutated = True
        _dict_clear(self)
        self._raw = {}
        self._loaded = True
        self._cleared = True
