"""One core and one store per process: built at the first session, rebuilt on a settings change."""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass
from typing import Any

from django.core.signals import setting_changed

from ..appconfig import store_arguments
from ..cookies import HmacIdSigner, prefixed_id
from ..core import SessionCore
from ..errors import ConfigurationError
from ..options import SessionOptions
from ._settings import database_dsn, setting, warn_unknown_settings
from ._store import DjangoStore


@dataclass(frozen=True)
class _StoreConfig:
    dsn: str
    #: The store's keyword arguments from the settings (``appconfig.store_arguments``), as pairs.
    store: tuple[tuple[str, Any], ...]
    purge_interval: float | None
    legacy_table: str | None
    legacy_schema: str | None


@dataclass(frozen=True)
class Runtime:
    """What every session of the process shares: the core, the store, and settings read once."""

    core: SessionCore
    store: DjangoStore
    secret_key: bytes
    id_head: str
    move_django_sessions: bool
    expire_at_browser_close: bool


_lock = threading.Lock()
_runtime: Runtime | None = None
_stores: dict[_StoreConfig, DjangoStore] = {}


def _store_config() -> _StoreConfig:
    dsn = setting("PGSESSION_DSN") or database_dsn(setting("PGSESSION_DATABASE"))
    purge = setting("PGSESSION_PURGE_INTERVAL")
    move = setting("PGSESSION_MOVE_DJANGO_SESSIONS")
    return _StoreConfig(
        dsn=dsn,
        store=tuple(store_arguments(setting).items()),
        purge_interval=None if purge is None else purge.total_seconds(),
        legacy_table=setting("PGSESSION_DJANGO_TABLE") if move else None,
        legacy_schema=setting("PGSESSION_DJANGO_SCHEMA") if move else None,
    )


def _open_store(config: _StoreConfig) -> DjangoStore:
    store = _stores.get(config)
    if store is None:
        store = DjangoStore(config.dsn, purge_interval=config.purge_interval, **dict(config.store))
        if config.legacy_table is not None:
            store.set_legacy_table(config.legacy_table, config.legacy_schema)
        _stores[config] = store
    return store


def _build_runtime() -> Runtime:
    warn_unknown_settings()
    secret = setting("SECRET_KEY")
    if not secret:
        raise ConfigurationError(
            "SECRET_KEY is not set: pgsession_wsgi.django signs the session cookie with it; set it "
            "to a long random value, e.g. from secrets.token_hex(32)"
        )
    names = {"secret_key": "SECRET_KEY", "fallback_secret_keys": "SECRET_KEY_FALLBACKS"}
    signer = HmacIdSigner(secret, setting("SECRET_KEY_FALLBACKS") or (), names=names)
    expire_at_browser_close = setting("SESSION_EXPIRE_AT_BROWSER_CLOSE")
    absolute = setting("PGSESSION_ABSOLUTE_TIMEOUT")
    key_prefix = setting("PGSESSION_KEY_PREFIX")
    options = SessionOptions(
        cookie_name=setting("SESSION_COOKIE_NAME"),
        idle_timeout=setting("SESSION_COOKIE_AGE"),
        absolute_timeout=absolute,
        permanent=not expire_at_browser_close,
        cookie_path=setting("SESSION_COOKIE_PATH"),
        cookie_domain=setting("SESSION_COOKIE_DOMAIN"),
        # Django's False means "not forced", as Flask's does.
        cookie_secure=True if setting("SESSION_COOKIE_SECURE") else None,
        cookie_httponly=setting("SESSION_COOKIE_HTTPONLY"),
        cookie_samesite=setting("SESSION_COOKIE_SAMESITE"),
        user_key=setting("PGSESSION_USER_KEY"),
        signer=signer,
        key_prefix=key_prefix,
    )
    core = SessionCore.from_options(options)
    config = _store_config()
    return Runtime(
        core=core,
        store=_open_store(config),
        secret_key=secret.encode("utf-8") if isinstance(secret, str) else bytes(secret),
        id_head=prefixed_id("", key_prefix),
        move_django_sessions=config.legacy_table is not None,
        expire_at_browser_close=expire_at_browser_close,
    )


def current_runtime() -> Runtime:
    """This process's runtime, built from the settings at the first session after a change."""
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
    """Close every store this process opened (at exit too); the next session opens one again."""
    global _runtime
    with _lock:
        _runtime = None
        stores = list(_stores.values())
        _stores.clear()
    for store in stores:
        store.close()


atexit.register(close_stores)
