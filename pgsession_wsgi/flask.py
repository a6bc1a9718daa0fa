"""Flask integration: ``PgSession``, and ``FlaskPgSession``, a drop-in for flask-pg-session.

``flask.session`` *is* the :class:`pgsession_wsgi.Session` that ``SessionMiddleware`` put into the
WSGI environ: one lazy object, saved by the middleware, so Flask code and plain WSGI code see the
same data. Importing this module imports Flask; importing ``pgsession_wsgi`` does not.

Usage::

    from flask import Flask
    from pgsession_wsgi.flask import PgSession

    app = Flask(__name__)
    app.config.update(SECRET_KEY=os.environ["SECRET_KEY"], PGSESSION_DSN="postgresql://app@db/app")
    PgSession(app)  # flask.session now lives in PostgreSQL

An app with its own engine (Flask-SQLAlchemy's ``db``) gives PgSession a store on it instead of a
DSN: ``PgSession(app, store=lambda app: PostgresStore.from_engine(db.engine))``.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any, Union, cast

from .errors import MissingExtraError

try:
    from flask import Flask, current_app, has_app_context, has_request_context
    from flask import request as flask_request
    from flask.globals import request_ctx
    from flask.sessions import NullSession, SessionInterface, SessionMixin
    from flask.typing import ResponseReturnValue
    from flask.wrappers import Request, Response
except ModuleNotFoundError as missing:  # the [flask] extra: say which command installs it
    raise (MissingExtraError.of(missing, __name__) or missing) from None
from werkzeug.exceptions import ServiceUnavailable

from .appconfig import (
    DSN_STORE_KEYS,
    EXTENSION_KEY,
    add_session_headers,
    check_keys,
    check_store_source,
    cookie_options,
    cookie_signer,
    extension_of,
    fallback_keys,
    made_store,
    pgsession_dsn,
    refuse_store_keys,
    setting,
    store_arguments,
)
from .cookies import IdSigner
from .defaults import DEFAULT_PURGE_INTERVAL
from .devices import UserSession, mark_current, request_user
from .errors import ConfigurationError, LegacyTableError, OutsideRequestError, StoreUnavailable
from .flask_pg_session import FLASK_PG_SESSION_TABLE, FlaskPgSessionSigner, LegacyFallbackStore, choose_tables
from .middleware import ENVIRON_KEY, SessionMiddleware
from .session import Session
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

log = logging.getLogger("pgsession_wsgi")

# The session this interface opened itself (no middleware ran) and must save, in this context.
# A context variable, not an environ key: save_session() runs on every request, and reading
# the environ there goes through Flask's request proxy.
_opened_here: ContextVar[Session | None] = ContextVar("pgsession_opened_by_interface", default=None)
SecretKey = Union[str, bytes]
#: What ``PgSession(store=...)`` takes: the app's store, or a callable making one for each app.
StoreSource = Union[PostgresStore, Callable[[Flask], PostgresStore]]
#: The config keys of the store PgSession opens from the DSN; refused when the app gives its own.
STORE_KEYS = (*DSN_STORE_KEYS, "PGSESSION_PREPARED_STATEMENTS")


# -- binding flask.session to the environ session ---------------------------------------------


class EnvironSessionInterface(SessionInterface):
    """Makes ``flask.session`` the session ``SessionMiddleware`` put into the WSGI environ.

    The middleware loads and saves it, so this interface never touches the database itself,
    except for sessions it had to open because no middleware ran: Flask's test client opens
    ``session_transaction()`` sessions that way. Pass the ``middleware`` to support that.

    :param middleware: opens and saves the sessions no middleware ran for; None refuses them.
    """

    def __init__(self, middleware: SessionMiddleware | None = None) -> None:
        self.middleware = middleware

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        """The environ's session, as ``flask.session``; Flask calls this for every request.

        :param app: the Flask app.
        :param request: the request whose environ holds the session.
        :raises OutsideRequestError: no middleware ran and none was given to this interface.
        """
        session = request.environ.get(ENVIRON_KEY)
        if session is None:
            if self.middleware is None:
                raise OutsideRequestError(
                    "flask.session needs pgsession_wsgi.SessionMiddleware in front of the app: "
                    "wrap it with app.wsgi_app = SessionMiddleware(app.wsgi_app, store, "
                    "secret_key=...) (or the WSGI entry point, for gunicorn), or use "
                    "pgsession_wsgi.flask.PgSession(app), which does both"
                )
            session = self.middleware.open_session(request.environ)
            # This interface, not the middleware, saves it: remember that.
            request.environ[ENVIRON_KEY] = session
            _opened_here.set(session)
        # Flask reports the app's exceptions itself: one that escapes it was propagated on purpose.
        session.state.reported = True
        # Not a SessionMixin subclass, but a dict with the same attributes (permanent, new,
        # modified, accessed), which is all Flask relies on. (No cast(): a call per request.)
        return session  # type: ignore[return-value]

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Save a session this interface opened; check one the middleware opened, which it saves.

        The middleware saves when the response starts, after Flask's own error handling. What of
        that save can fail without the database runs here instead, inside it
        (:meth:`~pgsession_wsgi.core.SessionCore.check`), so that a value changed in place into
        something unstorable is raised like any error of a view: to the test client with
        ``TESTING``, to the debugger with ``DEBUG``, else a 500 with Flask's one log line.

        :param app: the Flask app.
        :param session: ``flask.session``.
        :param response: gets the ``Set-Cookie`` and ``Vary`` headers the save needs.
        :raises UnstorableValue: a value changed in place cannot be stored (nothing is saved).
        """
        middleware = self.middleware
        if middleware is None:
            return
        ours: Session = session  # type: ignore[assignment]  # no cast(): a call on every request
        ours.state.responded = True  # a change from now on is a late one (teardown_request)
        if _opened_here.get() is ours:
            _opened_here.set(None)
            add_session_headers(response, middleware.commit(ours))
        elif ours.accessed:
            middleware.core.check(ours)  # the middleware saves it when the response starts


def _teardown_saver(middleware: SessionMiddleware) -> Callable[[BaseException | None], None]:
    """The ``teardown_request`` function that saves what the app's own teardown functions changed.

    The middleware saves late changes when the body ends, which a server reaches after Flask's
    teardown. A test client need not: Flask's leaves the body unread, and with ``with client:``
    Flask runs the teardown functions (again) when the block ends, after the body. So the late
    save runs here too, as the body's end runs it (the core decides, and says a refusal once):
    into the session's row, or refused with a warning when it would need a new cookie. Only once
    the response was made: a request whose exception went past Flask saves nothing.
    """

    def save_teardown_change(exc: BaseException | None) -> None:
        # Through the proxy's object, not its attribute: a fifth of the cost, on every request.
        session = flask_request._get_current_object().environ.get(ENVIRON_KEY)  # type: ignore[attr-defined]
        if (
            isinstance(session, Session)
            and session.state.responded
            and middleware.core.needs_late_save(session)
        ):
            middleware._save_after_headers(session)

    return save_teardown_change


class _UnavailableSession(NullSession):
    """Stands in for the session after the store failed: reads see nothing, writes fail.

    Without it every later ``session`` read in the same request (an error page template,
    Flask-Login's after_request hook) would wait for the dead store again and turn the 503
    into a 500.
    """

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable(
            "the session store is unavailable; the session is read-only "
            "and empty for the rest of this request"
        )

    __setitem__ = __delitem__ = clear = pop = popitem = update = setdefault = _fail


def _store_unavailable(exc: StoreUnavailable) -> ResponseReturnValue:
    log.error("session store unavailable, answering 503: %s", exc)
    ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
    # Flask >= 3.1 keeps the session in ``_session``; earlier versions in ``session``.
    setattr(ctx, "_session" if hasattr(ctx, "_session") else "session", _UnavailableSession())
    unavailable = ServiceUnavailable(
        "The session store cannot be reached. Please try again shortly.", retry_after=5
    )
    # Goes through the app's own @app.errorhandler(503), if it has one.
    return current_app.handle_http_exception(unavailable)


def register_store_unavailable_handler(app: Flask) -> None:
    """Turn :class:`StoreUnavailable` raised during a request into a 503 via Flask's handlers.

    ``PgSession`` does this itself; call it when you wire ``EnvironSessionInterface`` by hand.
    An app's own handler for ``StoreUnavailable`` is left in place.

    :param app: the Flask app.
    """
    existing = app.error_handler_spec.get(None, {}).get(None, {})
    if StoreUnavailable not in existing:
        app.register_error_handler(StoreUnavailable, _store_unavailable)


# -- the extensions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    dsn: str  # "" when the app gives its own store (never read then)
    #: The store's keyword arguments from the config (``appconfig.store_arguments``).
    store: dict[str, Any]
    purge_interval: float | None
    secret_key: SecretKey | None
    permanent: bool
    signer: IdSigner | None
    user_key: str | None
    logout_ends_session: bool
    key_prefix: str = ""


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
        check_keys(app.config, self._config_name)
        settings = self._settings(app)
        # Checked before the store opens: a missing Flask-Login fails the setup with nothing to close.
        logged_out = _logout_signal() if settings.logout_ends_session else None
        interface = EnvironSessionInterface()
        options = cookie_options(app)
        store = self._make_store(app, settings)
        # A store the app gave is the app's to close, even when this setup fails.
        owned = self._store_source is None
        try:
            middleware = SessionMiddleware(
                app.wsgi_app,
                store,
                settings.secret_key,
                permanent=settings.permanent,
                signer=settings.signer,
                user_key=settings.user_key,
                key_prefix=settings.key_prefix,
                **options,
            )
            self._create_table(store)
        except BaseException:
            if owned:
                store.close()
            raise
        interface.middleware = middleware
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
        """The middleware of ``app``; by default of ``current_app``, or of the only app set up.

        :param app: the app; None for the current one, or the only one this extension set up.
        :raises OutsideRequestError: no ``app``, no app context, and not exactly one app set up.
        :raises ConfigurationError: pgsession-wsgi is not set up on the app.
        """
        return cast(SessionMiddleware, extension_of(app, self._apps, current_app, has_app_context))

    @property
    def store(self) -> PostgresStore:
        """The :class:`PostgresStore` of this app, for ``revoke_user`` and the like.

        Found as :meth:`get_middleware` finds the app, and raises as it does.
        """
        return self.get_middleware().store

    def sessions_for_user(self, user_id: Any = None) -> list[UserSession]:
        """The live sessions of the logged-in user, the request's own marked ``current``.

        The same as :func:`pgsession_wsgi.flask.sessions_for_user`; see there.

        :param user_id: whose sessions; None for the user logged in on the request's session.
        """
        return sessions_for_user(user_id)

    def log_out_other_sessions(self, user_id: Any = None) -> int:
        """End every session of the logged-in user except the request's own.

        The same as :func:`pgsession_wsgi.flask.log_out_other_sessions`; see there.

        :param user_id: whose sessions; None for the user logged in on the request's session.
        """
        return log_out_other_sessions(user_id)

    # -- for subclasses --------------------------------------------------------------------

    def _settings(self, app: Flask) -> _Settings:
        raise NotImplementedError

    def _make_store(self, app: Flask, settings: _Settings) -> PostgresStore:
        return PostgresStore(settings.dsn, purge_interval=settings.purge_interval, **settings.store)

    def _create_table(self, store: PostgresStore) -> None:
        try:
            if not store._create_table:
                # PGSESSION_CREATE_TABLE = False: `pgsession-wsgi init` made it, which needs no app.
                # An app's own store is left to its migrations, which may run through this app.
                if self._store_source is None:
                    store.check_table()
                return
            store.create_table()
        except LegacyTableError as exc:
            if not self.key_prefix:
                raise
            # The migration must know the prefix to find the rows: put it in the command.
            command = f"{exc.command} --key-prefix {shlex.quote(self.key_prefix)}"
            raise LegacyTableError(exc.table, command) from None


class PgSession(_Extension):
    """Server-side Flask sessions in PostgreSQL: ``PgSession(app)`` or ``init_app(app)`` later.

    Wraps ``app.wsgi_app`` with :class:`SessionMiddleware` and installs
    :class:`EnvironSessionInterface`. Reads Flask's session config plus ``PGSESSION_DSN``,
    ``PGSESSION_TABLE``, ``PGSESSION_SCHEMA``, ``PGSESSION_MAX_CONNECTIONS``,
    ``PGSESSION_SYNCHRONOUS_COMMIT``, ``PGSESSION_UNLOGGED`` and ``PGSESSION_PREPARED_STATEMENTS``
    (:class:`~pgsession_wsgi.PostgresStore`'s ``unlogged`` and ``prepared_statements``) and
    ``PGSESSION_USER_KEY`` (default ``"_user_id"``, Flask-Login's key: a login gets a new
    session id by itself); one instance may serve several apps, each with its own store.

    An app that already has its own database setup passes ``store`` instead of a DSN, and the
    sessions then go through its connections::

        db = SQLAlchemy(app)  # Flask-SQLAlchemy, on postgresql+psycopg2://
        PgSession(app, store=lambda app: PostgresStore.from_engine(db.engine))

    The store's own arguments then decide what ``PGSESSION_DSN``, ``PGSESSION_TABLE``,
    ``PGSESSION_SCHEMA``, ``PGSESSION_MAX_CONNECTIONS``, ``PGSESSION_SYNCHRONOUS_COMMIT``,
    ``PGSESSION_UNLOGGED`` and ``PGSESSION_PREPARED_STATEMENTS`` would: setting any of them is a
    :class:`ConfigurationError` (``SQLALCHEMY_DATABASE_URI`` is left alone). The rest of the config
    is read as without a store. The store stays the app's: PgSession never closes it (its
    :meth:`~pgsession_wsgi.PostgresStore.close` would leave the engine open anyway).

    :param app: the app to set up now; None to call :meth:`init_app` later.
    :param store: None (the default) opens a store from ``PGSESSION_DSN``. A
        :class:`~pgsession_wsgi.PostgresStore` the app built (e.g. with
        :meth:`~pgsession_wsgi.PostgresStore.from_engine`) serves every app this instance sets
        up. A callable ``store(app)`` returning one is called by :meth:`init_app` for each app,
        inside ``app.app_context()`` (where Flask-SQLAlchemy's ``db.engine`` is that app's
        engine), so an app factory's apps each get their own store.
    :raises ConfigurationError: ``store`` is neither a ``PostgresStore`` nor a callable.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        store: PostgresStore | Callable[[Flask], PostgresStore] | None = None,
    ) -> None:
        check_store_source(store, PostgresStore, "PostgresStore.from_engine(engine)")
        self._store_source = store
        super().__init__(app)

    def init_app(self, app: Flask) -> None:
        """Set the app up; the table is checked (and created) now, so a bad one fails at start.

        With the app's own ``store`` the table is created now if that store creates tables
        (``create_table=True``, the default); with ``create_table=False`` the store checks it at
        its first statement.

        :param app: the Flask app.
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
        return made_store(store, PostgresStore, "PostgresStore.from_engine(db.engine)")

    def _settings(self, app: Flask) -> _Settings:
        config = app.config
        signer = cookie_signer(app)
        if self._store_source is not None:
            refuse_store_keys(config, STORE_KEYS, "e.g. PostgresStore.from_engine(engine, table=...)")
        return _Settings(
            dsn="" if self._store_source is not None else pgsession_dsn(config),
            store=store_arguments(partial(setting, config), self._config_name),
            purge_interval=DEFAULT_PURGE_INTERVAL,
            secret_key=app.secret_key,
            permanent=False,  # as in Flask: a browser-session cookie until session.permanent = True
            signer=signer,
            user_key=setting(config, "PGSESSION_USER_KEY"),
            logout_ends_session=setting(config, "PGSESSION_LOGOUT_ENDS_SESSION"),
        )


class FlaskPgSession(_Extension):
    """Drop-in replacement for ``flask_pg_session.FlaskPgSession``: change only the import.

    Same construction and config keys (``SQLALCHEMY_DATABASE_URI``, ``SESSION_PG_TABLE``,
    ``SESSION_PG_SCHEMA``, ``SESSION_KEY_PREFIX``, ``SESSION_USE_SIGNER``, ``SESSION_PERMANENT``,
    ``SESSION_AUTODELETE_EXPIRED``, ``SESSION_PG_MAX_DB_CONN``; plus ``PGSESSION_USER_KEY`` and
    ``PGSESSION_UNLOGGED`` as for :class:`PgSession`) and the same cookie format, so users stay
    logged in with nothing to run first. On flask-pg-session's own table, that table stays where it
    is and sessions are stored next to it in ``<SESSION_PG_TABLE>_v2`` (or ``PGSESSION_TABLE``);
    each session moves there when its cookie next comes back
    (:class:`~pgsession_wsgi.flask_pg_session.LegacyFallbackStore`,
    :func:`~pgsession_wsgi.flask_pg_session.choose_tables`). ``SESSION_KEY_PREFIX`` keeps apps that
    share the tables apart, as it did.

    It takes no ``store`` (unlike :class:`PgSession`): it chooses the table itself, from
    ``SESSION_PG_TABLE`` and the tables it finds, and moves flask-pg-session's sessions out of
    the old table as their cookies return, which a store the app built for one fixed table cannot
    do. It connects with ``SQLALCHEMY_DATABASE_URI``, the URL Flask-SQLAlchemy's engine uses too.

    :param app: the app to set up now; None to call :meth:`init_app` later.
    """

    _config_name = "flask-pg-session"

    def init_app(self, app: Flask) -> EnvironSessionInterface:
        """Set the app up; returns the session interface, as flask-pg-session does.

        :param app: the Flask app.
        :raises ConfigurationError: as for :meth:`PgSession.init_app`, or ``SESSION_PG_TABLE`` is
            a pgsession-wsgi table and ``<SESSION_PG_TABLE>_v2`` too (set ``PGSESSION_TABLE``).
        :raises StoreUnavailable: the database cannot be reached.
        """
        return self._setup(app)

    def _make_store(self, app: Flask, settings: _Settings) -> PostgresStore:
        """The store for the table :func:`choose_tables` picks; one that moves sessions in from
        flask-pg-session's table when that table is there."""
        configured = setting(app.config, "PGSESSION_TABLE") if app.config.get("PGSESSION_TABLE") else None
        options = {**settings.store, "purge_interval": settings.purge_interval}
        table, legacy = choose_tables(settings.dsn, options.pop("table"), options["schema"], configured)
        if legacy is None:
            return PostgresStore(settings.dsn, table, **options)
        return LegacyFallbackStore(
            settings.dsn,
            table,
            legacy_table=legacy,
            key_prefix=settings.key_prefix,
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
        fallbacks = fallback_keys(app) if use_signer and app.secret_key else []
        signer = FlaskPgSessionSigner(app.secret_key, fallbacks, use_signer=use_signer)
        # flask-pg-session's keys for what PgSession's PGSESSION_* keys set.
        own = {
            "table": setting(config, "SESSION_PG_TABLE") or FLASK_PG_SESSION_TABLE,
            "schema": setting(config, "SESSION_PG_SCHEMA"),
            "max_connections": setting(config, "SESSION_PG_MAX_DB_CONN"),
        }
        return _Settings(
            dsn=dsn,
            store={**store_arguments(partial(setting, config), self._config_name), **own},
            purge_interval=DEFAULT_PURGE_INTERVAL if setting(config, "SESSION_AUTODELETE_EXPIRED") else None,
            secret_key=app.secret_key,
            permanent=setting(config, "SESSION_PERMANENT"),
            signer=signer,
            user_key=setting(config, "PGSESSION_USER_KEY"),
            logout_ends_session=setting(config, "PGSESSION_LOGOUT_ENDS_SESSION"),
            key_prefix=self.key_prefix,
        )


# -- Flask-Login: logout, and the user's other sessions ----------------------------------------


def _logout_signal() -> Any:
    """Flask-Login's ``user_logged_out`` signal, which ``logout_user()`` sends."""
    try:
        from flask_login import user_logged_out
    except ImportError:
        raise ConfigurationError(
            "PGSESSION_LOGOUT_ENDS_SESSION = True makes Flask-Login's logout_user() end the session, "
            "but Flask-Login is not installed: `pip install flask-login`, or remove the setting and "
            "call flask.session.invalidate() in your logout view"
        ) from None
    return user_logged_out


def _end_session_on_logout(app: Flask, **extra: Any) -> None:
    """Receives ``user_logged_out``: delete the row and expire the cookie, not just a few keys.

    ``logout_user()`` asks its after-request hook to clear the remember-me cookie by leaving
    ``_remember = "clear"`` in the session; ending the session would drop that request, and the
    remember-me cookie would log the user in again on the next request, so it is put back.

    :param app: the app whose ``logout_user()`` ran (the signal's sender).
    :param extra: the signal's other arguments (``user``).
    """
    if not has_request_context():
        return
    session = flask_request.environ.get(ENVIRON_KEY)
    if not isinstance(session, Session):
        return
    remember = session.get("_remember")
    session.invalidate()
    if remember == "clear":
        session["_remember"] = remember  # Flask-Login's hook pops it again: nothing is stored


def _request_user(what: str, user_id: Any) -> tuple[SessionMiddleware, Session, Any]:
    """The current app's middleware, the request's session and whose sessions ``what`` means,
    for the functions below (:func:`~pgsession_wsgi.devices.request_user`)."""
    if not has_request_context():
        raise OutsideRequestError(
            f"{what}() works on the request's session: call it while handling a request (in a view)"
        )
    middleware = current_app.extensions.get(EXTENSION_KEY)
    session = flask_request.environ.get(ENVIRON_KEY)
    if not isinstance(middleware, SessionMiddleware) or not isinstance(session, Session):
        raise ConfigurationError(
            f"{what}() needs pgsession-wsgi on the app {current_app.name!r}: set it up with "
            "PgSession(app) or FlaskPgSession(app)"
        )
    return middleware, session, request_user(session, middleware.policy.user_key, user_id)


def sessions_for_user(user_id: Any = None) -> list[UserSession]:
    """The live sessions of the logged-in user, most recently used first, for a "your devices" page.

    The request's own session is the one with ``current`` set. Works with Flask-Login (the user
    under ``PGSESSION_USER_KEY``, ``"_user_id"`` by default) or any login that stores the user's id
    under that key.

    :param user_id: whose sessions; None for the user logged in on the request's session.
    :raises OutsideRequestError: called outside a request.
    :raises ConfigurationError: the app does not use pgsession-wsgi, or ``PGSESSION_USER_KEY`` is None.
    :raises SessionError: no ``user_id`` given and nobody is logged in.
    :raises StoreUnavailable: the database cannot be reached.
    """
    middleware, session, user = _request_user("sessions_for_user", user_id)
    infos = middleware.store.sessions_for_user(user, key_prefix=middleware.core.key_prefix)
    return mark_current(infos, session)


def log_out_other_sessions(user_id: Any = None) -> int:
    """End every session of the logged-in user except the request's own: "log out other devices".

    Call it after a password change, so that whoever knew the old password is logged out
    everywhere else; ``flask.session.regenerate()`` in the same view renews this session's id too.

    :param user_id: whose sessions; None for the user logged in on the request's session.
    :returns: how many sessions were ended.
    :raises OutsideRequestError: called outside a request.
    :raises ConfigurationError: the app does not use pgsession-wsgi, or ``PGSESSION_USER_KEY`` is None.
    :raises SessionError: no ``user_id`` given and nobody is logged in.
    :raises StoreUnavailable: the database cannot be reached.
    """
    middleware, session, user = _request_user("log_out_other_sessions", user_id)
    return middleware.store.revoke_user(user, keep=session, key_prefix=middleware.core.key_prefix)
