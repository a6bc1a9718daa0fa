"""What flask-pg-session itself writes: its default table name and the only ids it issues.

Defined once here because several places must agree on them: ``FlaskPgSession`` and the
``migrate-flask-pg-session`` command default to the same table, and the cookie signer and the
migration accept the same ids.
"""

from __future__ import annotations

from typing import Final

__all__ = ["FLASK_PG_SESSION_TABLE", "UUID4_PATTERN"]

#: flask-pg-session's default ``SESSION_PG_TABLE``.
FLASK_PG_SESSION_TABLE: Final = "flask_sessions"

#: The ids flask-pg-session issues, ``str(uuid4())``, as a regular expression (use ``fullmatch``).
#: It also stored sessions under any id a client sent (fixation), so only this form is trusted.
UUID4_PATTERN: Final = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
