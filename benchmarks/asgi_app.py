"""The benchmark's ASGI apps (Starlette or Litestar), with the session variant chosen by environment.

Environment:
    BENCH_VARIANT    one of ASGI_VARIANTS (default ``none``)
    BENCH_PG_DSN     libpq URI of the PostgreSQL database (PostgreSQL variants)
    BENCH_REDIS_URL  Redis URL (Redis variants; default redis://127.0.0.1:6379/0)

Serve with uvicorn: ``uvicorn --app-dir benchmarks asgi_app:app``. ``python asgi_app.py`` builds
the app and creates its table once, then exits: benchmarks/run_asgi.py runs it before starting
uvicorn so that schema creation does not race between workers.

Routes, as in benchmarks/app.py:
    /login  writes an initial session (user id and a counter); used once per client for a cookie
    /read   reads a session value and returns it
    /write  increments the counter in the session
    /none   does not touch the session
    /skip   does not touch the session and is excluded from it: ``skip_session=True`` on the
            Litestar apps (Litestar's session middleware, and so our native integration, skip it;
            pgsession-asgi-litestar, our ASGI middleware, is not told), the same as /none on the
            Starlette apps, where ours leaves it out with exclude_paths

Every library runs with its defaults, except that the session lives 14 days where a library's
default is a browser-session cookie (starsessions), as /login makes it permanent in the WSGI app.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable

ASGI_VARIANTS = (
    "none",
    "litestar-none",
    "starlette-cookie",
    "starsessions-redis",
    "litestar-redis",
    "advanced-alchemy",
    "pgsession-asgi-starlette",
    "pgsession-asgi-litestar",
    "pgsession-asgi-starlette-noprep",
    "pgsession-litestar",
    "asgi-floor",
    "asgi-floor-async",
    "asgi-floor-unlogged",
    "pgsession-asgi-starlette-async",
    "pgsession-asgi-starlette-unlogged",
    "pgsession-asgi-starlette-exectext",
)
# The floor (benchmarks/asgi_floor.py): hand-written SQL on psycopg 3, no session library.
ASGI_FLOOR_VARIANTS = ("asgi-floor", "asgi-floor-async", "asgi-floor-unlogged")
ASGI_PG_VARIANTS = (
    "advanced-alchemy",
    "pgsession-asgi-starlette",
    "pgsession-asgi-litestar",
    "pgsession-asgi-starlette-noprep",
    "pgsession-litestar",
    "pgsession-asgi-starlette-async",
    "pgsession-asgi-starlette-unlogged",
    "pgsession-asgi-starlette-exectext",
    *ASGI_FLOOR_VARIANTS,
)
# The variants with no session at all: the baselines.
ASGI_NO_SESSION_VARIANTS = ("none", "litestar-none")
ASGI_REDIS_VARIANTS = ("starsessions-redis", "litestar-redis")
SECRET_KEY = "benchmark-only-secret-key-not-for-production"
MAX_AGE = 14 * 24 * 3600
ADVANCED_ALCHEMY_TABLE = "aa_session"


def _require_dsn() -> str:
    dsn = os.environ.get("BENCH_PG_DSN")
    if not dsn:
        raise RuntimeError("BENCH_PG_DSN is not set")
    return dsn


def _redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


# --------------------------------------------------------------------------- Starlette


def _starlette(middleware: list[Any], load: Callable[[Any], Any] | None = None) -> Any:
    """The Starlette app; ``load`` (async) is awaited before a route touches the session."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

    uses_session = bool(middleware)

    async def login(request: Request) -> PlainTextResponse:
        if uses_session:
            if load is not None:
                await load(request)
            request.session["user_id"] = "user-42"
            request.session["counter"] = 0
        return PlainTextResponse("logged in")

    async def read(request: Request) -> PlainTextResponse:
        user_id = None
        if uses_session:
            if load is not None:
                await load(request)
            user_id = request.session.get("user_id")
        return PlainTextResponse(f"user_id={user_id}")

    async def write(request: Request) -> PlainTextResponse:
        counter = 0
        if uses_session:
            if load is not None:
                await load(request)
            counter = int(request.session.get("counter", 0)) + 1
            request.session["counter"] = counter
        return PlainTextResponse(f"counter={counter}")

    return Starlette(routes=starlette_routes(login, read, write), middleware=middleware)


def starlette_routes(login: Any, read: Any, write: Any) -> list[Any]:
    """The Starlette apps' routes (the floor's too): these three, and /none and /skip untouched."""
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def no_session(request: Request) -> PlainTextResponse:
        return PlainTextResponse("no session")

    return [
        Route("/login", login),
        Route("/read", read),
        Route("/write", write),
        Route("/none", no_session),
        Route("/skip", no_session),
    ]


def _none() -> Any:
    return _starlette([])


def _starlette_cookie() -> Any:
    from starlette.middleware import Middleware
    from starlette.middleware.sessions import SessionMiddleware

    return _starlette([Middleware(SessionMiddleware, secret_key=SECRET_KEY, max_age=MAX_AGE)])


def _starsessions_redis() -> Any:
    from starlette.middleware import Middleware
    from starsessions import SessionMiddleware, load_session
    from starsessions.stores.redis import RedisStore

    # starsessions loads lazily: the route awaits load_session (its documented way; the
    # alternative SessionAutoloadMiddleware loads on every request).
    store = RedisStore(url=_redis_url())
    return _starlette(
        [Middleware(SessionMiddleware, store=store, lifetime=MAX_AGE, cookie_https_only=False)],
        load=load_session,
    )


def _pg_store(prepared_statements: bool = True, **options: Any) -> Any:
    from pgsession_wsgi.asgi import AsyncPostgresStore

    return AsyncPostgresStore(_require_dsn(), prepared_statements=prepared_statements, **options)


def _pgsession_asgi_starlette(
    prepared_statements: bool = True, exectext: bool = False, **options: Any
) -> Any:
    from starlette.middleware import Middleware

    from pgsession_wsgi.asgi import SessionMiddleware

    # The middleware opens the store at lifespan startup and closes it at shutdown. /skip is left
    # out of the session with exclude_paths, the middleware's per-route opt-out.
    store = _pg_store(prepared_statements, **options)
    if exectext:  # the lever's other side: prepared statements run as EXECUTE text, as psycopg2's
        store._steps.prepared.named = None
    return _starlette(
        [Middleware(SessionMiddleware, store=store, secret_key=SECRET_KEY, exclude_paths=["/skip"])]
    )


# synchronous_commit off, and an unlogged table of its own (the logged variants' stays logged):
# the durability choices the floor is measured at too.
_ASYNC_COMMIT = {"synchronous_commit": False}
_UNLOGGED = {"unlogged": True, "table": "pgsession_unlogged"}


def _asgi_floor(variant: str) -> Callable[[], Any]:
    def build() -> Any:
        import asgi_floor

        return asgi_floor.create_app(variant, _require_dsn(), SECRET_KEY, starlette_routes)

    return build


# --------------------------------------------------------------------------- Litestar


def _litestar(middleware: list[Any], uses_session: bool, **app_kwargs: Any) -> Any:
    from litestar import Litestar, MediaType, Request, get

    @get("/login", media_type=MediaType.TEXT)
    async def login(request: Request[Any, Any, Any]) -> str:
        if uses_session:
            request.set_session({"user_id": "user-42", "counter": 0})
        return "logged in"

    @get("/read", media_type=MediaType.TEXT)
    async def read(request: Request[Any, Any, Any]) -> str:
        user_id = request.session.get("user_id") if uses_session else None
        return f"user_id={user_id}"

    @get("/write", media_type=MediaType.TEXT)
    async def write(request: Request[Any, Any, Any]) -> str:
        counter = 0
        if uses_session:
            counter = int(request.session.get("counter", 0)) + 1
            request.session["counter"] = counter
        return f"counter={counter}"

    @get("/none", media_type=MediaType.TEXT)
    async def no_session() -> str:
        return "no session"

    # Litestar's session middleware leaves a route whose opt has skip_session out.
    @get("/skip", media_type=MediaType.TEXT, skip_session=True)
    async def skipped() -> str:
        return "no session"

    return Litestar(
        route_handlers=[login, read, write, no_session, skipped],
        middleware=middleware,
        logging_config=None,
        **app_kwargs,
    )


def _litestar_none() -> Any:
    return _litestar([], uses_session=False)


def _litestar_redis() -> Any:
    from litestar.middleware.session.server_side import ServerSideSessionConfig
    from litestar.stores.redis import RedisStore

    config = ServerSideSessionConfig(max_age=MAX_AGE)
    store = RedisStore.with_client(url=_redis_url())
    return _litestar([config.middleware], uses_session=True, stores={"sessions": store})


def _advanced_alchemy_parts() -> tuple[Any, Any]:
    """(the SQLAlchemy async config, the session model) for advanced-alchemy."""
    from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
    from advanced_alchemy.extensions.litestar.session import SessionModelMixin

    global _AAModel
    if _AAModel is None:

        class BenchSession(SessionModelMixin):
            __tablename__ = ADVANCED_ALCHEMY_TABLE

        _AAModel = BenchSession
    config = SQLAlchemyAsyncConfig(connection_string=_asyncpg_url(_require_dsn()))
    return config, _AAModel


_AAModel: Any = None


def _asyncpg_url(dsn: str) -> str:
    """The libpq URI as an SQLAlchemy URL with the asyncpg driver."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme not in ("postgres", "postgresql"):
        raise RuntimeError(f"not a postgresql:// URI: {dsn!r}")
    return f"postgresql+asyncpg://{rest}"


def _advanced_alchemy() -> Any:
    from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
    from advanced_alchemy.extensions.litestar.session import SQLAlchemyAsyncSessionBackend
    from litestar.middleware import DefineMiddleware
    from litestar.middleware.session import SessionMiddleware
    from litestar.middleware.session.server_side import ServerSideSessionConfig

    alchemy_config, model = _advanced_alchemy_parts()
    backend = SQLAlchemyAsyncSessionBackend(
        config=ServerSideSessionConfig(max_age=MAX_AGE), alchemy_config=alchemy_config, model=model
    )
    return _litestar(
        [DefineMiddleware(SessionMiddleware, backend=backend)],
        uses_session=True,
        plugins=[SQLAlchemyPlugin(config=alchemy_config)],
    )


def _pgsession_asgi_litestar() -> Any:
    from litestar.middleware import DefineMiddleware

    from pgsession_wsgi.asgi import SessionMiddleware

    store = _pg_store()
    # Litestar does not pass the lifespan through its middleware: open and close the store in
    # the app's own startup and shutdown hooks.
    return _litestar(
        [DefineMiddleware(SessionMiddleware, store=store, secret_key=SECRET_KEY)],
        uses_session=True,
        on_startup=[store.open],
        on_shutdown=[store.close],
    )


def _pgsession_litestar() -> Any:
    from pgsession_wsgi.litestar import PgSessionConfig, PgSessionPlugin

    # The native integration: Litestar's SessionMiddleware around PgSessionBackend, installed by
    # the plugin, which also opens and closes the store with the app. permanent=True and
    # max_age=MAX_AGE: the cookie and lifetime of Litestar's own server-side sessions.
    config = PgSessionConfig(store=_pg_store(), secret_key=SECRET_KEY, max_age=MAX_AGE, permanent=True)
    return _litestar([], uses_session=True, plugins=[PgSessionPlugin(config)])


_BUILDERS: dict[str, Callable[[], Any]] = {
    "none": _none,
    "litestar-none": _litestar_none,
    "starlette-cookie": _starlette_cookie,
    "starsessions-redis": _starsessions_redis,
    "litestar-redis": _litestar_redis,
    "advanced-alchemy": _advanced_alchemy,
    "pgsession-asgi-starlette": _pgsession_asgi_starlette,
    "pgsession-asgi-litestar": _pgsession_asgi_litestar,
    # The same as pgsession-asgi-starlette without prepared statements, to measure that lever.
    "pgsession-asgi-starlette-noprep": lambda: _pgsession_asgi_starlette(prepared_statements=False),
    "pgsession-litestar": _pgsession_litestar,
    "pgsession-asgi-starlette-async": lambda: _pgsession_asgi_starlette(**_ASYNC_COMMIT),
    "pgsession-asgi-starlette-unlogged": lambda: _pgsession_asgi_starlette(**_UNLOGGED),
    # Prepared statements executed as EXECUTE text (the sync store's way), to measure by name.
    "pgsession-asgi-starlette-exectext": lambda: _pgsession_asgi_starlette(exectext=True),
    **{variant: _asgi_floor(variant) for variant in ASGI_FLOOR_VARIANTS},
}


def create_app(variant: str | None = None) -> Any:
    variant = variant or os.environ.get("BENCH_VARIANT", "none")
    if variant not in _BUILDERS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(ASGI_VARIANTS)}")
    return _BUILDERS[variant]()


async def _prepare(variant: str) -> None:
    """Create the variant's table once (before uvicorn starts its workers)."""
    if variant.startswith("pgsession-"):
        options = {"-unlogged": _UNLOGGED, "-async": _ASYNC_COMMIT}.get(variant[variant.rfind("-"):], {})
        store = _pg_store(**options)
        await store.open()  # creates the table
        await store.close()
    elif variant in ASGI_FLOOR_VARIANTS:
        import asgi_floor

        await asgi_floor.prepare(variant, _require_dsn())
    elif variant == "advanced-alchemy":
        alchemy_config, model = _advanced_alchemy_parts()
        engine = alchemy_config.get_engine()
        async with engine.begin() as conn:
            await conn.run_sync(model.metadata.create_all, tables=[model.__table__])
        await engine.dispose()


def __getattr__(name: str) -> Any:
    # ``asgi_app:app`` builds the app on first access, in each uvicorn worker.
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)


if __name__ == "__main__":
    chosen = os.environ.get("BENCH_VARIANT", "none")
    create_app(chosen)
    asyncio.run(_prepare(chosen))
    print(f"ASGI app for variant {chosen!r} builds")
