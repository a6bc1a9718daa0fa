"""The session is a dict (issue 23): a ``dict`` subclass in every adapter, behaving as a dict does,
while loading only when touched, tracking every change and saving per key.

Each dict operation runs on a stored session and on a plain dict of the same data, in the same
request; the answers and what is stored afterwards must be the dict's. Python's C code reads a
dict subclass's storage directly in places (``json.dumps``, ``dict(session)``, ``{**session}``):
each such read of a session not loaded yet must load it first, in one statement. All through the
real adapters (WSGI ``get_session``, Flask, Starlette, Quart) on a real PostgreSQL.
"""

from __future__ import annotations

import collections
import copy
import json
import operator
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from apps.asgi_support import MakeAsyncStore, http_client
from db import sql
from flask import Flask, jsonify
from flask import session as flask_session
from helpers import ClosingClient, close_extension_stores
from quart import Quart
from quart import session as quart_session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from webtest import TestApp
from wire import RoundTripCounter

from pgsession_wsgi import PostgresStore, Session, SessionMiddleware, UnstorableValue, get_session
from pgsession_wsgi.asgi import SessionMiddleware as AsgiSessionMiddleware
from pgsession_wsgi.flask import EXTENSION_KEY as FLASK_EXTENSION_KEY
from pgsession_wsgi.flask import PgSession
from pgsession_wsgi.quart import EXTENSION_KEY as QUART_EXTENSION_KEY
from pgsession_wsgi.quart import PgSession as QuartPgSession

SECRET = "session-is-a-dict-secret-long-enough-for-the-check"
#: What every test stores first. jsonb orders keys by length, then bytes: "a", "b", "c" come back
#: in this order, so a dict built from it has the loaded session's order.
STORED: dict[str, Any] = {"a": 1, "b": [2, 3], "c": {"d": "e"}}


def stored(store: Any) -> list[Any]:
    return [data for (data,) in sql(store, "SELECT data FROM {t} ORDER BY created_at")]


def as_json(operand: Any, result: Any) -> Any:
    """``result`` as JSON data that tells a dict from the operand itself and keeps order."""
    if result is operand:
        return "<the operand itself>"
    if isinstance(result, dict):
        return {"type": type(result).__name__, "items": [[k, as_json(None, v)] for k, v in result.items()]}
    if isinstance(result, (list, tuple)):
        return [as_json(None, item) for item in result]
    if type(result) in (str, int, float, bool, type(None)):
        return result
    return {"type": type(result).__name__, "items": list(result)}  # views, iterators


def kwargs_of(**kwargs: Any) -> dict[str, Any]:
    return kwargs


def ior(d: Any, other: Any) -> Any:
    d |= other
    return d


#: name -> an operation on a dict (or the session), answering something ``as_json`` reads.
OPERATIONS: dict[str, Callable[[Any], Any]] = {
    "isinstance": lambda d: isinstance(d, dict),
    "json.dumps": lambda d: json.dumps(d),
    "json.dumps(sort_keys, indent)": lambda d: json.dumps(d, sort_keys=True, indent=2),
    "json.dumps(compact)": lambda d: json.dumps(d, separators=(",", ":"), ensure_ascii=False),
    "dict()": dict,
    "{**}": lambda d: {**d},
    "f(**)": lambda d: kwargs_of(**d),
    "{}.update()": lambda d: (lambda target: (target.update(d), target)[1])({}),
    "ChainMap": lambda d: dict(collections.ChainMap({}, d)),
    "str.format_map": lambda d: "{a}-{b}".format_map(d),
    "copy()": lambda d: d.copy(),
    "copy.copy": copy.copy,
    "copy.deepcopy": copy.deepcopy,
    "pickle": lambda d: pickle.loads(pickle.dumps(d)),
    "== dict": lambda d: d == dict(STORED),
    "dict ==": lambda d: dict(STORED) == d,
    "!= dict": lambda d: d != dict(STORED),
    "!= {}": lambda d: d != {},
    "== list": lambda d: d == list(STORED),
    "keys": lambda d: d.keys(),
    "values": lambda d: list(d.values()),
    "items": lambda d: list(d.items()),
    "keys == set": lambda d: d.keys() == {"a", "b", "c"},
    "items &": lambda d: sorted(d.items() & {("a", 1)}),
    "get": lambda d: d.get("a"),
    "get missing": lambda d: d.get("zz", "default"),
    "[]": lambda d: d["b"],
    "[] missing": lambda d: _raises(lambda: d["zz"]),
    "in": lambda d: "c" in d,
    "not in": lambda d: "zz" in d,
    "len": len,
    "bool": bool,
    "iter": list,
    "reversed": lambda d: list(reversed(d)),
    "sorted": sorted,
    "| dict": lambda d: d | {"a": 10, "z": 26},
    "dict |": lambda d: {"a": 10, "z": 26} | d,
    "operator.or_": lambda d: operator.or_(d, {"y": 25}),
    "fromkeys": lambda d: d.fromkeys(["p", "q"], 0),
    "repr of a loaded one": lambda d: (len(d), repr(d))[1],
    # -- changes --
    "[]=": lambda d: d.__setitem__("z", [26]),
    "del": lambda d: d.__delitem__("a"),
    "del missing": lambda d: _raises(lambda: d.__delitem__("zz")),
    "pop": lambda d: d.pop("b"),
    "pop default": lambda d: d.pop("zz", "default"),
    "pop missing": lambda d: _raises(lambda: d.pop("zz")),
    "popitem": lambda d: d.popitem(),
    "popitem twice": lambda d: [d.popitem(), d.popitem()],
    "setdefault existing": lambda d: d.setdefault("a", 100),
    "setdefault new": lambda d: d.setdefault("z", {"x": 1}),
    "setdefault then append": lambda d: d.setdefault("b", []).append(4),
    "update dict": lambda d: d.update({"a": 10, "z": 26}),
    "update pairs and keywords": lambda d: d.update([("a", 10)], z=26),
    "update bad pairs": lambda d: _raises(lambda: d.update([("a", 1, 2)])),
    "update nothing": lambda d: d.update(),
    "|=": lambda d: ior(d, {"a": 10, "z": 26}),
    "|= pairs": lambda d: ior(d, [("y", 25)]),
    "|= bad": lambda d: _raises(lambda: ior(d, 5)),
    "clear": lambda d: d.clear(),
    "clear then set": lambda d: (d.clear(), d.__setitem__("z", 26)),
    "nested append": lambda d: d["b"].append(4),
    "nested get set": lambda d: d.get("c").__setitem__("d", "f"),
    "nested through values": lambda d: next(v for v in d.values() if isinstance(v, list)).append(5),
    "nested through items": lambda d: dict(d.items())["c"].update(g=7),
}


NAMES = list(OPERATIONS)


def _raises(action: Callable[[], Any]) -> Any:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - the test compares what a dict raises
        return f"{type(exc).__name__}: {exc}"
    return "nothing raised"


def reference_answer(name: str) -> tuple[Any, Any]:
    """What a plain dict holding ``STORED`` answers, and holds after the operation."""
    reference = copy.deepcopy(STORED)
    result = OPERATIONS[name](reference)
    return as_json(reference, result), as_json(None, reference)


# -- WSGI: get_session --------------------------------------------------------------------------


def dict_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """``/seed`` stores ``STORED``; ``/none`` never touches the session; ``/read`` answers it;
    ``/op?N`` runs the operation ``NAMES[N]`` on the session as its first touch and answers the
    result and the data after it."""
    session = get_session(environ)
    path = environ["PATH_INFO"]
    if path == "/seed":
        session.update(copy.deepcopy(STORED))
        answer: Any = "seeded"
    elif path == "/none":
        answer = "untouched"
    elif path == "/read":
        answer = as_json(None, session.copy())
    else:
        name = NAMES[int(environ["QUERY_STRING"])]
        operand: Any = session
        result = OPERATIONS[name](operand)
        answer = [as_json(operand, result), as_json(None, dict(session.items()))]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(answer).encode()]


@pytest.fixture
def wsgi(
    make_store: Callable[..., PostgresStore], wire_counter: RoundTripCounter
) -> Iterator[tuple[TestApp, PostgresStore, RoundTripCounter]]:
    store = make_store(dsn=wire_counter.dsn)
    client = TestApp(SessionMiddleware(dict_app, store, secret_key=SECRET))
    client.get("/seed")
    yield client, store, wire_counter


def op_path(name: str) -> str:
    return f"/op?{NAMES.index(name)}"


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_wsgi_each_dict_operation_answers_and_stores_as_on_a_dict(
    wsgi: tuple[TestApp, PostgresStore, RoundTripCounter], name: str
) -> None:
    client, store, _ = wsgi
    expected_result, expected_after = reference_answer(name)

    result, after = client.get(op_path(name)).json

    assert result == expected_result
    assert after == expected_after
    # What the next request reads is what the dict holds (a cleared session leaves no row).
    assert client.get("/read").json == expected_after
    assert stored(store) == ([dict(expected_after_items(expected_after))] if expected_after["items"] else [])


def expected_after_items(after: Any) -> list[tuple[str, Any]]:
    return [(key, plain(value)) for key, value in after["items"]]


def plain(value: Any) -> Any:
    if isinstance(value, dict) and value.get("type") == "dict":
        return {key: plain(item) for key, item in value["items"]}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


#: The reads C code makes on a dict subclass, each the first touch of a session not loaded yet.
C_LEVEL_READS = [
    "json.dumps",
    "json.dumps(sort_keys, indent)",
    "json.dumps(compact)",
    "dict()",
    "{**}",
    "f(**)",
    "{}.update()",
    "ChainMap",
    "str.format_map",
    "copy.copy",
    "copy.deepcopy",
    "pickle",
    "dict ==",
    "!= {}",
    "keys == set",
    "bool",
    "len",
    "iter",
    "sorted",
    "dict |",
    "| dict",
]


@pytest.mark.parametrize("name", C_LEVEL_READS)
def test_wsgi_a_c_level_read_of_a_session_not_loaded_sees_the_stored_data_in_one_statement(
    wsgi: tuple[TestApp, PostgresStore, RoundTripCounter], name: str
) -> None:
    client, _, counter = wsgi
    counter.reset()
    result, _after = client.get(op_path(name)).json
    assert result == reference_answer(name)[0]
    assert counter.count == 1  # the load; nothing written for a read


def test_wsgi_an_untouched_request_costs_no_statement(
    wsgi: tuple[TestApp, PostgresStore, RoundTripCounter],
) -> None:
    client, _, counter = wsgi
    counter.reset()
    response = client.get("/none")
    assert counter.count == 0
    assert "Set-Cookie" not in response.headers and "Vary" not in response.headers


def test_a_session_not_loaded_is_never_loaded_by_its_repr() -> None:
    loads: list[int] = []

    def loader(session: Session) -> dict[str, Any]:
        loads.append(1)
        return {"a": 1}

    session = Session(loader)
    assert repr(session) == str(session) == "<Session (not loaded)>"
    assert not session.loaded and loads == [] and not session.accessed
    assert json.dumps(session) == '{"a": 1}' and loads == [1]
    assert repr(session) == "{'a': 1}"


def test_the_session_is_importable_and_keeps_its_own_api(
    wsgi: tuple[TestApp, PostgresStore, RoundTripCounter],
) -> None:
    """``id``, ``new``, ``permanent``, ``modified``, ``accessed``, ``loaded``, ``peek``,
    ``regenerate()``, ``invalidate()``, ``set_expiry()`` and ``expiry`` are all still there."""
    from datetime import timedelta

    session = Session()
    assert session.loaded and not session.accessed and not session.modified
    assert isinstance(session, dict) and session == {} and session.new
    session["a"] = 1
    assert session.accessed and session.modified and session.peek("a") == 1
    session.permanent = False
    assert not session.permanent and session["_permanent"] is False
    session.set_expiry(timedelta(days=2))
    assert session.expiry == timedelta(days=2)
    session.regenerate()
    assert session.id is None
    session.invalidate()
    assert session == {} and session.expiry is None


# -- keys, checks, nested changes and merges through the dict methods ---------------------------


def test_keys_stay_str_whichever_way_they_come_in() -> None:
    session = Session()
    for attempt in (
        lambda: session.__setitem__(1, "x"),
        lambda: session.update({1: "x"}),
        lambda: session.update([(None, "x")]),
        lambda: session.setdefault(b"k", "x"),
        lambda: ior(session, {2.5: "x"}),
    ):
        with pytest.raises(TypeError, match="session keys must be str"):
            attempt()
    assert session == {} and not session.modified
    assert type(Session.fromkeys([1, 2])) is dict  # a plain dict, not a session: any keys


def test_an_update_or_ior_with_one_unstorable_value_stores_none_of_its_values() -> None:
    session = Session()
    session["kept"] = 1
    with pytest.raises(UnstorableValue, match="'bad'"):
        session.update({"good": 1, "bad": {1, 2}})
    with pytest.raises(UnstorableValue, match="'bad'"):
        ior(session, {"good": 1, "bad": float("nan")})
    with pytest.raises(UnstorableValue, match="'bad'"):
        session.setdefault("bad", object())
    assert session == {"kept": 1}


def test_concurrent_saves_through_dict_methods_merge_per_key(
    make_store: Callable[..., PostgresStore],
) -> None:
    store = make_store()
    middleware = SessionMiddleware(dict_app, store, secret_key=SECRET)
    cookie = TestApp(middleware).get("/seed").headers["Set-Cookie"].split(";", 1)[0]
    environ = {"HTTP_COOKIE": cookie, "wsgi.url_scheme": "http"}
    first, second = middleware.open_session(environ), middleware.open_session(environ)
    assert first == second == STORED  # both loaded before either saves
    first |= {"a": 10}
    second.pop("b")
    second.setdefault("c", {})["d"] = "f"
    middleware.commit(first)
    middleware.commit(second)
    assert stored(store) == [{"a": 10, "c": {"d": "f"}}]


# -- Flask -----------------------------------------------------------------------------------


@pytest.fixture
def flask_app(pg_dsn: str, schema: str, wire_counter: RoundTripCounter) -> Iterator[Flask]:
    app = Flask("dict")
    app.test_client_class = ClosingClient
    app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=wire_counter.dsn, PGSESSION_SCHEMA=schema)
    app.config.update(TESTING=True)
    PgSession(app)

    @app.get("/seed")
    def seed() -> str:
        flask_session.update(copy.deepcopy(STORED))
        return "seeded"

    @app.get("/jsonify")
    def jsonified() -> Any:
        # flask.session is Flask's proxy; the session behind it is the dict jsonify encodes.
        return jsonify(flask_session._get_current_object())  # type: ignore[attr-defined]

    @app.get("/jsonify-keyword")
    def jsonify_keyword() -> Any:
        return jsonify(session=flask_session._get_current_object())  # type: ignore[attr-defined]

    @app.get("/returned")
    def returned() -> Any:
        return flask_session.copy()  # Flask answers a dict as JSON

    @app.get("/checks")
    def checks() -> Any:
        proxied = flask_session
        answers = {
            "isinstance": isinstance(proxied, dict),
            "real isinstance": isinstance(proxied._get_current_object(), dict),  # type: ignore[attr-defined]
            "dict": copy.deepcopy(dict(proxied)),
            "| dict": copy.deepcopy(proxied | {"z": 26}),
            "popitem": list(proxied.popitem()),
        }
        proxied |= {"y": 25}
        proxied.setdefault("b", []).append(4)
        answers["after"] = dict(proxied)
        return answers

    yield app
    close_extension_stores([app])


def flask_store(app: Flask) -> PostgresStore:
    return app.extensions[FLASK_EXTENSION_KEY].store  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", ["/jsonify", "/jsonify-keyword", "/returned"])
def test_flask_jsonify_of_a_session_not_loaded_loads_it_in_one_statement(
    flask_app: Flask, wire_counter: RoundTripCounter, path: str
) -> None:
    client = flask_app.test_client()
    client.get("/seed")
    wire_counter.reset()
    answer = client.get(path).get_json()
    assert (answer["session"] if path == "/jsonify-keyword" else answer) == STORED
    assert wire_counter.count == 1


def test_flask_session_is_a_dict_through_its_proxy(flask_app: Flask) -> None:
    client = flask_app.test_client()
    client.get("/seed")
    answers = client.get("/checks").get_json()
    assert answers["isinstance"] is True and answers["real isinstance"] is True
    assert answers["dict"] == STORED
    assert answers["| dict"] == {**STORED, "z": 26}
    assert answers["popitem"] == ["c", {"d": "e"}]  # the newest key first, as a dict
    assert answers["after"] == {"a": 1, "b": [2, 3, 4], "y": 25}
    assert stored(flask_store(flask_app)) == [{"a": 1, "b": [2, 3, 4], "y": 25}]


def test_flask_an_untouched_request_costs_no_statement(
    flask_app: Flask, wire_counter: RoundTripCounter
) -> None:
    @flask_app.get("/none")
    def nothing() -> str:
        return "untouched"

    client = flask_app.test_client()
    client.get("/seed")
    wire_counter.reset()
    assert client.get("/none").get_data(as_text=True) == "untouched"
    assert wire_counter.count == 0


# -- Starlette ---------------------------------------------------------------------------------


async def starlette_json(request: Request) -> JSONResponse:
    return JSONResponse(request.session)


async def starlette_seed(request: Request) -> JSONResponse:
    request.session.update(copy.deepcopy(STORED))
    return JSONResponse("seeded")


async def starlette_checks(request: Request) -> JSONResponse:
    session = request.session
    answers = {"isinstance": isinstance(session, dict), "popitem": list(session.popitem())}
    session |= {"y": 25}
    session.setdefault("b", []).append(4)
    answers["| dict"] = session | {"z": 26}
    return JSONResponse(answers)


def starlette_app(store: Any) -> Starlette:
    app = Starlette(routes=[Route("/json", starlette_json), Route("/seed", starlette_seed)])
    app.add_route("/checks", starlette_checks)
    app.add_middleware(AsgiSessionMiddleware, store=store, secret_key=SECRET)
    return app


async def test_starlette_json_response_of_request_session(make_async_store: MakeAsyncStore) -> None:
    store = make_async_store()
    async with http_client(starlette_app(store)) as client:
        # No cookie: nothing to load, not loaded yet; JSONResponse still reads it as a dict.
        assert (await client.get("/json")).json() == {}
        await client.get("/seed")
        assert (await client.get("/json")).json() == STORED
        answers = (await client.get("/checks")).json()
    assert answers["isinstance"] is True
    assert answers["popitem"] == ["c", {"d": "e"}]
    assert answers["| dict"] == {"a": 1, "b": [2, 3, 4], "y": 25, "z": 26}
    assert stored(store) == [{"a": 1, "b": [2, 3, 4], "y": 25}]


# -- Quart -------------------------------------------------------------------------------------


@pytest.fixture
async def quart_app(pg_dsn: str, schema: str) -> Any:
    app = Quart("dict")
    app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema, TESTING=True)
    QuartPgSession(app)

    @app.get("/seed")
    async def seed() -> str:
        quart_session.update(copy.deepcopy(STORED))
        return "seeded"

    @app.get("/checks")
    async def checks() -> Any:
        real = quart_session._get_current_object()  # type: ignore[attr-defined]
        answers: dict[str, Any] = {
            "isinstance": isinstance(quart_session, dict) and isinstance(real, dict),
            "json.dumps": json.loads(json.dumps(real)),
            "dict": copy.deepcopy(dict(quart_session)),
            "popitem": list(quart_session.popitem()),
        }
        session = quart_session
        session |= {"y": 25}
        session.setdefault("b", []).append(4)
        answers["| dict"] = real | {"z": 26}
        return answers

    yield app
    await app.extensions[QUART_EXTENSION_KEY].store.close()


async def test_quart_session_is_a_dict(quart_app: Quart) -> None:
    client = quart_app.test_client()
    await client.get("/seed")
    answers = await (await client.get("/checks")).get_json()
    assert answers["isinstance"] is True
    assert answers["json.dumps"] == answers["dict"] == STORED
    assert answers["popitem"] == ["c", {"d": "e"}]
    assert answers["| dict"] == {"a": 1, "b": [2, 3, 4], "y": 25, "z": 26}
    assert stored(quart_app.extensions[QUART_EXTENSION_KEY].store) == [{"a": 1, "b": [2, 3, 4], "y": 25}]
