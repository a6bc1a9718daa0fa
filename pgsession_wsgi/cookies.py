"""Session ids, their signatures and the Set-Cookie header.

The cookie carries only ``<id>.<signature>``. Ids are 256 random bits; the database keys rows by
the SHA-256 of the id, so the id itself exists only in the browser.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from itsdangerous import Signer
from itsdangerous.encoding import base64_encode
from werkzeug.http import dump_cookie

from .errors import ConfigurationError

__all__ = [
    "SESSION_ID_PATTERN",
    "CookieSettings",
    "HmacIdSigner",
    "IdSigner",
    "hash_session_id",
    "new_session_id",
]

#: Cookies longer than this are not even parsed: no browser sends a valid one that long.
MAX_COOKIE_LENGTH = 4096

#: What :func:`new_session_id` returns: 32 random bytes as unpadded url-safe base64.
SESSION_ID_PATTERN = r"[A-Za-z0-9_-]{43}"
_OUR_COOKIE = re.compile(rf"{SESSION_ID_PATTERN}\.[A-Za-z0-9_-]{{43}}")


def new_session_id() -> str:
    """A fresh id with 256 bits from the OS random source."""
    return secrets.token_urlsafe(32)


def hash_session_id(session_id: str) -> bytes:
    """The primary key a session id is stored under."""
    return hashlib.sha256(session_id.encode("utf-8")).digest()


class IdSigner(Protocol):
    """Turns session ids into cookie values and back; swap it to read another cookie format."""

    def sign(self, session_id: str) -> str: ...

    def unsign(self, value: str) -> tuple[str, bool] | None:
        """``(session_id, needs_resign)`` for a valid value, else None. Must never raise."""
        ...


class HmacIdSigner:
    """HMAC-SHA256 signatures from itsdangerous; fallback keys verify but never sign."""

    def __init__(
        self,
        secret_key: str | bytes,
        fallback_secret_keys: Iterable[str | bytes] = (),
        salt: str = "pgsession-wsgi",
    ) -> None:
        if not secret_key:
            raise ConfigurationError(
                "secret_key is empty: pass a long random string, e.g. secrets.token_hex(32)"
            )
        options = {"salt": salt, "key_derivation": "hmac", "digest_method": hashlib.sha256}
        keys = [secret_key, *(key for key in fallback_secret_keys if key)]
        signers = [Signer(key, **options) for key in keys]  # type: ignore[arg-type]
        # itsdangerous derives the key again on every call; derived once here, each check is a
        # single HMAC over the id.
        self._derived = [signer.derive_key() for signer in signers]

    def _signature(self, position: int, session_id: str) -> str:
        # One C-level HMAC (what itsdangerous's HMACAlgorithm computes, without its per-call
        # object) over the id, with the key derived once in __init__.
        raw = hmac.digest(self._derived[position], session_id.encode("ascii"), "sha256")
        return base64_encode(raw).decode("ascii")

    def sign(self, session_id: str) -> str:
        return f"{session_id}.{self._signature(0, session_id)}"

    def unsign(self, value: str) -> tuple[str, bool] | None:
        if not _OUR_COOKIE.fullmatch(value):
            return None
        session_id, signature = value.split(".")
        # Comparing the exact text (not the decoded bytes) rejects base64 variants of a
        # signature, so each id has exactly one valid cookie value.
        for position in range(len(self._derived)):
            if hmac.compare_digest(self._signature(position, session_id), signature):
                return session_id, position > 0
        return None


@dataclass(frozen=True)
class CookieSettings:
    """Where and how the session cookie is set; validates the ``__Host-``/``__Secure-`` rules."""

    name: str = "session"
    path: str = "/"
    domain: str | None = None
    secure: bool | None = None  # None: Secure when the request came over https
    httponly: bool = True
    samesite: str | None = "Lax"

    def __post_init__(self) -> None:
        if not self.name or not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", self.name):
            raise ConfigurationError(
                f"cookie_name {self.name!r} is not a valid cookie name: use letters, digits, - and _"
            )
        if self.samesite not in (None, "Lax", "Strict", "None"):
            raise ConfigurationError(
                f"cookie_samesite must be 'Lax', 'Strict', 'None' or None, not {self.samesite!r}"
            )
        if self.samesite == "None" and self.secure is False:
            raise ConfigurationError("cookie_samesite='None' needs Secure cookies: drop cookie_secure=False")
        prefixed = self.name.startswith(("__Host-", "__Secure-"))
        if prefixed and self.secure is False:
            raise ConfigurationError(f"a cookie named {self.name!r} must be Secure: drop cookie_secure=False")
        if self.name.startswith("__Host-") and (self.domain is not None or self.path != "/"):
            raise ConfigurationError(
                f"a cookie named {self.name!r} must have cookie_path='/' and cookie_domain=None"
            )

    def is_secure(self, environ_scheme: str) -> bool:
        if self.name.startswith(("__Host-", "__Secure-")):
            return True
        return self.secure if self.secure is not None else environ_scheme == "https"

    def read(self, cookie_header: str) -> str | None:
        """This cookie's value from a Cookie header; None if absent or not plausible.

        A plain split is enough for the values this layer issues (plain or in quotes), and
        anything odd in the header (another cookie's bytes included) cannot become an error.
        """
        if self.name not in cookie_header:
            return None
        for part in cookie_header.split(";"):
            name, _, value = part.strip().partition("=")
            if name.rstrip() == self.name:
                value = value.strip()
                if len(value) > 1 and value[0] == value[-1] == '"':  # RFC 6265 allows quotes
                    value = value[1:-1]
                if not value or len(value) > MAX_COOKIE_LENGTH or not value.isascii():
                    return None
                return value
        return None

    def set_header(self, value: str, max_age: int | None, scheme: str) -> str:
        return dump_cookie(
            self.name,
            value,
            max_age=max_age,
            path=self.path,
            domain=self.domain,
            secure=self.is_secure(scheme),
            httponly=self.httponly,
            samesite=self.samesite,
        )

    def delete_header(self, scheme: str) -> str:
        return dump_cookie(
            self.name,
            "",
            max_age=0,
            expires=0,
            path=self.path,
            domain=self.domain,
            secure=self.is_secure(scheme),
            httponly=self.httponly,
            samesite=self.samesite,
        )
