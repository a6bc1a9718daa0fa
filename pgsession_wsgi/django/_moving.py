"""Internal: an old ``django_session`` row moved into the shared table when its cookie comes back."""

from __future__ import annotations

import base64
import hmac
import logging
from contextlib import suppress
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
    """The session id an old Django key moves to: the key prefix and an HMAC of the key under
    ``SECRET_KEY`` (43 characters, as new ids), so that two requests move it to one row."""
    digest = hmac.digest(
        runtime.secret_key, b"pgsession-wsgi django session\x00" + django_key.encode(), "sha256"
    )
    return runtime.id_head + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def move_django_session(runtime: Runtime, session: Session, key: str) -> dict[str, Any] | None:
    """Move the live old row of ``key`` to ``session``'s id in one statement; its data, or None."""
    assert session.state.session_id is not None
    id_hash = hash_session_id(session.state.session_id)
    label = id_hash.hex()[:12]
    found = runtime.store.find_django_session(key)
    if found is None:
        return None
    from django.contrib.sessions.backends.db import SessionStore as DjangoDbStore

    session_data, _expire_date = found
    data = dict(DjangoDbStore().decode(session_data))  # Django's own signing and serializer
    expiry = data.pop("_session_expiry", None)
    idle_timeout: timedelta | None = None
    ends_at: datetime | None = None
    if expiry == 0:
        data["_permanent"] = False
    elif isinstance(expiry, (int, float)) and not isinstance(expiry, bool) and expiry > 0:
        idle_timeout = timedelta(seconds=expiry)
    elif isinstance(expiry, str):
        with suppress(ValueError):
            ends_at = datetime.fromisoformat(expiry)
        if ends_at is not None and ends_at.utcoffset() is None:
            ends_at = django_timezone.make_aware(ends_at)
    if not data or all(name in META_KEYS for name in data):
        log.warning(
            "Django session %s not moved (empty or unreadable data); the request gets a new session", label
        )
        return None
    policy = runtime.core.policy
    try:
        encoded = {name: encode_value(value) for name, value in data.items()}
        user = None
        if policy.user_key is not None and data.get(policy.user_key) is not None:
            user = user_id_text(data[policy.user_key], policy.user_key, key_prefix=runtime.core.key_prefix)
    except (TypeError, ValueError, SessionError) as exc:
        log.warning(
            "Django session %s not moved (%s); the request gets a new session", label, type(exc).__name__
        )
        return None
    data_json = "{" + ",".join(f"{dumps(name)}:{dumps(value)}" for name, value in encoded.items()) + "}"
    if policy.max_size is not None and len(data_json.encode("utf-8")) > policy.max_size:
        log.warning("Django session %s not moved (over max_size); the request gets a new session", label)
        return None
    stored = runtime.store.move_django_session(
        key, session_data, id_hash, data_json, user, policy.absolute_timeout, idle_timeout, ends_at
    )
    if stored is None:  # another request moved it meanwhile: read what it stored
        return run(runtime.core.load(session), runtime.store.execute)
    if not session.state.expiry_set:
        session.state.expiry = ends_at if ends_at is not None else idle_timeout
    return stored
