"""The engine's settings, each typed and read from ``django.conf.settings``; a ``DATABASES`` entry's DSN."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Mapping
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings as django_settings

from ..appconfig import (
    Setting,
    config_flag,
    config_int,
    config_optional_text,
    config_partitions,
    config_seconds,
    config_text,
    config_url,
)
from ..defaults import DEFAULT_MAX_CONNECTIONS, DEFAULT_PURGE_INTERVAL, DEFAULT_SCHEMA, DEFAULT_TABLE
from ..errors import ConfigurationError

log = logging.getLogger("pgsession_wsgi")

#: Where ``django.contrib.auth`` keeps the logged-in user's id (``auth.SESSION_KEY``): the
#: default ``PGSESSION_USER_KEY`` here, mirrored into the table's user column.
DJANGO_USER_KEY = "_auth_user_id"
# Options of a Django DATABASES entry that are Django's, not libpq's.
_NOT_LIBPQ = frozenset({"isolation_level", "pool", "server_side_binding", "assume_role", "cursor_factory"})
_LIBPQ_NAMES = {"NAME": "dbname", "USER": "user", "PASSWORD": "password", "HOST": "host", "PORT": "port"}
_DJANGO_ENGINES = ("django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis")


class _DjangoSettings(Mapping[str, Any]):
    """``django.conf.settings`` as the mapping the typed readers of :mod:`.appconfig` read."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(django_settings, key)
        except AttributeError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(name for name in dir(django_settings) if name.isupper())

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _samesite(config: Mapping[str, Any], key: str, default: str | None) -> str | None:
    # Django takes "Lax", "Strict", "None" or False (no attribute).
    value = config.get(key, default)
    if value is None or value is False:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(
            f"{key} must be 'Lax', 'Strict', 'None' or False, not {type(value).__name__}"
        )
    return value.title()


def _optional_seconds(config: Mapping[str, Any], key: str, default: timedelta | None) -> timedelta | None:
    # Unset: the default; None: none at all (no absolute timeout, no background purge).
    if key not in config:
        return default
    if config[key] is None:
        return None
    return config_seconds(config, key, timedelta(0))


def _keys(config: Mapping[str, Any], key: str, default: Any) -> Any:
    # SECRET_KEY and SECRET_KEY_FALLBACKS: checked, and never shown, by cookies.check_secret_keys.
    return config.get(key, default)


_setting = partial(Setting, extensions=frozenset({"django"}))

#: Every setting the engine reads, by name: type, default, one line on what it does. Read with
#: the typed readers of :mod:`pgsession_wsgi.appconfig`, so a value of another type stops the
#: first request with a :class:`~pgsession_wsgi.ConfigurationError` naming the setting.
SETTINGS: dict[str, Setting] = {
    setting.key: setting
    for setting in (
        _setting(
            "PGSESSION_DSN",
            "database URL",
            None,
            "the database; unset: the PostgreSQL of DATABASES[PGSESSION_DATABASE]",
            config_url,
        ),
        _setting(
            "PGSESSION_DATABASE",
            "text",
            "default",
            "the DATABASES alias whose PostgreSQL holds the sessions",
            config_text,
        ),
        _setting("PGSESSION_TABLE", "text", DEFAULT_TABLE, "the session table's name", config_text),
        _setting("PGSESSION_SCHEMA", "text", DEFAULT_SCHEMA, "its schema, created if missing", config_text),
        _setting(
            "PGSESSION_CREATE_TABLE",
            "yes/no",
            True,
            "create the table (False: `pgsession-wsgi init` made it)",
            config_flag,
        ),
        _setting(
            "PGSESSION_MAX_CONNECTIONS",
            "whole number",
            DEFAULT_MAX_CONNECTIONS,
            "the pool's size in each process",
            config_int,
        ),
        _setting(
            "PGSESSION_SYNCHRONOUS_COMMIT",
            "yes/no",
            True,
            "False: faster writes, the last ones lost in a database crash",
            config_flag,
        ),
        _setting(
            "PGSESSION_UNLOGGED",
            "yes/no",
            False,
            "an UNLOGGED table: no WAL, emptied after a database crash",
            config_flag,
        ),
        _setting(
            "PGSESSION_PARTITIONS",
            "whole number or None",
            None,
            "a table PARTITION BY HASH into this many partitions (None: a plain table)",
            config_partitions,
        ),
        _setting(
            "PGSESSION_PREPARED_STATEMENTS",
            "yes/no",
            True,
            "prepare the request statements on the server",
            config_flag,
        ),
        _setting(
            "PGSESSION_PURGE_INTERVAL",
            "seconds or None",
            timedelta(seconds=DEFAULT_PURGE_INTERVAL),
            "how often each process purges expired rows (None: only `manage.py clearsessions`)",
            _optional_seconds,
        ),
        _setting(
            "PGSESSION_ABSOLUTE_TIMEOUT",
            "seconds or None",
            None,
            "a session older than this ends however active it is",
            _optional_seconds,
        ),
        _setting("PGSESSION_KEY_PREFIX", "text", "", "keeps apps sharing a table apart", config_text),
        _setting(
            "PGSESSION_USER_KEY",
            "text or None",
            DJANGO_USER_KEY,
            "the session key mirrored into the user column (None: none)",
            config_optional_text,
        ),
        _setting(
            "PGSESSION_MOVE_DJANGO_SESSIONS",
            "yes/no",
            True,
            "move an old django_session row in when its cookie comes back",
            config_flag,
        ),
        _setting(
            "PGSESSION_DJANGO_TABLE",
            "text",
            "django_session",
            "the table of django.contrib.sessions.backends.db",
            config_text,
        ),
        _setting(
            "PGSESSION_DJANGO_SCHEMA",
            "text or None",
            None,
            "its schema (None: the connection's search_path)",
            config_optional_text,
        ),
        # Django's own settings, with Django's meanings
        _setting("SECRET_KEY", "text or bytes", None, "signs the session cookie", _keys),
        _setting("SECRET_KEY_FALLBACKS", "list of keys", (), "older keys that still verify", _keys),
        _setting("SESSION_COOKIE_NAME", "text", "sessionid", "the cookie's name", config_text),
        _setting(
            "SESSION_COOKIE_AGE",
            "seconds",
            timedelta(weeks=2),
            "the idle timeout, and the cookie's Max-Age",
            config_seconds,
        ),
        _setting("SESSION_COOKIE_DOMAIN", "text or None", None, "the cookie's Domain", config_optional_text),
        _setting("SESSION_COOKIE_PATH", "text", "/", "the cookie's Path", config_text),
        _setting("SESSION_COOKIE_SECURE", "yes/no", False, "Secure", config_flag),
        _setting("SESSION_COOKIE_HTTPONLY", "yes/no", True, "HttpOnly", config_flag),
        _setting("SESSION_COOKIE_SAMESITE", "text or False", "Lax", "SameSite", _samesite),
        _setting(
            "SESSION_EXPIRE_AT_BROWSER_CLOSE",
            "yes/no",
            False,
            "cookies without Max-Age unless set_expiry() says otherwise",
            config_flag,
        ),
    )
}


def setting(key: str) -> Any:
    """The setting ``key``, read by its typed reader from ``django.conf.settings``."""
    return SETTINGS[key].read(_DjangoSettings())


def warn_unknown_settings() -> None:
    """One warning per ``PGSESSION_*`` setting that is none of ours (a typo), naming the nearest."""
    ours = [key for key in SETTINGS if key.startswith("PGSESSION_")]
    for name in sorted(_DjangoSettings()):
        if name.startswith("PGSESSION_") and name not in SETTINGS:
            nearest = difflib.get_close_matches(name, ours, n=1)
            hint = f"did you mean {nearest[0]}?" if nearest else "see docs/django.md for the settings"
            log.warning("%s is not a pgsession-wsgi setting; %s", name, hint)


def _libpq_quote(value: Any) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def database_dsn(alias: str) -> str:
    """A libpq connection string for ``DATABASES[alias]``: NAME, USER, PASSWORD, HOST, PORT and
    the libpq keys of OPTIONS (``sslmode``, ``service``...), for the engine's own connections.

    :param alias: a key of ``settings.DATABASES``.
    :raises ConfigurationError: no such alias, or its ENGINE is not PostgreSQL.
    """
    databases = getattr(django_settings, "DATABASES", {}) or {}
    entry = databases.get(alias)
    if entry is None:
        raise ConfigurationError(
            f"PGSESSION_DATABASE is {alias!r}, which is not in DATABASES: name one of "
            f"{sorted(databases)!r}, or set PGSESSION_DSN to a postgresql:// URL"
        )
    engine = entry.get("ENGINE", "")
    if engine not in _DJANGO_ENGINES:
        raise ConfigurationError(
            f"DATABASES[{alias!r}] uses {engine!r}, not PostgreSQL: set PGSESSION_DSN to the "
            "PostgreSQL that holds the sessions (postgresql://user:password@host/dbname)"
        )
    parts = {name: entry[key] for key, name in _LIBPQ_NAMES.items() if entry.get(key)}
    for key, value in (entry.get("OPTIONS") or {}).items():
        if key not in _NOT_LIBPQ and isinstance(value, (str, int)) and not isinstance(value, bool):
            parts[key] = value
    return " ".join(f"{name}={_libpq_quote(value)}" for name, value in parts.items())
