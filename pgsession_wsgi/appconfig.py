"""Internal: reading a Flask-style app config (Flask and Quart share it) into our options.

Both frameworks keep the session settings under the same keys (``SESSION_COOKIE_*``,
``PERMANENT_SESSION_LIFETIME``, ...) and expose them through the same session-interface getters,
so one reading serves the Flask and the Quart extension alike, and neither imports the other.
The checks of ``PgSession(store=...)`` and the headers a save adds to a response are shared too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, TypeVar, Union

from .cookies import HmacIdSigner, _article, check_prefix, check_secret_keys
from .core import private_cache_control
from .errors import ConfigurationError, OutsideRequestError

__all__ = [
    "DSN_STORE_KEYS",
    "EXTENSION_KEY",
    "FLASK_LOGIN_USER_KEY",
    "add_session_headers",
    "check_store_source",
    "config_flag",
    "cookie_options",
    "cookie_signer",
    "extension_of",
    "fallback_keys",
    "logout_ends_session",
    "made_store",
    "pgsession_dsn",
    "refuse_store_keys",
    "require_secret_key",
    "text_url",
    "user_key",
]

SecretKey = Union[str, bytes]
StoreT = TypeVar("StoreT")

#: ``app.extensions`` key holding what the extension set up on an app.
EXTENSION_KEY = "pgsession_wsgi"
#: Flask-Login keeps the logged-in user's id under this session key.
FLASK_LOGIN_USER_KEY = "_user_id"
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
    "PGSESSION_CREATE_TABLE",
)
_POSTGRES_URL = re.compile(r"^postgres(?:ql)?(?:\+[a-z0-9_]+)?://", re.IGNORECASE)


def text_url(value: Any) -> str | None:
    """A config URL as text; SQLAlchemy URL objects would hide the password in ``str()``.

    :param value: a string, a SQLAlchemy ``URL``, or None.
    """
    if value is None:
        return None
    render = getattr(value, "render_as_string", None)
    text = render(hide_password=False) if callable(render) else value
    return str(text).strip() or None


def pgsession_dsn(config: Any) -> str:
    """``PGSESSION_DSN``, else ``SQLALCHEMY_DATABASE_URI`` when it is a PostgreSQL URL.

    :param config: the app's config mapping.
    :raises ConfigurationError: neither names a PostgreSQL database.
    """
    dsn = text_url(config.get("PGSESSION_DSN"))
    if not dsn:
        fallback = text_url(config.get("SQLALCHEMY_DATABASE_URI"))
        if fallback and _POSTGRES_URL.match(fallback):
            dsn = fallback
    if not dsn:
        raise ConfigurationError(
            "PGSESSION_DSN is not set (and SQLALCHEMY_DATABASE_URI is not a PostgreSQL URL): "
            "set app.config['PGSESSION_DSN'] = 'postgresql://user:password@host:5432/dbname'"
        )
    return dsn


def require_secret_key(app: Any) -> None:
    """Refuse an app without ``SECRET_KEY``: the extension signs the session cookie with it.

    :param app: a Flask or Quart app.
    :raises ConfigurationError: ``app.secret_key`` is not set.
    """
    if not app.secret_key:
        raise ConfigurationError(
            "SECRET_KEY is not set: PgSession signs the session cookie with it; set "
            "app.config['SECRET_KEY'] to a long random value, e.g. secrets.token_hex(32)"
        )


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def config_flag(config: Any, key: str, default: bool) -> bool:
    """A yes/no config key: a bool, or its usual spellings from an environment variable.

    ``bool("False")`` is True: a flag read from the environment as text must not turn on what
    it says to turn off, so text other than the usual spellings is refused, naming the key.

    :param config: the app's config mapping.
    :param key: the key, e.g. ``"PGSESSION_CREATE_TABLE"``.
    :param default: when the key is unset (or None).
    :raises ConfigurationError: the value is neither a bool nor one of its spellings.
    """
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigurationError(
        f"{key} must be True or False (or one of {', '.join(_TRUE + _FALSE)} as text), "
        f"not {type(value).__name__}"
    )


def check_store_source(store: Any, store_type: type[Any], example: str) -> None:
    """Refuse a ``PgSession(store=...)`` that is neither a store of ``store_type`` nor a callable.

    :param store: what the app passed; None (a store opened from the DSN) passes.
    :param store_type: the store class the extension runs on.
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

    :param store: the callable's answer.
    :param store_type: the store class the extension runs on.
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

    They configure a store opened from ``PGSESSION_DSN`` (where to connect, how many connections,
    which table); the app's store was built with its own answers, so a key that is set would be
    silently ignored. ``SQLALCHEMY_DATABASE_URI`` is the app's, not ours: it is not refused.

    :param config: the app's config mapping.
    :param keys: the keys the extension reads for its own store.
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


def user_key(config: Any) -> str | None:
    """``PGSESSION_USER_KEY``, Flask-Login's key by default: a login then gets a new session id
    and the user's sessions can be listed and revoked. None turns both off.

    :param config: the app's config mapping.
    """
    value = config.get("PGSESSION_USER_KEY", FLASK_LOGIN_USER_KEY)
    return str(value) if value else None


def logout_ends_session(config: Any) -> bool:
    """``PGSESSION_LOGOUT_ENDS_SESSION``: Flask-Login's ``logout_user()`` ends the whole session.

    Off by default, as before: ``logout_user()`` then removes only Flask-Login's own keys and the
    rest of the session (a cart, a language) outlives the logout under the same id.

    :param config: the app's config mapping.
    """
    return bool(config.get("PGSESSION_LOGOUT_ENDS_SESSION", False))


def fallback_keys(app: Any) -> list[SecretKey]:
    """``SECRET_KEY_FALLBACKS`` as a list (one key or several): older keys still accepted.

    Checked with ``SECRET_KEY`` by :func:`~pgsession_wsgi.cookies.check_secret_keys` (for the
    extensions that sign with another signer than :func:`cookie_signer`'s): a key of another type
    is refused, weak ones are one warning.

    :param app: a Flask or Quart app; its ``SECRET_KEY`` is set.
    :raises ConfigurationError: a key is neither text nor bytes.
    """
    return check_secret_keys(app.secret_key, app.config.get("SECRET_KEY_FALLBACKS") or (), SECRET_KEY_NAMES)


def cookie_signer(app: Any) -> HmacIdSigner:
    """The signer of the session cookie, from ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS``.

    Its keys are checked once, with the config's names in the messages (a weak one is one
    warning naming ``SECRET_KEY`` or ``SECRET_KEY_FALLBACKS[n]``).

    :param app: a Flask or Quart app.
    :raises ConfigurationError: ``SECRET_KEY`` is not set, or a key is neither text nor bytes.
    """
    require_secret_key(app)
    fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or ()
    return HmacIdSigner(app.secret_key, fallbacks, names=SECRET_KEY_NAMES)


def cookie_options(app: Any, interface: Any) -> dict[str, Any]:
    """The middleware options an app's session config asks for (cookie, lifetime).

    :param app: a Flask or Quart app.
    :param interface: a session interface of that framework (its ``get_cookie_*`` getters).
    :raises ConfigurationError: ``SESSION_COOKIE_PARTITIONED`` is set (not supported), or a
        ``__Host-`` or ``__Secure-`` ``SESSION_COOKIE_NAME`` meets a key its prefix forbids
        (``SESSION_COOKIE_DOMAIN``, a ``SESSION_COOKIE_PATH`` other than ``/``).
    """
    config = app.config
    if config.get("SESSION_COOKIE_PARTITIONED"):
        raise ConfigurationError("SESSION_COOKIE_PARTITIONED is not supported by pgsession-wsgi")
    samesite = interface.get_cookie_samesite(app)
    options = {
        "idle_timeout": app.permanent_session_lifetime,
        "refresh_each_request": bool(config["SESSION_REFRESH_EACH_REQUEST"]),
        "cookie_name": interface.get_cookie_name(app),
        "cookie_path": interface.get_cookie_path(app) or "/",
        "cookie_domain": interface.get_cookie_domain(app) or None,
        # The frameworks' False means "not forced": Secure still follows an https request.
        "cookie_secure": True if interface.get_cookie_secure(app) else None,
        "cookie_httponly": bool(interface.get_cookie_httponly(app)),
        # Unset becomes Lax (safe by default); the frameworks accept any case, the core wants "Lax".
        "cookie_samesite": samesite.title() if isinstance(samesite, str) and samesite else "Lax",
    }
    # The cookies module's check, with the config's own key names in its message.
    keys = {option: f"SESSION_COOKIE_{option.upper()}" for option in ("secure", "path", "domain")}
    name, path, domain = options["cookie_name"], options["cookie_path"], options["cookie_domain"]
    check_prefix(name, path, domain, options["cookie_secure"], keys)
    return options


def extension_of(app: Any, apps: list[Any], current_app: Any, has_app_context: Any) -> Any:
    """What the extension set up on ``app``: the one given, else the current one, else the only one.

    :param app: the app asked about, or None.
    :param apps: the apps this extension instance set up.
    :param current_app: the framework's ``current_app`` proxy.
    :param has_app_context: the framework's ``has_app_context``.
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
    """Add a save's headers to a framework response; a new cookie makes its caching private.

    :param response: a Flask, Quart or Werkzeug response.
    :param headers: what the core's save returned (``Set-Cookie``, ``Vary``).
    """
    for name, value in headers:
        if name == "Set-Cookie":
            private = private_cache_control(response.headers.get("Cache-Control"))
            if private is not None:
                response.headers["Cache-Control"] = private
        response.headers.add(name, value)
