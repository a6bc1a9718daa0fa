"""The 0.1.0 path of the flask-pg-session tools; they now live in :mod:`pgsession_wsgi.flask_pg_session`.

Code written against 0.1.0 (``from pgsession_wsgi.legacy import migrate_flask_pg_session``) keeps
working: every name below is the very object the new package exports, so ``isinstance`` checks
and ``except`` clauses match either way. New code should import from
``pgsession_wsgi.flask_pg_session``.
"""

from __future__ import annotations

from .defaults import DEFAULT_MAX_SIZE
from .flask_pg_session import (
    RENAMED_SUFFIX,
    LegacyDataError,
    LegacyRow,
    MigrationReport,
    NothingToMigrate,
    UnsafePickleError,
    is_legacy_table,
    migrate_flask_pg_session,
    read_legacy_rows,
    restricted_loads,
)

# The names 0.1.0 exported (RENAMED_SUFFIX was documented, though not in its __all__).
__all__ = [
    "DEFAULT_MAX_SIZE",
    "RENAMED_SUFFIX",
    "LegacyDataError",
    "LegacyRow",
    "MigrationReport",
    "NothingToMigrate",
    "UnsafePickleError",
    "is_legacy_table",
    "migrate_flask_pg_session",
    "read_legacy_rows",
    "restricted_loads",
]
