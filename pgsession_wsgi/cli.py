"""The ``pgsession-wsgi`` command: a demo server and the maintenance jobs a deployment needs.

Each subcommand wraps :class:`PostgresStore`, so cron jobs run the SQL the application runs.
Expected failures print one line to stderr, never a password, and exit 1 or 2; ``cleanup`` and
``migrate-flask-pg-session`` show progress on stderr and stop between batches on SIGINT or SIGTERM.
"""

from __future__ import annotations

import os
import sys

import psycopg2

# Re-exported: every name this module defined before it was split stays importable from here.
from ._cli.commands import STATS_JSON_KEYS as STATS_JSON_KEYS
from ._cli.common import _DSN_VARIABLES as _DSN_VARIABLES
from ._cli.common import EXIT_FAILURE as EXIT_FAILURE
from ._cli.common import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from ._cli.common import EXIT_USAGE as EXIT_USAGE
from ._cli.common import PROG as PROG
from ._cli.common import _check_numbers as _check_numbers
from ._cli.common import _dsn_and_source as _dsn_and_source
from ._cli.common import _redact as _redact
from ._cli.common import _tell as _tell
from ._cli.common import _undecodable_argument as _undecodable_argument
from ._cli.common import _undecodable_setting as _undecodable_setting
from ._cli.parser import _parser as _parser
from ._cli.parser import _UsageError as _UsageError
from .errors import ConfigurationError, SessionError

__all__ = ["main"]

# The commands, to say which one an error is about before argparse has read the line.
_COMMANDS = ("demo", "init", "cleanup", "stats", "revoke", "migrate-flask-pg-session")


def main(argv: list[str] | None = None) -> int:
    """Run the command line, callable from Python too (the ``pgsession-wsgi`` script calls it).

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
