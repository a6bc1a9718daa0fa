"""Concurrent requests of one session merge per key; late saves never resurrect a session."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from typing import Any, Callable
from urllib.parse import parse_qs

import pytest
from apps.support import Response, http_get, wsgi_call
from db import sql
from werkzeug.serving import WSGIRequestHandler, make_server

from pgsession_wsgi import PostgresStore, SessionMiddleware, get_session

SECRET = "concurrency-secret"
THREADS = 50
REQUESTS = 20


def stored(store: PostgresStore, cookie: str | None) -> dict[str, Any] | None:
    """The data stored for the session id in ``cookie`` (None: no row)."""
    if not cookie:
        return None
    id_hash = hashlib.sha256(cookie.rsplit(".", 1)[0].encode()).digest()
    rows = sql(store, "SELECT data FROM {t} WHERE id = %s", (id_hash,))
    return rows[0][0] if rows else None


def row_count(store: PostgresStore) -> int:
    return int(sql(store, "SELECT count(*) FROM {t}")[0][0])


# -- many threads, one session, a real threaded WSGI server ----------------------------------


def per_key_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """/put?key=k&value=v: read the session (as most apps do), then write one key."""
    session = get_session(environ)
    params = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    seen = len(session)  # loads the whole session first
    if "key" in params:
        session[params["key"]] = int(params["value"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(seen).encode()]


def whole_session_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The same writes saved the naive way: the whole session as loaded, plus one key."""
    session = get_session(environ)
    params = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    snapshot = dict(session)
    session.clear()  # clear() makes the save replace the stored value as a whole
    session.update(snapshot)
    session[params["key"]] = int(params["value"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[Any], int]]:
    """``serve(app)``: run ``app`` on werkzeug's threaded server; returns its port."""
    servers: list[Any] = []
    threads: list[threading.Thread] = []

    def start(app: Any) -> int:
        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append(server)
        threads.append(thread)
        return int(server.server_port)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
    for thread in threads:
        thread.join(5)


def get(port: int, path: str, cookie: str | None) -> Response:
    return http_get(port, path, cookie, timeout=30)


def hammer(port: int, cookie: str) -> list[str]:
    """THREADS threads each send REQUESTS writes of their own key; returns any failures."""
    failures: list[str] = []
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        start.wait()
        for value in range(REQUESTS):
            try:
                answer = get(port, f"/put?key=k{n}&value={value}", cookie)
            except OSError as exc:
                failures.append(f"k{n}: {exc!r}")
                continue
            if answer.status != 200 or answer.cookie() not in (None, cookie):
                failures.append(f"k{n}={value}: {answer.status} cookie={answer.cookie()!r}")

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(120)
    assert not any(thread.is_alive() for thread in workers), "a client thread hung"
    return failures


@pytest.mark.slow
def test_fifty_threads_writing_their_own_key_all_keep_their_last_value(
    make_store: Callable[..., PostgresStore], serve: Callable[[Any], int]
) -> None:
    """50 threads x 20 requests on one session, each writing its own key: nothing is lost."""
    store = make_store(max_connections=10, pool_timeout=30)
    port = serve(SessionMiddleware(per_key_app, store, secret_key=SECRET))
    cookie = get(port, "/put?key=start&value=1", None).cookie()
    assert cookie

    failures = hammer(port, cookie)

    assert failures == []
    expected = {"start": 1, **{f"k{n}": REQUESTS - 1 for n in range(THREADS)}}
    # A naive whole-session save fails this: the control test below runs the same load with
    # whole-session saves; on this 2-core machine it left 41-43 of the 50 keys stale or missing
    # (4-8 missing outright) in three runs.
    assert stored(store, cookie) == expected
    assert row_count(store) == 1


@pytest.mark.slow
def test_the_same_load_with_whole_session_saves_loses_writes(
    make_store: Callable[..., PostgresStore], serve: Callable[[Any], int]
) -> None:
    """Control: the load above does catch lost updates (here made by whole-session saves)."""
    store = make_store(max_connections=10, pool_timeout=30)
    port = serve(SessionMiddleware(whole_session_app, store, secret_key=SECRET))
    cookie = get(port, "/put?key=start&value=1", None).cookie()
    assert cookie

    assert hammer(port, cookie) == []

    data = stored(store, cookie) or {}
    lost = [f"k{n}" for n in range(THREADS) if data.get(f"k{n}") != REQUESTS - 1]
    assert lost, "whole-session saves lost nothing: the load is too light to show lost updates"


# -- two overlapping requests, ordered step by step ------------------------------------------


class Gate:
    """Lets a test hold one request at a point inside the app while another one runs."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def pause(self) -> None:
        self.reached.set()
        assert self.release.wait(10), "the test never released the paused request"


def scripted_app(gate: Gate) -> Callable[..., list[bytes]]:
    """?ops=read,pause,set:k=v,del:k,clear,regen,logout runs those steps in order."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        session = get_session(environ)
        ops = parse_qs(environ["QUERY_STRING"]).get("ops", [""])[0]
        for op in filter(None, ops.split(",")):
            name, _, arg = op.partition(":")
            if name == "read":
                dict(session)
            elif name == "pause":
                gate.pause()
            elif name == "set":
                key, value = arg.split("=")
                session[key] = value
            elif name == "del":
                del session[arg]
            elif name == "clear":
                session.clear()
            elif name == "regen":
                session.regenerate()
            elif name == "logout":
                session.invalidate()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return app


class Overlap:
    """Run request ``late`` until it pauses, all of ``early`` meanwhile, then finish ``late``."""

    def __init__(self, store: PostgresStore) -> None:
        self.gate = Gate()
        self.app = SessionMiddleware(scripted_app(self.gate), store, secret_key=SECRET)

    def call(self, ops: str, cookie: str | None) -> Response:
        return wsgi_call(self.app, f"/?ops={ops}", cookie)

    def run(self, cookie: str, late: str, *early: str) -> tuple[Response, list[Response]]:
        result: list[Response] = []
        thread = threading.Thread(target=lambda: result.append(self.call(late, cookie)))
        thread.start()
        assert self.gate.reached.wait(10)
        answers = [self.call(ops, cookie) for ops in early]
        self.gate.release.set()
        thread.join(10)
        assert result, "the paused request did not finish"
        return result[0], answers


@pytest.fixture
def overlap(make_store: Callable[..., PostgresStore]) -> Overlap:
    return Overlap(make_store())


def test_overlapping_requests_changing_different_keys_both_keep_their_change(
    overlap: Overlap,
) -> None:
    cookie = overlap.call("set:a=0,set:b=0", None).cookie()
    late, _ = overlap.run(cookie, "read,pause,set:a=late", "read,set:b=early")
    assert late.status == 200
    assert stored(overlap.app.store, cookie) == {"a": "late", "b": "early"}


def test_overlapping_requests_changing_the_same_key_the_later_save_wins(
    overlap: Overlap,
) -> None:
    cookie = overlap.call("set:a=0", None).cookie()
    overlap.run(cookie, "read,pause,set:a=late", "read,set:a=early")
    assert stored(overlap.app.store, cookie) == {"a": "late"}


def test_a_deleted_key_stays_deleted_while_another_request_adds_one(overlap: Overlap) -> None:
    cookie = overlap.call("set:a=0,set:b=0", None).cookie()
    overlap.run(cookie, "read,pause,del:a", "read,set:c=early")
    assert stored(overlap.app.store, cookie) == {"b": "0", "c": "early"}


def test_clear_replaces_the_whole_value_even_keys_added_meanwhile(overlap: Overlap) -> None:
    cookie = overlap.call("set:a=0,set:b=0", None).cookie()
    overlap.run(cookie, "read,pause,clear,set:d=late", "read,set:c=early")
    assert stored(overlap.app.store, cookie) == {"d": "late"}


def test_a_late_save_does_not_resurrect_a_session_invalidated_meanwhile(
    overlap: Overlap, caplog: pytest.LogCaptureFixture
) -> None:
    """Logout wins: the late save is dropped with a warning and sets no cookie."""
    cookie = overlap.call("set:user=alice", None).cookie()
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        late, (logout,) = overlap.run(cookie, "read,pause,set:a=late", "logout")
    assert logout.cookie() == ""
    assert late.status == 200
    assert late.cookie() is None, "the late request handed the browser a session again"
    assert row_count(overlap.app.store) == 0
    assert any("dropped" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_a_late_save_does_not_resurrect_a_session_regenerated_meanwhile(
    overlap: Overlap, caplog: pytest.LogCaptureFixture
) -> None:
    """The regenerated session stays the browser's session; the old id stays dead."""
    cookie = overlap.call("set:user=alice", None).cookie()
    with caplog.at_level(logging.WARNING, logger="pgsession_wsgi"):
        late, (regen,) = overlap.run(cookie, "read,pause,set:a=late", "regen,set:user=bob")
    new_cookie = regen.cookie()
    assert new_cookie and new_cookie != cookie
    assert late.status == 200
    # The browser keeps the last Set-Cookie it gets: a late one would log the user out.
    assert late.cookie() is None, "the late request replaced the regenerated session's cookie"
    assert stored(overlap.app.store, cookie) is None
    assert stored(overlap.app.store, new_cookie) == {"user": "bob"}
    assert row_count(overlap.app.store) == 1
    assert any("dropped" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


@pytest.mark.parametrize("other_ops", ["logout", "regen,set:user=bob"], ids=["logout", "regenerate"])
def test_a_late_blind_write_never_revives_the_old_session(overlap: Overlap, other_ops: str) -> None:
    """A write that never read its session and finds the row gone starts a new session.

    That is the rule for writes without a read (issue 6: one statement when the row is there,
    a fresh id when it is not): only the keys it wrote go into the new session; the old id and
    the old data stay dead, and a regenerated session is left intact.
    """
    cookie = overlap.call("set:user=alice", None).cookie()
    late, (other,) = overlap.run(cookie, "pause,set:a=late", other_ops)
    assert late.status == 200
    fresh = late.cookie()
    assert fresh and fresh != cookie
    assert stored(overlap.app.store, cookie) is None
    assert stored(overlap.app.store, fresh) == {"a": "late"}
    if other_ops.startswith("regen"):
        assert stored(overlap.app.store, other.cookie()) == {"user": "bob"}
        assert row_count(overlap.app.store) == 2
    else:
        assert row_count(overlap.app.store) == 1
