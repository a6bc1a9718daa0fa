"""Compatibility with flask-pg-session: its cookies, its pickled rows and converting its table.

:class:`FlaskPgSessionSigner` reads and writes its cookies; :func:`restricted_loads` reads its
pickles, allowing only plain data types within a work budget; :func:`read_legacy_rows` reads its
table; :class:`LegacyFallbackStore` moves its sessions into a pgsession-wsgi table one by one, as
their cookies come back (``FlaskPgSession`` uses it, so switching needs no step);
:func:`migrate_flask_pg_session` moves them all at once. The Flask extension itself is in
:mod:`pgsession_wsgi.flask`: this package does not import Flask.
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
