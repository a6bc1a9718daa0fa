"""Internal: the policy a core applies (lifetimes, size limit, user key) and the headers it adds.

:mod:`pgsession_wsgi.core` imports each name back and documents it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ..defaults import MAX_LIFETIME
from ..errors import ConfigurationError
from ..options import SessionOptions


def _duration(value: timedelta | float | None, name: str) -> timedelta | None:
    if value is None:
        return None
    too_long = f"{name} must be at most {MAX_LIFETIME.days} days (100 years), not {value!r}"
    try:
        delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    except OverflowError:  # more days than a timedelta holds
        raise ConfigurationError(too_long) from None
    if delta.total_seconds() <= 0:
        raise ConfigurationError(f"{name} must be positive, not {value!r}")
    if delta > MAX_LIFETIME:  # a session's expiry moves on by it: it must stay readable
        raise ConfigurationError(too_long)
    return delta


@dataclass(frozen=True)
class Policy:
    """How long sessions live, when they are written, and what they may hold; set once.

    Build it with :meth:`from_options`, which checks every value. The fields are the
    :class:`~pgsession_wsgi.SessionOptions` of the same names, durations as ``timedelta``.
    """

    idle_timeout: timedelta
    absolute_timeout: timedelta | None
    touch_interval: timedelta
    permanent: bool
    refresh_each_request: bool
    user_key: str | None
    regenerate_on_user_change: bool
    max_size: int | None

    @classmethod
    def from_options(cls, options: SessionOptions) -> Policy:
        """Check and normalise the lifetimes, size limit and user key, so a bad one fails at start-up.

        Durations may be given in seconds; ``touch_interval`` is capped at a tenth of ``idle_timeout``.

        :raises ConfigurationError: a duration that is not positive, or a ``max_size`` below 1.
        """
        max_size = options.max_size
        idle = _duration(options.idle_timeout, "idle_timeout")
        interval = _duration(options.touch_interval, "touch_interval")
        assert idle is not None and interval is not None
        if max_size is not None and max_size < 1:
            raise ConfigurationError("max_size must be a positive number of bytes, or None")
        return cls(
            idle_timeout=idle,
            absolute_timeout=_duration(options.absolute_timeout, "absolute_timeout"),
            # A touch at most every tenth of the idle timeout keeps expiry within 10% of exact.
            touch_interval=min(interval, idle / 10),
            permanent=options.permanent,
            refresh_each_request=options.refresh_each_request,
            user_key=options.user_key,
            regenerate_on_user_change=options.regenerate_on_user_change,
            max_size=max_size,
        )


def private_cache_control(value: str | None) -> str | None:
    """The Cache-Control a response that sets a session cookie needs, or None to keep ``value``
    (the response's Cache-Control headers joined with ", ", or None). A shared cache (CDN, proxy)
    that stored such a response would hand one user's cookie to everyone, so ``public`` becomes
    ``private``; ``private`` and ``no-store`` already suffice."""
    directives = [part.strip() for part in (value or "").split(",") if part.strip()]
    names = [part.split("=", 1)[0].strip().lower() for part in directives]
    if "private" in names or "no-store" in names:
        return None
    return ", ".join(["private", *(part for part, name in zip(directives, names) if name != "public")])


MERGED_HEADERS = frozenset(("vary", "cache-control"))


def with_session_headers(
    headers: list[tuple[str, str]], extra: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The app's ``headers`` (names in any case) with a save's added, for every front end:
    ``Cookie`` joins the app's ``Vary`` tokens in one header, unless one is already ``Cookie`` or
    ``*``, and a response that sets the cookie gets a private ``Cache-Control``.

    :param extra: what :meth:`SessionCore.save` returned (``Vary``, maybe ``Set-Cookie``).
    """
    merged = list(headers)
    for name, value in extra:
        if name == "Vary":
            merged = _with_vary(merged, value)
            continue
        if name == "Set-Cookie":
            cache = [sent for header, sent in merged if header.lower() == "cache-control"]
            private = private_cache_control(", ".join(cache) if cache else None)
            if private is not None:
                merged = [header for header in merged if header[0].lower() != "cache-control"]
                merged.append(("Cache-Control", private))
        merged.append((name, value))
    return merged


def _with_vary(headers: list[tuple[str, str]], token: str) -> list[tuple[str, str]]:
    sent = [value for name, value in headers if name.lower() == "vary"]
    if not sent:  # the common case: the app sends no Vary of its own
        return [*headers, ("Vary", token)]
    tokens = [part.strip() for value in sent for part in value.split(",") if part.strip()]
    if "*" in tokens or token.lower() in (part.lower() for part in tokens):
        return headers
    others = [header for header in headers if header[0].lower() != "vary"]
    return [*others, ("Vary", ", ".join([*tokens, token]))]
