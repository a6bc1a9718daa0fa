"""What flask-pg-session itself writes (its default table name, the only ids it issues), and
where the drop-in puts the sessions it moves out of that table.

Defined once here because several places must agree on them: ``FlaskPgSession`` and the
``migrate-flask-pg-session`` command default to the same tables, and the cookie signer, the
fallback and the migration accept the same ids.
"""

from __future__ import annotations

from typing import Final

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
    """The table ``FlaskPgSession`` moves the sessions of the flask-pg-session ``table`` into.

    Cut to PostgreSQL's 63 bytes, on a character boundary, so the suffix always survives.

    :param table: the flask-pg-session table's name (``SESSION_PG_TABLE``), unquoted.
    """
    suffix = NEW_TABLE_SUFFIX.encode()
    head = table.encode("utf-8")[: 63 - len(suffix)].decode("utf-8", "ignore")
    return head + NEW_TABLE_SUFFIX
