"""What every ``pgsession-wsgi`` command shares: exit statuses, output, the DSN, checks, signals."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any
from urllib.parse import unquote

import psycopg2
import psycopg2.extensions

from ..defaults import MAX_LIFETIME
from ..errors import ConfigurationError
from ..store import PostgresStore, normalize_dsn

PROG = "pgsession-wsgi"
EXIT_FAILURE = 1  # the work failed: database unreachable, table missing, statement failed
EXIT_USAGE = 2  # the command line or configuration is wrong (argparse uses 2 as well)
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, the shell's convention; SIGTERM gives 143

# A password as typed: in a URL (percent-encoded), and in a key=value DSN (quoted or not).
_URL_PASSWORD = re.compile(r"://[^/:@\s]*:([^@\s]*)@")
_KEYWORD_PASSWORD = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'?|\S+)")

# The largest numbers the options take; more is a typo, or a number PostgreSQL cannot hold.
_MAX_ROWS = 2**31 - 1  # a batch: PostgreSQL's integer
_MAX_BYTES = 2**30  # a session: 1 GiB, the largest value PostgreSQL stores
_MAX_DAYS = MAX_LIFETIME.days  # a lifetime: 100 years
_MAX_INTERVAL = 86400  # between progress lines: a day


def _say(text: str) -> None:
    """Print and flush at once: the demo's first line must reach a pipe before serving starts."""
    print(text, flush=True)


def _tell(text: str) -> None:
    """A line on stderr, next to the progress display: stdout keeps only the results."""
    print(text, file=sys.stderr, flush=True)


def _trap(handler: Callable[[int, FrameType | None], None]) -> dict[int, Any]:
    """Trap SIGINT and SIGTERM with ``handler`` (as the shell's ``trap``); returns the handlers replaced."""
    previous: dict[int, Any] = {}
    with suppress(ValueError):  # main() called outside the main thread: signals stay as they are
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
    return previous


def _passwords(sources: Iterable[str | None]) -> list[str]:
    """Every password the sources may hold, as libpq reads it and as typed, longest first."""
    found: set[str] = set()
    for source in sources:
        if not source:
            continue
        with suppress(psycopg2.Error, ValueError):  # ValueError: undecodable bytes
            found.add(psycopg2.extensions.parse_dsn(source).get("password") or "")
        for match in _URL_PASSWORD.finditer(source):
            found.update((match.group(1), unquote(match.group(1))))
        for match in _KEYWORD_PASSWORD.finditer(source):
            typed = match.group(1)
            found.update((typed, re.sub(r"\\(.)", r"\1", typed.strip("'"))))
    return sorted(found - {""}, key=len, reverse=True)


def _redact(text: str, *sources: str | None) -> str:
    """Hide the passwords of ``sources`` in ``text``: errors may quote a DSN, or a user name equal to one."""
    for secret in _passwords(sources):
        text = text.replace(secret, "***")
    return text


def _not_text(value: str) -> bool:
    """Whether ``value`` holds undecodable bytes (kept by Python as lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _not_decodable(fix: str) -> str:
    encoding = sys.getfilesystemencoding().upper()
    return f"holds bytes that are not valid {encoding} text: {fix} in {encoding}"


def _undecodable_argument(argv: Sequence[str]) -> str | None:
    """What to fix when an argument holds undecodable bytes; it is named, never quoted."""
    for number, argument in enumerate(argv, 1):
        if not _not_text(argument):
            continue
        name, equals, _ = argument.partition("=")
        before = argv[number - 2] if number > 1 else ""
        if argument.startswith("-") and equals and not _not_text(name):
            where = f"the value of {name}"
        elif argument.startswith("-"):
            where = f"argument {number}, an option's name,"
        elif before.startswith("--") and "=" not in before and not _not_text(before):
            where = f"the value of {before}"
        else:
            where = f"argument {number}"
        return f"{where} {_not_decodable('pass it')}"
    return None


def _undecodable_setting(args: argparse.Namespace) -> str | None:
    """The same for the environment variables the command reads (the arguments are checked)."""
    dsn, source = _dsn_and_source(args)
    read = {
        "PGSESSION_DSN": dsn if source == "PGSESSION_DSN" else None,
        "DATABASE_URL": dsn if source == "DATABASE_URL" else None,
        # Undecodable only when they came from their variables: the arguments were checked.
        "PGSESSION_TABLE": getattr(args, "table", None),
        "PGSESSION_SCHEMA": getattr(args, "schema", None),
        "SECRET_KEY": os.environ.get("SECRET_KEY") if args.command == "demo" else None,
    }
    for variable, value in read.items():
        if value and _not_text(value):
            return f"the environment variable {variable} {_not_decodable('set it')}"
    return None


def _check_numbers(args: argparse.Namespace) -> None:
    """Refuse NaN, infinite, negative or huge numbers before anything runs (each bound fails NaN)."""

    def check(name: str, within: Callable[[float], bool], must: str) -> None:
        value = getattr(args, name, None)
        if value is not None and not within(value):
            shown = f"{value:g}" if isinstance(value, float) else value
            raise ConfigurationError(f"--{name.replace('_', '-')} must be {must}, not {shown}")

    check("port", lambda n: 1 <= n <= 65535, "a TCP port number from 1 to 65535")
    check("batch_size", lambda n: 1 <= n <= _MAX_ROWS, f"a positive number of rows, at most {_MAX_ROWS}")
    check(
        "max_size",
        lambda n: 1 <= n <= _MAX_BYTES,
        f"a positive number of bytes, at most {_MAX_BYTES} (1 GiB)",
    )
    check(
        "lifetime_days",
        lambda n: 0 < n <= _MAX_DAYS,
        f"a positive number of days, at most {_MAX_DAYS} (100 years)",
    )
    check(
        "progress_interval",
        lambda n: 0 <= n <= _MAX_INTERVAL,
        f"0 or a positive number of seconds, at most {_MAX_INTERVAL} (a day)",
    )


#: Where the commands look for the DSN, in order. DATABASE_URL is what the docs' apps read; the
#: demo leaves it out: its "log out other devices" would end the sessions of an app's own user.
_DSN_VARIABLES = ("PGSESSION_DSN", "DATABASE_URL")


def _dsn_and_source(args: argparse.Namespace) -> tuple[str | None, str]:
    """The DSN to use and where it came from: ``--dsn``, else PGSESSION_DSN, else DATABASE_URL."""
    if args.dsn:
        return args.dsn, "--dsn"
    for variable in _DSN_VARIABLES[:1] if args.command == "demo" else _DSN_VARIABLES:
        value = os.environ.get(variable)
        if value:
            return value, variable
    return None, ""


def _require_dsn(args: argparse.Namespace) -> str:
    dsn, source = _dsn_and_source(args)
    if not dsn:
        raise ConfigurationError(
            "no database given: pass --dsn postgresql://user@host:5432/dbname, or set PGSESSION_DSN "
            "or DATABASE_URL"
        )
    if source == "DATABASE_URL" and not getattr(args, "quiet", False):
        # Implicit, so said (never the DSN itself); an explicit --dsn or PGSESSION_DSN is not.
        _tell(
            f"{PROG} {args.command}: using the DSN from DATABASE_URL (neither --dsn nor PGSESSION_DSN is set)"
        )
    return dsn


def _describe_dsn(dsn: str) -> str:
    """Host, port, database and user of a DSN, for humans; never the password."""
    parts = psycopg2.extensions.parse_dsn(normalize_dsn(dsn))
    return (
        f"host {parts.get('host') or 'local socket'}, port {parts.get('port') or 5432}, "
        f"db {parts.get('dbname') or '(default)'}, user {parts.get('user') or '(default)'}"
    )


@contextmanager
def _store(args: argparse.Namespace, unlogged: bool | None = None) -> Iterator[PostgresStore]:
    """A store for one maintenance command: no table creation, no purge thread, one connection."""
    store = PostgresStore(
        _require_dsn(args),
        args.table,
        args.schema,
        max_connections=1,
        create_table=False,
        purge_interval=None,
        unlogged=unlogged,
        partitions=getattr(args, "partitions", None),
    )
    try:
        yield store
    finally:
        store.close()


def _where(args: argparse.Namespace) -> str:
    return f"{args.schema}.{args.table}"
