"""Mixins of ``SessionStore`` on the core's session, with Django's meanings: mapping, flags, expiry."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone as django_timezone

if TYPE_CHECKING:
    from ..session import Session
    from ._runtime import Runtime

from ..errors import SessionError
from ..session import _MISSING  # the session's own "no default given"
from ._runtime import current_runtime


class MappingMethods:
    """The session as a mapping, as ``SessionBase`` offers it, on the core's session."""

    if TYPE_CHECKING:
        _data: Session

        @property
        def _session(self) -> Session: ...

    def __contains__(self, key: object) -> bool:
        return key in self._session

    def __getitem__(self, key: str) -> Any:
        return self._session[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._session[key] = value

    def __delitem__(self, key: str) -> None:
        del self._session[key]

    def get(self, key: str, default: Any = None) -> Any:
        """As ``dict.get``; loads the session first."""
        return self._session.get(key, default)

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """As ``SessionBase.pop``: ``dict.pop``, ``default`` also by name."""
        return self._session.pop(key, default)

    def setdefault(self, key: str, value: Any) -> Any:
        """As ``dict.setdefault``."""
        return self._session.setdefault(key, value)

    def update(self, dict_: Any) -> None:
        """As ``dict.update``; a value the codec refuses stores none of them."""
        self._session.update(dict_)

    def has_key(self, key: str) -> bool:
        """Whether ``key`` is in the session."""
        return key in self._session

    def keys(self) -> Any:
        """As ``dict.keys``."""
        return self._session.keys()

    def values(self) -> Any:
        """As ``dict.values``."""
        return self._session.values()

    def items(self) -> Any:
        """As ``dict.items``."""
        return self._session.items()

    def clear(self) -> None:
        """Empty the session (no load); the save then ends it: the row goes, the cookie too."""
        self._data.clear()


class ExpiryMethods:
    """``set_expiry`` and the ``get_expiry_*`` methods, on the core's session's own expiry."""

    if TYPE_CHECKING:
        _data: Session
        _runtime: Runtime

        def _ending(self) -> bool: ...
        def get_session_cookie_age(self) -> int: ...

    def set_expiry(self, value: Any) -> None:
        """Set the lifetime, as Django means it: seconds of inactivity (an ``int``), a fixed end
        (a ``datetime``, or a ``timedelta`` from now), 0 to end with the browser, None for the default.

        :raises InvalidExpiry: an end that is not in the future, or a negative number of seconds.
        """
        data = self._data
        data.accessed = True
        if value is None:
            data.set_expiry(None)
            data.pop("_permanent", None)
            return
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
            data.set_expiry(None)
            data["_permanent"] = False
            return
        if isinstance(value, timedelta):
            value = django_timezone.now() + value
        if isinstance(value, datetime):
            if value.utcoffset() is None:
                value = django_timezone.make_aware(value)
            data.set_expiry(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            data.set_expiry(timedelta(seconds=value))
        else:
            raise TypeError(
                "set_expiry() takes seconds (an int), a datetime, a timedelta, 0 or None, "
                f"not {type(value).__name__}"
            )
        if current_runtime().expire_at_browser_close:  # the setting now, as Django reads it
            data["_permanent"] = True
        else:
            data.pop("_permanent", None)

    def get_expiry_age(self, **kwargs: Any) -> int:
        """Seconds until the session expires (Django's meaning; ``modification`` and ``expiry``
        as Django takes them). 0 for a session the save will end (emptied)."""
        if "expiry" in kwargs:
            return super().get_expiry_age(**kwargs)  # type: ignore[misc,no-any-return]
        if self._ending():
            return 0
        expiry = self._data.expiry
        if isinstance(expiry, datetime):
            modification = kwargs.get("modification") or django_timezone.now()
            delta = expiry - modification
            return int(delta.days * 86400 + delta.seconds)
        if isinstance(expiry, timedelta):
            return int(expiry.total_seconds())
        return int(self.get_session_cookie_age())

    def get_expiry_date(self, **kwargs: Any) -> datetime:
        """When the session expires if unused (Django's meaning and keywords)."""
        if "expiry" in kwargs:
            return super().get_expiry_date(**kwargs)  # type: ignore[misc,no-any-return]
        expiry = self._data.expiry
        if isinstance(expiry, datetime):
            return expiry
        modification = kwargs.get("modification") or django_timezone.now()
        seconds = expiry.total_seconds() if isinstance(expiry, timedelta) else self.get_session_cookie_age()
        return modification + timedelta(seconds=seconds)  # type: ignore[no-any-return]

    def get_expire_at_browser_close(self) -> bool:
        """Whether the cookie ends with the browser: ``set_expiry(0)``, or
        ``SESSION_EXPIRE_AT_BROWSER_CLOSE`` when the session has no lifetime of its own."""
        if self._ending():
            return False  # the cookie goes out with Max-Age=0
        permanent = self._data.get("_permanent")
        if permanent is None:  # the setting as it is now, as Django reads it (override_settings)
            return bool(current_runtime().expire_at_browser_close)
        return not permanent


class FlagMethods:
    """Django's ``accessed`` and ``modified``, read from the core's session (what the save will write)."""

    if TYPE_CHECKING:
        _data: Session
        _runtime: Runtime
        _save_requested: bool
        _moved: bool

    @property
    def accessed(self) -> bool:
        """The request read or wrote the session (Django then adds ``Vary: Cookie``)."""
        return self._data.accessed

    @accessed.setter
    def accessed(self, value: bool) -> None:
        self._data.accessed = bool(value)

    @property
    def modified(self) -> bool:
        """Whether the session must be saved: a change the save will write (found by comparing
        values, so a change in place counts), a new lifetime, a new id, or ``modified = True``."""
        data = self._data
        if self._save_requested or self._moved:
            return True
        if not data.accessed:
            return False
        state = data.state
        self._runtime.core.read_cookie(state)
        try:
            return state.resign or data.modified
        except SessionError:
            return True  # a value the save will refuse: the save reports it

    @modified.setter
    def modified(self, value: bool) -> None:
        # True asks for a save (Django's idiom after a change in place, found anyway); False drops none.
        self._save_requested = bool(value)
        if value:
            self._data.accessed = True
