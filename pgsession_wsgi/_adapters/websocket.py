"""Internal: what the ASGI middleware and the Quart extension share about websockets.

The ``Origin`` check (against cross-site websocket hijacking), the close codes, and the save made
where no cookie can be set any more (a websocket, or an HTTP response whose headers went out).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, Callable
from urllib.parse import urlsplit

from ..cookies import hash_session_id
from ..core import Delete, Operation, SessionCore, run_async
from ..errors import ConfigurationError, SessionError
from ..session import Session

__all__ = [
    "CLOSE_ERROR",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_UNAVAILABLE",
    "FORBIDDEN_BODY",
    "REFUSED_REASON",
    "WebsocketOrigins",
    "save_without_cookie",
]

log = logging.getLogger("pgsession_wsgi")

CLOSE_UNAVAILABLE = 1013  # "Try Again Later": the session store cannot be reached
CLOSE_ERROR = 1011  # "Internal Error": any other session error
CLOSE_POLICY_VIOLATION = 1008  # a cross-origin handshake the server cannot answer with a 403
REFUSED_REASON = "websocket Origin not allowed"
FORBIDDEN_BODY = "Forbidden: this page's Origin may not open a websocket to this site.\n"

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"[a-z0-9._-]+|[0-9a-f:.]*:[0-9a-f:.]*")  # a name, an IPv4 or an IPv6 address
_SHOWN = 200  # at most this much of a refused Origin is logged


def _origin(text: str) -> str | None:
    """``text`` as ``scheme://host[:port]`` (lower case, no default port), or None if no origin."""
    if not text.isascii() or text.endswith(("?", "#")):
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if parts.scheme not in _DEFAULT_PORTS or host is None or not _HOST.fullmatch(host):
        return None
    if "@" in parts.netloc or parts.path or parts.query or parts.fragment:  # more than an origin
        return None
    host = f"[{host}]" if ":" in host else host
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


class WebsocketOrigins:
    """Which pages may open a websocket that gets the session, against cross-site websocket
    hijacking: the app's own origin, those listed, and clients sending no ``Origin`` (not browsers).

    :param listed: origins allowed besides the app's own; one string is one origin.
    :param option: the option's name, for the messages.
    :raises ConfigurationError: an entry is not an ``http`` or ``https`` origin.
    """

    def __init__(self, listed: str | Iterable[str], option: str) -> None:
        self.option = option
        allowed = set()
        for entry in [listed] if isinstance(listed, str) else listed:
            origin = _origin(entry) if isinstance(entry, str) else None
            if origin is None:
                raise ConfigurationError(
                    f"{option} {entry!r} is not an origin: write scheme://host[:port] with http or "
                    "https and nothing after it (no path, no trailing slash), e.g. "
                    "'https://app.example.com'"
                )
            allowed.add(origin)
        self.listed = frozenset(allowed)

    def allows(
        self, origins: Sequence[str], scheme: str, host: str | None, server: Sequence[Any] | None
    ) -> bool:
        """Whether a handshake may go on; a refusal is logged (one warning line).

        :param origins: the request's ``Origin`` headers, as sent (several are refused).
        :param host: its ``Host`` header, None if it sent none.
        :param server: the ``(host, port)`` the server listens on, for a request without ``Host``.
        """
        if not origins:
            return True  # not a browser: nothing to protect from
        if len(origins) == 1:
            origin = _origin(origins[0])
            if origin is not None and (origin in self.listed or origin == _own(scheme, host, server)):
                return True
        shown = ", ".join(origins)
        log.warning(
            "websocket handshake refused (403): Origin %r is not this app's own origin (%s) nor "
            "in %s; list it there if that page may use the session",
            shown[:_SHOWN] + ("..." if len(shown) > _SHOWN else ""),
            _own(scheme, host, server) or "unknown: no usable Host header",
            self.option,
        )
        return False


def _own(scheme: str, host: str | None, server: Sequence[Any] | None) -> str | None:
    """The app's own origin: the request's scheme as http(s) and its ``Host``, else the server's."""
    web = "https" if scheme in ("wss", "https") else "http"
    if host is None and server is not None and len(server) == 2 and server[0]:
        address, port = str(server[0]), server[1]
        address = f"[{address}]" if ":" in address else address
        host = address if port is None else f"{address}:{port}"
    return None if not host else _origin(f"{web}://{host}")


async def save_without_cookie(
    core: SessionCore, session: Session, execute: Callable[[Operation], Awaitable[Any]]
) -> None:
    """Save ``session`` now, where the browser can no longer be sent a cookie.

    A change that needs a new cookie is refused before anything is written. A session that ended
    elsewhere is not brought back: a row a blind write started under a new id (which no cookie
    could carry) is deleted again, and this raises :class:`SessionError`.
    """
    if core.late_save_refused(session):
        raise SessionError(
            "this session change needs a new cookie, which cannot be set any more (a websocket, "
            "or a response already started): make it in an HTTP request before its response "
            "starts (a new session, regenerate(), invalidate() or a login)"
        )
    before = session.state.session_id
    await run_async(core.save(session), execute)
    after = session.state.session_id
    if after == before:
        return
    if after is not None:  # a blind write into a row that was gone: a new id nobody can use
        await execute(Delete(hash_session_id(after)))
        session.mark_saved(None)
    raise SessionError(
        "the session had ended (logged out, revoked or expired elsewhere) before this save, so "
        "the change was not saved: a new session needs a cookie, so start it with an HTTP "
        "request (e.g. log in again), then open the websocket again"
    )
