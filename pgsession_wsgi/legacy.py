"""The 0.1.0 path of :mod:`pgsession_wsgi.flask_pg_session`: the very same objects, so
``isinstance`` checks and ``except`` clauses match either way. Import from the new path."""

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

# The names 0.1.0 exported or documented.
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
