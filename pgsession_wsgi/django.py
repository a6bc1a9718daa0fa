"""Django session engine: ``SESSION_ENGINE = "pgsession_wsgi.django"``, on the shared table.

Django's own ``SessionMiddleware`` stays in charge of the cookie: it builds a
:class:`SessionStore` from the cookie's value, asks it what changed, saves it and sets the cookie
to :attr:`SessionStore.session_key`. That key is our signed cookie value (the HMAC-signed random
id every front end writes, signed with Django's ``SECRET_KEY``), so a Flask, Quart or ASGI app
with the same secret, cookie name and table reads the same session. The data behind the store is
a :class:`pgsession_wsgi.Session` made by the core (:class:`~pgsession_wsgi.core.SessionCore`):
lazy (a request that does not touch the session costs no statement), tracking changes per key
(concurrent saves merge), with the expiry enforced by the database.

Settings (``settings.py``)::

    SESSION_ENGINE = "pgsession_wsgi.django"
    PGSESSION_DATABASE = "default"        # or PGSESSION_DSN = "postgresql://..."

Every setting this module reads is in :data:`SETTINGS`, read through one typed reader. Old
sessions of ``django.contrib.sessions.backends.db`` are moved in as their cookies come back (see
``docs/django.md``, "Moving from Django's database sessions").
"""

from __future__ import annotations

import atexit
import base64
import difflib
import hmac
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .errors import MissingExtraError

try:
    from asgiref.sync import sync_to_async
    from django.conf import settings as django_settings
    from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
    from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
    from django.core.signals import setting_changed
    from django.http import HttpResponse
    from django.utils import timezone as django_timezone
except ModuleNotFoundError as missing:  # the [django] extra: say which command installs it
    raise (MissingExtraError.of(missing, __name__) or missing) from None

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from ._asgi_plumbing import UNAVAILABLE_BODY, log_failure
from .appconfig import (
    Setting,
    config_flag,
    config_int,
    config_optional_text,
    config_partitions,
    config_seconds,
    config_text,
    config_url,
)
from .codec import decode_value, dumps, encode_value
from .cookies import HmacIdSigner, hash_session_id, prefixed_id
from .core import SessionCore, expiry_columns, run, user_id_text
from .defaults import DEFAULT_MAX_CONNECTIONS, DEFAULT_PURGE_INTERVAL, DEFAULT_SCHEMA, DEFAULT_TABLE
from .devices import UserSession, mark_current, request_user
from .errors import ConfigurationError, SessionDataError, SessionError, StoreUnavailable
from .options import SessionOptions
from .session import META_KEYS, Session
from .sql import quote_identifier
from .store import PostgresStore

__all__ = [
    "DJANGO_USER_KEY",
    "FLASK_LOGIN_USER_KEY",
    "SETTINGS",
    "SessionMiddleware",
    "SessionStore",
    "UserSession",
    "close_stores",
    "database_dsn",
    "log_out_other_sessions",
    "mirror_login_for_flask_login",
    "sessions_for_user",
]

log = logging.getLogger("pgsession_wsgi")

#: Where ``django.contrib.auth`` keeps the logged-in user's id (``auth.SESSION_KEY``): the
#: default ``PGSESSION_USER_KEY`` here, mirrored into the table's user column.
DJANGO_USER_KEY = "_auth_user_id"
#: Where Flask-Login looks for the user's id; :func:`mirror_login_for_flask_login` writes it.
FLASK_LOGIN_USER_KEY = "_user_id"

# Django's own session keys, as django.contrib.sessions.backends.base makes them: 32 characters
# of [a-z0-9]. Only such a cookie is looked up in django_session, never a client's other choice.
_DJANGO_KEY = re.compile(r"[a-z0-9]{32}")
# The scheme the core is told: it only decides the Secure flag of a cookie the core would write,
# and Django's SessionMiddleware writes the cookie here.
_SCHEME = "https"
# Options of a Django DATABASES entry that are Django's, not libpq's.
_NOT_LIBPQ = frozenset({"isolation_level", "pool", "server_side_binding", "assume_role", "cursor_factory"})
_DJANGO_ENGINES = ("django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis")


# -- settings ---------------------------------------------------------------------------------


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


_DJANGO = frozenset({"django"})

#: Every setting the engine reads, by name: type, default, one line on what it does. Read with
#: the typed readers of :mod:`pgsession_wsgi.appconfig`, so a value of another type stops the
#: first request with a :class:`~pgsession_wsgi.ConfigurationError` naming the setting.
SETTINGS: dict[str, Setting] = {
    setting.key: setting
    for setting in (
        Setting(
            "PGSESSION_DSN",
            "database URL",
            None,
            "the database; unset: the PostgreSQL of DATABASES[PGSESSION_DATABASE]",
            config_url,
            _DJANGO,
        ),
        Setting(
            "PGSESSION_DATABASE",
            "text",
            "default",
            "the DATABASES alias whose PostgreSQL holds the sessions",
            config_text,
            _DJANGO,
        ),
        Setting("PGSESSION_TABLE", "text", DEFAULT_TABLE, "the session table's name", config_text, _DJANGO),
        Setting(
            "PGSESSION_SCHEMA", "text", DEFAULT_SCHEMA, "its schema, created if missing", config_text, _DJANGO
        ),
        Setting(
            "PGSESSION_CREATE_TABLE",
            "yes/no",
            True,
            "create the table (False: `pgsession-wsgi init` made it)",
            config_flag,
            _DJANGO,
        ),
        Setting(
            "PGSESSION_MAX_CONNECTIONS",
            "whole number",
            DEFAULT_MAX_CONNECTIONS,
            "the pool's size in each process",
            config_int,
            _DJANGO,
        ),
        Setting(
            "PGSESSION_SYNCHRONOUS_COMMIT",
            "yes/no",
            True,
            "False: faster writes, the last ones lost in a database crash",
            config_flag,
            _DJANGO,
        ),
        Setting(
            "PGSESSION_UNLOGGED",
            "yes/no",
            False,
            "an UNLOGGED table: no WAL, emptied after a database crash",
            config_flag,
            _DJANGO,
        ),
        Setting(
            "PGSESSION_PARTITIONS",
            "whole number or None",
            None,
            "a table PARTITION BY HASH into this many partitions (None: a plain table)",
            config_partitions,
            _DJANGO,
        ),
        Setting(
            "PGSESSION_PREPARED_STATEMENTS",
            "yes/no",
            True,
            "prepare the request statements on the server",
            config_flag,
            _DJANGO,
        ),
        Setting(
            "PGSESSION_PURGE_INTERVAL",
            "seconds or None",
            timedelta(seconds=DEFAULT_PURGE_INTERVAL),
            "how often each process purges expired rows (None: only `manage.py clearsessions`)",
            _optional_seconds,
            _DJANGO,
        ),
        Setting(
            "PGSESSION_ABSOLUTE_TIMEOUT",
            "seconds or None",
            None,
            "a session older than this ends however active it is",
            _optional_seconds,
            _DJANGO,
        ),
        Setting("PGSESSION_KEY_PREFIX", "text", "", "keeps apps sharing a table apart", config_text, _DJANGO),
        Setting(
            "PGSESSION_USER_KEY",
            "text or None",
            DJANGO_USER_KEY,
            "the session key mirrored into the user column (None: none)",
            config_optional_text,
            _DJANGO,
        ),
        Setting(
            "PGSESSION_MOVE_DJANGO_SESSIONS",
            "yes/no",
            True,
            "move an old django_session row in when its cookie comes back",
            config_flag,
            _DJANGO,
        ),
        Setting(
            "PGSESSION_DJANGO_TABLE",
            "text",
            "django_session",
            "the table of django.contrib.sessions.backends.db",
            config_text,
            _DJANGO,
        ),
        Setting(
            "PGSESSION_DJANGO_SCHEMA",
            "text or None",
            None,
            "its schema (None: the connection's search_path)",
            config_optional_text,
            _DJANGO,
        ),
        # Django's own settings, with Django's meanings
        Setting("SECRET_KEY", "text or bytes", None, "signs the session cookie", _keys, _DJANGO),
        Setting("SECRET_KEY_FALLBACKS", "list of keys", (), "older keys that still verify", _keys, _DJANGO),
        Setting("SESSION_COOKIE_NAME", "text", "sessionid", "the cookie's name", config_text, _DJANGO),
        Setting(
            "SESSION_COOKIE_AGE",
            "seconds",
            timedelta(weeks=2),
            "the idle timeout, and the cookie's Max-Age",
            config_seconds,
            _DJANGO,
        ),
        Setting(
            "SESSION_COOKIE_DOMAIN",
            "text or None",
            None,
            "the cookie's Domain",
            config_optional_text,
            _DJANGO,
        ),
        Setting("SESSION_COOKIE_PATH", "text", "/", "the cookie's Path", config_text, _DJANGO),
        Setting("SESSION_COOKIE_SECURE", "yes/no", False, "Secure", config_flag, _DJANGO),
        Setting("SESSION_COOKIE_HTTPONLY", "yes/no", True, "HttpOnly", config_flag, _DJANGO),
        Setting("SESSION_COOKIE_SAMESITE", "text or False", "Lax", "SameSite", _samesite, _DJANGO),
        Setting(
            "SESSION_EXPIRE_AT_BROWSER_CLOSE",
            "yes/no",
            False,
            "cookies without Max-Age unless set_expiry() says otherwise",
            config_flag,
            _DJANGO,
        ),
    )
}


def _setting(key: str) -> Any:
    return SETTINGS[key].read(_DjangoSettings())


def _warn_unknown_settings() -> None:
    """One warning per ``PGSESSION_*`` setting that is none of ours (a typo), naming the nearest."""
    ours = [key for key in SETTINGS if key.startswith("PGSESSION_")]
    for name in sorted(_DjangoSettings()):
        if name.startswith("PGSESSION_") and name not in SETTINGS:
            nearest = difflib.get_close_matches(name, ours, n=1)
            hint = f"did you mean {nearest[0]}?" if nearest else "see docs/django.md for the settings"
            log.warning("%s is not a pgsession-wsgi setting; %s", name, hint)


def _libpq_quote(value: Any) -> str:
    text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def database_dsn(alias: str) -> str:
    """A libpq connection string for ``DATABASES[alias]`` (NAME, USER, PASSWORD, HOST, PORT and
    the libpq keys of OPTIONS, such as ``sslmode``, ``options`` or ``service``).

    The engine opens connections of its own with it, never Django's: see ``docs/django.md``.

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
    parts: dict[str, Any] = {}
    for key, name in (
        ("NAME", "dbname"),
        ("USER", "user"),
        ("PASSWORD", "password"),
        ("HOST", "host"),
        ("PORT", "port"),
    ):
        if entry.get(key):
            parts[name] = entry[key]
    for key, value in (entry.get("OPTIONS") or {}).items():
        if key not in _NOT_LIBPQ and isinstance(value, (str, int)) and not isinstance(value, bool):
            parts[key] = value
    if not parts:
        return ""
    return " ".join(f"{name}={_libpq_quote(value)}" for name, value in parts.items())


# -- the store, with the read-through of django_session ------------------------------------------


class _DjangoStore(PostgresStore):
    """A :class:`PostgresStore` that can also read, move and purge ``django_session`` rows."""

    legacy_name: str | None = None

    def set_legacy_table(self, table: str, schema: str | None) -> None:
        """Name the table of Django's database sessions (quoted here)."""
        quoted = quote_identifier(table, "table")
        self.legacy_name = f"{quote_identifier(schema, 'schema')}.{quoted}" if schema else quoted

    def _legacy_sql(self, statement: str) -> str:
        assert self.legacy_name is not None
        return self._steps.guard + statement.replace("{old}", self.legacy_name.replace("%", "%%")).replace(
            "{new}", self.qualified_name.replace("%", "%%")
        )

    def find_django_session(self, key: str) -> tuple[str, datetime] | None:
        """The live ``django_session`` row under ``key``: its encoded data and expiry; None if
        none (or no such table)."""
        statement = self._legacy_sql(
            "SELECT session_data, expire_date FROM {old} WHERE session_key = %(key)s AND expire_date > now()"
        )

        def find(cur: psycopg2.extensions.cursor) -> tuple[str, datetime] | None:
            try:
                cur.execute(statement, {"key": key})
            except psycopg2.errors.UndefinedTable:
                return None
            row = cur.fetchone()
            return None if row is None else (row[0], row[1])

        return self._run(find, retry=True)

    def move_django_session(
        self,
        key: str,
        session_data: str,
        id_hash: bytes,
        data_json: str,
        user_id: str | None,
        absolute: timedelta | None,
        idle_timeout: timedelta | None,
        ends_at: datetime | None,
    ) -> dict[str, Any] | None:
        """Delete the old row and insert it here in one statement; the stored data, or None if
        another request moved (or changed) it first."""
        statement = self._legacy_sql(
            "WITH m AS (DELETE FROM {old} WHERE session_key = %(key)s AND session_data = %(old_data)s"
            " AND expire_date > now() RETURNING expire_date)"
            " INSERT INTO {new} AS t (id, data, user_id, created_at, accessed_at, expires_at, idle_timeout,"
            " ends_at) SELECT %(id)s, %(data)s::jsonb, %(user)s, now(), now(),"
            " LEAST(COALESCE(%(ends_at)s::timestamptz, m.expire_date), now() + %(absolute)s::interval),"
            " %(idle_timeout)s::interval, %(ends_at)s::timestamptz FROM m"
            " ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, user_id = EXCLUDED.user_id,"
            " created_at = EXCLUDED.created_at, accessed_at = EXCLUDED.accessed_at,"
            " expires_at = EXCLUDED.expires_at, idle_timeout = EXCLUDED.idle_timeout,"
            " ends_at = EXCLUDED.ends_at WHERE t.expires_at <= now()"
            " RETURNING t.data"
        )
        params = {
            "key": key,
            "old_data": session_data,
            "id": psycopg2.Binary(id_hash),
            "data": data_json,
            "user": user_id,
            "absolute": absolute,
            "idle_timeout": idle_timeout,
            "ends_at": ends_at,
        }

        def move(cur: psycopg2.extensions.cursor) -> dict[str, Any] | None:
            cur.execute(statement, params)
            try:
                row = cur.fetchone()
            except (ValueError, RecursionError) as exc:
                raise SessionDataError(type(exc).__name__) from None
            return None if row is None else dict(row[0])

        return self._run(move, retry=False)

    def delete_django_session(self, key: str) -> bool:
        """Delete the ``django_session`` row under ``key``; True if there was one."""
        statement = self._legacy_sql("DELETE FROM {old} WHERE session_key = %(key)s")

        def delete(cur: psycopg2.extensions.cursor) -> bool:
            try:
                cur.execute(statement, {"key": key})
            except psycopg2.errors.UndefinedTable:
                return False
            return bool(cur.rowcount)

        return self._run(delete, retry=True)

    def purge_django_sessions(self) -> int:
        """Delete the expired ``django_session`` rows (none if the table is gone); how many went."""
        statement = self._legacy_sql("DELETE FROM {old} WHERE expire_date < now()")

        def purge(cur: psycopg2.extensions.cursor) -> int:
            try:
                cur.execute(statement)
            except psycopg2.errors.UndefinedTable:
                return 0
            return int(cur.rowcount)

        return self._run(purge, retry=True)


# -- one core and one store per process ---------------------------------------------------------


@dataclass(frozen=True)
class _StoreConfig:
    dsn: str
    table: str
    schema: str
    create_table: bool
    max_connections: int
    synchronous_commit: bool
    unlogged: bool
    partitions: int | None
    prepared_statements: bool
    purge_interval: float | None
    legacy_table: str | None
    legacy_schema: str | None


@dataclass(frozen=True)
class _Runtime:
    core: SessionCore
    store: _DjangoStore
    secret_key: bytes
    id_head: str
    move_django_sessions: bool
    absolute_timeout: timedelta | None
    expire_at_browser_close: bool


_lock = threading.Lock()
_runtime: _Runtime | None = None
_stores: dict[_StoreConfig, _DjangoStore] = {}


def _store_config() -> _StoreConfig:
    dsn = _setting("PGSESSION_DSN") or database_dsn(_setting("PGSESSION_DATABASE"))
    purge = _setting("PGSESSION_PURGE_INTERVAL")
    move = _setting("PGSESSION_MOVE_DJANGO_SESSIONS")
    return _StoreConfig(
        dsn=dsn,
        table=_setting("PGSESSION_TABLE"),
        schema=_setting("PGSESSION_SCHEMA"),
        create_table=_setting("PGSESSION_CREATE_TABLE"),
        max_connections=_setting("PGSESSION_MAX_CONNECTIONS"),
        synchronous_commit=_setting("PGSESSION_SYNCHRONOUS_COMMIT"),
        unlogged=_setting("PGSESSION_UNLOGGED"),
        partitions=_setting("PGSESSION_PARTITIONS"),
        prepared_statements=_setting("PGSESSION_PREPARED_STATEMENTS"),
        purge_interval=None if purge is None else purge.total_seconds(),
        legacy_table=_setting("PGSESSION_DJANGO_TABLE") if move else None,
        legacy_schema=_setting("PGSESSION_DJANGO_SCHEMA") if move else None,
    )


def _open_store(config: _StoreConfig) -> _DjangoStore:
    store = _stores.get(config)
    if store is None:
        store = _DjangoStore(
            config.dsn,
            config.table,
            config.schema,
            max_connections=config.max_connections,
            create_table=config.create_table,
            synchronous_commit=config.synchronous_commit,
            unlogged=config.unlogged,
            partitions=config.partitions,
            prepared_statements=config.prepared_statements,
            purge_interval=config.purge_interval,
        )
        if config.legacy_table is not None:
            store.set_legacy_table(config.legacy_table, config.legacy_schema)
        _stores[config] = store
    return store


def _build_runtime() -> _Runtime:
    _warn_unknown_settings()
    secret = _setting("SECRET_KEY")
    if not secret:
        raise ConfigurationError(
            "SECRET_KEY is not set: pgsession_wsgi.django signs the session cookie with it; set it "
            "to a long random value, e.g. from secrets.token_hex(32)"
        )
    names = {"secret_key": "SECRET_KEY", "fallback_secret_keys": "SECRET_KEY_FALLBACKS"}
    signer = HmacIdSigner(secret, _setting("SECRET_KEY_FALLBACKS") or (), names=names)
    expire_at_browser_close = _setting("SESSION_EXPIRE_AT_BROWSER_CLOSE")
    absolute = _setting("PGSESSION_ABSOLUTE_TIMEOUT")
    key_prefix = _setting("PGSESSION_KEY_PREFIX")
    options = SessionOptions(
        cookie_name=_setting("SESSION_COOKIE_NAME"),
        idle_timeout=_setting("SESSION_COOKIE_AGE"),
        absolute_timeout=absolute,
        permanent=not expire_at_browser_close,
        cookie_path=_setting("SESSION_COOKIE_PATH"),
        cookie_domain=_setting("SESSION_COOKIE_DOMAIN"),
        # Django's False means "not forced", as Flask's does.
        cookie_secure=True if _setting("SESSION_COOKIE_SECURE") else None,
        cookie_httponly=_setting("SESSION_COOKIE_HTTPONLY"),
        cookie_samesite=_setting("SESSION_COOKIE_SAMESITE"),
        user_key=_setting("PGSESSION_USER_KEY"),
        signer=signer,
        key_prefix=key_prefix,
    )
    core = SessionCore.from_options(options)
    config = _store_config()
    store = _open_store(config)
    return _Runtime(
        core=core,
        store=store,
        secret_key=secret.encode("utf-8") if isinstance(secret, str) else bytes(secret),
        id_head=prefixed_id("", key_prefix),
        move_django_sessions=config.legacy_table is not None,
        absolute_timeout=core.policy.absolute_timeout,
        expire_at_browser_close=expire_at_browser_close,
    )


def _current() -> _Runtime:
    global _runtime
    runtime = _runtime
    if runtime is not None:
        return runtime
    with _lock:
        if _runtime is None:
            _runtime = _build_runtime()
        return _runtime


def _settings_changed(setting: str = "", **kwargs: Any) -> None:
    """Django's ``setting_changed`` (``override_settings`` in tests): read the settings again."""
    global _runtime
    if setting.startswith(("PGSESSION_", "SESSION_", "SECRET_KEY", "DATABASES")):
        with _lock:
            _runtime = None


setting_changed.connect(_settings_changed, dispatch_uid="pgsession_wsgi.django")


def close_stores() -> None:
    """Close every store this process opened (registered with :mod:`atexit`); the next session
    opens one again."""
    global _runtime
    with _lock:
        _runtime = None
        stores = list(_stores.values())
        _stores.clear()
    for store in stores:
        store.close()


atexit.register(close_stores)


def _derived_id(runtime: _Runtime, django_key: str) -> str:
    """The id an old Django session key moves to: an HMAC of it under ``SECRET_KEY``, so that
    two requests with the same old cookie move it to one row (43 characters, as new ids)."""
    digest = hmac.digest(
        runtime.secret_key, b"pgsession-wsgi django session\x00" + django_key.encode(), "sha256"
    )
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _django_decode(session_data: str) -> dict[str, Any]:
    """An old row's data, decoded by Django's own database backend (its signing, its serializer)."""
    from django.contrib.sessions.backends.db import SessionStore as DjangoDbStore

    return DjangoDbStore().decode(session_data)  # type: ignore[no-any-return]


# -- the engine ---------------------------------------------------------------------------------


class SessionStore(SessionBase):  # type: ignore[misc]  # django-stubs are not installed
    """Django's session store, on the pgsession-wsgi table; Django's SessionMiddleware uses it.

    Everything ``SessionBase`` documents works, with Django's meanings (the exceptions are listed
    in ``docs/django.md``). The data is a :class:`pgsession_wsgi.Session`, loaded on first use
    and saved per changed key.

    :param session_key: the session cookie's value, as Django's ``SessionMiddleware`` passes it;
        None for a new session.
    """

    def __init__(self, session_key: str | None = None) -> None:
        runtime = _current()
        self._runtime = runtime
        self._save_requested = False
        self._moved = False
        self._legacy_key: str | None = None
        header = ""
        if isinstance(session_key, str) and session_key:
            if runtime.move_django_sessions and _DJANGO_KEY.fullmatch(session_key):
                self._legacy_key = session_key
            elif session_key.isascii() and session_key.isprintable() and not set(session_key) & set(";, "):
                header = f"{runtime.core.cookie.name}={session_key}"
        self._data: Session = runtime.core.open(header, _SCHEME, self._load_data)
        super().__init__(session_key)

    # -- loading --------------------------------------------------------------------------

    def _load_data(self, session: Session) -> dict[str, Any] | None:
        """The core's load, then an old Django session's move when the cookie is one."""
        runtime = self._runtime
        raw = run(runtime.core.load(session), runtime.store.execute)
        if raw is not None or self._legacy_key is None:
            return raw
        state = session.state
        state.session_id = runtime.id_head + _derived_id(runtime, self._legacy_key)
        raw = run(runtime.core.load(session), runtime.store.execute)  # moved by an earlier request
        if raw is None:
            state.session_id = runtime.id_head + _derived_id(runtime, self._legacy_key)
            raw = self._move_django_session(session)
        if raw is None:
            state.session_id = None
            return None
        self._moved = True  # the cookie must change to the new, signed one
        return raw

    def _move_django_session(self, session: Session) -> dict[str, Any] | None:
        runtime = self._runtime
        key = self._legacy_key
        assert key is not None and session.state.session_id is not None
        id_hash = hash_session_id(session.state.session_id)
        label = id_hash.hex()[:12]
        found = runtime.store.find_django_session(key)
        if found is None:
            return None
        session_data, _expire_date = found
        data = dict(_django_decode(session_data))
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
                "Django session %s not moved (empty or unreadable data); the request gets a new session",
                label,
            )
            return None
        try:
            encoded = {name: encode_value(value) for name, value in data.items()}
            user_key = runtime.core.policy.user_key
            user_value = data.get(user_key) if user_key is not None else None
            user = (
                None
                if user_value is None
                else user_id_text(user_value, user_key, key_prefix=runtime.core.key_prefix)
            )
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

    def _get_session(self, no_load: bool = False) -> Session:
        self._data.accessed = True
        return self._data

    _session = property(_get_session)

    async def _aget_session(self, no_load: bool = False) -> Session:
        data = self._data
        if not data.loaded:
            await sync_to_async(len)(data)  # loads it, in a thread: the store is psycopg2's
        data.accessed = True
        return data

    @property
    def _session_cache(self) -> Session:
        """The data, once loaded (AttributeError before, as in Django)."""
        if not self._data.loaded:
            raise AttributeError("_session_cache")
        return self._data

    @_session_cache.setter
    def _session_cache(self, value: Mapping[str, Any]) -> None:
        # Django's base replaces the cache with a new dict; here the tracked session is emptied
        # and refilled, so the save still knows what changed.
        if value is self._data:
            return
        items = dict(value)
        self._data.clear()
        self._data.update(items)

    # -- Django's flags ---------------------------------------------------------------------

    @property
    def accessed(self) -> bool:
        """The request read or wrote the session (Django then adds ``Vary: Cookie``)."""
        return self._data.accessed

    @accessed.setter
    def accessed(self, value: bool) -> None:
        self._data.accessed = bool(value)

    @property
    def modified(self) -> bool:
        """Whether the session must be saved: a change the save will write (found by comparing
        values, so a change in place counts), a new lifetime, a new id, or ``modified = True``."""
        data = self._data
        if self._save_requested or self._moved:
            return True
        if not data.accessed:
            return False
        state = data.state
        self._runtime.core.read_cookie(state)
        try:
            return state.resign or data.modified
        except SessionError:
            return True  # a value the save will refuse: the save reports it

    @modified.setter
    def modified(self, value: bool) -> None:
        # True asks for a save (Django's idiom after a change in place, found here anyway);
        # False drops no change.
        self._save_requested = bool(value)
        if value:
            self._data.accessed = True

    @property
    def session_key(self) -> str | None:
        """The cookie's value: the live session's signed id; None when there is none."""
        state = self._data.state
        runtime = self._runtime
        runtime.core.read_cookie(state)
        session_id = state.session_id
        if session_id is None:
            return None
        return runtime.core.signer.sign(session_id[len(runtime.id_head) :])

    def _ending(self) -> bool:
        """The app emptied a stored session: its save deletes the row and expires the cookie."""
        data = self._data
        if not data.accessed or not data.loaded or data.state.session_id is None:
            return False
        try:
            return data.changes(None).empty and data.state.row_found is not False
        except SessionError:
            return False

    def is_empty(self) -> bool:
        """Whether there is neither a session key nor data (Django's middleware then sends no
        cookie, or deletes the one the request had). Asks the database nothing."""
        data = self._data
        if not data.accessed:
            return not self._session_key
        try:
            empty = data.changes(None).empty
        except SessionError:
            return False
        if not empty:
            return False
        if not data.loaded:  # nothing written, nothing read: the cookie decides, as in Django
            return not self._session_key
        return self.session_key is None

    # -- the mapping ----------------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        return key in self._session

    def __getitem__(self, key: str) -> Any:
        return self._session[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._session[key] = value

    def __delitem__(self, key: str) -> None:
        del self._session[key]

    def get(self, key: str, default: Any = None) -> Any:
        """As ``dict.get``; loads the session first."""
        return self._session.get(key, default)

    def pop(self, key: str, *default: Any) -> Any:
        """As ``dict.pop``."""
        return self._session.pop(key, *default)

    def setdefault(self, key: str, value: Any) -> Any:
        """As ``dict.setdefault``."""
        return self._session.setdefault(key, value)

    def update(self, dict_: Any) -> None:
        """As ``dict.update``; a value the codec refuses stores none of them."""
        self._session.update(dict_)

    def has_key(self, key: str) -> bool:
        """Whether ``key`` is in the session."""
        return key in self._session

    def keys(self) -> Any:
        """As ``dict.keys``."""
        return self._session.keys()

    def values(self) -> Any:
        """As ``dict.values``."""
        return self._session.values()

    def items(self) -> Any:
        """As ``dict.items``."""
        return self._session.items()

    def clear(self) -> None:
        """Empty the session (no load); the save then ends it: the row goes, the cookie too."""
        self._data.clear()

    # -- expiry -----------------------------------------------------------------------------

    def set_expiry(self, value: Any) -> None:
        """Django's meanings: seconds of inactivity (an ``int``), a fixed end (a ``datetime``, or
        a ``timedelta`` from now), 0 for a cookie that ends with the browser, None for the
        global policy.

        :raises InvalidExpiry: an end that is not in the future, or a negative number of seconds.
        """
        data = self._data
        runtime = self._runtime
        data.accessed = True
        if value is None:
            data.set_expiry(None)
            data.pop("_permanent", None)
            return
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
            data.set_expiry(None)
            data["_permanent"] = False
            return
        if isinstance(value, timedelta):
            value = django_timezone.now() + value
        if isinstance(value, datetime):
            if value.utcoffset() is None:
                value = django_timezone.make_aware(value)
            data.set_expiry(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            data.set_expiry(timedelta(seconds=value))
        else:
            raise TypeError(
                "set_expiry() takes seconds (an int), a datetime, a timedelta, 0 or None, "
                f"not {type(value).__name__}"
            )
        if runtime.expire_at_browser_close:
            data["_permanent"] = True
        else:
            data.pop("_permanent", None)

    def _own_expiry(self) -> timedelta | datetime | None:
        return self._data.expiry

    def get_expiry_age(self, **kwargs: Any) -> int:
        """Seconds until the session expires (Django's meaning; ``modification`` and ``expiry``
        as Django takes them). 0 for a session the save will end (emptied)."""
        if "expiry" in kwargs:
            return super().get_expiry_age(**kwargs)  # type: ignore[no-any-return]
        if self._ending():
            return 0
        expiry = self._own_expiry()
        if isinstance(expiry, datetime):
            modification = kwargs.get("modification") or django_timezone.now()
            delta = expiry - modification
            return int(delta.days * 86400 + delta.seconds)
        if isinstance(expiry, timedelta):
            return int(expiry.total_seconds())
        return int(self.get_session_cookie_age())

    def get_expiry_date(self, **kwargs: Any) -> datetime:
        """When the session expires if unused (Django's meaning and keywords)."""
        if "expiry" in kwargs:
            return super().get_expiry_date(**kwargs)  # type: ignore[no-any-return]
        expiry = self._own_expiry()
        if isinstance(expiry, datetime):
            return expiry
        modification = kwargs.get("modification") or django_timezone.now()
        seconds = expiry.total_seconds() if isinstance(expiry, timedelta) else self.get_session_cookie_age()
        return modification + timedelta(seconds=seconds)  # type: ignore[no-any-return]

    def get_expire_at_browser_close(self) -> bool:
        """Whether the cookie ends with the browser: ``set_expiry(0)``, or
        ``SESSION_EXPIRE_AT_BROWSER_CLOSE`` when the session has no lifetime of its own."""
        if self._ending():
            return False  # the cookie goes out with Max-Age=0
        permanent = self._data.get("_permanent")
        if permanent is None:
            return bool(self._runtime.expire_at_browser_close)
        return not permanent

    # -- saving -------------------------------------------------------------------------------

    def _run_save(self) -> None:
        data = self._data
        runtime = self._runtime
        data.accessed = True
        runtime.core.read_cookie(data.state)
        before = data.state.session_id
        try:
            ending = data.loaded and data.changes(None).empty
        except SessionError:
            ending = False
        invalidating = data.state.invalidate
        run(runtime.core.save(data), runtime.store.execute)
        self._save_requested = self._moved = False
        if before is not None and data.state.session_id is None and not ending and not invalidating:
            # The row went away meanwhile (a logout in another request): not brought back.
            raise UpdateError

    def save(self, must_create: bool = False) -> None:
        """Save what changed, merged per key into the stored row (Django's meaning).

        A session never stored is stored under a new id (:attr:`session_key` then changes), an
        emptied one is deleted.

        :param must_create: store a new session; :class:`CreateError` if the key has a live row.
        :raises UpdateError: the row was deleted meanwhile (a concurrent logout); Django's
            middleware answers ``SessionInterrupted``.
        """
        data = self._data
        if must_create and self.session_key is not None and self.exists(self.session_key):
            raise CreateError
        if not data.loaded:
            len(data)  # Django's save loads: the touch of SESSION_SAVE_EVERY_REQUEST needs the row
        if self.session_key is None and not data.changes(None).changed_keys:
            self.create()
            return
        self._run_save()

    def create(self) -> None:
        """Store the session now under a new id, with the data it holds (maybe none)."""
        runtime = self._runtime
        old = self._data
        items = old.copy() if old.accessed or old.loaded else {}
        self._legacy_key = None  # the new session has nothing to move in
        expiry = old.state.expiry
        new = runtime.core.open("", _SCHEME, self._load_data)
        new.update(items)
        if expiry is not None:
            new.set_expiry(expiry)
        if items and not all(name in META_KEYS for name in items):
            self._data = new
            self._run_save()
        else:
            from .cookies import new_session_id

            session_id = runtime.id_head + new_session_id()
            policy = runtime.core.policy
            idle_timeout, ends_at = expiry_columns(expiry)
            runtime.store.insert(
                hash_session_id(session_id),
                dumps({name: encode_value(v) for name, v in items.items()}),
                None,
                policy.idle_timeout,
                policy.absolute_timeout,
                policy.max_size,
                idle_timeout=idle_timeout,
                ends_at=ends_at,
            )
            new.state.session_id = session_id
            new.state.cookie_read = True
            new.preload({name: encode_value(v) for name, v in items.items()})
            new.state.expiry_set = False  # stored with the row
            self._data = new
        self._save_requested = True

    def exists(self, session_key: str | None) -> bool:
        """Whether ``session_key`` (a cookie value) opens a live session."""
        if not session_key:
            return False
        runtime = self._runtime
        if runtime.move_django_sessions and _DJANGO_KEY.fullmatch(session_key):
            moved = runtime.id_head + _derived_id(runtime, session_key)
            if runtime.store.load(hash_session_id(moved), runtime.core.policy.touch_interval) is not None:
                return True
            return runtime.store.find_django_session(session_key) is not None
        id_hash = self._hash_of(session_key)
        return (
            id_hash is not None
            and runtime.store.load(id_hash, runtime.core.policy.touch_interval) is not None
        )

    def _hash_of(self, session_key: str) -> bytes | None:
        runtime = self._runtime
        verified = runtime.core.signer.unsign(session_key)
        if verified is None:
            return None
        return hash_session_id(prefixed_id(verified[0], runtime.core.key_prefix))

    def delete(self, session_key: str | None = None) -> None:
        """Delete the row of ``session_key`` (a cookie value), or of this session's own key."""
        runtime = self._runtime
        if session_key is None:
            state = self._data.state
            runtime.core.read_cookie(state)
            if state.session_id is not None:
                runtime.store.delete(hash_session_id(state.session_id))
            if self._legacy_key is not None:
                runtime.store.delete_django_session(self._legacy_key)
            return
        if runtime.move_django_sessions and _DJANGO_KEY.fullmatch(session_key):
            runtime.store.delete(hash_session_id(runtime.id_head + _derived_id(runtime, session_key)))
            runtime.store.delete_django_session(session_key)
            return
        id_hash = self._hash_of(session_key)
        if id_hash is not None:
            runtime.store.delete(id_hash)

    def load(self) -> dict[str, Any]:
        """The stored data of this session's key, read now; ``{}`` if it has no live row."""
        data = self._data
        if not data.loaded:
            len(data)
            return data.copy()
        runtime = self._runtime
        runtime.core.read_cookie(data.state)
        session_id = data.state.session_id
        if session_id is None:
            return {}
        row = runtime.store.load(hash_session_id(session_id), runtime.core.policy.touch_interval)
        if row is None:
            return {}
        return {name: decode_value(value) for name, value in row.data.items()}

    def flush(self) -> None:
        """End the session now: its row is deleted, the data emptied, the key gone (logout)."""
        data = self._data
        data.invalidate()
        run(self._runtime.core.save(data), self._runtime.store.execute)
        if self._legacy_key is not None:  # the old key's row, wherever it is by now
            runtime = self._runtime
            runtime.store.delete(hash_session_id(runtime.id_head + _derived_id(runtime, self._legacy_key)))
            runtime.store.delete_django_session(self._legacy_key)
            self._legacy_key = None
        self._moved = False
        self._session_key = None

    def cycle_key(self) -> None:
        """Move the session to a new id now, data kept, the old id dead (``auth.login`` calls it)."""
        data = self._data
        len(data)  # as in Django: the data is loaded first
        data.regenerate()
        self._run_save()

    @classmethod
    def clear_expired(cls) -> None:
        """Delete the expired rows (``manage.py clearsessions``), and those of ``django_session``
        while old sessions are being moved in."""
        runtime = _current()
        runtime.store.purge_expired()
        if runtime.move_django_sessions:
            runtime.store.purge_django_sessions()

    # -- async, as Django's base offers it: the same work in a thread -------------------------------

    async def aload(self) -> dict[str, Any]:
        """:meth:`load`, in a thread."""
        return await sync_to_async(self.load)()

    async def asave(self, must_create: bool = False) -> None:
        """:meth:`save`, in a thread."""
        await sync_to_async(self.save)(must_create)

    async def aflush(self) -> None:
        """:meth:`flush`, in a thread."""
        await sync_to_async(self.flush)()

    async def acycle_key(self) -> None:
        """:meth:`cycle_key`, in a thread."""
        await sync_to_async(self.cycle_key)()

    async def aset_expiry(self, value: Any) -> None:
        """:meth:`set_expiry`, in a thread (it may load)."""
        await sync_to_async(self.set_expiry)(value)

    async def aget_expiry_age(self, **kwargs: Any) -> int:
        """:meth:`get_expiry_age`, in a thread."""
        return await sync_to_async(self.get_expiry_age)(**kwargs)

    async def aget_expiry_date(self, **kwargs: Any) -> datetime:
        """:meth:`get_expiry_date`, in a thread."""
        return await sync_to_async(self.get_expiry_date)(**kwargs)

    async def aget_expire_at_browser_close(self) -> bool:
        """:meth:`get_expire_at_browser_close`, in a thread."""
        return await sync_to_async(self.get_expire_at_browser_close)()

    # -- for the helpers below ------------------------------------------------------------------

    @property
    def data(self) -> Session:
        """The :class:`pgsession_wsgi.Session` behind this store (``regenerate()``, ``id``...)."""
        return self._data


# -- users: "your devices" and the bridge to Flask-Login --------------------------------------------


def _request_store(request: Any, what: str) -> SessionStore:
    store = getattr(request, "session", None)
    if not isinstance(store, SessionStore):
        raise ConfigurationError(
            f"{what}() needs request.session from pgsession_wsgi.django: set "
            "SESSION_ENGINE = 'pgsession_wsgi.django' and keep Django's SessionMiddleware"
        )
    return store


def sessions_for_user(request: Any, user_id: Any = None) -> list[UserSession]:
    """The live sessions of the logged-in user, most recently used first ("your devices").

    The request's own session is the one with ``current`` set.

    :param request: the view's ``HttpRequest``.
    :param user_id: whose sessions; None for the user logged in on the request's session.
    :raises ConfigurationError: the engine is another, or ``PGSESSION_USER_KEY`` is None.
    :raises SessionError: no ``user_id`` given and nobody is logged in.
    :raises StoreUnavailable: the database cannot be reached.
    """
    store = _request_store(request, "sessions_for_user")
    runtime = store._runtime
    user = request_user(store.data, runtime.core.policy.user_key, user_id)
    infos = runtime.store.sessions_for_user(user, key_prefix=runtime.core.key_prefix)
    return mark_current(infos, store.data)


def log_out_other_sessions(request: Any, user_id: Any = None) -> int:
    """End every session of the logged-in user except the request's own ("log out other devices").

    Django's ``update_session_auth_hash()`` after a password change already renews this
    session's id; the user's other sessions end here.

    :param request: the view's ``HttpRequest``.
    :param user_id: whose sessions; None for the user logged in on the request's session.
    :returns: how many sessions ended.
    :raises ConfigurationError: the engine is another, or ``PGSESSION_USER_KEY`` is None.
    :raises SessionError: no ``user_id`` given and nobody is logged in.
    """
    store = _request_store(request, "log_out_other_sessions")
    runtime = store._runtime
    user = request_user(store.data, runtime.core.policy.user_key, user_id)
    return runtime.store.revoke_user(user, keep=store.data, key_prefix=runtime.core.key_prefix)


def mirror_login_for_flask_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """A receiver of Django's ``user_logged_in``: put the user's id where Flask-Login reads it.

    Connect it once (``user_logged_in.connect(mirror_login_for_flask_login)``, e.g. in an
    ``AppConfig.ready()``), and a Flask app on the same table, secret and cookie name sees a
    Django login as Flask-Login's ``current_user``: ``_user_id`` is the user's primary key as
    text, ``_fresh`` True. Django's logout ends the whole session, so Flask sees that too.

    :param sender: the user's class (the signal's sender).
    :param request: the request that logged in.
    :param user: the user who logged in.
    :param kwargs: the signal's other arguments.
    """
    session = getattr(request, "session", None)
    if session is None:
        return
    session[FLASK_LOGIN_USER_KEY] = str(user.pk)
    session["_fresh"] = True


# -- the middleware: Django's, with a 503 for a database outage -------------------------------------


def _unavailable(exc: StoreUnavailable) -> Any:
    """The answer to an outage: 503, ``Retry-After: 5``, and the one log line every front end
    writes (Django's own line for a 5xx response is not added to it)."""
    status = log_failure(exc, "saving")
    response = HttpResponse(UNAVAILABLE_BODY, status=status, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = "5"
    response._has_been_logged = True  # Django's log_response: logged once, here
    return response


class SessionMiddleware(DjangoSessionMiddleware):  # type: ignore[misc]  # django-stubs are not installed
    """Django's ``SessionMiddleware`` (same settings, same behaviour), answering a database
    outage with a 503: put it in ``MIDDLEWARE`` in place of
    ``django.contrib.sessions.middleware.SessionMiddleware``.

    A :class:`~pgsession_wsgi.StoreUnavailable` raised by the save (here, in
    ``process_response``) or by a view's use of ``request.session`` (``process_exception``)
    becomes a plain-text 503 with ``Retry-After: 5`` and one log line, as the WSGI and ASGI front
    ends answer it, instead of Django's 500 and traceback. Every other exception, other
    :class:`~pgsession_wsgi.SessionError` included, is Django's to handle as before.
    """

    def process_response(self, request: Any, response: Any) -> Any:
        """Django's: save the session and set its cookie; a 503 when the database is down."""
        try:
            return super().process_response(request, response)
        except StoreUnavailable as exc:
            return _unavailable(exc)

    def process_exception(self, request: Any, exception: BaseException) -> Any:
        """A 503 for a :class:`~pgsession_wsgi.StoreUnavailable` raised by the view; None
        (Django's handling) for any other exception."""
        if isinstance(exception, StoreUnavailable):
            return _unavailable(exception)
        return None
