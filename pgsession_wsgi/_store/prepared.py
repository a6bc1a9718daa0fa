"""Internal: the request statements as server-side prepared statements, for both stores.

Named by a hash of their text; executed by name (psycopg 3) or as ``EXECUTE`` text (psycopg2)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ..sql import Statements, by_name, prepared, with_literals
from .exchange import DriverErrors, Statement

__all__ = ["MAX_BOUND_STATEMENTS", "PREPARED_KINDS", "PreparedStatements"]

log = logging.getLogger("pgsession_wsgi")

PREPARED_KINDS = ("load", "insert", "write", "merge", "touch", "delete")

#: The most EXECUTE texts with an app's settings written in that a store keeps (one per
#: statement and app).
MAX_BOUND_STATEMENTS = 64

#: A statement's values that come from the app's settings: (placeholder name, value) pairs.
Fixed = tuple[tuple[str, Any], ...]

_statement = tuple.__new__


class PreparedStatements:
    """Which text each request statement goes as, per connection; off until :meth:`enable`
    (``plain`` makes a request statement as text, every value bound, while off)."""

    def __init__(self, sql: Statements, errors: DriverErrors, plain: Callable[..., Statement]) -> None:
        self.sql = sql
        self.plain = plain
        self.gone = (errors.prepared_missing, errors.prepared_duplicate)
        #: Each kind's (PREPARE, EXECUTE) templates; None while off.
        self.templates: dict[str, tuple[str, str]] | None = None
        #: Each kind's (name, statement with text placeholders) when executed by name, else None.
        self.named: dict[str, tuple[bytes, str]] | None = None
        # Per connection (by id, while it lives), kind -> True (prepared there) or False (tried).
        self._on: dict[int, dict[str, bool]] = {}
        # (kind, the settings' values) -> that kind's EXECUTE alone, those values written in.
        self._bound: dict[tuple[str, Fixed], _Attempt] = {}

    def enable(self, named: bool = False) -> None:
        """Prepare the request statements from now on (``named``: executed by name)."""
        self.templates = {kind: prepared(kind, getattr(self.sql, kind)) for kind in PREPARED_KINDS}
        if named:
            self.named = {kind: by_name(kind, getattr(self.sql, kind)) for kind in PREPARED_KINDS}

    def statement(self, conn: Any, kind: str, params: dict[str, Any], fixed: Fixed, read: int) -> Statement:
        """The request statement ``kind`` as it goes on ``conn``: its ``EXECUTE`` where prepared
        there, ``PREPARE ...; EXECUTE ...`` where not yet, the text while these are off. ``params``
        are the request's own values, ``fixed`` those of the app's settings."""
        if self.templates is None:
            return self.plain(kind, params, fixed, read)
        try:
            alone = self._bound.get((kind, fixed))
        except TypeError:  # an unhashable setting, surely of the wrong kind: _bind names it
            alone = None
        if alone is None:
            alone = self._bind(kind, fixed)
        done = self._on.get(id(conn))
        if done is None:
            done = self._on[id(conn)] = {}
            weakref.finalize(conn, self._on.pop, id(conn), None)
        before = done.get(kind)
        if before:  # every request but a connection's first: a plain tuple's __new__ is enough
            if alone.name is not None:  # by name: every value bound, the settings' ones too
                return _statement(Statement, (alone.named, {**params, **alone.values}, read, False, alone))
            return _statement(Statement, (alone.execute, params, read, True, alone))
        # A PREPARE stays even when the EXECUTE after it fails: remember the attempt.
        done[kind] = False
        attempt = _Attempt(self, kind, fixed, done, alone.execute, before is False)
        return Statement(f"{self.templates[kind][0]}; {alone.execute}", params, read, True, attempt)

    def _bind(self, kind: str, fixed: Fixed) -> _Attempt:
        """The ``EXECUTE`` with the settings' values written in, kept for the next request."""
        assert self.templates is not None
        literals = {name: _literal(name, value) for name, value in fixed}
        alone = _Attempt(self, kind, fixed, None, with_literals(self.templates[kind][1], literals))
        if self.named is not None:
            alone.name, alone.named = self.named[kind]
            alone.values = {name: _as_text(value) for name, value in fixed}
        if len(self._bound) < MAX_BOUND_STATEMENTS:
            self._bound[(kind, fixed)] = alone
        return alone


class _Attempt:
    """One request statement sent as a prepared one: what follows when it ran, or failed."""

    __slots__ = ("owner", "kind", "fixed", "done", "execute", "tried_before", "name", "named", "values")

    def __init__(
        self, owner: PreparedStatements, kind: str, fixed: Fixed, done: dict[str, bool] | None, execute: str,
        tried_before: bool = False,
    ) -> None:
        self.owner, self.kind, self.fixed, self.execute = owner, kind, fixed, execute
        self.done = done  # the connection's bookkeeping, when this one carries the PREPARE
        self.tried_before = tried_before  # an earlier PREPARE of it failed: it may be there
        # By name: the statement's name (None: as text), its text, the settings' values.
        self.name: bytes | None = None
        self.named = ""
        self.values: dict[str, Any] = {}

    def sent(self) -> None:
        """It ran: a PREPARE sent with it is there now."""
        if self.done is not None:
            self.done[self.kind] = True

    def recover(self, statement: Statement, exc: Exception) -> Statement | None:
        """What to send instead of ``statement``, failed with ``exc``; None: the failure stands."""
        owner = self.owner
        if not isinstance(exc, owner.gone):
            return None
        # Nothing ran: the statement failed before it started.
        if self.tried_before and isinstance(exc, owner.gone[1]) and self.done is not None:
            self.done[self.kind] = True  # our own earlier attempt did prepare it
            return Statement(self.execute, statement.params, statement.read, True)
        # Gone, or there without our asking: the server connection is shared with other clients
        # (PgBouncer in transaction mode, not found by the startup check).
        owner.templates = None
        log.info("prepared statements dropped by the server side (PgBouncer?); sending plain statements")
        return owner.plain(self.kind, statement.params, self.fixed, statement.read)


def _literal(name: str, value: Any) -> str:
    """A setting's value as SQL text, exactly as psycopg2 sends it as a parameter; only durations,
    numbers and None (anything else is refused rather than pasted into SQL)."""
    if isinstance(value, bool) or not (value is None or isinstance(value, (timedelta, int, float))):
        parameter = "touch_interval" if name == "touch" else name
        raise TypeError(f"{parameter} must be a timedelta, a number or None, not {type(value).__name__}")
    if value is None:
        return "NULL"
    if isinstance(value, timedelta):
        return f"'{_as_text(value)}'::interval"
    text = (float.__repr__ if isinstance(value, float) else int.__repr__)(value)
    if text in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[text]
    return f" {text}" if text.startswith("-") else text  # a space: "- -1" would start a comment


_SPECIAL_FLOATS = {"inf": "'Infinity'::float", "-inf": "'-Infinity'::float", "nan": "'NaN'::float"}


def _as_text(value: Any) -> Any:
    """A setting's value as bound by name: a duration or an int as text its declared type reads
    (psycopg then only encodes a str, instead of adapting the value on every request)."""
    if isinstance(value, timedelta):
        return f"{value.days} days {value.seconds}.{value.microseconds:06d} seconds"
    if type(value) is int:
        return int.__repr__(value)
    return value
