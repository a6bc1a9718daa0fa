"""The engine's ``SessionStore``: Django's ``SessionBase`` on the core's session, keyed by the cookie."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError

from ..codec import decode_value, dumps, encode_value
from ..cookies import hash_session_id, new_session_id, prefixed_id
from ..core import expiry_columns, run
from ..errors import SessionError
from ..session import META_KEYS, Session
from ._async_methods import AsyncMethods
from ._moving import derived_id, move_django_session
from ._runtime import current_runtime
from ._session_store_parts import ExpiryMethods, FlagMethods, MappingMethods
from ._store import DJANGO_KEY

# The scheme the core is told: only for the Secure flag of a cookie it would write (Django's writes it).
_SCHEME = "https"


class SessionStore(MappingMethods, FlagMethods, ExpiryMethods, AsyncMethods, SessionBase):  # type: ignore[misc]  # no django-stubs
    """Django's session store, on the pgsession-wsgi table; Django's SessionMiddleware uses it.

    ``SessionBase``'s API with Django's meanings (exceptions in ``docs/django.md``), over a
    :class:`pgsession_wsgi.Session` loaded on first use and saved per changed key.

    :param session_key: the session cookie's value; None for a new session.
    """

    def __init__(self, session_key: str | None = None) -> None:
        runtime = current_runtime()
        self._runtime = runtime
        self._save_requested = False
        self._moved = False
        self._legacy_key: str | None = None
        header = ""
        if isinstance(session_key, str) and session_key:
            if runtime.move_django_sessions and DJANGO_KEY.fullmatch(session_key):
                self._legacy_key = session_key
            elif session_key.isascii() and session_key.isprintable() and not set(session_key) & set(";, "):
                header = f"{runtime.core.cookie.name}={session_key}"
        self._data: Session = runtime.core.open(header, _SCHEME, self._load_data)
        super().__init__(session_key)

    def _load_data(self, session: Session) -> dict[str, Any] | None:
        """The core's load, then an old Django session's move when the cookie is one."""
        runtime = self._runtime
        raw = run(runtime.core.load(session), runtime.store.execute)
        if raw is not None or self._legacy_key is None:
            return raw
        state = session.state
        state.session_id = derived_id(runtime, self._legacy_key)
        raw = run(runtime.core.load(session), runtime.store.execute)  # moved by an earlier request
        if raw is None:
            state.session_id = derived_id(runtime, self._legacy_key)
            raw = move_django_session(runtime, session, self._legacy_key)
        if raw is None:
            state.session_id = None
            return None
        self._moved = True  # the cookie must change to the new, signed one
        return raw

    def _get_session(self, no_load: bool = False) -> Session:
        self._data.accessed = True
        return self._data

    _session = property(_get_session)

    async def _aget_session(self, no_load: bool = False) -> Session:
        data = self._data
        if not data.loaded:
            await sync_to_async(len)(data)  # loads it, in a thread: the store is psycopg2's
        data.accessed = True
        return data

    @property
    def _session_cache(self) -> Session:
        """The data, once loaded (AttributeError before, as in Django)."""
        if not self._data.loaded:
            raise AttributeError("_session_cache")
        return self._data

    @_session_cache.setter
    def _session_cache(self, value: Mapping[str, Any]) -> None:
        # Django's base puts a new dict; the tracked session is refilled, so the save knows what changed.
        if value is self._data:
            return
        items = dict(value)
        self._data.clear()
        self._data.update(items)

    @property
    def session_key(self) -> str | None:
        """The cookie's value: the live session's signed id; None when there is none."""
        state = self._data.state
        runtime = self._runtime
        runtime.core.read_cookie(state)
        session_id = state.session_id
        if session_id is None:
            return None
        return runtime.core.signer.sign(session_id[len(runtime.id_head) :])

    def _ending(self) -> bool:
        """The app emptied a stored session: its save deletes the row and expires the cookie."""
        data = self._data
        if not data.accessed or not data.loaded or data.state.session_id is None:
            return False
        try:
            return data.changes(None).empty and data.state.row_found is not False
        except SessionError:
            return False

    def is_empty(self) -> bool:
        """Whether there is neither a key nor data (Django then sends no cookie, or deletes it); no query."""
        data = self._data
        if not data.accessed:
            return not self._session_key
        try:
            if not data.changes(None).empty:
                return False
        except SessionError:
            return False
        if not data.loaded:  # nothing written, nothing read: the cookie decides, as in Django
            return not self._session_key
        return self.session_key is None

    def _run_save(self) -> None:
        data = self._data
        runtime = self._runtime
        data.accessed = True
        runtime.core.read_cookie(data.state)
        before = data.state.session_id
        try:
            ending = data.loaded and data.changes(None).empty
        except SessionError:
            ending = False
        invalidating = data.state.invalidate
        run(runtime.core.save(data), runtime.store.execute)
        self._save_requested = self._moved = False
        if before is not None and data.state.session_id is None and not ending and not invalidating:
            # The row went away meanwhile (a logout in another request): not brought back.
            raise UpdateError

    def save(self, must_create: bool = False) -> None:
        """Save what changed, merged per key into the stored row; an emptied session is deleted.

        A session never stored gets a new id (:attr:`session_key` changes).

        :param must_create: store a new session; :class:`CreateError` if the key has a live row.
        :raises UpdateError: the row was deleted meanwhile (a concurrent logout); Django's
            middleware answers ``SessionInterrupted``.
        """
        data = self._data
        if must_create and self.session_key is not None and self.exists(self.session_key):
            raise CreateError
        if not data.loaded:
            len(data)  # Django's save loads: the touch of SESSION_SAVE_EVERY_REQUEST needs the row
        if self.session_key is None and not data.changes(None).changed_keys:
            self.create()
            return
        self._run_save()

    def create(self) -> None:
        """Store the session now under a new id, with the data it holds (maybe none)."""
        runtime = self._runtime
        old = self._data
        items = old.copy() if old.accessed or old.loaded else {}
        self._legacy_key = None  # the new session has nothing to move in
        expiry = old.state.expiry
        new = runtime.core.open("", _SCHEME, self._load_data)
        new.update(items)
        if expiry is not None:
            new.set_expiry(expiry)
        if items and not all(name in META_KEYS for name in items):
            self._data = new
            self._run_save()
        else:
            session_id = runtime.id_head + new_session_id()
            policy = runtime.core.policy
            idle_timeout, ends_at = expiry_columns(expiry)
            runtime.store.insert(
                hash_session_id(session_id),
                dumps({name: encode_value(v) for name, v in items.items()}),
                None,
                policy.idle_timeout,
                policy.absolute_timeout,
                policy.max_size,
                idle_timeout=idle_timeout,
                ends_at=ends_at,
            )
            new.state.session_id = session_id
            new.state.cookie_read = True
            new.preload({name: encode_value(v) for name, v in items.items()})
            new.state.expiry_set = False  # stored with the row
            self._data = new
        self._save_requested = True

    def exists(self, session_key: str | None) -> bool:
        """Whether ``session_key`` (a cookie value) opens a live session."""
        if not session_key:
            return False
        runtime = self._runtime
        if runtime.move_django_sessions and DJANGO_KEY.fullmatch(session_key):
            moved = derived_id(runtime, session_key)
            if runtime.store.load(hash_session_id(moved), runtime.core.policy.touch_interval) is not None:
                return True
            return runtime.store.find_django_session(session_key) is not None
        id_hash = self._hash_of(session_key)
        return (
            id_hash is not None
            and runtime.store.load(id_hash, runtime.core.policy.touch_interval) is not None
        )

    def _hash_of(self, session_key: str) -> bytes | None:
        runtime = self._runtime
        verified = runtime.core.signer.unsign(session_key)
        if verified is None:
            return None
        return hash_session_id(prefixed_id(verified[0], runtime.core.key_prefix))

    def delete(self, session_key: str | None = None) -> None:
        """Delete the row of ``session_key`` (a cookie value), or of this session's own key."""
        runtime = self._runtime
        if session_key is None:
            state = self._data.state
            runtime.core.read_cookie(state)
            if state.session_id is not None:
                runtime.store.delete(hash_session_id(state.session_id))
            if self._legacy_key is not None:
                runtime.store.delete_django_session(self._legacy_key)
            return
        if runtime.move_django_sessions and DJANGO_KEY.fullmatch(session_key):
            runtime.store.delete(hash_session_id(derived_id(runtime, session_key)))
            runtime.store.delete_django_session(session_key)
            return
        id_hash = self._hash_of(session_key)
        if id_hash is not None:
            runtime.store.delete(id_hash)

    def load(self) -> dict[str, Any]:
        """The stored data of this session's key, read now; ``{}`` if it has no live row."""
        data = self._data
        if not data.loaded:
            len(data)
            return data.copy()
        runtime = self._runtime
        runtime.core.read_cookie(data.state)
        session_id = data.state.session_id
        if session_id is None:
            return {}
        row = runtime.store.load(hash_session_id(session_id), runtime.core.policy.touch_interval)
        if row is None:
            return {}
        return {name: decode_value(value) for name, value in row.data.items()}

    def flush(self) -> None:
        """End the session now: its row is deleted, the data emptied, the key gone (logout)."""
        data = self._data
        data.invalidate()
        run(self._runtime.core.save(data), self._runtime.store.execute)
        if self._legacy_key is not None:  # the old key's row, wherever it is by now
            runtime = self._runtime
            runtime.store.delete(hash_session_id(derived_id(runtime, self._legacy_key)))
            runtime.store.delete_django_session(self._legacy_key)
            self._legacy_key = None
        self._moved = False
        self._session_key = None

    def cycle_key(self) -> None:
        """Move the session to a new id now, data kept, the old id dead (``auth.login`` calls it)."""
        data = self._data
        len(data)  # as in Django: the data is loaded first
        data.regenerate()
        self._run_save()

    @classmethod
    def clear_expired(cls) -> None:
        """Delete the expired rows (``manage.py clearsessions``), old ``django_session`` ones too."""
        runtime = current_runtime()
        runtime.store.purge_expired()
        if runtime.move_django_sessions:
            runtime.store.purge_django_sessions()

    @property
    def data(self) -> Session:
        """The :class:`pgsession_wsgi.Session` behind this store (``regenerate()``, ``id``...)."""
        return self._data
