"""Litestar's server-side sessions, as Litestar documents them, against Litestar's own
``ServerSideSessionConfig`` on its ``MemoryStore`` ("theirs") and
``pgsession_wsgi.litestar.PgSessionConfig`` with ``PgSessionPlugin`` ("ours"): the same handlers,
the same options by Litestar's names, the config swapped.

What Litestar's documentation promises (its docstrings: ``ASGIConnection.session``,
``set_session``, ``clear_session``, ``get_session_id``; ``ServerSideSessionConfig``'s fields;
``SessionMiddleware``; ``SessionAuth``): ``request.session`` is a dictionary of the session's
values, which come back in the next request; ``set_session(value)`` replaces it with a dict or a
data container; ``clear_session()`` clears it; ``get_session_id()`` names the session the
backend's ``get``, ``set`` and ``delete`` take; a route with ``skip_session=True`` (the
``exclude_opt_key``) or a path matching ``exclude`` gets no session; ``key``, ``max_age``,
``path``, ``domain``, ``secure``, ``httponly`` and ``samesite`` set the cookie, and ``max_age``
is how long a session lives; ``SessionAuth`` lets in the connections whose session its
``retrieve_user_handler`` finds a user for, and clears any other. The tests marked ours-only are
the differences kept on purpose, listed in docs/litestar.md with their reasons.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
from apps.asgi_support import MakeAsyncStore, http_client, lifespan, websocket_call
from litestar import Litestar, Request, WebSocket, get, websocket
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import ImproperlyConfiguredException
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.security.session_auth import SessionAuth
from litestar.stores.memory import MemoryStore
from litestar.testing import AsyncTestClient, TestClient
from pydantic import BaseModel

from contracts.support import SetCookie, ours_only, set_cookies, the_cookie, use_as_a_dictionary
from pgsession_wsgi import ConfigurationError
from pgsession_wsgi.litestar import PgSessionConfig, PgSessionPlugin

SECRET = "litestar-contract-secret-long-enough-for-a-real-key"

AnyRequest = Request[Any, Any, Any]


# -- the handlers, the same under either config -------------------------------------------------


@get(["/write", "/app/write"])
async def write(request: AnyRequest) -> str:
    for key, value in request.query_params.items():
        request.session[key] = value
    return "ok"


@get("/nested")
async def nested(request: AnyRequest) -> str:
    request.session["cart"] = {"items": [1, 2], "coupon": None, "gift": False}
    request.session["n"] = 3
    return "ok"


@get(["/read", "/app/read"])
async def read(request: AnyRequest) -> dict[str, Any]:
    return dict(request.session)


@get("/none")
async def untouched() -> str:
    return "untouched"


@get("/dict")
async def dictionary(request: AnyRequest) -> dict[str, Any]:
    """Every dictionary method an app uses, on the session; the answer is what each returned."""
    return use_as_a_dictionary(request.session)


@get("/replace")
async def replace(request: AnyRequest) -> str:
    request.set_session(dict(request.query_params))
    return "ok"


@dataclass
class Profile:
    name: str
    theme: str


@get("/replace-with-dataclass")
async def replace_with_dataclass(request: AnyRequest) -> str:
    request.set_session(Profile(name="ada", theme="dark"))
    return "ok"


class Preferences(BaseModel):
    language: str
    page_size: int


@get("/replace-with-model")
async def replace_with_model(request: AnyRequest) -> str:
    request.set_session(Preferences(language="fr", page_size=50))
    return "ok"


class Item(msgspec.Struct):
    sku: str
    qty: int


class Basket(msgspec.Struct):
    owner: str
    items: list[Item]


@get("/replace-with-struct")
async def replace_with_struct(request: AnyRequest) -> str:
    request.set_session(Basket(owner="ada", items=[Item("tea", 2), Item("cup", 1)]))
    return "ok"


@get("/replace-then-add")
async def replace_then_add(request: AnyRequest) -> str:
    request.set_session({"a": 1})
    request.session["b"] = 2  # the session is now the dict set_session() was given
    return "ok"


@get("/clear-then-replace")
async def clear_then_replace(request: AnyRequest) -> str:
    request.clear_session()
    request.set_session({"user": "bob"})
    return "ok"


@get("/clear")
async def clear(request: AnyRequest) -> str:
    request.clear_session()
    return "ok"


@get("/id")
async def session_id(request: AnyRequest) -> dict[str, Any]:
    return {"id": request.get_session_id()}


async def has_session(request: AnyRequest) -> dict[str, bool]:
    return {"session": "session" in request.scope}


async def read_anyway(request: AnyRequest) -> dict[str, Any]:
    return dict(request.session)  # raises where the route has no session


@websocket("/ws")
async def socket_session(socket: WebSocket[Any, Any, Any]) -> None:
    """Refuses the handshake with the session it got at connect as the reason (or "none")."""
    found = json.dumps(dict(socket.session)) if "session" in socket.scope else "none"
    await socket.close(code=1000, reason=found)


@get("/cached", cache=True)
async def cached(request: AnyRequest) -> str:
    request.session["user"] = request.query_params.get("user", "")
    return "cached"


ROUTES = [
    cached, write, nested, read, untouched, dictionary, replace, replace_with_dataclass, replace_with_model,
    replace_with_struct,
    replace_then_add, clear_then_replace, clear, session_id, socket_session,
    get("/skipped", skip_session=True, name="skipped")(has_session),
    get("/skipped/read", skip_session=True, name="skipped_read")(read_anyway),
    get("/static/file", name="static")(has_session),
    get("/quiet", no_session=True, name="quiet")(has_session),
]


# -- SessionAuth ---------------------------------------------------------------------------------

USERS = {"ann": {"name": "Ann"}}


async def retrieve_user(session: dict[str, Any], connection: ASGIConnection[Any, Any, Any, Any]) -> Any:
    return USERS.get(session.get("user_id", ""))


@get("/login")
async def login(request: AnyRequest) -> str:
    request.set_session({"user_id": request.query_params.get("user", "")})
    return "welcome"


@get("/me")
async def me(request: AnyRequest) -> Any:
    return request.user


@get("/logout")
async def logout(request: AnyRequest) -> str:
    request.clear_session()
    return "bye"


@get("/peek")
async def peek(request: AnyRequest) -> dict[str, Any]:
    """The session as it is, past SessionAuth (excluded from it)."""
    return dict(request.session)


AUTH_ROUTES = [login, me, logout, peek]


# -- one site, under either config ---------------------------------------------------------------


class Backend:
    """The backend's operations by session id, the same for both: Litestar's take the store and
    exchange JSON bytes (its ``serialize_data`` / ``deserialize_data``), and its store ends every
    session (``delete_all``); ours take and give the app's values."""

    def __init__(self, flavour: str, config: Any, store: MemoryStore | None) -> None:
        self.flavour, self.config, self.store = flavour, config, store

    async def get(self, session_id: str) -> dict[str, Any] | None:
        if self.store is None:
            return await self.config.backend.get(session_id)  # type: ignore[no-any-return]
        backend = ServerSideSessionBackend(config=self.config)
        data = await backend.get(session_id, self.store)
        return None if data is None else backend.deserialize_data(data)

    async def set(self, session_id: str, data: dict[str, Any]) -> None:
        if self.store is None:
            await self.config.backend.set(session_id, data)
            return
        backend = ServerSideSessionBackend(config=self.config)
        await backend.set(session_id, backend.serialize_data(data), self.store)

    async def delete(self, session_id: str) -> None:
        if self.store is None:
            await self.config.backend.delete(session_id)
            return
        await ServerSideSessionBackend(config=self.config).delete(session_id, self.store)

    async def delete_all(self) -> None:
        if self.store is None:
            await self.config.backend.delete_all()
            return
        await self.store.delete_all()


@dataclass
class Site:
    """An app under the flavour's config, and that config's backend by session id."""

    app: Litestar
    backend: Backend


MakeSite = Callable[..., Site]


@pytest.fixture(params=["theirs", "ours"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Which sessions the app gets: Litestar's own ("theirs") or pgsession-wsgi's ("ours")."""
    return str(request.param)


@pytest.fixture
def make_config(flavour: str, make_async_store: MakeAsyncStore) -> Callable[..., Any]:
    """``make_config(ours=None, **options)``: the flavour's config, options by Litestar's names;
    ``ours`` holds options only ours takes (the step docs/litestar.md's move from Litestar's
    sessions names), ours gets a store in this test's schema and ``secret_key``."""
    if flavour == "theirs":
        return lambda ours=None, **options: ServerSideSessionConfig(**options)
    store = make_async_store()

    def config(ours: dict[str, Any] | None = None, **options: Any) -> PgSessionConfig:
        return PgSessionConfig(store=store, secret_key=SECRET, **options, **(ours or {}))

    return config


@pytest.fixture
def make_site(flavour: str, make_config: Callable[..., Any]) -> MakeSite:
    """``make_site(ours=None, auth=False, **options)``: the routes under the flavour's config,
    installed as each documents it (Litestar's ``config.middleware`` and a ``MemoryStore`` under
    the config's store name, or ours with ``PgSessionPlugin``); with ``auth``, the SessionAuth
    routes behind ``SessionAuth`` on that config instead."""

    def make(ours: dict[str, Any] | None = None, auth: bool = False, **options: Any) -> Site:
        config = make_config(ours, **options)
        app_options: dict[str, Any] = {"logging_config": None}
        if auth:
            guard: SessionAuth[Any, Any] = SessionAuth(
                retrieve_user_handler=retrieve_user,
                session_backend_config=config,
                exclude=["^/login", "^/peek"],
            )
            app_options.update(route_handlers=AUTH_ROUTES, on_app_init=[guard.on_app_init])
        else:
            app_options.update(route_handlers=ROUTES)
        if flavour == "theirs":
            store = MemoryStore()
            app_options["stores"] = {config.store: store}
            if not auth:
                app_options["middleware"] = [config.middleware]
            return Site(Litestar(**app_options), Backend(flavour, config, store))
        app = Litestar(plugins=[PgSessionPlugin(config)], **app_options)
        return Site(app, Backend(flavour, config, None))

    return make


@asynccontextmanager
async def browsing(site: Site, *, https: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    """A browser on ``site``, its lifespan running (ours opens its store there)."""
    async with lifespan(site.app), http_client(site.app, https=https) as client:
        yield client


def cookie_of(response: httpx.Response, name: str = "session") -> SetCookie:
    return the_cookie(response, name)


async def session_id_of(client: httpx.AsyncClient) -> str:
    found = (await client.get("/id")).json()["id"]
    assert isinstance(found, str) and found
    return found


# -- request.session -----------------------------------------------------------------------------


async def test_values_written_come_back_in_the_next_request(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        assert (await client.get("/write?user=ada&theme=dark")).status_code == 200
        assert (await client.get("/read")).json() == {"user": "ada", "theme": "dark"}
        await client.get("/nested")
        assert (await client.get("/read")).json() == {
            "user": "ada", "theme": "dark", "cart": {"items": [1, 2], "coupon": None, "gift": False}, "n": 3,
        }


async def test_request_session_is_a_dictionary(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        assert (await client.get("/dict")).json() == {
            "get": 1, "get_missing": "default", "in": True, "pop": 2, "pop_missing": None,
            "len": 2, "keys": ["a", "c"], "items": [["a", 1], ["c", 3]], "after_del": {"a": 1},
        }
        assert (await client.get("/read")).json() == {"a": 1}


async def test_set_session_replaces_the_whole_session(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        await client.get("/write?user=ada&theme=dark")
        await client.get("/replace?colour=blue")
        assert (await client.get("/read")).json() == {"colour": "blue"}


async def test_set_session_takes_a_data_container(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        await client.get("/write?old=1")
        await client.get("/replace-with-dataclass")
        assert (await client.get("/read")).json() == {"name": "ada", "theme": "dark"}


async def test_set_session_takes_a_pydantic_model(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        await client.get("/replace-with-model")
        assert (await client.get("/read")).json() == {"language": "fr", "page_size": 50}


async def test_set_session_takes_a_msgspec_struct(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        await client.get("/replace-with-struct")
        assert (await client.get("/read")).json() == {
            "owner": "ada", "items": [{"sku": "tea", "qty": 2}, {"sku": "cup", "qty": 1}],
        }


async def test_the_dict_set_session_was_given_is_the_session_for_the_rest_of_the_request(
    make_site: MakeSite,
) -> None:
    async with browsing(make_site()) as client:
        await client.get("/write?old=1")
        await client.get("/replace-then-add")
        assert (await client.get("/read")).json() == {"a": 1, "b": 2}


async def test_a_session_set_after_clear_session_is_the_one_kept(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        await client.get("/write?user=ada")
        await client.get("/clear-then-replace")
        assert (await client.get("/read")).json() == {"user": "bob"}


async def test_clear_session_clears_it_and_the_cookie_names_it_no_more(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        kept = cookie_of(await client.get("/write?user=ada")).value
        assert cookie_of(await client.get("/clear")).value != kept
        assert (await client.get("/read")).json() == {}


async def test_a_cookie_kept_from_before_clear_session_brings_nothing_back(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        kept = cookie_of(await client.get("/write?user=ada")).value
        await client.get("/clear")
        client.cookies.set("session", kept)
        assert (await client.get("/read")).json() == {}


async def test_a_cookie_naming_no_stored_session_reads_as_an_empty_session(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        value = cookie_of(await client.get("/write?user=ada")).value
        client.cookies.clear()
        client.cookies.set("session", value[:-5] + ("A" if value[-5] != "A" else "B") + value[-4:])
        assert (await client.get("/read")).json() == {}


async def test_max_age_is_how_long_an_unused_session_lives(make_site: MakeSite) -> None:
    # Two seconds, not one: a cookie's Expires is whole seconds, so a one-second cookie set late
    # in a second can be gone before the next request.
    async with browsing(make_site(max_age=2)) as client:
        await client.get("/write?user=ada")
        assert (await client.get("/read")).json() == {"user": "ada"}
        await asyncio.sleep(3.1)
        assert (await client.get("/read")).json() == {}


@ours_only("Litestar's own sessions add their cookie to the message its response cache keeps")
async def test_a_cached_response_carries_no_visitors_cookie(make_site: MakeSite) -> None:
    site = make_site()
    async with browsing(site) as ada, http_client(site.app) as bob:
        first = await ada.get("/cached?user=ada")
        assert cookie_of(first).value  # Ada's session was written, and her cookie sent to her
        again = await bob.get("/cached?user=ada")  # the same key: Litestar's cache answers
        assert again.text == "cached"
        assert set_cookies(again) == []
        assert (await bob.get("/read")).json() == {}


# -- Litestar's test clients and the app's lifespan ---------------------------------------------


async def test_the_async_test_client_sets_and_reads_the_session_data(make_site: MakeSite) -> None:
    # Litestar's testing docs: TestClient(app, session_config=config).set_session_data(data) is the
    # session the next request sees; get_session_data() is what the requests left in it.
    site = make_site()
    async with AsyncTestClient(app=site.app, session_config=site.backend.config) as client:
        await client.set_session_data({"user": "ada", "n": 1})
        assert (await client.get("/read")).json() == {"user": "ada", "n": 1}
        await client.get("/write?theme=dark")
        assert await client.get_session_data() == {"user": "ada", "n": 1, "theme": "dark"}
        await client.set_session_data({"user": "bob"})  # replaces it, under the same cookie
        assert (await client.get("/read")).json() == {"user": "bob"}


async def test_the_sync_test_client_sets_and_reads_the_session_data(make_site: MakeSite) -> None:
    site = make_site()
    with TestClient(app=site.app, session_config=site.backend.config) as client:
        client.get("/write?user=ada")
        assert client.get_session_data() == {"user": "ada"}
        client.set_session_data({"user": "bob", "cart": [1, 2]})
        assert client.get("/read").json() == {"user": "bob", "cart": [1, 2]}


async def test_the_app_serves_sessions_through_each_run_of_its_lifespan(make_site: MakeSite) -> None:
    # A module-level app and a `with TestClient(app)` per test: the lifespan starts and stops
    # again for each, in a new event loop each time.
    site = make_site()
    for run in range(3):
        with TestClient(app=site.app) as client:
            client.get(f"/write?run={run}")
            assert client.get("/read").json() == {"run": str(run)}


# -- get_session_id() and the backend by session id ----------------------------------------------


async def test_get_session_id_names_the_stored_session_from_request_to_request(make_site: MakeSite) -> None:
    site = make_site()
    async with browsing(site) as client:
        await client.get("/write?user=ada")
        current = await session_id_of(client)
        assert await session_id_of(client) == current
        assert await site.backend.get(current) == {"user": "ada"}
        assert await site.backend.get(current + "-no-such-session") is None


async def test_the_backend_replaces_a_sessions_data_by_its_id(make_site: MakeSite) -> None:
    site = make_site()
    async with browsing(site) as client:
        await client.get("/write?user=ada&cart=2")
        await site.backend.set(await session_id_of(client), {"user": "ada", "cart": "5"})
        assert (await client.get("/read")).json() == {"user": "ada", "cart": "5"}


async def test_the_backend_ends_a_session_by_its_id(make_site: MakeSite) -> None:
    site = make_site()
    async with browsing(site) as client:
        await client.get("/write?user=ada")
        current = await session_id_of(client)
        await site.backend.delete(current)
        assert await site.backend.get(current) is None
        assert (await client.get("/read")).json() == {}
        await site.backend.delete("no-such-session")  # nothing to end: no error


async def test_delete_all_ends_every_session(make_site: MakeSite) -> None:
    site = make_site()
    async with browsing(site) as ada, http_client(site.app) as bob:
        await ada.get("/write?user=ada")
        await bob.get("/write?user=bob")
        ids = [await session_id_of(ada), await session_id_of(bob)]
        await site.backend.delete_all()
        assert [await site.backend.get(each) for each in ids] == [None, None]
        assert (await ada.get("/read")).json() == {}
        assert (await bob.get("/read")).json() == {}


# -- websockets ----------------------------------------------------------------------------------


async def test_a_websocket_gets_the_session_at_connect(make_site: MakeSite) -> None:
    site = make_site()
    async with browsing(site) as client:
        await client.get("/write?user=ada")
        [closed] = await websocket_call(site.app, "/ws", client.cookies["session"])
        assert json.loads(closed["reason"]) == {"user": "ada"}


async def test_scopes_without_websocket_leave_websockets_without_a_session(make_site: MakeSite) -> None:
    site = make_site(scopes={ScopeType.HTTP})
    async with browsing(site) as client:
        await client.get("/write?user=ada")
        [closed] = await websocket_call(site.app, "/ws", client.cookies["session"])
        assert closed["reason"] == "none"
        assert (await client.get("/read")).json() == {"user": "ada"}


# -- routes without a session --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({}, "/skipped"),
        ({"exclude": ["^/static/"]}, "/static/file"),
        ({"exclude": "^/static/"}, "/static/file"),
        ({"exclude_opt_key": "no_session"}, "/quiet"),
    ],
    ids=["skip_session", "exclude list", "exclude pattern", "exclude_opt_key"],
)
async def test_an_excluded_route_gets_no_session_and_no_cookie(
    make_site: MakeSite, options: dict[str, Any], path: str
) -> None:
    async with browsing(make_site(**options)) as client:
        await client.get("/write?user=ada")  # the browser now carries a cookie
        excluded = await client.get(path)
        assert excluded.json() == {"session": False}
        assert set_cookies(excluded) == []
        assert (await client.get("/read")).json() == {"user": "ada"}


async def test_request_session_on_a_route_without_one_raises(make_site: MakeSite) -> None:
    # ImproperlyConfiguredException, which Litestar answers with a 500.
    async with browsing(make_site()) as client:
        assert (await client.get("/skipped/read")).status_code == 500


async def test_a_custom_exclude_opt_key_leaves_skip_session_routes_their_session(make_site: MakeSite) -> None:
    async with browsing(make_site(exclude_opt_key="no_session")) as client:
        assert (await client.get("/skipped")).json() == {"session": True}


# -- the cookie's options ------------------------------------------------------------------------


async def test_key_names_the_cookie(make_site: MakeSite) -> None:
    async with browsing(make_site(key="sid")) as client:
        assert [cookie.name for cookie in set_cookies(await client.get("/write?a=1"))] == ["sid"]
        assert (await client.get("/read")).json() == {"a": "1"}


async def test_the_cookie_is_httponly_and_samesite_lax_by_default(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        cookie = cookie_of(await client.get("/write?a=1"))
        assert cookie.has("httponly")
        assert (cookie.get("samesite") or "").lower() == "lax"
        assert cookie.get("path") == "/"
        assert not cookie.has("domain")


async def test_httponly_false_lets_scripts_read_the_cookie(make_site: MakeSite) -> None:
    async with browsing(make_site(httponly=False)) as client:
        assert not cookie_of(await client.get("/write?a=1")).has("httponly")


@pytest.mark.parametrize("samesite", ["lax", "strict"])
async def test_samesite_is_the_cookies_samesite(make_site: MakeSite, samesite: str) -> None:
    async with browsing(make_site(samesite=samesite)) as client:
        assert (cookie_of(await client.get("/write?a=1")).get("samesite") or "").lower() == samesite


async def test_samesite_none_with_secure(make_site: MakeSite) -> None:
    async with browsing(make_site(samesite="none", secure=True), https=True) as client:
        cookie = cookie_of(await client.get("/write?a=1"))
        assert (cookie.get("samesite") or "").lower() == "none" and cookie.has("secure")


async def test_secure_sets_the_secure_flag(make_site: MakeSite) -> None:
    async with browsing(make_site(secure=True), https=True) as client:
        assert cookie_of(await client.get("/write?a=1")).has("secure")
        assert (await client.get("/read")).json() == {"a": "1"}


async def test_without_secure_a_cookie_over_http_is_not_secure(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        assert not cookie_of(await client.get("/write?a=1")).has("secure")


async def test_path_is_the_cookies_path(make_site: MakeSite) -> None:
    async with browsing(make_site(path="/app")) as client:
        assert cookie_of(await client.get("/app/write?a=1")).get("path") == "/app"
        assert (await client.get("/app/read")).json() == {"a": "1"}
        assert (await client.get("/read")).json() == {}  # the browser sends it under /app only


async def test_domain_is_the_cookies_domain(make_site: MakeSite) -> None:
    async with browsing(make_site(domain="example.com")) as client:
        assert (cookie_of(await client.get("/write?a=1")).get("domain") or "").lstrip(".") == "example.com"


async def test_max_age_is_the_cookies_max_age(make_site: MakeSite) -> None:
    # Litestar's cookie always carries max_age; ours once sessions are permanent, as the move
    # from Litestar's sessions in docs/litestar.md sets them.
    async with browsing(make_site(max_age=3600, ours={"permanent": True})) as client:
        assert cookie_of(await client.get("/write?a=1")).get("max-age") == "3600"


@pytest.mark.parametrize("options", [{"max_age": 0}, {"max_age": -5}, {"key": ""}])
async def test_an_impossible_option_is_refused_when_the_config_is_made(
    make_config: Callable[..., Any], options: dict[str, Any]
) -> None:
    with pytest.raises((ImproperlyConfiguredException, ConfigurationError)):
        make_config(**options)


# -- SessionAuth ---------------------------------------------------------------------------------


async def test_session_auth_lets_in_a_logged_in_user_until_the_logout(make_site: MakeSite) -> None:
    async with browsing(make_site(auth=True)) as client:
        assert (await client.get("/me")).status_code == 401
        assert (await client.get("/login?user=ann")).text == "welcome"
        me_now = await client.get("/me")
        assert me_now.status_code == 200 and me_now.json() == {"name": "Ann"}
        kept = client.cookies["session"]
        assert cookie_of(await client.get("/logout")).value != kept
        assert (await client.get("/me")).status_code == 401
        client.cookies.set("session", kept)
        assert (await client.get("/me")).status_code == 401


async def test_session_auth_clears_a_session_whose_user_is_not_found(make_site: MakeSite) -> None:
    async with browsing(make_site(auth=True)) as client:
        kept = cookie_of(await client.get("/login?user=nobody")).value
        assert (await client.get("/peek")).json() == {"user_id": "nobody"}
        refused = await client.get("/me")
        assert refused.status_code == 401
        assert cookie_of(refused).value != kept
        client.cookies.set("session", kept)
        assert (await client.get("/peek")).json() == {}  # the session itself is gone


# -- differences kept on purpose (docs/litestar.md, "Differences kept on purpose") ---------------


@ours_only("a session id is issued by the save that stores the session, so get_session_id() is None "
           "before; Litestar's makes one up for every visitor")
async def test_get_session_id_is_none_before_anything_is_stored(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        assert (await client.get("/id")).json() == {"id": None}


@ours_only("the cookie of a cleared session is expired at once (Max-Age=0); Litestar's is overwritten "
           "with the value 'null', kept by the browser for max_age")
async def test_clear_session_expires_the_cookie(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        await client.get("/write?user=ada")
        assert cookie_of(await client.get("/clear")).expired


@ours_only("a request that leaves its session alone writes nothing and sends no cookie; Litestar's "
           "writes the session and sends the cookie again on every response")
async def test_a_request_that_leaves_the_session_alone_sets_no_cookie(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        await client.get("/write?a=1")
        assert set_cookies(await client.get("/none")) == []
        assert set_cookies(await client.get("/read")) == []


@ours_only("nothing is stored for a visitor whose session stays empty, and no cookie is sent; "
           "Litestar's stores the empty session and sends its cookie")
async def test_an_empty_session_sets_no_cookie(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        assert set_cookies(await client.get("/read")) == []
        assert (await client.get("/id")).json() == {"id": None}


@ours_only("the cookie lasts as long as the browser unless the session is permanent (every front "
           "end's default, Flask's too); Litestar's always carries max_age")
async def test_the_cookie_lasts_as_long_as_the_browser_by_default(make_site: MakeSite) -> None:
    async with browsing(make_site()) as client:
        assert cookie_of(await client.get("/write?a=1")).ends_with_the_browser


@ours_only("secure=None, the default: Secure whenever the request came over https; Litestar's "
           "secure=False sends it without")
async def test_over_https_the_cookie_is_secure_without_secure(make_site: MakeSite) -> None:
    async with browsing(make_site(), https=True) as client:
        assert cookie_of(await client.get("/write?a=1")).has("secure")


@ours_only("an id the browser brings is never adopted (session fixation): a session is stored under "
           "an id the server drew; Litestar's stores it under the cookie's id")
async def test_an_id_the_client_chose_is_never_adopted(make_site: MakeSite) -> None:
    site = make_site()
    async with browsing(site) as client:
        client.cookies.set("session", "chosen-by-the-client")
        issued = cookie_of(await client.get("/write?user=ada")).value
        assert "chosen-by-the-client" not in issued
        assert await site.backend.get("chosen-by-the-client") is None


@ours_only("the backend's set() never takes an id from its caller: for an id with no live session "
           "the data is stored under a new id, which it returns; Litestar's stores it under the id given")
async def test_the_backend_stores_data_for_an_unknown_id_under_a_new_one(make_site: MakeSite) -> None:
    site = make_site()
    async with browsing(site):
        await site.backend.set("an-id-nobody-was-given", {"k": 1})
        assert await site.backend.get("an-id-nobody-was-given") is None


@ours_only("samesite='none' needs Secure cookies, which browsers drop it without: secure=False is "
           "refused when the config is made; Litestar's sends the cookie")
async def test_samesite_none_without_secure_is_refused(make_config: Callable[..., Any]) -> None:
    with pytest.raises(ConfigurationError, match="Secure"):
        make_config(samesite="none", secure=False)


@ours_only("the cookie holds a signed id: a secret_key is required; Litestar's signs nothing")
async def test_the_config_needs_a_secret_key(flavour: str, make_async_store: MakeAsyncStore) -> None:
    with pytest.raises(ConfigurationError, match="secret_key"):
        PgSessionConfig(store=make_async_store())
