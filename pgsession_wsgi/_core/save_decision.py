"""What :class:`~pgsession_wsgi.core.SessionCore`'s save decides: the statement to run, the user
column's text, and whether a cookie goes out and with which ``Max-Age``.

Held apart from :mod:`pgsession_wsgi.core` as a private base class of ``SessionCore``, so that the
class there holds the public steps (open, load, save, check) and this one the save's decisions,
each small enough to read; ``SessionCore`` sets the attributes declared here.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from ..cookies import CookieSettings, IdSigner, hash_session_id, new_session_id
from ..errors import SessionError
from ..session import Changes, Expiry, Session, SessionState
from .operations import (
    KEEP_USER,
    Delete,
    Insert,
    Steps,
    Touch,
    Write,
    WriteResult,
    _stored_expiry,
    expiry_columns,
    user_id_text,
)
from .policy import Policy

log = logging.getLogger("pgsession_wsgi")


class _SaveDecision:
    """The save's private steps of :class:`~pgsession_wsgi.core.SessionCore`, which sets these."""

    policy: Policy
    cookie: CookieSettings
    signer: IdSigner
    key_prefix: str
    # What goes before a cookie's id in its stored form; "" without a prefix.
    _id_head: str
    # The Max-Age of a session without a lifetime of its own: idle_timeout, in seconds.
    _max_age: int

    # -- the statement ---------------------------------------------------------------------

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
        # No data changed: the user column stays (KEEP_USER), so no login regenerates.
        user = self._user_column(session, changes) if changes.any else KEEP_USER
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
        refresh = expiry_moved and self.policy.refresh_each_request
        if must_send or state.resign or (refresh and self._is_permanent(session, stored_permanent)):
            return self._cookie_for(session_id, self._is_permanent(session, stored_permanent), state)
        return None

    def _is_permanent(self, session: Session, stored: bool | None) -> bool:
        value = session.peek("_permanent")
        if value is None:
            value = stored
        return self.policy.permanent if value is None else bool(value)

    def _cookie_for(self, session_id: str, permanent: bool, state: SessionState) -> str:
        state.resign = False
        max_age = self._max_age_of(state.expiry) if permanent else None
        cookie_id = session_id[len(self._id_head) :]
        return self.cookie.set_header(self.signer.sign(cookie_id), max_age, state.scheme)

    def _max_age_of(self, expiry: Expiry) -> int:
        """What :meth:`SessionCore.max_age` returns (its docstring says why)."""
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
