"""Session cookies in flask-pg-session's format (an ``IdSigner``); needs itsdangerous, not Flask."""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable

from itsdangerous import Signer

from ..cookies import SESSION_ID_PATTERN
from ..errors import ConfigurationError
from .conventions import UUID4_PATTERN

__all__ = ["FlaskPgSessionSigner"]

_BARE_ID = re.compile(f"{UUID4_PATTERN}|{SESSION_ID_PATTERN}")
# HMAC-SHA1 is 20 bytes: 27 characters of unpadded urlsafe base64.
_SIGNED_ID = re.compile(f"(?:{UUID4_PATTERN}|{SESSION_ID_PATTERN})\\.[A-Za-z0-9_-]{{27}}")


class FlaskPgSessionSigner:
    """Session cookies in flask-pg-session's format, so cookies issued by it stay valid.

    Signed: ``<id>.<sig>`` from ``itsdangerous.Signer(key, salt="flask-session",
    key_derivation="hmac")``; unsigned: the bare id. Only ids shaped like flask-pg-session's
    (uuid4) or pgsession-wsgi's are accepted, and each has one valid cookie per key.

    :param secret_key: the app's ``SECRET_KEY``, as flask-pg-session signed with; required when
        ``use_signer`` is on.
    :param fallback_secret_keys: older keys (``SECRET_KEY_FALLBACKS``): they verify but never
        sign, and a cookie they verify is re-signed with ``secret_key``.
    :param use_signer: flask-pg-session's ``SESSION_USE_SIGNER``; off, the cookie is the bare id.
    :raises ConfigurationError: ``use_signer`` is on and ``secret_key`` is empty.
    """

    def __init__(
        self,
        secret_key: str | bytes | None,
        fallback_secret_keys: Iterable[str | bytes] = (),
        *,
        use_signer: bool = True,
    ) -> None:
        self.use_signer = use_signer
        # The primary key's signer first; the fallback keys' ones only verify.
        self._signers: list[Signer] = []
        if not use_signer:
            return
        if not secret_key:
            raise ConfigurationError(
                "SESSION_USE_SIGNER is on but SECRET_KEY is not set: set app.config['SECRET_KEY'] "
                "(the same value as before, so existing cookies stay valid)"
            )
        keys = [secret_key, *(key for key in fallback_secret_keys if key)]
        self._signers = [Signer(key, salt="flask-session", key_derivation="hmac") for key in keys]

    def sign(self, session_id: str) -> str:
        """The cookie value for ``session_id``: signed with the primary key, or the bare id."""
        if not self._signers:
            return session_id
        return self._signers[0].sign(session_id).decode("ascii")

    def unsign(self, value: str) -> tuple[str, bool] | None:
        """``(session_id, needs_resign)`` for a valid (untrusted) cookie value, else None; never raises."""
        if not self._signers:
            return (value, False) if _BARE_ID.fullmatch(value) else None
        if not _SIGNED_ID.fullmatch(value):
            return None
        session_id, signature = value.split(".")
        # itsdangerous compares decoded bytes, so several base64 spellings of one signature
        # pass its unsign; comparing the text it would write accepts only the one it issues.
        for position, signer in enumerate(self._signers):
            expected = signer.get_signature(session_id).decode("ascii")
            if hmac.compare_digest(expected, signature):
                return session_id, position > 0
        return None
