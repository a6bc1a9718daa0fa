"""The codec's registry through a real session: an app's own types are stored and read back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from apps.support import wsgi_call
from codec_types import STOP, LazyText, Point, with_app_types
from db import sql

from pgsession_wsgi import PostgresStore, SessionMiddleware, get_session
from pgsession_wsgi import codec as codec_module
from pgsession_wsgi.codec import Codec

TABLE = "codec_sessions"
VALUES: dict[str, Any] = {
    "point": Point(1, 2),
    "stops": [STOP, {"next": Point(3, 4)}],
    "pair": (Point(5, 6), [STOP]),
    "by_name": {"home": Point(0, 0), "trip": (STOP,)},
    "title": LazyText(lambda: "Reise"),
}
LOADED: dict[str, Any] = {}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """/put stores VALUES in the session; /read copies the session into LOADED."""
    session = get_session(environ)
    if environ["PATH_INFO"] == "/put":
        for key, value in VALUES.items():
            session[key] = value
    else:
        LOADED.clear()
        LOADED.update(session)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b""]


@pytest.fixture
def app_codec(monkeypatch: pytest.MonkeyPatch) -> Iterator[Codec]:
    """The default codec, with the app's types, for this test only."""
    codec = with_app_types(Codec())
    monkeypatch.setattr(codec_module, "default_codec", codec)
    yield codec


def test_app_types_survive_a_session_save_and_load(
    app_codec: Codec, make_store: Callable[..., PostgresStore], pg_dsn: str, schema: str
) -> None:
    store = make_store(table=TABLE)
    store.create_table()
    middleware = SessionMiddleware(app, store, secret_key="codec-secret")
    cookie = wsgi_call(middleware, "/put").cookie()
    assert cookie
    ((stored,),) = sql(pg_dsn, f'SELECT data FROM "{schema}".{TABLE}')
    assert stored["point"] == {" pt": [1, 2]} and stored["title"] == "Reise"
    assert stored["pair"][" t"][0] == {" pt": [5, 6]}
    assert wsgi_call(middleware, "/read", cookie).status == 200
    assert LOADED == {**VALUES, "title": "Reise"}
    assert type(LOADED["pair"]) is tuple and type(LOADED["stops"][0].at) is datetime
    assert type(LOADED["by_name"]["trip"][0].where) is Point
