"""A plain WSGI app whose routes exercise the session in the ways the tests need."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, Callable

from pgsession_wsgi import get_session


def session_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Routes: /none /read /set?k=v /inc /append /del?k= /clear /regen /logout /bad /stream."""
    session = get_session(environ)
    path = environ["PATH_INFO"]
    query = dict(part.split("=", 1) for part in environ.get("QUERY_STRING", "").split("&") if "=" in part)
    body: Any = None
    if path == "/read":
        body = dict(session)
    elif path == "/set":
        for key, value in query.items():
            session[key] = value
    elif path == "/inc":
        session["n"] = session.get("n", 0) + 1
        body = session["n"]
    elif path == "/append":
        session.setdefault("cart", []).append(len(session.get("cart", [])))
        body = session["cart"]
    elif path == "/del":
        del session[query["k"]]
    elif path == "/clear":
        session.clear()
    elif path == "/regen":
        session.regenerate()
    elif path == "/logout":
        session.invalidate()
    elif path == "/bad":
        session["sock"] = object()
    elif path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stream(session)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


def _stream(session: Any) -> Iterator[bytes]:
    yield b"first chunk\n"
    session["streamed"] = session.get("streamed", 0) + 1
    yield b"second chunk\n"
