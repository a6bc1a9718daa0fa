"""Helpers the ASGI tests share: clients, a lifespan driver, raw websocket calls, cookies."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg.conninfo
import pytest

from pgsession_wsgi.async_store import AsyncPostgresStore
from pgsession_wsgi.cookies import HmacIdSigner, new_session_id

from .asgi_apps import SECRET

MakeAsyncStore = Callable[..., AsyncPostgresStore]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dead_dsn(dsn: str) -> str:
    """``dsn`` pointed at a 127.0.0.1 port nobody listens on: every connect is refused at once."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params.update(host="127.0.0.1", port=str(free_port()))
    params.pop("hostaddr", None)
    return psycopg.conninfo.make_conninfo(**params)


def signed_cookie(secret: str = SECRET) -> str:
    """A validly signed cookie value for an id no row has (a load finds nothing)."""
    return HmacIdSigner(secret).sign(new_session_id())


def http_client(app: Any, *, https: bool = False) -> httpx.AsyncClient:
    """An httpx client calling ``app`` in this event loop (no lifespan), keeping cookies."""
    base = "https://testserver" if https else "http://testserver"
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


def session_records(
    caplog: pytest.LogCaptureFixture, level: int = logging.WARNING
) -> list[logging.LogRecord]:
    """What pgsession-wsgi itself logged at ``level`` or above."""
    return [r for r in caplog.records if r.name == "pgsession_wsgi" and r.levelno >= level]


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[list[dict[str, Any]]]:
    """Run ``app``'s lifespan as a server does: startup on entry, shutdown on exit.

    Yields the messages the app sent (``lifespan.startup.complete`` ...), appended as they come.
    """
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []
    answered = asyncio.Event()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: Any) -> None:
        sent.append(dict(message))
        answered.set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, receive, send))
    await inbox.put({"type": "lifespan.startup"})
    await answered.wait()
    answered.clear()
    try:
        yield sent
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await answered.wait()
        await task


async def websocket_call(app: Any, path: str, cookie: str | None) -> list[dict[str, Any]]:
    """Open a websocket to ``app`` as a server would, until the app accepts or closes it.

    :returns: the messages the app sent up to and including its ``websocket.accept`` or
        ``websocket.close``; the connection is then closed from the client side.
    """
    headers = [(b"host", b"testserver")]
    if cookie is not None:
        headers.append((b"cookie", f"session={cookie}".encode()))
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "subprotocols": [],
        "state": {},
        "extensions": {},
    }
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "websocket.connect"})
    sent: list[dict[str, Any]] = []
    decided = asyncio.Event()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: Any) -> None:
        sent.append(dict(message))
        if message["type"] in ("websocket.accept", "websocket.close"):
            decided.set()

    task = asyncio.ensure_future(app(scope, receive, send))
    waiter = asyncio.ensure_future(decided.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    await inbox.put({"type": "websocket.disconnect", "code": 1000})
    try:
        await task
    except Exception as exc:  # how Starlette's handlers end when the client goes away
        if type(exc).__name__ != "WebSocketDisconnect":
            raise
    return sent
