"""The same session routes in Starlette, FastAPI, Litestar and Quart, for the ASGI tests.

Every app answers JSON on the same paths, so a test can run against any of them:

* ``/none`` never touches the session; ``/read`` answers it; ``/set?k=v&...`` writes keys
  without reading; ``/inc`` adds one to ``n``; ``/login?user=u`` stores ``user_id``;
  ``/regen`` regenerates; ``/logout`` invalidates; ``/bad`` appends an object the codec
  refuses to a stored list (only the save can refuse it); ``/stream`` streams a body and
  changes the session between chunks; ``/load`` (for ``autoload=False``) loads explicitly and
  answers the session.
* ``/ws`` (a websocket) sends the session as JSON at connect, then for each text ``k=v`` it
  receives sets the key and saves (``await save_session(ws)``), answering "saved" or the error.

``python -m uvicorn --factory apps.asgi_apps:from_environment`` (with ``--app-dir tests``) builds
one from ``ASGI_APP_FRAMEWORK``, ``ASGI_APP_DSN`` and ``ASGI_APP_SCHEMA``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi import Request as FastAPIRequest
from litestar import Litestar, get, websocket
from litestar import Request as LitestarRequest
from litestar import WebSocket as LitestarWebSocket
from litestar.middleware import DefineMiddleware
from litestar.response import Stream
from quart import Quart
from quart import session as quart_session
from quart import websocket as quart_websocket
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from pgsession_wsgi.asgi import AsyncPostgresStore, SessionMiddleware, load_session, save_session
from pgsession_wsgi.session import Session

SECRET = "asgi-apps-secret-long-enough-not-to-be-warned-about"
FRAMEWORKS = ("starlette", "fastapi", "litestar", "quart")


# -- what every route does, on a session whatever the framework -----------------------------


def change(session: Any, path: str, query: dict[str, str]) -> Any:
    """Apply route ``path`` to ``session``; the JSON answer."""
    if path == "/read":
        return dict(session)
    if path == "/set":
        for key, value in query.items():
            session[key] = value
        return "ok"
    if path == "/inc":
        session["n"] = session.get("n", 0) + 1
        return session["n"]
    if path == "/login":
        session["user_id"] = query["user"]
        return "ok"
    if path == "/regen":
        session.regenerate()
        return "ok"
    if path == "/logout":
        session.invalidate()
        return "ok"
    if path == "/bad":
        session["sock"] = []
        session["sock"].append(object())  # changed in place: only the save can refuse it
        return "ok"
    return "untouched"


PATHS = ("/none", "/read", "/set", "/inc", "/login", "/regen", "/logout", "/bad")


async def stream_chunks(session: Any) -> AsyncIterator[bytes]:
    yield b"first chunk\n"
    session["streamed"] = session.get("streamed", 0) + 1
    yield b"second chunk\n"


# -- Starlette and FastAPI ------------------------------------------------------------------


def _starlette_endpoint(path: str) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse(change(request.session, path, dict(request.query_params)))

    return endpoint


async def _starlette_stream(request: Request) -> StreamingResponse:
    return StreamingResponse(stream_chunks(request.session), media_type="text/plain")


async def _starlette_load(request: Request) -> JSONResponse:
    return JSONResponse(dict(await load_session(request)))


async def _starlette_ws(ws: WebSocket) -> None:
    await ws.accept()
    if ws.query_params.get("load"):
        await load_session(ws)
    await ws.send_json(dict(ws.session))
    while True:
        text = await ws.receive_text()
        if text == "bye":
            break
        if text.startswith("login="):
            ws.session["user_id"] = text.split("=", 1)[1]
        else:
            key, value = text.split("=", 1)
            ws.session[key] = value
        try:
            await save_session(ws)
        except Exception as exc:  # the test reads what went wrong
            await ws.send_text(f"{type(exc).__name__}: {exc}")
        else:
            await ws.send_text("saved")
    await ws.close()


def starlette_app(store: Any, **options: Any) -> Starlette:
    """A Starlette app on ``store``; ``options`` go to the middleware (secret_key defaults)."""
    options.setdefault("secret_key", SECRET)
    routes: list[Any] = [Route(path, _starlette_endpoint(path)) for path in PATHS]
    routes += [
        Route("/stream", _starlette_stream),
        Route("/load", _starlette_load),
        WebSocketRoute("/ws", _starlette_ws),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(SessionMiddleware, store=store, **options)
    return app


def fastapi_app(store: Any, **options: Any) -> FastAPI:
    """The same routes in FastAPI (declared with its decorators)."""
    options.setdefault("secret_key", SECRET)
    app = FastAPI()

    for path in PATHS:
        app.add_api_route(path, _fastapi_endpoint(path), methods=["GET"])

    @app.get("/stream")
    async def stream(request: FastAPIRequest) -> StreamingResponse:
        return StreamingResponse(stream_chunks(request.session), media_type="text/plain")

    @app.get("/load")
    async def load(request: FastAPIRequest) -> dict[str, Any]:
        return dict(await load_session(request))

    app.add_api_websocket_route("/ws", _starlette_ws)
    app.add_middleware(SessionMiddleware, store=store, **options)
    return app


def _fastapi_endpoint(path: str) -> Callable[[FastAPIRequest], Awaitable[Any]]:
    async def endpoint(request: FastAPIRequest) -> Any:
        return change(request.session, path, dict(request.query_params))

    return endpoint


# -- Litestar -------------------------------------------------------------------------------


def _litestar_handler(path: str) -> Any:
    async def handler(request: LitestarRequest[Any, Any, Any]) -> Any:
        return change(request.session, path, dict(request.query_params))

    handler.__name__ = f"handler_{path.strip('/')}"
    return get(path)(handler)


@get("/stream")
async def _litestar_stream(request: LitestarRequest[Any, Any, Any]) -> Stream:
    return Stream(stream_chunks(request.session), media_type="text/plain")


@get("/load")
async def _litestar_load(request: LitestarRequest[Any, Any, Any]) -> dict[str, Any]:
    return dict(await load_session(request))


@get("/replace")
async def _litestar_replace(request: LitestarRequest[Any, Any, Any]) -> str:
    """Litestar's own API: set_session() replaces the whole session."""
    request.set_session(dict(request.query_params))
    return "ok"


@get("/clear-session")
async def _litestar_clear(request: LitestarRequest[Any, Any, Any]) -> str:
    """Litestar's own API: clear_session() ends the session."""
    request.clear_session()
    return "ok"


@websocket("/ws")
async def _litestar_ws(socket: LitestarWebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    await socket.send_json(dict(socket.session))
    while (text := await socket.receive_text()) != "bye":
        key, value = text.split("=", 1)
        socket.session[key] = value
        try:
            await save_session(socket)
        except Exception as exc:
            await socket.send_text(f"{type(exc).__name__}: {exc}")
        else:
            await socket.send_text("saved")
    await socket.close()


def litestar_app(store: Any, **options: Any) -> Litestar:
    """The same routes in Litestar, plus /replace (set_session) and /clear-session.

    Litestar's app-level middleware wraps each route, not the lifespan: the store is opened
    and closed with ``on_startup`` / ``on_shutdown``, as the README says.
    """
    options.setdefault("secret_key", SECRET)
    handlers: list[Any] = [_litestar_handler(path) for path in PATHS]
    handlers += [_litestar_stream, _litestar_load, _litestar_replace, _litestar_clear, _litestar_ws]
    return Litestar(
        route_handlers=handlers,
        middleware=[DefineMiddleware(SessionMiddleware, store=store, **options)],
        on_startup=[store.open],
        on_shutdown=[store.close],
        logging_config=None,  # Litestar's own would replace the root handlers (and pytest's caplog)
    )


# -- Quart ----------------------------------------------------------------------------------


def quart_app(dsn: str, schema: str, **config: Any) -> Quart:
    """The same routes in Quart, with :class:`pgsession_wsgi.quart.PgSession` (Flask-style config)."""
    from pgsession_wsgi.quart import PgSession
    from pgsession_wsgi.quart import save_session as save_quart_session

    app = Quart(__name__)
    app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=dsn, PGSESSION_SCHEMA=schema)
    app.config.update(config)

    for path in PATHS:
        app.add_url_rule(path, path, _quart_view(path))

    @app.route("/stream")
    async def stream() -> Any:
        # The body streams after the request context is gone: it holds the session object itself.
        session = quart_session._get_current_object()  # type: ignore[attr-defined]
        return stream_chunks(session), 200, {"Content-Type": "text/plain"}

    @app.websocket("/ws")
    async def ws() -> None:
        await quart_websocket.accept()
        await quart_websocket.send_json(dict(quart_session))
        while (text := await quart_websocket.receive()) != "bye":
            key, value = str(text).split("=", 1)
            quart_session[key] = value
            try:
                await save_quart_session()
            except Exception as exc:
                await quart_websocket.send(f"{type(exc).__name__}: {exc}")
            else:
                await quart_websocket.send("saved")

    PgSession(app)
    return app


def _quart_view(path: str) -> Callable[[], Awaitable[Any]]:
    from quart import request

    async def view() -> Any:
        return {"answer": change(quart_session, path, dict(request.args))}

    return view


# -- under a real server --------------------------------------------------------------------


def from_environment() -> Any:
    """The app ``ASGI_APP_FRAMEWORK`` names, on ``ASGI_APP_DSN`` and ``ASGI_APP_SCHEMA``."""
    framework = os.environ["ASGI_APP_FRAMEWORK"]
    dsn, schema = os.environ["ASGI_APP_DSN"], os.environ["ASGI_APP_SCHEMA"]
    if framework == "quart":
        return quart_app(dsn, schema)
    store = AsyncPostgresStore(dsn, schema=schema, purge_interval=None)
    return {"starlette": starlette_app, "fastapi": fastapi_app, "litestar": litestar_app}[framework](store)


def answer_of(framework: str, body: Any) -> Any:
    """Quart wraps answers in {"answer": ...} (a bare string is not JSON there); unwrap it."""
    return body["answer"] if framework == "quart" and isinstance(body, dict) and "answer" in body else body


def is_session(value: Any) -> bool:
    return isinstance(value, Session)
