"""Internal: the answer every front end gives when the session store fails: its status, its
plain-text body and its one log line."""

from __future__ import annotations

import logging

from ..errors import SessionError, StoreUnavailable

__all__ = ["ERROR_BODIES", "UNAVAILABLE_BODY", "log_failure"]

log = logging.getLogger("pgsession_wsgi")

#: The body of a 503 answered for a session store that cannot be reached.
UNAVAILABLE_BODY = b"Service Unavailable: the session store cannot be reached. Please try again shortly.\n"
#: The plain-text body of each status :func:`log_failure` answers.
ERROR_BODIES = {503: UNAVAILABLE_BODY, 500: b"Internal Server Error\n"}


def log_failure(exc: SessionError, doing: str) -> int:
    """Log a session error once, saying what failed (``doing``: "loading", "saving"...); its
    status: 503 for an unreachable store, else 500."""
    if isinstance(exc, StoreUnavailable):
        log.error("session store unavailable, answering 503: %s", exc)
        return 503
    log.error("session error while %s, answering 500: %s", doing, exc)
    return 500
