"""Compatibility with flask-pg-session: its cookies, its pickled rows and converting its table.

- :class:`FlaskPgSessionSigner` (:mod:`.signer`) reads and writes flask-pg-session's cookies;
- :func:`restricted_loads` (:mod:`.unpickle`) reads its pickles allowing only plain data types;
- :func:`read_legacy_rows` and :func:`is_legacy_table` (:mod:`.rows`) read its table;
- :func:`migrate_flask_pg_session` (:mod:`.migrate`) converts that table in place.

The Flask extension itself, ``FlaskPgSession``, is in :mod:`pgsession_wsgi.flask`: this package
does not import Flask. ``pgsession_wsgi.legacy`` (the 0.1.0 path) re-exports the same objects.

Converting the table once, from Python (``pgsession-wsgi migrate-flask-pg-session`` does the same)::

    from pgsession_wsgi.flask_pg_session import migrate_flask_pg_session

    report = migrate_flask_pg_session("postgresql://app@db/app", "flask_sessions")
    print(report.migrated, "converted,", len(report.refused), "refused")
"""

from __future__ import annotations

from .conventions import FLASK_PG_SESSION_TABLE
from .migrate import (
    RENAMED_SUFFIX,
    MigrationReport,
    MigrationStopped,
    NothingToMigrate,
    migrate_flask_pg_session,
)
from .rows import LegacyRow, is_legacy_table, read_legacy_rows
from .signer import FlaskPgSessionSigner
from .unpickle import LegacyDataError, UnsafePickleError, restricted_loads

__all__ = [
    "FLASK_PG_SESSION_TABLE",
    "RENAMED_SUFFIX",
    "FlaskPgSessionSigner",
    "LegacyDataError",
    "LegacyRow",
    "MigrationReport",
    "MigrationStopped",
    "NothingToMigrate",
    "UnsafePickleError",
    "is_legacy_table",
    "migrate_flask_pg_session",
    "read_legacy_rows",
    "restricted_loads",
]
