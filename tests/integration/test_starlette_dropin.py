"""``pgsession_wsgi.asgi`` as a drop-in for Starlette's ``SessionMiddleware`` and starsessions
(issue 23, points 2 and 5), beyond the contracts in tests/contracts/: how Starlette's option
names map onto ours (one table, both names for one option refused), starsessions' helpers on
our sessions, and ``exclude_paths`` (routes that never pay for a session), on a real PostgreSQL.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from apps.asgi_apps import SECRET, starlette_app
from apps.asgi_support import MakeAsyncStore, http_client, signed_cookie, websocket_call
from db import sql
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from wire import RoundTripCounter, statement_kind

import pgsession_wsgi.asgi
from pgsession_wsgi import ConfigurationError, OutsideRequestError
from pgsession_wsgi.asgi import (
    STARLETTE_OPTIONS,
    AsyncPostgresStore,
    SessionExcluded,
    SessionMiddleware,
    SessionNotLoaded,
    get_session_id,
    get_session_remaining_seconds,
    is_loaded,
    load_session,
    regenerate_session_id,
)

pytestmark = pytest.mark.anyio

ASGI_DOCS = Path(__file__).resolve().parents[2] / "docs" / "asgi.md"
STARSESSIONS_HELPERS = (
    "load_session", "regenerate_session_id", "get_session_id", "get_session_remaining_seconds", "is_loaded",
)


@pytest.fixture
async def store(make_async_store: MakeAsyncStore) -> AsyncPostgresStore:
    store = make_async_store()
    await store.open()
    return store


def cookie_id(response: httpx.Response, name: str = "session") -> str:
    """The session id in the response's cookie (the part before the signature)."""
    [header] = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    return header.split(";", 1)[0].split("=", 1)[1].split(".", 1)[0]


# -- Starlette's option names -------------------------------------------------------------------


def test_the_table_maps_every_option_of_starlettes_middleware() -> None:
    theirs = set(inspect.signature(StarletteSessionMiddleware).parameters) - {"app", "secret_key"}
    # Every option of the installed Starlette; a newer one's too (Python 3.9 gets 0.49, older).
    assert set(STARLETTE_OPTIONS) >= theirs
    ours = set(inspect.signature(SessionMiddleware).parameters)
    assert set(STARLETTE_OPTIONS.values()) <= ours  # each maps onto an option of ours
    assert theirs <= ours  # and is accepted by its own name


# The defaults as help(SessionMiddleware) and the API docs show them: the options a Starlette
# name also sets show their own defaults, the Starlette names none.
SHOWN_DEFAULTS = {
    "cookie_name": "'session'",
    "idle_timeout": "datetime.timedelta(days=31)",
    "permanent": "False",
    "cookie_path": "'/'",
    "cookie_domain": "None",
    "cookie_secure": "None",
    "cookie_samesite": "'Lax'",
    "cookie_partitioned": "False",
    **{name: "None" for name in STARLETTE_OPTIONS},
}
_PRINT_DEFAULTS = (
    "import inspect, json; from pgsession_wsgi.asgi import SessionMiddleware; "
    "print(json.dumps({name: repr(p.default) for name, p in "
    "inspect.signature(SessionMiddleware).parameters.items()}))"
)


def test_the_signature_shows_each_options_default() -> None:
    """Told apart from the same value passed (so passing ours at its default next to Starlette's
    name is still refused), a default still shows as its value. asgi.xǁ_Defaultǁ__repr__ mutant 1."""
    shown = {name: repr(p.default) for name, p in inspect.signature(SessionMiddleware).parameters.items()}
    assert {name: shown[name] for name in SHOWN_DEFAULTS} == SHOWN_DEFAULTS


def test_a_fresh_interpreter_gets_the_same_defaults() -> None:
    """The defaults are made when the module is imported: import it anew, from where this test
    imported it, and read them there. asgi._default mutants 2-5 and xǁ_Defaultǁ__init__ mutant 1,
    which act only at import (a mutation run imports before it picks a mutant; this interpreter
    inherits the pick)."""
    package_root = Path(pgsession_wsgi.asgi.__file__).resolve().parents[1]
    path = os.pathsep.join([str(package_root), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", _PRINT_DEFAULTS],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert {name: shown[name] for name in SHOWN_DEFAULTS} == SHOWN_DEFAULTS


def test_a_secret_key_passed_where_starlette_takes_it_says_where_it_goes() -> None:
    with pytest.raises(ConfigurationError, match=r"second argument is the store.*store=.*secret_key="):
        SessionMiddleware(Starlette(), SECRET)  # type: ignore[arg-type]  # Starlette's (app, secret_key)


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        ({"session_cookie": "sid"}, {"cookie_name": "session"}),  # ours at its default: still both
        ({"session_cookie": "sid"}, {"cookie_name": "other"}),
        ({"max_age": 3600}, {"idle_timeout": 3600}),
        ({"max_age": 3600}, {"permanent": True}),
        ({"max_age": None}, {"permanent": False}),
        ({"path": "/app"}, {"cookie_path": "/app"}),
        ({"same_site": "strict"}, {"cookie_samesite": "Lax"}),
        ({"https_only": True}, {"cookie_secure": True}),
        ({"domain": "example.com"}, {"cookie_domain": None}),
        ({"partitioned": True}, {"cookie_partitioned": True}),
    ],
)
async def test_both_names_for_one_option_are_refused_naming_both(
    make_async_store: MakeAsyncStore, theirs: dict[str, Any], ours: dict[str, Any]
) -> None:
    [their_name], [our_name] = theirs, ours
    with pytest.raises(ConfigurationError) as refused:
        SessionMiddleware(Starlette(), make_async_store(), secret_key=SECRET, **theirs, **ours)
    assert their_name in str(refused.value) and our_name in str(refused.value)


async def test_max_age_none_leaves_the_idle_timeout_to_ours(store: AsyncPostgresStore) -> None:
    app = starlette_app(store, max_age=None, idle_timeout=600)
    async with http_client(app) as client:
        response = await client.get("/set?a=1")
        assert "max-age" not in response.headers["set-cookie"].lower()  # a browser-session cookie
    [(left,)] = sql(store, "SELECT extract(epoch FROM expires_at - now()) FROM {t}")
    assert 500 < left <= 600  # the server forgets it after 10 minutes unused


async def test_max_age_is_the_idle_timeout_on_the_server_too(store: AsyncPostgresStore) -> None:
    async with http_client(starlette_app(store, max_age=900)) as client:
        assert "Max-Age=900" in (await client.get("/set?a=1")).headers["set-cookie"]
    [(left,)] = sql(store, "SELECT extract(epoch FROM expires_at - now()) FROM {t}")
    assert 800 < left <= 900


@pytest.mark.parametrize(
    ("theirs", "named"), [({"max_age": 0}, "max_age"), ({"same_site": "sometimes"}, "same_site")]
)
async def test_a_bad_value_is_refused_by_starlettes_name(
    make_async_store: MakeAsyncStore, theirs: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named) as refused:
        SessionMiddleware(Starlette(), make_async_store(), secret_key=SECRET, **theirs)
    assert not re.search(r"idle_timeout|cookie_samesite", str(refused.value))


async def test_only_same_sites_value_is_respelled(store: AsyncPostgresStore) -> None:
    """Starlette writes ``same_site="strict"``, ours ``"Strict"``; any other name's value is
    taken as passed, even one spelled like a SameSite value (cookie names are case-sensitive).
    asgi._from_starlette mutant 16."""
    async with http_client(starlette_app(store, session_cookie="strict", same_site="strict")) as client:
        header = (await client.get("/set?a=1")).headers["set-cookie"]
        assert header.startswith("strict=") and "SameSite=Strict" in header
        assert (await client.get("/read")).json() == {"a": "1"}


async def test_partitioned_by_our_own_name(store: AsyncPostgresStore) -> None:
    app = starlette_app(store, cookie_partitioned=True, cookie_samesite="None")
    async with http_client(app) as client:
        header = (await client.get("/set?a=1")).headers["set-cookie"]
    assert "; Partitioned" in header and "; Secure" in header and "SameSite=None" in header


async def test_partitioned_with_cookie_secure_false_is_refused(make_async_store: MakeAsyncStore) -> None:
    with pytest.raises(ConfigurationError, match=r"cookie_partitioned.*cookie_secure=False"):
        SessionMiddleware(Starlette(), make_async_store(), secret_key=SECRET,
                          cookie_partitioned=True, cookie_secure=False)


async def test_an_ended_partitioned_session_expires_the_partitioned_cookie(store: AsyncPostgresStore) -> None:
    async with http_client(starlette_app(store, partitioned=True), https=True) as client:
        await client.get("/set?a=1")
        header = (await client.get("/logout")).headers["set-cookie"]
    assert "Max-Age=0" in header and "; Partitioned" in header and "; Secure" in header


# -- starsessions' helpers ----------------------------------------------------------------------


def test_starsessions_helpers_are_public_names() -> None:
    assert set(STARSESSIONS_HELPERS) <= set(pgsession_wsgi.asgi.__all__)


async def test_get_session_id_is_the_id_the_cookie_carries(store: AsyncPostgresStore) -> None:
    async def answer(request: Request) -> Response:
        return JSONResponse({"id": get_session_id(request)})

    app = starlette_app(store)
    app.router.routes.append(Route("/id", answer))
    async with http_client(app) as client:
        assert (await client.get("/id")).json() == {"id": None}
        issued = cookie_id(await client.get("/set?a=1"))
        assert (await client.get("/id")).json() == {"id": issued}
        moved = cookie_id(await client.get("/regen"))
        assert moved != issued and (await client.get("/id")).json() == {"id": moved}


async def test_regenerate_session_id_moves_the_session_at_the_save(store: AsyncPostgresStore) -> None:
    async def regen(request: Request) -> Response:
        before = get_session_id(request)
        returned = regenerate_session_id(request)
        return JSONResponse({"returned": returned, "same_until_saved": get_session_id(request) == before})

    app = starlette_app(store)
    app.router.routes.append(Route("/regen-helper", regen))
    async with http_client(app) as client:
        old = cookie_id(await client.get("/set?a=1"))
        response = await client.get("/regen-helper")
        assert response.json() == {"returned": None, "same_until_saved": True}
        assert cookie_id(response) != old
        assert (await client.get("/read")).json() == {"a": "1"}
    [(count,)] = sql(store, "SELECT count(*) FROM {t}")
    assert count == 1  # one row, under the new id


async def test_remaining_seconds_follow_the_sessions_own_lifetime(store: AsyncPostgresStore) -> None:
    async def remaining(request: Request) -> Response:
        lifetime = request.query_params.get("minutes")
        if lifetime == "fixed":
            request.session.set_expiry(datetime.now(timezone.utc) + timedelta(minutes=2))
        elif lifetime:
            request.session.set_expiry(timedelta(minutes=int(lifetime)))
        return JSONResponse(get_session_remaining_seconds(request))

    app = starlette_app(store, idle_timeout=3600, absolute_timeout=1800)
    app.router.routes.append(Route("/remaining", remaining))
    async with http_client(app) as client:
        assert (await client.get("/remaining")).json() == 1800  # capped by absolute_timeout
        await client.get("/set?a=1")
        assert (await client.get("/remaining?minutes=5")).json() == 300
        assert (await client.get("/remaining")).json() == 300  # stored with the session
        assert 100 < (await client.get("/remaining?minutes=fixed")).json() <= 120


async def test_is_loaded_and_the_helpers_before_loading(store: AsyncPostgresStore) -> None:
    async def probe(request: Request) -> Response:
        answers: dict[str, Any] = {"is_loaded": is_loaded(request)}
        for name, helper in [("id", get_session_id), ("remaining", get_session_remaining_seconds)]:
            try:
                answers[name] = helper(request)
            except SessionNotLoaded as exc:
                answers[name] = "load_session" in str(exc)
        await load_session(request)
        answers["is_loaded_after"] = is_loaded(request)
        return JSONResponse(answers)

    app = starlette_app(store, autoload=False)
    app.router.routes.append(Route("/probe", probe))
    async with http_client(app) as client:
        fresh = (await client.get("/probe")).json()
        assert fresh["is_loaded"] is True and fresh["id"] is None  # no cookie: nothing to load
        await client.get("/set?a=1")
        assert (await client.get("/probe")).json() == {
            "is_loaded": False, "id": True, "remaining": True, "is_loaded_after": True,
        }


@pytest.mark.parametrize(
    "helper", [get_session_id, get_session_remaining_seconds, is_loaded, regenerate_session_id]
)
def test_the_helpers_outside_the_middleware_say_how_to_wrap_the_app(helper: Any) -> None:
    with pytest.raises(OutsideRequestError, match="SessionMiddleware"):
        helper({"type": "http"})


# -- exclude_paths ------------------------------------------------------------------------------


@pytest.fixture
async def counted_store(
    make_async_store: MakeAsyncStore, wire_counter: RoundTripCounter
) -> AsyncPostgresStore:
    store = make_async_store(dsn=wire_counter.dsn)
    await store.open()  # the settings check and the DDL are not a request's statements
    return store


async def test_an_excluded_route_with_a_valid_cookie_costs_no_statement(
    counted_store: AsyncPostgresStore, wire_counter: RoundTripCounter
) -> None:
    app = starlette_app(counted_store, exclude_paths=["/none"])
    async with http_client(app) as client:
        await client.get("/set?a=1")
        wire_counter.reset()
        response = await client.get("/none")
        assert response.status_code == 200 and response.json() == "untouched"
        assert wire_counter.count == 0, wire_counter.statements
        assert "set-cookie" not in response.headers and "vary" not in response.headers
        wire_counter.reset()
        assert (await client.get("/read")).json() == {"a": "1"}  # a route not excluded loads
        assert [statement_kind(s) for s in wire_counter.statements] == ["SELECT"]


async def test_exclude_paths_are_prefixes_matched_segment_by_segment(store: AsyncPostgresStore) -> None:
    async def touched(request: Request) -> Response:
        return PlainTextResponse("has a session" if "session" in request.scope and is_loaded(request) else "")

    app = Starlette(routes=[Route(path, touched) for path in ("/static", "/static/app.css", "/statics", "/")])
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET, exclude_paths=["/static/"])
    async with http_client(app) as client:
        for path in ("/static", "/static/app.css"):
            with pytest.raises(SessionExcluded, match=r"exclude_paths"):
                await client.get(path)
        assert (await client.get("/statics")).text == "has a session"
        assert (await client.get("/")).text == "has a session"


async def test_an_excluded_route_using_the_session_is_told_why_it_has_none(store: AsyncPostgresStore) -> None:
    async def loads(request: Request) -> Response:
        await load_session(request)
        return PlainTextResponse("")

    app = starlette_app(store, exclude_paths="/read")  # one prefix may be given alone
    app.router.routes.append(Route("/read/load", loads))
    async with http_client(app) as client:
        await client.get("/set?a=1")
        with pytest.raises(OutsideRequestError, match=r"'/read'.*exclude_paths"):
            await client.get("/read")
        with pytest.raises(OutsideRequestError, match=r"'/read'.*exclude_paths"):
            await client.get("/read/load")


async def test_any_use_of_an_excluded_routes_session_says_why_it_has_none(store: AsyncPostgresStore) -> None:
    """Its methods too (``.get()``), not only reading keys: each names the path and the prefix.
    asgi.xǁ_NoSessionǁ__getattr__ mutant 1, xǁSessionMiddlewareǁ_excluded mutants 19, 20."""

    async def gets(request: Request) -> Response:
        return PlainTextResponse(str(request.session.get("user")))

    app = Starlette(routes=[Route("/static/user", gets)])
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET, exclude_paths=["/static"])
    async with http_client(app) as client:
        with pytest.raises(SessionExcluded) as excluded:
            await client.get("/static/user")
    assert str(excluded.value) == (
        "no session on '/static/user': it is under '/static', which exclude_paths lists; "
        "take it out of exclude_paths to use the session there"
    )


async def test_an_excluded_websocket_gets_no_session_and_no_origin_check(store: AsyncPostgresStore) -> None:
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("session" if isinstance(websocket.scope.get("session"), dict) else "none")
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/feed", ws)])
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET, exclude_paths=["/feed"])
    sent = await websocket_call(app, "/feed", signed_cookie())
    assert sent[0]["type"] == "websocket.accept"


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (["static"], r"'static'.*start with '/'"),
        (["/"], r"every route"),
        ([re.compile("/static")], r"path prefix"),
    ],
)
async def test_bad_exclude_paths_are_refused_saying_what_to_pass(
    make_async_store: MakeAsyncStore, paths: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SessionMiddleware(Starlette(), make_async_store(), secret_key=SECRET, exclude_paths=paths)


# -- the docs ------------------------------------------------------------------------------------


def test_the_migration_tables_name_every_starlette_option_and_starsessions_helper() -> None:
    page = ASGI_DOCS.read_text(encoding="utf-8")
    rows = {match.group(1) for match in re.finditer(r"^\| `([a-z_]+)[`(=]", page, re.MULTILINE)}
    missing = ({"secret_key", *STARLETTE_OPTIONS, *STARSESSIONS_HELPERS}) - rows
    assert not missing, f"docs/asgi.md's migration tables lack {sorted(missing)}"
    for name in ("exclude_paths", "cookie_partitioned"):
        assert f"`{name}" in page
