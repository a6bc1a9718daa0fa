"""Compatibility with flask-pg-session: its cookies, its pickled rows and converting its table.

- :class:`FlaskPgSessionSigner` (module ``signer``) reads and writes flask-pg-session's cookies;
- :func:`restricted_loads` (:mod:`.unpickle`) reads its pickles allowing only plain data types,
  within a work budget that :func:`rebuild_work` counts;
- :func:`read_legacy_rows` and :func:`is_legacy_table` (:mod:`.rows`) read its table;
- :class:`LegacyFallbackStore` and :func:`choose_tables` (:mod:`.fallback`) move its sessions
  into a pgsession-wsgi table one by one, as their cookies come back: ``FlaskPgSession`` uses
  them, so switching needs no step;
- :func:`migrate_flask_pg_session` (:mod:`.migrate`) moves them all at once, optionally.

The Flask extension itself, ``FlaskPgSession``, is in :mod:`pgsession_wsgi.flask`: this package
does not import Flask. ``pgsession_wsgi.legacy`` (the 0.1.0 path) re-exports the same objects.

Moving every remaining session at once into the table a running app uses, from Python
(``pgsession-wsgi migrate-flask-pg-session --into flask_sessions_v2`` does the same)::

    from pgsession_wsgi.flask_pg_session import migrate_flask_pg_session

    report = migrate_flask_pg_session("postgresql://app@db/app", "flask_sessions", into="flask_sessions_v2")
    print(report.migrated, "moved,", len(report.refused), "refused")
"""

from __future__ import annotations

from .conventions import FLASK_PG_SESSION_TABLE, NEW_TABLE_SUFFIX, new_table_name
from .fallback import LegacyFallbackStore, choose_tables
from .migrate import (
    RENAMED_SUFFIX,
    MigrationReport,
    MigrationStopped,
    NothingToMigrate,
    migrate_flask_pg_session,
)
from .rows import LegacyRow, is_legacy_table, read_legacy_rows
from .signer import FlaskPgSessionSigner
from .unpickle import (
    WORK_ALLOWANCE,
    WORK_PER_BYTE,
    LegacyDataError,
    UnsafePickleError,
    rebuild_work,
    restricted_loads,
)

__all__ = [
    "FLASK_PG_SESSION_TABLE",
    "NEW_TABLE_SUFFIX",
    "RENAMED_SUFFIX",
    "WORK_ALLOWANCE",
    "WORK_PER_BYTE",
    "FlaskPgSessionSigner",
    "LegacyDataError",
    "LegacyFallbackStore",
    "LegacyRow",
    "MigrationReport",
    "MigrationStopped",
    "NothingToMigrate",
    "UnsafePickleError",
    "choose_tables",
    "is_legacy_table",
    "migrate_flask_pg_session",
    "new_table_name",
    "read_legacy_rows",
    "rebuild_work",
    "restricted_loads",
]
