"""Internal: the ASGI plumbing the Starlette-style middleware and the Litestar backend share.

Written once, importing neither framework, so the two cannot drift apart (every front end answers
an outage with the log line and body of ``_core.failure``).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Awaitable, Mapping, MutableMapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Callable, cast
from uuid import UUID

from .._core.failure import ERROR_BODIES, UNAVAILABLE_BODY, log_failure
from ..core import MERGED_HEADERS, with_session_headers
from ..errors import SessionError
from ..session import Session
from .websocket import WebsocketOrigins

__all__ = [
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "UNAVAILABLE_BODY",
    "as_mapping",
    "cookie_header",
    "error_response",
    "log_failure",
    "origin_allowed",
    "session_headers",
    "take_over",
    "with_session_headers_sent",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def cookie_header(scope: Scope) -> str:
    """The request's ``Cookie`` header, "" if none; HTTP/2 may split it, so parts are joined."""
    found = b""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"cookie":
            found = found + b"; " + value if found else value
    return found.decode("latin-1")


def origin_allowed(origins: WebsocketOrigins, scope: Scope) -> bool:
    """Whether a websocket handshake's ``Origin`` may get the session (see :class:`WebsocketOrigins`)."""
    headers = scope.get("headers", ())
    sent = [value.decode("latin-1") for name, value in headers if name.lower() == b"origin"]
    host = next((value.decode("latin-1") for name, value in headers if name.lower() == b"host"), None)
    return origins.allows(sent, str(scope.get("scheme", "ws")), host, scope.get("server"))


_MERGED = frozenset(name.encode("latin-1") for name in MERGED_HEADERS)


def with_session_headers_sent(message: Message, extra: list[tuple[str, str]]) -> Message:
    """``message`` (``http.response.start``) with a save's headers, as a new message: the app's
    own is left as it was, so a response sent again, or cached, never keeps one visitor's cookie."""
    if not extra:
        return message
    return {**message, "headers": session_headers(message, extra)}


def session_headers(message: Message, extra: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """``message``'s headers with a save's ``extra`` merged in, as ASGI's lower-case bytes."""
    # Only the headers the merge reads are decoded; the others go on as they came, first.
    kept: list[tuple[bytes, bytes]] = []
    given: list[tuple[str, str]] = []
    for header in message.get("headers", ()):
        if header[0].lower() in _MERGED:
            given.append((header[0].decode("latin-1"), header[1].decode("latin-1")))
        else:
            kept.append(header)
    merged = with_session_headers(given, extra)
    return kept + [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in merged]


async def error_response(send: Send, status: int, body: bytes = b"", kind: str = "http") -> None:
    """Send a plain-text 503 (with ``Retry-After: 5``) or 500 in place of the app's response, or
    ``body`` as ``status``; ``kind`` ``"websocket.http"`` answers a websocket handshake."""
    body = body or ERROR_BODIES[status]
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    if status == 503:
        headers.append((b"retry-after", b"5"))
    await send({"type": f"{kind}.response.start", "status": status, "headers": headers})
    await send({"type": f"{kind}.response.body", "body": body})


def take_over(session: Session, current: object) -> None:
    """Make ``session`` what the app put in ``scope["session"]`` in its place: None or Litestar's
    ``Empty`` (``clear_session()``) ends it; data (``set_session(data)``) replaces its data."""
    empty = sys.modules.get("litestar.types.empty")  # only if Litestar is in use: never imported
    if current is None or (empty is not None and current is getattr(empty, "Empty", object())):
        session.invalidate()
    else:
        data = as_mapping(current)
        session.clear()
        session.update(data)


def as_mapping(value: Any) -> Mapping[str, Any]:
    """Session data given as a mapping, a dataclass, a pydantic model or a msgspec ``Struct``
    (what Litestar's ``set_session`` takes), as a dict; :class:`SessionError` if none of them."""
    if isinstance(value, Mapping):
        return dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    msgspec = sys.modules.get("msgspec")  # only if msgspec (Litestar's) is in use: never imported
    if msgspec is not None and isinstance(value, msgspec.Struct):
        return cast("dict[str, Any]", msgspec.to_builtins(value, builtin_types=_KEPT_BY_MSGSPEC))
    dump = getattr(value, "model_dump", None) or getattr(value, "dict", None)
    if callable(dump):
        return dict(dump())
    raise SessionError(
        f"the session was replaced by a {type(value).__name__} (set_session()?): pass a dict, a "
        "dataclass, a pydantic model or a msgspec Struct of storable values"
    )


# Types the codec stores as themselves, which msgspec would otherwise turn into text.
_KEPT_BY_MSGSPEC = (datetime, date, time, bytes, UUID, Decimal)
