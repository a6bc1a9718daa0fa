"""The exceptions pgsession-wsgi raises; every one is a :class:`SessionError`."""

from __future__ import annotations


class SessionError(Exception):
    """Base class: catch this to handle any failure of the session layer."""


class ConfigurationError(SessionError, ValueError):
    """An option is missing or contradicts another; raised at construction, never per request."""


class TagRegistrationError(ConfigurationError):
    """A codec tag cannot be registered: its name is no tag name, or it collides with another."""


class LegacyTableError(ConfigurationError):
    """The session table still has flask-pg-session's layout; ``command`` converts it.

    Raised at start-up: reading the old rows would mean unpickling them.

    :param table: the table's quoted, qualified name.
    :param command: the ``pgsession-wsgi migrate-flask-pg-session ...`` command line to run.
    """

    def __init__(self, table: str, command: str) -> None:
        super().__init__(
            f"the table {table} has the flask-pg-session layout; convert it once with `{command}` "
            "(the old table is kept, renamed), then start the app again"
        )
        self.table = table
        self.command = command


class PrivilegeError(ConfigurationError):
    """The database role may not create or use the session table; the message names the GRANTs.

    :param role: the role the store connects as (``current_user``), or None if unknown.
    """

    def __init__(self, message: str, role: str | None = None) -> None:
        super().__init__(message)
        self.role = role


class InvalidExpiry(SessionError, ValueError):
    """``session.set_expiry()`` was given a lifetime no session can have (ended, or zoneless)."""


class UnstorableValue(SessionError):
    """A session value the codec cannot store; the message names its key and what to do instead.

    Raised where the value goes in (``session[key] = value``, ``update()``...), and the session
    keeps what it held. A value changed in place afterwards can only be found by the save (then
    Flask and Quart raise it, elsewhere the response is a 500). Each is also the ``TypeError`` or
    ``ValueError`` the codec found, as ``json.dumps`` would raise.

    :param key: the session key the value was put under.
    """

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class UnstorableTypeError(UnstorableValue, TypeError):
    """A value of a type the codec does not know (a set, an object of the app's), or a dict
    with a key that is not a ``str``."""


class UnstorableValueError(UnstorableValue, ValueError):
    """A value of a known type that would not read back as itself: NaN or an infinity, an int
    or a Decimal too large, nesting too deep, a key with a NUL character."""


class StoreUnavailable(SessionError):
    """The database cannot be reached in time; the middleware answers 503 for it."""

    #: The HTTP status the middleware and the Flask extensions answer with.
    status_code = 503


class ReadOnlyServer(StoreUnavailable):
    """The DSN led to a server that accepts no writes (a standby, or a primary being demoted).

    Not a configuration error: during a failover the next connection may reach the new primary.
    A DSN that always names a standby gets it on every request: list every server and add
    ``target_session_attrs=read-write``, as the message says.
    """


class SessionTooLarge(SessionError):
    """The encoded session is over ``max_size``; nothing was written.

    :param size: the encoded size in bytes (as measured; a lower bound if refused before sending).
    :param limit: the ``max_size`` it exceeds.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the session encodes to {size} bytes, over the limit of {limit} bytes: store less "
            "in the session (keep large data in your own tables) or raise max_size"
        )
        self.size = size
        self.limit = limit


class SessionDataError(SessionError):
    """A stored session cannot be decoded; the request fails (500) rather than start empty.

    :param reason: what failed (an exception's name); never the row's data, which may be secret.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"a stored session could not be decoded ({reason}); its row was written by something "
            "other than pgsession-wsgi: delete the row or fix the writer"
        )


# The `pip install` arguments that bring each optional package.
_INSTALL = {
    "psycopg": "'pgsession-wsgi[asgi]'",
    "psycopg_pool": "'pgsession-wsgi[asgi]'",
    "flask": "'pgsession-wsgi[flask]'",
    "sqlalchemy": "'pgsession-wsgi[sqlalchemy]'",
    "litestar": "'pgsession-wsgi[litestar]'",
    "django": "'pgsession-wsgi[django]'",
    "quart": "quart 'pgsession-wsgi[asgi]'",  # no extra of ours brings it: installed next to one
}


class MissingExtraError(SessionError, ModuleNotFoundError):
    """A module of ours needs an optional dependency that is not installed; the message names the
    ``pip install`` that adds it. Raised on import; ``name`` is the missing package.

    :param missing: the package that could not be imported, e.g. ``"psycopg"``.
    :param install: the arguments of the ``pip install`` that adds it.
    """

    def __init__(self, missing: str, module: str, install: str) -> None:
        super().__init__(
            f"No module named {missing!r}: {module} needs it; install it with `pip install {install}`",
            name=missing,
        )

    @classmethod
    def of(cls, error: ModuleNotFoundError, module: str) -> MissingExtraError | None:
        """The error to raise instead of ``error`` met while importing ``module`` (e.g.
        ``__name__``), or None when no extra of ours brings the missing package."""
        top = (error.name or "").split(".")[0]
        return cls(top, module, _INSTALL[top]) if top in _INSTALL else None


class OutsideRequestError(SessionError, RuntimeError):
    """A session was asked for where no request (or no middleware) provides one."""
