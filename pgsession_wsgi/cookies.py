"""Session ids, their signatures and the Set-Cookie header.

The cookie carries only ``<id>.<signature>``. Ids are 256 random bits; the database keys rows by
the SHA-256 of the id, so the id itself exists only in the browser.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
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
    "check_prefix",
    "check_secret_keys",
    "hash_session_id",
    "new_session_id",
    "prefixed_id",
]

log = logging.getLogger("pgsession_wsgi")

#: Cookies longer than this are not even parsed: no browser sends a valid one that long.
MAX_COOKIE_LENGTH = 4096

#: A signing key shorter than this many bytes is warned about.
MIN_SECRET_KEY_BYTES = 32
MAKE_A_KEY = 'python -c "import secrets; print(secrets.token_hex(32))"'
# Keys copied from a tutorial or a template, compared as lower-case letters and digits; a key
# holding one of the markers is one too, however long.
_PLACEHOLDERS = frozenset(
    {
        "changeme", "changethis", "secret", "secretkey", "mysecret", "mysecretkey", "yoursecretkey",
        "supersecret", "dev", "development", "test", "testing", "default", "password",
        "pleasechange", "pleasechangeme", "notsecret", "insecure", "keyboardcat", "replaceme",
    }
)
_PLACEHOLDER_MARKERS = ("changeme", "changethis", "replaceme", "yoursecret", "notsecret", "insecure")

#: What :func:`new_session_id` returns: 32 random bytes as unpadded url-safe base64.
SESSION_ID_PATTERN = r"[A-Za-z0-9_-]{43}"
_OUR_COOKIE = re.compile(rf"{SESSION_ID_PATTERN}\.[A-Za-z0-9_-]{{43}}")


def new_session_id() -> str:
    """A fresh id with 256 bits from the OS random source, so that no id can be guessed."""
    return secrets.token_urlsafe(32)


def hash_session_id(session_id: str) -> bytes:
    """The primary key a session id is stored under, so a leaked table or backup opens no session."""
    return hashlib.sha256(session_id.encode("utf-8")).digest()


def prefixed_id(session_id: str, key_prefix: str) -> str:
    """The form an id is hashed in when apps share one table: the prefix, a NUL, the id.

    The NUL, which no issued id holds, keeps ``"a" + "bc..."`` apart from ``"ab" + "c..."``.

    :param key_prefix: the app's prefix (``SESSION_KEY_PREFIX``); "" for none: the id alone.
    """
    return f"{key_prefix}\x00{session_id}" if key_prefix else session_id


class IdSigner(Protocol):
    """Turns session ids into cookie values and back; swap it to read another cookie format."""

    def sign(self, session_id: str) -> str:
        """The cookie value that carries ``session_id``."""
        ...

    def unsign(self, value: str) -> tuple[str, bool] | None:
        """``(session_id, needs_resign)`` for a valid value, else None. Must never raise.

        :param value: the cookie's value as the browser sent it (untrusted).
        """
        ...


def _weakness(key: str | bytes) -> str | None:
    """Why ``key`` is easy to guess, or None."""
    text = key.decode("latin-1") if isinstance(key, bytes) else key
    if text.startswith("django-insecure-"):
        # Random, but written into settings.py by `django-admin startproject`: as known as the
        # project's source, and Django's own `check --deploy` flags it (security.W009).
        return "the key `django-admin startproject` wrote into settings.py"
    letters = "".join(char for char in text.lower() if char.isalnum())
    if letters in _PLACEHOLDERS or any(marker in letters for marker in _PLACEHOLDER_MARKERS):
        return "a well-known placeholder"
    size = len(key) if isinstance(key, bytes) else len(key.encode("utf-8"))
    if size < MIN_SECRET_KEY_BYTES:
        return f"shorter than {MIN_SECRET_KEY_BYTES} bytes"
    return None


def check_secret_keys(
    secret_key: object,
    fallback_secret_keys: object = (),
    names: Mapping[str, str] | None = None,
) -> list[str | bytes]:
    """Refuse signing keys that are not text or bytes, and warn once about weak ones.

    A key anyone can guess lets anyone sign a cookie, so a key shorter than 32 bytes or a
    well-known placeholder (``change-me``, ``secret``...) gets one warning on the
    ``pgsession_wsgi`` logger, naming each weak key by its setting, never by its value.

    :param fallback_secret_keys: older keys that still verify: one key, or several.
    :param names: what the messages call the settings, under the keys ``"secret_key"`` and
        ``"fallback_secret_keys"`` (e.g. ``SECRET_KEY``); None: the middlewares' arguments.
    :returns: the fallback keys as a list, empty ones left out.
    :raises ConfigurationError: a key (or the fallbacks) of another type, or no ``secret_key``.
    """
    key_name = (names or {}).get("secret_key", "secret_key")
    fallbacks_name = (names or {}).get("fallback_secret_keys", "fallback_secret_keys")
    if secret_key is None or isinstance(secret_key, (str, bytes)) and not secret_key:
        raise ConfigurationError(
            f"{key_name} is empty: pass a long random string, e.g. secrets.token_hex(32)"
        )
    if not isinstance(secret_key, (str, bytes)):
        raise ConfigurationError(
            f"{key_name} is {_article(type(secret_key).__name__)}: it must be text (str) or bytes, "
            f"a long random value such as `{MAKE_A_KEY}` prints"
        )
    if isinstance(fallback_secret_keys, (str, bytes)):
        fallback_secret_keys = [fallback_secret_keys]
    if not isinstance(fallback_secret_keys, Iterable):
        raise ConfigurationError(
            f"{fallbacks_name} is {_article(type(fallback_secret_keys).__name__)}: it must be a list "
            "of older keys (text or bytes), or one key"
        )
    fallbacks: list[str | bytes] = []
    weak = [f"{key_name} ({reason})"] if (reason := _weakness(secret_key)) else []
    for position, key in enumerate(fallback_secret_keys):
        name = f"{fallbacks_name}[{position}]"
        if not isinstance(key, (str, bytes)):
            raise ConfigurationError(
                f"{name} is {_article(type(key).__name__)}: each older key must be text (str) or bytes"
            )
        if not key:
            continue
        fallbacks.append(key)
        if reason := _weakness(key):
            weak.append(f"{name} ({reason})")
    if weak:
        listed = weak[0] if len(weak) == 1 else f"{', '.join(weak[:-1])} and {weak[-1]}"
        log.warning(
            "%s %s easy to guess, and whoever guesses a key can sign session cookies: make a "
            "real key with `%s` and pass it from an environment variable",
            listed,
            "is" if len(weak) == 1 else "are",
            MAKE_A_KEY,
        )
    return fallbacks


def _article(name: str) -> str:
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


class HmacIdSigner:
    """HMAC-SHA256 signatures from itsdangerous; fallback keys verify but never sign.

    The keys are checked by :func:`check_secret_keys`.

    :param secret_key: signs every cookie.
    :param fallback_secret_keys: older keys still accepted while you rotate; empty ones are skipped.
    :param salt: keeps these signatures apart from others made with the same key.
    :param names: what the messages call the keys, as for :func:`check_secret_keys`.
    :raises ConfigurationError: ``secret_key`` is empty, or a key is neither text nor bytes.
    """

    def __init__(
        self,
        secret_key: str | bytes,
        fallback_secret_keys: Iterable[str | bytes] = (),
        salt: str = "pgsession-wsgi",
        *,
        names: Mapping[str, str] | None = None,
    ) -> None:
        keys = [secret_key, *check_secret_keys(secret_key, fallback_secret_keys, names)]
        options = {"salt": salt, "key_derivation": "hmac", "digest_method": hashlib.sha256}
        # itsdangerous derives the key again on every call; derived once, a check is one HMAC.
        self._derived = [Signer(key, **options).derive_key() for key in keys]  # type: ignore[arg-type]

    def _signature(self, position: int, session_id: str) -> str:
        # What itsdangerous's HMACAlgorithm computes, without its per-call object.
        raw = hmac.digest(self._derived[position], session_id.encode("ascii"), "sha256")
        return base64_encode(raw).decode("ascii")

    def sign(self, session_id: str) -> str:
        """``<id>.<signature>``, signed with ``secret_key``."""
        return f"{session_id}.{self._signature(0, session_id)}"

    def unsign(self, value: str) -> tuple[str, bool] | None:
        """``(session_id, needs_resign)`` if a key signed ``value``, else None; never raises.

        :param value: the cookie's value as the browser sent it (untrusted).
        :returns: ``needs_resign`` is true when a fallback key verified it.
        """
        if not _OUR_COOKIE.fullmatch(value):
            return None
        session_id, signature = value.split(".")
        # Comparing the exact text (not the decoded bytes) rejects base64 variants of a
        # signature, so each id has exactly one valid cookie value.
        for position in range(len(self._derived)):
            if hmac.compare_digest(self._signature(position, session_id), signature):
                return session_id, position > 0
        return None


def check_prefix(
    name: str,
    path: str,
    domain: str | None,
    secure: bool | None,
    names: Mapping[str, str] | None = None,
) -> None:
    """Refuse the options for which browsers would drop a cookie whose name has a prefix.

    A ``__Secure-`` cookie must be Secure; a ``__Host-`` cookie also ``Path=/`` and no
    ``Domain``. Prefixes match in any case, as in browsers. Such cookies are always sent Secure
    (see :meth:`CookieSettings.is_secure`), so only ``secure=False`` is refused.

    :param secure: ``Secure`` forced on (True), off (False), or following the scheme (None).
    :param names: what the messages call the options, under the keys ``"secure"``, ``"path"``
        and ``"domain"`` (e.g. ``SESSION_COOKIE_SECURE``); None: the middlewares' arguments.
    :raises ConfigurationError: an option the name's prefix forbids.
    """
    if names is None:
        names = {"secure": "cookie_secure", "path": "cookie_path", "domain": "cookie_domain"}
    prefix = _prefix(name)
    if prefix is not None and secure is False:
        raise ConfigurationError(f"a cookie named {name!r} must be Secure: drop {names['secure']}=False")
    if prefix == "__host-" and (domain is not None or path != "/"):
        raise ConfigurationError(
            f"a cookie named {name!r} must have {names['path']}='/' and {names['domain']}=None"
        )


def _prefix(name: str) -> str | None:
    """``"__host-"`` or ``"__secure-"`` for a name with that prefix, in any case; else None."""
    lowered = name[:9].lower()
    return next((prefix for prefix in ("__host-", "__secure-") if lowered.startswith(prefix)), None)


@dataclass(frozen=True)
class CookieSettings:
    """Where and how the session cookie is set, checked once so no response sends a bad one.

    :param name: the cookie's name; ``__Host-`` and ``__Secure-`` names are always Secure.
    :param domain: its ``Domain``; None sends none (the safest).
    :param secure: force ``Secure`` on or off; None: when the request came over https.
    :param samesite: ``"Lax"``, ``"Strict"``, ``"None"`` (needs Secure) or None.
    :param partitioned: ``Partitioned`` (CHIPS: a cookie kept apart per top-level site, for an
        app embedded in other sites' pages); always sent Secure, as browsers drop it otherwise.
    :raises ConfigurationError: an invalid name or SameSite, options the name's prefix forbids,
        or ``partitioned`` with ``secure=False``.
    """

    name: str = "session"
    path: str = "/"
    domain: str | None = None
    secure: bool | None = None
    httponly: bool = True
    samesite: str | None = "Lax"
    partitioned: bool = False

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
        if self.partitioned and self.secure is False:
            raise ConfigurationError(
                "cookie_partitioned=True needs Secure cookies (browsers drop a Partitioned cookie "
                "without Secure): drop cookie_secure=False"
            )
        check_prefix(self.name, self.path, self.domain, self.secure)

    def is_secure(self, environ_scheme: str) -> bool:
        """Whether the cookie gets ``Secure`` in the response to a request with this URL scheme."""
        if self.partitioned or _prefix(self.name) is not None:
            return True
        return self.secure if self.secure is not None else environ_scheme == "https"

    def read(self, cookie_header: str) -> str | None:
        """This cookie's value from a ``Cookie`` header; None if absent or not plausible.

        A plain split is enough for the values this layer issues, and nothing odd in the header
        can become an error.
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
        """The ``Set-Cookie`` value that stores ``value``, the signed id, in the browser.

        :param max_age: seconds the cookie lives; None for a browser-session cookie.
        :param scheme: the request's URL scheme, for ``Secure``.
        """
        return self._header(value, max_age, scheme)

    def delete_header(self, scheme: str) -> str:
        """The ``Set-Cookie`` value that makes the browser drop the cookie of an ended session.

        :param scheme: the request's URL scheme; the attributes must match the set cookie's.
        """
        return self._header("", 0, scheme, expires=0)

    def _header(self, value: str, max_age: int | None, scheme: str, expires: int | None = None) -> str:
        header = dump_cookie(
            self.name,
            value,
            max_age=max_age,
            expires=expires,
            path=self.path,
            domain=self.domain,
            secure=self.is_secure(scheme),
            httponly=self.httponly,
            samesite=self.samesite,
        )
        return header + "; Partitioned" if self.partitioned else header
