"""What flask-pg-session writes (its default table, the only ids it issues), and where the
drop-in moves its sessions: defined once, since the signer, the fallback and the migration agree.
"""

from __future__ import annotations

from typing import Final

from .._store.ddl import suffixed_name

__all__ = ["FLASK_PG_SESSION_TABLE", "NEW_TABLE_SUFFIX", "UUID4_PATTERN", "new_table_name"]

#: flask-pg-session's default ``SESSION_PG_TABLE``.
FLASK_PG_SESSION_TABLE: Final = "flask_sessions"

#: The ids flask-pg-session issues, ``str(uuid4())``, as a regular expression (use ``fullmatch``).
#: It also stored sessions under any id a client sent (fixation), so only this form is trusted.
UUID4_PATTERN: Final = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"

#: ``FlaskPgSession`` on a flask-pg-session table stores its sessions next to it, in a table of
#: this name plus this suffix (``flask_sessions_v2``), unless ``PGSESSION_TABLE`` names another.
NEW_TABLE_SUFFIX: Final = "_v2"


def new_table_name(table: str) -> str:
    """The table ``FlaskPgSession`` moves the sessions of the flask-pg-session ``table`` into, cut
    to PostgreSQL's 63 bytes on a character boundary so that the suffix always survives."""
    return suffixed_name(table, NEW_TABLE_SUFFIX)
