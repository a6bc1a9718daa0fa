"""Flask integration: ``PgSession``, and ``FlaskPgSession``, a drop-in for flask-pg-session.

``flask.session`` *is* the :class:`pgsession_wsgi.Session` that ``SessionMiddleware`` put into the
WSGI environ, so Flask code and plain WSGI code see the same data. Importing this module imports
Flask; importing ``pgsession_wsgi`` does not. Usage::

    app.config.update(SECRET_KEY=os.environ["SECRET_KEY"], PGSESSION_DSN="postgresql://app@db/app")
    PgSession(app)  # flask.session now lives in PostgreSQL
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Union, cast

from .errors import MissingExtraError

try:
    from flask import Flask, current_app, has_app_context
except ModuleNotFoundError as missing:  # the [flask] extra: say which command installs it
    raise (MissingExtraError.of(missing, __name__) or missing) from None

# After the check above: these import Flask.
from . import appconfig
from ._adapters.flask_interface import (
    EnvironSessionInterface,
    _teardown_saver,
    register_store_unavailable_handler,
)
from ._adapters.flask_login import (
    _end_session_on_logout,
    _logout_signal,
    log_out_other_sessions,
    sessions_for_user,
)
from .appconfig import EXTENSION_KEY, setting
from .cookies import IdSigner
from .defaults import DEFAULT_PURGE_INTERVAL
from .devices import UserSession
from .errors import ConfigurationError, LegacyTableError
from .flask_pg_session import FLASK_PG_SESSION_TABLE, FlaskPgSessionSigner, LegacyFallbackStore, choose_tables
from .middleware import SessionMiddleware
from .store import PostgresStore

__all__ = [
    "EXTENSION_KEY",
    "EnvironSessionInterface",
    "FlaskPgSession",
    # Defined in pgsession_wsgi.flask_pg_session; re-exported here, its 0.1.0 path.
    "FlaskPgSessionSigner",
    "PgSession",
    "UserSession",
    "log_out_other_sessions",
    "register_store_unavailable_handler",
    "sessions_for_user",
]

#: What ``PgSession(store=...)`` takes: the app's store, or a callable making one for each app.
StoreSource = Union[PostgresStore, Callable[[Flask], PostgresStore]]
#: The config keys of the store PgSession opens from the DSN; refused when the app gives its own.
STORE_KEYS = (*appconfig.DSN_STORE_KEYS, "PGSESSION_PREPARED_STATEMENTS")


@dataclass(frozen=True)
class _Settings:
    dsn: str  # "" when the app gives its own store (never read then)
    store: dict[str, Any]  # the store's keyword arguments from the config
    purge_interval: float | None
    permanent: bool
    signer: IdSigner | None
    user_key: str | None


class _Extension:
    """What PgSession and FlaskPgSession share; they differ only in the config they read."""

    #: flask-pg-session's SESSION_KEY_PREFIX, for the migrate command in error messages.
    key_prefix = ""
    #: Which extension this is, for the config keys it reads (``appconfig.SETTINGS``).
    _config_name = "flask"
    #: The app's own store (or what makes one per app); None: a store opened from the config.
    _store_source: StoreSource | None = None

    def __init__(self, app: Flask | None = None) -> None:
        self._apps: list[Flask] = []
        if app is not None:
            self._setup(app)

    def _setup(self, app: Flask) -> EnvironSessionInterface:
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError(f"pgsession-wsgi is already set up on the app {app.name!r}")
        appconfig.check_keys(app.config, self._config_name)
        settings = self._settings(app)
        # Checked before the store opens: a missing Flask-Login fails the setup with nothing to close.
        logged_out = _logout_signal() if setting(app.config, "PGSESSION_LOGOUT_ENDS_SESSION") else None
        options = appconfig.cookie_options(app)
        store = self._make_store(app, settings)
        # A store the app gave is the app's to close, even when this setup fails.
        owned = self._store_source is None
        try:
            middleware = SessionMiddleware(
                app.wsgi_app,
                store,
                app.secret_key,
                permanent=settings.permanent,
                signer=settings.signer,
                user_key=settings.user_key,
                key_prefix=self.key_prefix,
                **options,
            )
            self._create_table(store)
        except BaseException:
            if owned:
                store.close()
            raise
        interface = EnvironSessionInterface(middleware)
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.session_interface = interface
        # First in the list, so run last (Flask runs them in reverse): after the app's own.
        app.teardown_request_funcs.setdefault(None, []).insert(0, _teardown_saver(middleware))
        register_store_unavailable_handler(app)
        if logged_out is not None:
            # For this app only; blinker drops the connection when the app is garbage collected.
            logged_out.connect(_end_session_on_logout, sender=app)
        app.extensions[EXTENSION_KEY] = middleware
        self._apps.append(app)
        return interface

    def get_middleware(self, app: Flask | None = None) -> SessionMiddleware:
        """The middleware of ``app``; None: of ``current_app``, or of the only app set up.

        :raises OutsideRequestError: no ``app``, no app context, and not exactly one app set up.
        :raises ConfigurationError: pgsession-wsgi is not set up on the app.
        """
        return cast(SessionMiddleware, appconfig.extension_of(app, self._apps, current_app, has_app_context))

    @property
    def store(self) -> PostgresStore:
        """The :class:`PostgresStore` (for ``revoke_user``...) of the app :meth:`get_middleware` finds."""
        return self.get_middleware().store

    def sessions_for_user(self, user_id: Any = None) -> list[UserSession]:
        """The live sessions of the logged-in user: :func:`pgsession_wsgi.flask.sessions_for_user`."""
        return sessions_for_user(user_id)

    def log_out_other_sessions(self, user_id: Any = None) -> int:
        """End the user's other sessions: :func:`pgsession_wsgi.flask.log_out_other_sessions`."""
        return log_out_other_sessions(user_id)

    def _settings(self, app: Flask) -> _Settings:
        raise NotImplementedError

    def _make_store(self, app: Flask, settings: _Settings) -> PostgresStore:
        return PostgresStore(settings.dsn, purge_interval=settings.purge_interval, **settings.store)

    def _create_table(self, store: PostgresStore) -> None:
        try:
            if store._create_table:
                store.create_table()
            elif self._store_source is None:  # an app's own store is left to its migrations
                store.check_table()
        except LegacyTableError as exc:
            if not self.key_prefix:
                raise
            # The migration must know the prefix to find the rows: put it in the command.
            command = f"{exc.command} --key-prefix {shlex.quote(self.key_prefix)}"
            raise LegacyTableError(exc.table, command) from None


class PgSession(_Extension):
    """Server-side Flask sessions in PostgreSQL: ``PgSession(app)`` or ``init_app(app)`` later.

    Wraps ``app.wsgi_app`` with :class:`SessionMiddleware` and installs
    :class:`EnvironSessionInterface`; reads Flask's session config plus the ``PGSESSION_*`` keys
    (docs: Flask). One instance may serve several apps, each with its own store.

    :param app: the app to set up now; None to call :meth:`init_app` later.
    :param store: None (the default) opens a store from ``PGSESSION_DSN``. A
        :class:`~pgsession_wsgi.PostgresStore` the app built (e.g. with
        :meth:`~pgsession_wsgi.PostgresStore.from_engine`) serves every app this instance sets
        up; a callable ``store(app)`` returning one is called for each app inside
        ``app.app_context()`` (where Flask-SQLAlchemy's ``db.engine`` is that app's engine). The
        app's store decides what the DSN store's keys would (setting one is a
        :class:`ConfigurationError`), and stays the app's: PgSession never closes it.
    :raises ConfigurationError: ``store`` is neither a ``PostgresStore`` nor a callable.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        store: PostgresStore | Callable[[Flask], PostgresStore] | None = None,
    ) -> None:
        appconfig.check_store_source(store, PostgresStore, "PostgresStore.from_engine(engine)")
        self._store_source = store
        super().__init__(app)

    def init_app(self, app: Flask) -> None:
        """Set the app up; the table is checked (and created) now, so a bad one fails at start.

        :raises ConfigurationError: ``SECRET_KEY`` or the DSN is missing, an option is invalid,
            or the app is set up already; with ``store``: a config key of the DSN store is set,
            or the callable returned something other than a ``PostgresStore``.
        :raises LegacyTableError: the table still has flask-pg-session's layout.
        :raises StoreUnavailable: the database cannot be reached.
        """
        self._setup(app)

    def _make_store(self, app: Flask, settings: _Settings) -> PostgresStore:
        source = self._store_source
        if source is None:
            return super()._make_store(app, settings)
        if isinstance(source, PostgresStore):
            return source
        with app.app_context():  # Flask-SQLAlchemy's db.engine is the current app's
            store = source(app)
        return appconfig.made_store(store, PostgresStore, "PostgresStore.from_engine(db.engine)")

    def _settings(self, app: Flask) -> _Settings:
        config = app.config
        signer = appconfig.cookie_signer(app)
        if self._store_source is not None:
            appconfig.refuse_store_keys(
                config, STORE_KEYS, "e.g. PostgresStore.from_engine(engine, table=...)"
            )
        return _Settings(
            dsn="" if self._store_source is not None else appconfig.pgsession_dsn(config),
            store=appconfig.store_arguments(partial(setting, config), self._config_name),
            purge_interval=DEFAULT_PURGE_INTERVAL,
            permanent=False,  # as in Flask: a browser-session cookie until session.permanent = True
            signer=signer,
            user_key=setting(config, "PGSESSION_USER_KEY"),
        )


class FlaskPgSession(_Extension):
    """Drop-in replacement for ``flask_pg_session.FlaskPgSession``: change only the import.

    Same construction, config keys and cookie format, so users stay logged in with nothing to run
    first. On flask-pg-session's own table, sessions are stored next to it in
    ``<SESSION_PG_TABLE>_v2`` (or ``PGSESSION_TABLE``), each moved there when its cookie next comes
    back (:class:`~pgsession_wsgi.flask_pg_session.LegacyFallbackStore`). It takes no ``store``:
    it chooses the tables itself, which a store built for one fixed table cannot do.

    :param app: the app to set up now; None to call :meth:`init_app` later.
    """

    _config_name = "flask-pg-session"

    def init_app(self, app: Flask) -> EnvironSessionInterface:
        """Set the app up; returns the session interface, as flask-pg-session does.

        :raises ConfigurationError: as for :meth:`PgSession.init_app`, or ``SESSION_PG_TABLE`` is
            a pgsession-wsgi table and ``<SESSION_PG_TABLE>_v2`` too (set ``PGSESSION_TABLE``).
        :raises StoreUnavailable: the database cannot be reached.
        """
        return self._setup(app)

    def _make_store(self, app: Flask, settings: _Settings) -> PostgresStore:
        """The store for the table :func:`choose_tables` picks, moving sessions in from a legacy one."""
        configured = setting(app.config, "PGSESSION_TABLE") if app.config.get("PGSESSION_TABLE") else None
        options = {**settings.store, "purge_interval": settings.purge_interval}
        table, legacy = choose_tables(settings.dsn, options.pop("table"), options["schema"], configured)
        if legacy is None:
            return PostgresStore(settings.dsn, table, **options)
        return LegacyFallbackStore(
            settings.dsn,
            table,
            legacy_table=legacy,
            key_prefix=self.key_prefix,
            user_key=settings.user_key,
            lifetime=setting(app.config, "PERMANENT_SESSION_LIFETIME"),
            **options,
        )

    def _settings(self, app: Flask) -> _Settings:
        config = app.config
        # Keys the rows (with the id) and picks the old rows to move; the migrate command's too.
        self.key_prefix = setting(config, "SESSION_KEY_PREFIX")
        dsn = setting(config, "SQLALCHEMY_DATABASE_URI")
        if not dsn:
            raise ConfigurationError(
                "SQLALCHEMY_DATABASE_URI is not set: FlaskPgSession stores sessions in that "
                "PostgreSQL database; set it to postgresql://user:password@host:5432/dbname"
            )
        use_signer = setting(config, "SESSION_USE_SIGNER")
        # The key signs only with SESSION_USE_SIGNER (without a key, the signer says what to set).
        fallbacks = appconfig.fallback_keys(app) if use_signer and app.secret_key else []
        signer = FlaskPgSessionSigner(app.secret_key, fallbacks, use_signer=use_signer)
        own = {
            "table": setting(config, "SESSION_PG_TABLE") or FLASK_PG_SESSION_TABLE,
            "schema": setting(config, "SESSION_PG_SCHEMA"),
            "max_connections": setting(config, "SESSION_PG_MAX_DB_CONN"),
        }
        return _Settings(
            dsn=dsn,
            store={**appconfig.store_arguments(partial(setting, config), self._config_name), **own},
            purge_interval=DEFAULT_PURGE_INTERVAL if setting(config, "SESSION_AUTODELETE_EXPIRED") else None,
            permanent=setting(config, "SESSION_PERMANENT"),
            signer=signer,
            user_key=setting(config, "PGSESSION_USER_KEY"),
        )
