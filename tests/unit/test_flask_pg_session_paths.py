"""The flask-pg-session tools moved to ``pgsession_wsgi.flask_pg_session``; the 0.1.0 paths still work.

Each old name must be the very object the new package exports, so code that catches, subclasses
or ``isinstance``-checks through either path sees the same thing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pgsession_wsgi.flask
import pgsession_wsgi.legacy
from pgsession_wsgi import defaults, flask_pg_session

ROOT = Path(__file__).resolve().parents[2]


def test_the_old_legacy_module_re_exports_the_same_objects() -> None:
    for name in pgsession_wsgi.legacy.__all__:
        if name == "DEFAULT_MAX_SIZE":
            assert pgsession_wsgi.legacy.DEFAULT_MAX_SIZE == defaults.DEFAULT_MAX_SIZE == 256 * 1024
        else:
            assert getattr(pgsession_wsgi.legacy, name) is getattr(flask_pg_session, name), name


def test_the_old_legacy_module_keeps_every_0_1_0_name() -> None:
    names_0_1_0 = {
        "DEFAULT_MAX_SIZE",
        "LegacyDataError",
        "LegacyRow",
        "MigrationReport",
        "NothingToMigrate",
        "RENAMED_SUFFIX",
        "UnsafePickleError",
        "is_legacy_table",
        "migrate_flask_pg_session",
        "read_legacy_rows",
        "restricted_loads",
    }
    assert names_0_1_0 <= set(pgsession_wsgi.legacy.__all__)


def test_the_signer_is_still_importable_from_pgsession_wsgi_flask() -> None:
    assert pgsession_wsgi.flask.FlaskPgSessionSigner is flask_pg_session.FlaskPgSessionSigner
    assert "FlaskPgSessionSigner" in pgsession_wsgi.flask.__all__


def test_the_flask_pg_session_package_does_not_import_flask() -> None:
    code = "import sys, pgsession_wsgi.flask_pg_session; print('flask' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "False"
