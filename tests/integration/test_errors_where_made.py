"""A value the session cannot store fails where the app puts it in, naming the key (issue 21).

Every way a value gets into the session checks it there; a value changed in place afterwards
(``session["l"].append({1})``) is found by the save, which Flask and Quart run inside their own
request handling, so ``TESTING``/``DEBUG`` show its traceback. Plain WSGI answers a 500 with one
log line for both. All through the real adapters, on a real PostgreSQL.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from db import sql
from flask import Flask, request_finished
from flask import session as flask_session
from helpers import ClosingClient, close_extension_stores
from quart import Quart
from quart import session as quart_session
from webtest import TestApp

from pgsession_wsgi import (
    PostgresStore,
    SessionError,
    SessionMiddleware,
    UnstorableTypeError,
    UnstorableValue,
    UnstorableValueError,
    get_session,
)
from pgsession_wsgi.flask import PgSession
from pgsession_wsgi.quart import PgSession as QuartPgSession

SECRET = "errors-where-made-secret-long-enough-for-the-check"


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


class Widget:
    pass


#: name -> (a value the codec refuses, the built-in error it also is)
UNSTORABLE: dict[str, tuple[Any, type[Exception]]] = {
    "set": ({1, 2}, TypeError),
    "object": (Widget(), TypeError),
    "int-keys": ({1: "a"}, TypeError),
    "set-in-a-list": ([1, {2}], TypeError),
    "complex": (1j, TypeError),
    "nan": (math.nan, ValueError),
    "infinity": (math.inf, ValueError),
    "decimal-nan": (Decimal("NaN"), ValueError),
    "decimal-infinity": (Decimal("-Infinity"), ValueError),
    "huge-int": (1 << 2000, ValueError),
    "too-deep": (deep(100), ValueError),
    "nul-in-a-dict-key": ({"a\x00b": 1}, ValueError),
}

#: name -> how a value goes in under ``key``
WAYS: dict[str, Callable[[Any, str, Any], Any]] = {
    "setitem": lambda session, key, value: session.__setitem__(key, value),
    "update-dict": lambda session, key, value: session.update({key: value}),
    "update-pairs": lambda session, key, value: session.update([(key, value)]),
    "update-keywords": lambda session, key, value: session.update(**{key: value}),
    "setdefault": lambda session, key, value: session.setdefault(key, value),
}


def stored(store: PostgresStore) -> list[Any]:
    return [data for (data,) in sql(store, "SELECT data FROM {t} ORDER BY created_at")]


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


# -- at the assignment, whatever the way in -------------------------------------------------


def assignment_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """``/?kind=K&way=W``: keep ``before``, try to put ``UNSTORABLE[K]`` in under "k" by way
    ``W``, and answer what was raised and what the session holds then, as JSON."""
    session = get_session(environ)
    query = dict(part.split("=") for part in environ["QUERY_STRING"].split("&"))
    session["before"] = "kept"
    value, _ = UNSTORABLE[query["kind"]]
    try:
        WAYS[query["way"]](session, "k", value)
    except Exception as exc:  # noqa: BLE001 - the test inspects what it is
        raised: Any = {
            "types": [kind.__name__ for kind in type(exc).__mro__],
            "message": str(exc),
            "key": getattr(exc, "key", None),
        }
    else:
        raised = None
    body = json.dumps({"raised": raised, "holds": sorted(session)}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


@pytest.mark.parametrize("way", sorted(WAYS))
@pytest.mark.parametrize("kind", sorted(UNSTORABLE))
def test_an_unstorable_value_is_refused_where_it_goes_in_naming_the_key(
    make_store: Callable[..., PostgresStore], kind: str, way: str
) -> None:
    store = make_store()
    client = TestApp(SessionMiddleware(assignment_app, store, secret_key=SECRET))

    answer = client.get(f"/?kind={kind}&way={way}").json

    raised = answer["raised"]
    assert raised is not None, "nothing was raised at the assignment"
    builtin = UNSTORABLE[kind][1].__name__
    assert {"UnstorableValue", "SessionError", builtin} <= set(raised["types"])
    assert raised["key"] == "k"
    assert "'k'" in raised["message"]
    # The session keeps what it held; the rest of the request's changes are saved.
    assert answer["holds"] == ["before"]
    assert stored(store) == [{"before": "kept"}]


def test_the_error_is_the_builtin_the_codec_found_and_says_what_to_do() -> None:
    from pgsession_wsgi import Session

    session = Session()
    with pytest.raises(UnstorableTypeError) as wrong_type:
        session["tags"] = {"a", "b"}
    assert isinstance(wrong_type.value, TypeError) and isinstance(wrong_type.value, SessionError)
    assert "'tags'" in str(wrong_type.value) and "register_type" in str(wrong_type.value)
    with pytest.raises(UnstorableValueError) as wrong_value:
        session["ratio"] = math.nan
    assert isinstance(wrong_value.value, ValueError) and isinstance(wrong_value.value, SessionError)
    assert "'ratio'" in str(wrong_value.value) and "None rather than NaN" in str(wrong_value.value)
    assert "ratio" not in session and "tags" not in session


# -- changed in place: found by the save ----------------------------------------------------


def nested_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """``/set`` stores ``a``; ``/nested`` changes ``a`` and puts a set into a stored list."""
    session = get_session(environ)
    if environ["PATH_INFO"] == "/set":
        session["a"] = 1
    else:
        session["a"] = 2
        session["l"] = [1]
        session["l"].append({1})  # storable when set; not any more
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def test_wsgi_a_value_changed_in_place_is_a_500_with_one_log_line_and_nothing_saved(
    make_store: Callable[..., PostgresStore], caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()
    client = TestApp(SessionMiddleware(nested_app, store, secret_key=SECRET))
    client.get("/set")
    with caplog.at_level(logging.INFO):
        response = client.get("/nested", status=500)
    [record] = error_records(caplog)
    assert record.name == "pgsession_wsgi"
    assert "'l'" in record.getMessage() and "changed in place" in record.getMessage()
    assert "Set-Cookie" not in response.headers
    assert stored(store) == [{"a": 1}]


# -- Flask ----------------------------------------------------------------------------------


@pytest.fixture
def make_flask(pg_dsn: str, schema: str) -> Iterator[Callable[..., Flask]]:
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = Flask(f"errors{len(made)}")
        app.test_client_class = ClosingClient
        app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
        app.config.update(config)
        PgSession(app)
        made.append(app)

        @app.get("/set")
        def set_a() -> str:
            flask_session["a"] = 1
            return "ok"

        @app.get("/assign")
        def assign() -> str:
            flask_session["a"] = 2
            flask_session["tags"] = {1}
            return "never"

        @app.get("/nested")
        def nested() -> str:
            flask_session["a"] = 2
            flask_session["l"] = [1]
            flask_session["l"].append({1})
            return "looks fine"

        @app.get("/caught")
        def caught() -> str:
            flask_session["a"] = 3
            try:
                flask_session["tags"] = {1}
            except UnstorableValue as exc:
                return f"refused {exc.key}"
            return "never"

        return app

    yield make
    close_extension_stores(made)


def flask_stored(app: Flask) -> list[Any]:
    from pgsession_wsgi.flask import EXTENSION_KEY

    return stored(app.extensions[EXTENSION_KEY].store)


@pytest.mark.parametrize("config", [{"TESTING": True}, {"DEBUG": True}, {"PROPAGATE_EXCEPTIONS": True}])
def test_flask_propagates_a_value_changed_in_place_where_it_propagates_exceptions(
    make_flask: Callable[..., Flask], config: dict[str, Any]
) -> None:
    app = make_flask(**config)
    client = app.test_client()
    client.get("/set")
    with pytest.raises(UnstorableTypeError, match="'l'"):
        client.get("/nested")
    assert flask_stored(app) == [{"a": 1}]


def test_flask_propagates_a_value_refused_at_its_assignment_with_testing(
    make_flask: Callable[..., Flask],
) -> None:
    app = make_flask(TESTING=True)
    client = app.test_client()
    with pytest.raises(UnstorableTypeError, match="'tags'") as raised:
        client.get("/assign")
    # The traceback goes through the view, at the assignment.
    [view] = [entry for entry in raised.traceback if entry.name == "assign"]
    assert "flask_session[\"tags\"] = {1}" in str(view.statement)


def test_flask_without_testing_a_value_changed_in_place_is_a_500_with_flasks_one_log_line(
    make_flask: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_flask()
    client = app.test_client()
    client.get("/set")
    with caplog.at_level(logging.INFO):
        response = client.get("/nested")
    assert response.status_code == 500
    assert set_cookie_headers(response) == []
    [record] = error_records(caplog)
    assert record.exc_info is not None and isinstance(record.exc_info[1], UnstorableValue)
    assert "'l'" in str(record.exc_info[1])
    assert flask_stored(app) == [{"a": 1}]


def test_flask_without_testing_a_refused_assignment_is_a_500_with_one_log_line(
    make_flask: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_flask()
    with caplog.at_level(logging.INFO):
        response = app.test_client().get("/assign")
    assert response.status_code == 500
    [record] = error_records(caplog)
    assert record.exc_info is not None and "'tags'" in str(record.exc_info[1])


def test_flask_a_view_that_catches_the_refusal_keeps_its_other_changes(
    make_flask: Callable[..., Flask],
) -> None:
    app = make_flask(TESTING=True)
    response = app.test_client().get("/caught")
    assert response.get_data(as_text=True) == "refused tags"
    assert flask_stored(app) == [{"a": 3}]


def test_flask_a_change_made_after_save_session_is_still_saved(make_flask: Callable[..., Flask]) -> None:
    """The check in save_session is reused by the save only if nothing used the session since."""
    app = make_flask(TESTING=True)

    def late(sender: Flask, response: Any, **extra: Any) -> None:
        flask_session["late"] = True

    request_finished.connect(late, app)
    app.test_client().get("/set")
    assert flask_stored(app) == [{"a": 1, "late": True}]


def set_cookie_headers(response: Any) -> list[str]:
    return response.headers.getlist("Set-Cookie")  # type: ignore[no-any-return]


# -- Quart ----------------------------------------------------------------------------------


@pytest.fixture
async def make_quart(pg_dsn: str, schema: str) -> Any:
    made: list[Quart] = []

    def make(**config: Any) -> Quart:
        app = Quart(f"errors{len(made)}")
        app.config.update(SECRET_KEY=SECRET, PGSESSION_DSN=pg_dsn, PGSESSION_SCHEMA=schema)
        app.config.update(config)
        QuartPgSession(app)
        made.append(app)

        @app.get("/set")
        async def set_a() -> str:
            quart_session["a"] = 1
            return "ok"

        @app.get("/assign")
        async def assign() -> str:
            quart_session["tags"] = {1}
            return "never"

        @app.get("/nested")
        async def nested() -> str:
            quart_session["a"] = 2
            quart_session["l"] = [1]
            quart_session["l"].append({1})
            return "looks fine"

        return app

    yield make
    from pgsession_wsgi.quart import EXTENSION_KEY

    for app in made:
        await app.extensions[EXTENSION_KEY].store.close()


def quart_stored(app: Quart) -> list[Any]:
    from pgsession_wsgi.quart import EXTENSION_KEY

    store = app.extensions[EXTENSION_KEY].store
    return [data for (data,) in sql(store, "SELECT data FROM {t} ORDER BY created_at")]


async def propagated(client: Any, path: str) -> str:
    """The error that left Quart's own error handling for ``path``, as the test client gets it.

    What Quart's ASGI layer does with it differs between releases: 0.20 raises it to the client
    with TESTING or DEBUG and answers with its traceback page with PROPAGATE_EXCEPTIONS alone;
    0.21 and later answer with the traceback page with TESTING or DEBUG and raise it otherwise
    (0.23 in an ExceptionGroup, from its task group). Either way it names the error; a request
    whose error Quart handled itself is a bare 500 that does not.
    """
    try:
        response = await client.get(path)
    except Exception as exc:
        error: BaseException = exc
        while len(getattr(error, "exceptions", ())) == 1:
            error = error.exceptions[0]  # type: ignore[attr-defined]
        assert isinstance(error, UnstorableTypeError), repr(exc)
        return str(error)
    assert response.status_code == 500
    page = html.unescape(await response.get_data(as_text=True))
    assert "UnstorableTypeError" in page
    return page


@pytest.mark.anyio
@pytest.mark.parametrize("config", [{"PROPAGATE_EXCEPTIONS": True}, {"TESTING": True}, {"DEBUG": True}])
@pytest.mark.parametrize("path, key", [("/nested", "l"), ("/assign", "tags")])
async def test_quart_propagates_the_error_with_propagate_exceptions_testing_or_debug(
    make_quart: Any, config: dict[str, Any], path: str, key: str
) -> None:
    app = make_quart(**config)
    client = app.test_client()
    await client.get("/set")
    assert f"under key '{key}'" in await propagated(client, path)
    assert quart_stored(app) == [{"a": 1}]


@pytest.mark.anyio
async def test_quart_without_testing_a_value_changed_in_place_is_a_500_with_quarts_one_log_line(
    make_quart: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_quart()
    client = app.test_client()
    await client.get("/set")
    with caplog.at_level(logging.INFO):
        response = await client.get("/nested")
    assert response.status_code == 500
    assert response.headers.getlist("Set-Cookie") == []
    [record] = error_records(caplog)
    assert record.exc_info is not None and isinstance(record.exc_info[1], UnstorableValue)
    assert "'l'" in str(record.exc_info[1])
    assert quart_stored(app) == [{"a": 1}]
