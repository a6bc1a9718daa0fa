"""The maintenance commands of ``pgsession-wsgi``, and what the two long ones share."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from datetime import timedelta
from types import FrameType

from .._store.progress import Progress
from ..defaults import DEFAULT_MAX_SIZE
from ..flask_pg_session import MigrationStopped, migrate_flask_pg_session
from ..sql import grant_statements
from ..store import PostgresStore
from .common import PROG, _dsn_and_source, _require_dsn, _say, _store, _tell, _trap, _where

# `init --sql` needs no database; the store still wants a DSN, so it gets one it never uses.
_UNUSED_DSN = "postgresql://"


class _LongJob:
    """Shows a long job's progress; a first SIGINT or SIGTERM stops it between batches, a second at once."""

    def __init__(self, args: argparse.Namespace, label: str, what: str, *, approximate: bool) -> None:
        self.progress: Progress | None = None
        if not args.quiet:
            self.progress = Progress(
                label, what, sys.stderr, approximate=approximate, interval=args.progress_interval
            )
        self.signum: int | None = None
        self.stopped = False
        self.total = 0

    def __enter__(self) -> _LongJob:
        self._previous = _trap(self._on_signal)
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
        self.total = total
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


def _cmd_init(args: argparse.Namespace) -> int:
    """Create the table up front, so the app's database user needs no CREATE privilege."""
    if args.sql:
        # ddl() only formats text: a DBA can run this without any database at hand.
        dsn, _ = _dsn_and_source(args)
        store = PostgresStore(
            dsn or _UNUSED_DSN,
            args.table,
            args.schema,
            purge_interval=None,
            unlogged=args.unlogged,
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
    with _store(args) as store, _LongJob(args, label, "expired rows removed", approximate=True) as job:
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
    """Move a flask-pg-session table's sessions at once, in place or ``--into`` another table."""
    label = f"{PROG} migrate-flask-pg-session"
    try:
        with _LongJob(args, label, "rows handled", approximate=False) as job:
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
