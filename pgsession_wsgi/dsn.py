"""Internal: a user's DSN turned into connect arguments without overriding the user. Keyword arguments
replace the DSN's parameters and hide libpq's ``PG*`` variables, so the store's own values go only
where both are silent, and its settings are merged into the user's ``options``."""

from __future__ import annotations

import math
import os
import re
import shlex
import sys
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError

__all__ = [
    "connect_arguments",
    "hide_password",
    "lent_settings",
    "normalize_dsn",
    "parse_dsn",
    "parse_options",
    "store_connect_arguments",
]

_DRIVER_SUFFIX = re.compile(r"^(postgres(?:ql)?)\+[a-z0-9_]+://", re.IGNORECASE)

# The libpq variables for parameters a caller may want a default for: libpq reads one only when no
# keyword names its parameter, so passing our default would silently hide it.
ENVIRONMENT = {
    "application_name": "PGAPPNAME",
    "client_encoding": "PGCLIENTENCODING",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "options": "PGOPTIONS",
    "sslmode": "PGSSLMODE",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
}


def parse_dsn(dsn: str) -> dict[str, str] | None:
    """The parameters a DSN (``key=value`` or URL) names, as libpq reads them; None if it cannot.

    libpq is reached through the driver already loaded, so the async store never loads psycopg2.
    """
    if "psycopg2" in sys.modules or "psycopg" not in sys.modules:
        import psycopg2.extensions

        try:
            return dict(psycopg2.extensions.parse_dsn(dsn))
        except psycopg2.ProgrammingError:
            return None
    import psycopg.conninfo

    try:
        return {key: str(value) for key, value in psycopg.conninfo.conninfo_to_dict(dsn).items()}
    except psycopg.ProgrammingError:
        return None


def normalize_dsn(dsn: str) -> str:
    """``dsn`` with a SQLAlchemy driver suffix (``postgresql+psycopg2://``) removed.

    :raises ConfigurationError: empty, another database's URL, unparseable, not UTF-8, holding
        a NUL, or with a host or port libpq would fail on (neither the message nor an exception
        chain quotes the DSN, which may hold a password).
    """
    if not isinstance(dsn, str) or not dsn.strip():
        raise ConfigurationError("the DSN is empty: pass a PostgreSQL URL such as postgresql://user@host/db")
    try:
        dsn.encode("utf-8")
    except UnicodeEncodeError:  # its .object is the DSN: no chain may keep it
        raise ConfigurationError(
            "the DSN holds bytes that are not valid UTF-8 (undecodable bytes from the command line or "
            "the environment): write it in UTF-8, percent-encoding other bytes in a URL (%FF)"
        ) from None
    if "\0" in dsn:
        raise ConfigurationError(
            "the DSN holds a NUL character, at which libpq would silently cut it: remove it"
        )
    dsn = _DRIVER_SUFFIX.sub(lambda m: m.group(1) + "://", dsn.strip())
    scheme = re.match(r"^([a-z][a-z0-9+.-]*)://", dsn, re.IGNORECASE)
    if scheme and scheme.group(1).lower() not in ("postgres", "postgresql"):
        raise ConfigurationError(
            f"the DSN is a {scheme.group(1)}:// URL; pgsession-wsgi needs PostgreSQL: "
            "postgresql://user:password@host:5432/dbname"
        )
    parsed = parse_dsn(dsn)
    if parsed is None:
        # The parser's message may quote the DSN, password included, so it is not repeated here.
        raise ConfigurationError(
            "the DSN cannot be parsed: use postgresql://user:password@host:5432/dbname "
            "or 'host=... dbname=... user=...'"
        )
    _check_hosts_and_ports(parsed)
    return dsn


# A port as libpq reads it (strtol, then trailing blanks); empty means the default.
_PORT = re.compile(r"\s*(?:[+-]?\d+\s*)?")


def _check_hosts_and_ports(parsed: Mapping[str, str]) -> None:
    """Refuse a DSN whose host or port libpq would fail on, quoting it: what an unencoded ``/`` or
    ``@`` in a URL's password leaves (``postgresql://u:pa/ss@h/db`` has host ``u`` and port ``pa``;
    ``postgresql://u:pa@ss@h/db`` has host ``ss@h``), a piece of the password."""
    if not all(_PORT.fullmatch(port) for port in parsed.get("port", "").split(",")):
        raise ConfigurationError(
            "the DSN's port is not a number: give one such as 5432; in a URL, percent-encode a '/' "
            "in the user name or password as %2F (postgresql://user:pa%2Fss@host:5432/dbname)"
        )
    for host in parsed.get("host", "").split(","):
        # A socket directory may hold '@' anywhere; an abstract socket starts with it.
        if "@" in host and not host.startswith(("/", "@")):
            raise ConfigurationError(
                "the DSN's host holds an '@': in a URL, percent-encode an '@' in the user name or "
                "password as %40 (postgresql://user:pa%40ss@host:5432/dbname)"
            )


def _split_options(options: str) -> list[str]:
    """Split like the server does (``pg_split_opts``): on whitespace, ``\\`` escapes, no quotes."""
    trailing = len(options) - len(options.rstrip("\\"))
    if trailing % 2:  # the server drops a lone trailing backslash; shlex would refuse it
        options = options[:-1]
    lexer = shlex.shlex(options, posix=True)
    lexer.whitespace = " \t\n\r\v\f"
    lexer.whitespace_split = True
    lexer.quotes = ""
    lexer.commenters = ""
    return list(lexer)


def _setting_name(name: str) -> str:
    """Settings are case-insensitive and the server reads ``-`` in their names as ``_``."""
    return name.strip().lower().replace("-", "_")


def _escape(value: str) -> str:
    """Quote a value for the server's splitter, which knows only backslash escapes."""
    return re.sub(r"([\\\s])", r"\\\1", value)


def parse_options(options: str) -> dict[str, str]:
    """The server settings a libpq ``options`` value sets (``-c name=value``, ``-cname=value``,
    ``--name=value``), names lower-cased with ``-`` read as ``_``, the last of a repeated one winning;
    other switches (``-B 100``) are skipped."""
    settings: dict[str, str] = {}
    words = iter(_split_options(options))
    for word in words:
        if word == "-c":
            assignment = next(words, "")
        elif word.startswith(("--", "-c")):
            assignment = word[2:]
        else:
            continue
        name, equals, value = assignment.partition("=")
        if equals and _setting_name(name):
            settings[_setting_name(name)] = value
    return settings


def connect_arguments(
    dsn: str,
    *,
    defaults: Mapping[str, Any],
    settings: Mapping[str, str],
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Keyword arguments for ``psycopg2.connect`` in which everything the user chose wins.

    :param defaults: libpq parameters the caller would like (not ``options``), each passed only if
        the DSN does not name it and its ``PG*`` variable is unset or empty.
    :param settings: server settings to send as ``-c name=value`` startup options, except those the
        user's options (the DSN's, else ``PGOPTIONS``) already set.
    :param environ: the environment libpq will read; ``os.environ`` by default.
    :returns: the connect arguments (``dsn`` included) and the settings the caller actually sends.
    :raises ConfigurationError: the DSN is not a usable PostgreSQL one (see :func:`normalize_dsn`).
    """
    if "dsn" in defaults or "options" in defaults:
        raise ValueError("defaults cannot hold dsn or options: pass the DSN itself and options as settings")
    env = os.environ if environ is None else environ
    dsn = normalize_dsn(dsn)
    named = parse_dsn(dsn) or {}

    def user_value(parameter: str) -> str | None:
        if parameter in named:
            return named[parameter]
        variable = ENVIRONMENT.get(parameter)
        return (env.get(variable) or None) if variable else None

    kwargs: dict[str, Any] = {"dsn": dsn}
    kwargs.update((key, value) for key, value in defaults.items() if user_value(key) is None)
    user_options = user_value("options")
    user_settings = parse_options(user_options) if user_options else {}
    owned = {name: value for name, value in settings.items() if _setting_name(name) not in user_settings}
    if owned:
        # Ours first, the user's after: should any of ours slip through, the server keeps the last.
        ours = " ".join(f"-c {name}={_escape(value)}" for name, value in owned.items())
        kwargs["options"] = f"{ours} {user_options}" if user_options else ours
    return kwargs, owned


def store_connect_arguments(
    dsn: str, *, connect_timeout: float, statement_timeout: float | None, synchronous_commit: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """The connection arguments both stores use, and the settings they own: as startup options,
    free on every statement after.

    :param connect_timeout: seconds (libpq takes whole seconds and treats 1 as 2).
    :param statement_timeout: seconds a statement may run; None for no limit.
    :param synchronous_commit: False to acknowledge writes before their WAL is flushed.
    """
    settings = lent_settings(statement_timeout or 0, synchronous_commit)  # 0: no limit
    return connect_arguments(
        dsn,
        defaults={
            "connect_timeout": max(2, math.ceil(connect_timeout)),
            "application_name": "pgsession-wsgi",
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        },
        settings=settings,
    )


def lent_settings(statement_timeout: float | None, synchronous_commit: bool) -> dict[str, str]:
    """The settings a store sets with ``SET LOCAL`` on connections the app made (a
    ``statement_timeout`` of None leaves the connection's own)."""
    settings: dict[str, str] = {}
    if statement_timeout is not None:
        settings["statement_timeout"] = str(int(statement_timeout * 1000))
    if not synchronous_commit:
        settings["synchronous_commit"] = "off"
    return settings


def hide_password(text: str, connect_kwargs: Mapping[str, Any]) -> str:
    """``text`` (a server's or libpq's message) with the connection's password blotted out.

    The server quotes names back, and a role may be named like its password (``postgres:postgres``).
    A quoted occurrence is always hidden; a bare one when long enough to be no word of the message.

    :param connect_kwargs: :func:`connect_arguments`' answer (its ``dsn`` and ``password``).
    """
    password = connect_kwargs.get("password")
    if not password and connect_kwargs.get("dsn"):
        password = (parse_dsn(str(connect_kwargs["dsn"])) or {}).get("password")
    if not password:
        return text
    password = str(password)
    text = text.replace(f'"{password}"', '"********"')
    return text.replace(password, "********") if len(password) >= 4 else text
