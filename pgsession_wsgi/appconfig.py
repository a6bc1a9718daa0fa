"""Internal: reading a Flask-style app config (Flask and Quart share its keys) into our options.

Every key an extension reads is in one table, :data:`SETTINGS`; :func:`setting` reads a key through it.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from . import defaults
from ._adapters.config_readers import (
    _keys,
    config_flag,
    config_int,
    config_optional_text,
    config_origins,
    config_partitions,
    config_seconds,
    config_text,
    config_url,
)
from .cookies import HmacIdSigner, _article, check_prefix, check_secret_keys
from .core import with_session_headers
from .defaults import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_SCHEMA, DEFAULT_TABLE
from .errors import ConfigurationError, OutsideRequestError

__all__ = [
    "DSN_STORE_KEYS",
    "EXTENSION_KEY",
    "EXTENSIONS",
    "FLASK_LOGIN_USER_KEY",
    "SECRET_KEY_NAMES",
    "SETTINGS",
    "STORE_SETTINGS",
    "Setting",
    "add_session_headers",
    "check_keys",
    "check_store_source",
    "config_flag",
    "config_int",
    "config_optional_text",
    "config_origins",
    "config_partitions",
    "config_seconds",
    "config_text",
    "config_url",
    "cookie_options",
    "cookie_signer",
    "extension_of",
    "fallback_keys",
    "made_store",
    "pgsession_dsn",
    "refuse_store_keys",
    "require_secret_key",
    "setting",
    "store_arguments",
]

log = logging.getLogger("pgsession_wsgi")

SecretKey = Union[str, bytes]
StoreT = TypeVar("StoreT")

#: ``app.extensions`` key holding what the extension set up on an app.
EXTENSION_KEY = "pgsession_wsgi"
#: Flask-Login keeps the logged-in user's id under this session key (every front end's default).
FLASK_LOGIN_USER_KEY = defaults.DEFAULT_USER_KEY
#: What the messages about the signing keys call them in a Flask or Quart config.
SECRET_KEY_NAMES = {"secret_key": "SECRET_KEY", "fallback_secret_keys": "SECRET_KEY_FALLBACKS"}
#: The config keys of the store both extensions open from the DSN; refused when the app gives its own.
DSN_STORE_KEYS = (
    "PGSESSION_DSN",
    "PGSESSION_MAX_CONNECTIONS",
    "PGSESSION_TABLE",
    "PGSESSION_SCHEMA",
    "PGSESSION_SYNCHRONOUS_COMMIT",
    "PGSESSION_UNLOGGED",
    "PGSESSION_PARTITIONS",
    "PGSESSION_CREATE_TABLE",
)
#: The extensions that read a Flask-style config, by the name :data:`SETTINGS` knows them by.
EXTENSIONS = {
    "flask": "Flask's PgSession",
    "quart": "Quart's PgSession",
    "flask-pg-session": "FlaskPgSession",
}
_POSTGRES_URL = re.compile(r"^postgres(?:ql)?(?:\+[a-z0-9_]+)?://", re.IGNORECASE)
_PREFIX = "PGSESSION_"


# -- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One config key an extension reads: what it holds, its default, what it does, who reads it.

    :param kind: what its value is, in words (``"whole number"``, ``"yes/no"``, ...).
    :param reader: the typed reader (:func:`config_int`, :func:`config_flag`, ...).
    :param extensions: the extensions that read it, among :data:`EXTENSIONS`.
    """

    key: str
    kind: str
    default: Any
    doc: str
    reader: Callable[[Mapping[str, Any], str, Any], Any]
    extensions: frozenset[str] = frozenset(EXTENSIONS)

    def read(self, config: Mapping[str, Any]) -> Any:
        """The key's value in ``config``, checked; the default when unset.

        :raises ConfigurationError: a value of another type, naming the key.
        """
        return self.reader(config, self.key, self.default)


_OURS = frozenset({"flask", "quart"})
_FLASK = frozenset({"flask", "flask-pg-session"})
_FPS = frozenset({"flask-pg-session"})
_ALL = frozenset(EXTENSIONS)

#: Every key an extension reads, by name: the one place each is defined.
SETTINGS: dict[str, Setting] = {
    setting.key: setting
    for setting in (
        # pgsession-wsgi's own keys
        Setting("PGSESSION_DSN", "database URL", None,
                "the database (else a PostgreSQL SQLALCHEMY_DATABASE_URI)", config_url, _OURS),
        Setting("PGSESSION_TABLE", "text", DEFAULT_TABLE, "the session table's name", config_text, _ALL),
        Setting("PGSESSION_SCHEMA", "text", DEFAULT_SCHEMA, "its schema, created if missing",
                config_text, _OURS),
        Setting("PGSESSION_MAX_CONNECTIONS", "whole number", DEFAULT_MAX_CONNECTIONS,
                "the pool's size in each process", config_int, _OURS),
        Setting("PGSESSION_SYNCHRONOUS_COMMIT", "yes/no", True,
                "False: faster writes, the last ones lost in a database crash", config_flag, _OURS),
        Setting("PGSESSION_UNLOGGED", "yes/no", False,
                "an UNLOGGED table: no WAL, emptied after a database crash", config_flag, _ALL),
        Setting("PGSESSION_PARTITIONS", "whole number or None", None,
                "a table PARTITION BY HASH into this many partitions (None: a plain table)",
                config_partitions, _OURS),
        Setting("PGSESSION_CREATE_TABLE", "yes/no", True,
                "create the table (False: `pgsession-wsgi init` made it)", config_flag, _ALL),
        Setting("PGSESSION_PREPARED_STATEMENTS", "yes/no", True,
                "prepare the request statements on the server", config_flag, _OURS),
        Setting("PGSESSION_USER_KEY", "text or None", FLASK_LOGIN_USER_KEY,
                "the session key holding the user's id (None: no user column, no login regeneration)",
                config_optional_text, _ALL),
        Setting("PGSESSION_LOGOUT_ENDS_SESSION", "yes/no", False,
                "Flask-Login's logout_user() ends the whole session", config_flag, _FLASK),
        Setting("PGSESSION_WEBSOCKET_ORIGINS", "list of origins", (),
                "other origins whose pages may open a websocket with the session", config_origins,
                frozenset({"quart"})),
        # the database URL Flask-SQLAlchemy uses too
        Setting("SQLALCHEMY_DATABASE_URI", "database URL", None,
                "PgSession's database if PGSESSION_DSN is unset; FlaskPgSession's", config_url, _ALL),
        # flask-pg-session's keys, which FlaskPgSession reads as it did
        Setting("SESSION_PG_TABLE", "text", None, "flask-pg-session's table (unset: its flask_sessions)",
                config_text, _FPS),
        Setting("SESSION_PG_SCHEMA", "text", DEFAULT_SCHEMA, "the schema of both tables", config_text, _FPS),
        Setting("SESSION_KEY_PREFIX", "text", "", "keeps apps sharing a table apart", config_text, _FPS),
        Setting("SESSION_USE_SIGNER", "yes/no", False, "flask-pg-session's signed cookies",
                config_flag, _FPS),
        Setting("SESSION_PERMANENT", "yes/no", True, "sessions start permanent", config_flag, _FPS),
        Setting("SESSION_AUTODELETE_EXPIRED", "yes/no", True, "purge expired rows in the background",
                config_flag, _FPS),
        Setting("SESSION_PG_MAX_DB_CONN", "whole number", DEFAULT_MAX_CONNECTIONS,
                "the pool's size in each process", config_int, _FPS),
        # the frameworks' own keys, read as they read them
        Setting("SECRET_KEY", "text or bytes", None, "signs the session cookie", _keys, _ALL),
        Setting("SECRET_KEY_FALLBACKS", "list of keys", (), "older keys that still verify", _keys, _ALL),
        Setting("SESSION_COOKIE_NAME", "text", "session", "the cookie's name", config_text, _ALL),
        Setting("SESSION_COOKIE_DOMAIN", "text or None", None, "the cookie's Domain (None: this host only)",
                config_optional_text, _ALL),
        Setting("SESSION_COOKIE_PATH", "text or None", None, "the cookie's Path (None: APPLICATION_ROOT)",
                config_optional_text, _ALL),
        Setting("APPLICATION_ROOT", "text", "/", "the cookie's Path when SESSION_COOKIE_PATH is unset",
                config_text, _ALL),
        Setting("SESSION_COOKIE_HTTPONLY", "yes/no", True, "HttpOnly", config_flag, _ALL),
        Setting("SESSION_COOKIE_SECURE", "yes/no", False,
                "True: always Secure; False: Secure over https", config_flag, _ALL),
        Setting("SESSION_COOKIE_SAMESITE", "text or None", None, "SameSite (None: Lax)",
                config_optional_text, _ALL),
        Setting("SESSION_COOKIE_PARTITIONED", "yes/no", False,
                "Partitioned (CHIPS), always with Secure", config_flag, _ALL),
        Setting("PERMANENT_SESSION_LIFETIME", "seconds", DEFAULT_IDLE_TIMEOUT,
                "the idle timeout, and a permanent cookie's Max-Age", config_seconds, _ALL),
        Setting("SESSION_REFRESH_EACH_REQUEST", "yes/no", True,
                "re-send a permanent cookie when its expiry moves", config_flag, _ALL),
    )
}


def setting(config: Mapping[str, Any], key: str) -> Any:
    """The value of ``key`` (one of :data:`SETTINGS`) in an app's config, read as its entry says.

    :raises ConfigurationError: the value is of another type (the message names the key).
    """
    return SETTINGS[key].read(config)


#: The store's keyword arguments that settings give, each with its setting (Django's too).
STORE_SETTINGS: dict[str, str] = {
    "table": "PGSESSION_TABLE",
    "schema": "PGSESSION_SCHEMA",
    "max_connections": "PGSESSION_MAX_CONNECTIONS",
    "synchronous_commit": "PGSESSION_SYNCHRONOUS_COMMIT",
    "unlogged": "PGSESSION_UNLOGGED",
    "partitions": "PGSESSION_PARTITIONS",
    "create_table": "PGSESSION_CREATE_TABLE",
    "prepared_statements": "PGSESSION_PREPARED_STATEMENTS",
}


def store_arguments(read: Callable[[str], Any], extension: str | None = None) -> dict[str, Any]:
    """The store's keyword arguments (:data:`STORE_SETTINGS`) from an app's settings.

    :param read: reads one setting by name, typed (its framework's lookup; a wrong type raises).
    :param extension: only the settings this extension reads (the store's defaults stand for the
        others); None: every one.
    """
    return {
        argument: read(key)
        for argument, key in STORE_SETTINGS.items()
        if extension is None or extension in SETTINGS[key].extensions
    }


def check_keys(config: Mapping[str, Any], extension: str) -> None:
    """Warn, once per key, about ``PGSESSION_*`` keys that would be ignored in silence.

    A typo is named with the nearest setting; so is a setting this extension does not read.

    :param extension: the extension setting the app up, a key of :data:`EXTENSIONS`.
    """
    ours = {key[len(_PREFIX):]: key for key in SETTINGS if key.startswith(_PREFIX)}
    for key in sorted(k for k in config if isinstance(k, str) and k.startswith(_PREFIX)):
        known = SETTINGS.get(key)
        if known is None:
            nearest = difflib.get_close_matches(key[len(_PREFIX):], list(ours), n=1)
            hint = (
                f"did you mean {ours[nearest[0]]}?"
                if nearest
                else "the settings are listed in the docs (Flask: Configuration)"
            )
            log.warning("%s is not a pgsession-wsgi setting; %s", key, hint)
        elif extension not in known.extensions:
            readers = " and ".join(EXTENSIONS[name] for name in EXTENSIONS if name in known.extensions)
            here = EXTENSIONS[extension]
            log.warning("%s has no effect on %s (only %s reads it): remove it", key, here, readers)


# -- what the extensions read ---------------------------------------------------------------------


def pgsession_dsn(config: Mapping[str, Any]) -> str:
    """``PGSESSION_DSN``, else ``SQLALCHEMY_DATABASE_URI`` when it is a PostgreSQL URL.

    :raises ConfigurationError: neither names a PostgreSQL database, or one is of another type.
    """
    dsn = setting(config, "PGSESSION_DSN")
    if not dsn:
        fallback = setting(config, "SQLALCHEMY_DATABASE_URI")
        if fallback and _POSTGRES_URL.match(fallback):
            dsn = fallback
    if not dsn:
        raise ConfigurationError(
            "PGSESSION_DSN is not set (and SQLALCHEMY_DATABASE_URI is not a PostgreSQL URL): "
            "set app.config['PGSESSION_DSN'] = 'postgresql://user:password@host:5432/dbname'"
        )
    return str(dsn)


def require_secret_key(app: Any) -> None:
    """Refuse an app without ``SECRET_KEY``: the extension signs the session cookie with it.

    :raises ConfigurationError: ``app.secret_key`` is not set.
    """
    if not app.secret_key:
        raise ConfigurationError(
            "SECRET_KEY is not set: PgSession signs the session cookie with it; set "
            "app.config['SECRET_KEY'] to a long random value, e.g. secrets.token_hex(32)"
        )


def check_store_source(store: Any, store_type: type[Any], example: str) -> None:
    """Refuse a ``PgSession(store=...)`` that is neither a store of ``store_type`` nor a callable.

    :param store: what the app passed; None (a store opened from the DSN) passes.
    :param example: how the app builds one, for the message.
    :raises ConfigurationError: ``store`` is something else.
    """
    if store is not None and not isinstance(store, store_type) and not callable(store):
        name = store_type.__name__
        raise ConfigurationError(
            f"PgSession(store=...) takes {_article(name)} (e.g. {example}) "
            f"or a callable app -> {name}, not {type(store).__name__}"
        )


def made_store(store: object, store_type: type[StoreT], example: str) -> StoreT:
    """What the app's ``store(app)`` callable returned, refused unless it is a ``store_type``.

    :param example: what the callable should return, for the message.
    :raises ConfigurationError: ``store`` is not a ``store_type``.
    """
    if not isinstance(store, store_type):
        raise ConfigurationError(
            f"the store callable given to PgSession returned {type(store).__name__}, not "
            f"{_article(store_type.__name__)}: return e.g. {example}"
        )
    return store


def refuse_store_keys(config: Any, keys: tuple[str, ...], example: str) -> None:
    """Refuse the config keys of the store the extension opens itself, when the app gives its own.

    The app's store was built with its own answers, so a key that is set would be silently ignored.

    :param example: how the app builds a store, for the message.
    :raises ConfigurationError: one of ``keys`` is set (to anything but None).
    """
    given = [key for key in keys if config.get(key) is not None]
    if given:
        raise ConfigurationError(
            f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} set, but PgSession was given "
            "the app's own store, which decides where sessions live and how: pass those settings "
            f"to the store you build ({example}) and remove {'it' if len(given) == 1 else 'them'} "
            "from the config"
        )


def fallback_keys(app: Any) -> list[SecretKey]:
    """``SECRET_KEY_FALLBACKS`` as a list, checked with ``SECRET_KEY`` (weak ones are one warning).

    For a signer other than :func:`cookie_signer`'s; ``app.secret_key`` must be set.

    :raises ConfigurationError: a key is neither text nor bytes.
    """
    return check_secret_keys(app.secret_key, app.config.get("SECRET_KEY_FALLBACKS") or (), SECRET_KEY_NAMES)


def cookie_signer(app: Any) -> HmacIdSigner:
    """The signer of the session cookie, from ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS``.

    Its keys are checked once, the messages naming the config keys (a weak one is a warning).

    :raises ConfigurationError: ``SECRET_KEY`` is not set, or a key is neither text nor bytes.
    """
    require_secret_key(app)
    fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or ()
    return HmacIdSigner(app.secret_key, fallbacks, names=SECRET_KEY_NAMES)


def cookie_options(app: Any) -> dict[str, Any]:
    """The middleware options (cookie, lifetime) of an app's session config, as the frameworks mean them.

    :raises ConfigurationError: a key of another type, or a ``__Host-`` or ``__Secure-``
        ``SESSION_COOKIE_NAME`` meets a key its prefix forbids (``SESSION_COOKIE_DOMAIN``, a
        ``SESSION_COOKIE_PATH`` other than ``/``).
    """
    config = app.config
    samesite = setting(config, "SESSION_COOKIE_SAMESITE")
    options = {
        "idle_timeout": setting(config, "PERMANENT_SESSION_LIFETIME"),
        "refresh_each_request": setting(config, "SESSION_REFRESH_EACH_REQUEST"),
        "cookie_name": setting(config, "SESSION_COOKIE_NAME"),
        "cookie_path": setting(config, "SESSION_COOKIE_PATH") or setting(config, "APPLICATION_ROOT") or "/",
        "cookie_domain": setting(config, "SESSION_COOKIE_DOMAIN"),
        # The frameworks' False means "not forced": Secure still follows an https request.
        "cookie_secure": True if setting(config, "SESSION_COOKIE_SECURE") else None,
        "cookie_httponly": setting(config, "SESSION_COOKIE_HTTPONLY"),
        # Unset becomes Lax (safe by default); the frameworks accept any case, the core wants "Lax".
        "cookie_samesite": samesite.title() if samesite else "Lax",
        # Always sent Secure (as Flask 3.1 does); the "not forced" False above goes with it.
        "cookie_partitioned": setting(config, "SESSION_COOKIE_PARTITIONED"),
    }
    keys = {option: f"SESSION_COOKIE_{option.upper()}" for option in ("secure", "path", "domain")}
    name, path, domain = options["cookie_name"], options["cookie_path"], options["cookie_domain"]
    check_prefix(name, path, domain, options["cookie_secure"], keys)
    return options


def extension_of(app: Any, apps: list[Any], current_app: Any, has_app_context: Any) -> Any:
    """What the extension set up on ``app``: the one given, else the current one, else the only one.

    :param apps: the apps this extension instance set up.
    :raises OutsideRequestError: no ``app``, no app context, and not exactly one app set up.
    :raises ConfigurationError: pgsession-wsgi is not set up on the app.
    """
    if app is None:
        if has_app_context():
            app = current_app._get_current_object()
        elif len(apps) == 1:
            app = apps[0]
        else:
            raise OutsideRequestError(
                "several apps (or none) use this extension: pass the app, or call this inside an app context"
            )
    try:
        return app.extensions[EXTENSION_KEY]
    except KeyError:
        raise ConfigurationError(
            f"pgsession-wsgi is not set up on the app {app.name!r}: call init_app(app) first"
        ) from None


def add_session_headers(response: Any, headers: Iterable[tuple[str, str]]) -> None:
    """Add a save's headers (``Set-Cookie``, ``Vary``) to a Flask, Quart or Werkzeug response.

    As :func:`~pgsession_wsgi.core.with_session_headers` merges them: one ``Vary``; a new cookie
    makes caching private.
    """
    merged = with_session_headers(list(response.headers.items()), list(headers))
    response.headers.clear()
    response.headers.extend(merged)
