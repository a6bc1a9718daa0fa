"""Internal: the typed readers of a Flask-style config key, each refusing another type by name.

Each returns ``default`` for a key unset (most for None too); :mod:`pgsession_wsgi.appconfig`
re-exports them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from ..cookies import _article
from ..errors import ConfigurationError


def _refuse(key: str, should: str, value: Any, secret: bool = False) -> ConfigurationError:
    """``KEY must be <should>, not <type> <value>``; a secret's value is never shown."""
    shown = _article(type(value).__name__) if secret else f"{type(value).__name__} {value!r}"
    return ConfigurationError(f"{key} must be {should}, not {shown}")


def config_text(config: Mapping[str, Any], key: str, default: str | None) -> str | None:
    """A text key (a table name, a cookie's name).

    :raises ConfigurationError: the value is not a ``str``.
    """
    value = config.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _refuse(key, "text (a str)", value)
    return value


def config_optional_text(config: Mapping[str, Any], key: str, default: str | None) -> str | None:
    """A text key that None (or "") turns off, e.g. ``PGSESSION_USER_KEY``; unset: ``default``.

    :raises ConfigurationError: the value is neither a ``str`` nor None.
    """
    if key not in config:
        return default
    value = config[key]
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _refuse(key, "text (a str), or None for none", value)
    return value


def config_int(config: Mapping[str, Any], key: str, default: int, minimum: int = 1) -> int:
    """A whole-number key (a pool size), an ``int`` or its digits as text (from the environment).

    :param minimum: the smallest value that makes sense.
    :raises ConfigurationError: the value is no whole number (a bool is none), or below ``minimum``.
    """
    value = config.get(key)
    if value is None:
        return default
    number = int(value.strip()) if isinstance(value, str) and value.strip().isdigit() else value
    if not isinstance(number, int) or isinstance(number, bool) or number < minimum:
        raise _refuse(key, f"a whole number, at least {minimum} (e.g. {default})", value)
    return number


def config_partitions(config: Mapping[str, Any], key: str, default: int | None) -> int | None:
    """``PGSESSION_PARTITIONS``: a number of hash partitions (2 to 1024, also as digits), or None.

    :raises ConfigurationError: the value is no whole number from 2 to 1024.
    """
    if config.get(key) is None:
        return default
    number = config_int(config, key, 16, minimum=2)
    if number > 1024:
        raise _refuse(key, "a whole number from 2 to 1024 (e.g. 16), or None", config.get(key))
    return number


def config_seconds(config: Mapping[str, Any], key: str, default: timedelta) -> timedelta:
    """A duration key: a ``timedelta``, or a number of seconds (as a number or as text).

    :raises ConfigurationError: the value is no duration, or not a positive one.
    """
    value = config.get(key)
    if value is None:
        return default
    duration: timedelta | None = None
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        duration = timedelta(seconds=value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError, OverflowError):
            duration = timedelta(seconds=float(value.strip()))
    if duration is None or duration <= timedelta(0):
        raise _refuse(key, "a positive number of seconds or a datetime.timedelta", value)
    return duration


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def config_flag(config: Mapping[str, Any], key: str, default: bool) -> bool:
    """A yes/no config key: a bool, or its usual spellings from an environment variable.

    ``bool("False")`` is True: a flag read from the environment as text must not turn on what
    it says to turn off, so text other than the usual spellings is refused, naming the key.

    :raises ConfigurationError: the value is neither a bool nor one of its spellings.
    """
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, int) and value in (0, 1):  # a bool too
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise _refuse(key, f"True or False (or one of {', '.join(_TRUE + _FALSE)} as text)", value)


def config_url(config: Mapping[str, Any], key: str, default: str | None) -> str | None:
    """A database URL key: text, or a SQLAlchemy ``URL`` (whose ``str()`` would hide the password).

    The value holds a password: a message never shows it, only its type.

    :param default: when the key is unset, None or blank.
    :raises ConfigurationError: the value is neither text nor a SQLAlchemy URL.
    """
    value = config.get(key)
    if value is None:
        return default
    render = getattr(value, "render_as_string", None)
    if callable(render):
        value = render(hide_password=False)
    if not isinstance(value, str):
        should = "a database URL as text (postgresql://user:password@host/db) or a SQLAlchemy URL"
        raise _refuse(key, should, value, secret=True)
    return value.strip() or default


def config_origins(config: Mapping[str, Any], key: str, default: tuple[str, ...]) -> tuple[Any, ...]:
    """A list of websocket origins (one origin alone is a list of one), each checked later.

    :raises ConfigurationError: the value is neither an origin nor a list of them.
    """
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise _refuse(key, "an origin or a list of origins, e.g. ['https://app.example.com']", value)
    return tuple(value)


def _keys(config: Mapping[str, Any], key: str, default: Any) -> Any:
    # SECRET_KEY and SECRET_KEY_FALLBACKS: read, checked and never shown by cookies.check_secret_keys.
    return config.get(key, default)
