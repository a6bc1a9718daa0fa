"""Internal: moving an old ``django_session`` row into the shared table, under an id derived from
its key, the first time its cookie comes back."""

from __future__ import annotations

import base64
import hmac
import logging
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone as django_timezone

from ..codec import dumps, encode_value
from ..cookies import hash_session_id
from ..core import run, user_id_text
from ..errors import SessionError
from ..session import META_KEYS, Session
from ._runtime import Runtime

log = logging.getLogger("pgsession_wsgi")


def derived_id(runtime: Runtime, django_key: str) -> str:
    """The id an old Django session key moves to: an HMAC of it under ``SECRET_KEY``, so that
    two requests with the same old cookie move it to one row (43 characters, as new ids)."""
    digest = hmac.digest(
        runtime.secret_key, b"pgsession-wsgi django session\x00" + django_key.encode(), "sha256"
    )
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def django_decode(session_data: str) -> dict[str, Any]:
    """An old row's data, decoded by Django's own database backend (its signing, its serializer)."""
    from django.contrib.sessions.backends.db import SessionStore as DjangoDbStore

    return DjangoDbStore().decode(session_data)  # type: ignore[no-any-return]


def move_django_session(runtime: Runtime, session: Session, key: str) -> dict[str, Any] | None:
    """Move the live old row of ``key`` to ``session``'s id in one statement; its data, or None."""
    assert session.state.session_id is not None
    id_hash = hash_session_id(session.state.session_id)
    label = id_hash.hex()[:12]
    found = runtime.store.find_django_session(key)
    if found is None:
        return None
    session_data, _expire_date = found
    data = dict(django_decode(session_data))
    expiry = data.pop("_session_expiry", None)
    idle_timeout: timedelta | None = None
    ends_at: datetime | None = None
    if expiry == 0:
        data["_permanent"] = False
    elif isinstance(expiry, (int, float)) and not isinstance(expiry, bool) and expiry > 0:
        idle_timeout = timedelta(seconds=expiry)
    elif isinstance(expiry, str):
        try:
            end = datetime.fromisoformat(expiry)
        except ValueError:
            end = None
        if end is not None:
            ends_at = end if end.utcoffset() is not None else django_timezone.make_aware(end)
    if not data or all(name in META_KEYS for name in data):
        log.warning(
            "Django session %s not moved (empty or unreadable data); the request gets a new session", label
        )
        return None
    try:
        encoded = {name: encode_value(value) for name, value in data.items()}
        user_key = runtime.core.policy.user_key
        user_value = data.get(user_key) if user_key is not None else None
        user = None
        if user_value is not None:
            user = user_id_text(user_value, user_key, key_prefix=runtime.core.key_prefix)
    except (TypeError, ValueError, SessionError) as exc:
        log.warning(
            "Django session %s not moved (%s); the request gets a new session", label, type(exc).__name__
        )
        return None
    data_json = "{" + ",".join(f"{dumps(name)}:{dumps(value)}" for name, value in encoded.items()) + "}"
    max_size = runtime.core.policy.max_size
    if max_size is not None and len(data_json.encode("utf-8")) > max_size:
        log.warning("Django session %s not moved (over max_size); the request gets a new session", label)
        return None
    stored = runtime.store.move_django_session(
        key, session_data, id_hash, data_json, user, runtime.absolute_timeout, idle_timeout, ends_at
    )
    if stored is None:  # another request moved it meanwhile: read what it stored
        return run(runtime.core.load(session), runtime.store.execute)
    if not session.state.expiry_set:
        session.state.expiry = ends_at if ends_at is not None else idle_timeout
    return stored
