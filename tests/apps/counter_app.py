"""A session counter for the gunicorn tests; configured from the environment.

PGSESSION_APP_DSN, PGSESSION_APP_SCHEMA: where the sessions live.
PGSESSION_APP_PURGE_INTERVAL: seconds between purges (default: no purge thread).
PGSESSION_APP_PROBE_AT_IMPORT=1: borrow a pooled connection while importing (in the gunicorn
    master under --preload), so a fork that leaked it into the workers would show.
PGSESSION_APP_BARRIER_DIR, PGSESSION_APP_BARRIER_COUNT: while importing (in each worker without
    --preload), wait until that many processes arrived, then create the table together.

Routes: /ping (no session), /inc (count in the session), /backend (which server backend serves
this worker's pooled connection).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from pgsession_wsgi import PostgresStore, SessionMiddleware, get_session

_purge = os.environ.get("PGSESSION_APP_PURGE_INTERVAL")
store = PostgresStore(
    os.environ["PGSESSION_APP_DSN"],
    schema=os.environ.get("PGSESSION_APP_SCHEMA", "public"),
    purge_interval=float(_purge) if _purge else None,
    max_connections=4,
)


def _backend_pid() -> int:
    with store._pool.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


def _create_together(folder: Path, count: int) -> None:
    """Arrive, wait for the others, then all create the table at the same moment."""
    pid = os.getpid()
    (folder / f"arrived-{pid}").touch()
    deadline = time.monotonic() + 20
    while len(list(folder.glob("arrived-*"))) < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the other workers never arrived at the barrier")
        time.sleep(0.002)
    try:
        store.create_table()
    except BaseException:
        (folder / f"failed-{pid}").write_text(traceback.format_exc())
        raise
    (folder / f"created-{pid}").touch()


IMPORT_BACKEND: int | None = None
if os.environ.get("PGSESSION_APP_PROBE_AT_IMPORT"):
    store.create_table()
    IMPORT_BACKEND = _backend_pid()
if os.environ.get("PGSESSION_APP_BARRIER_DIR"):
    _create_together(Path(os.environ["PGSESSION_APP_BARRIER_DIR"]),
                     int(os.environ["PGSESSION_APP_BARRIER_COUNT"]))


def counter(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    path = environ["PATH_INFO"]
    body: dict[str, Any] = {"pid": os.getpid()}
    if path == "/inc":
        session = get_session(environ)
        session["n"] = session.get("n", 0) + 1
        body["n"] = session["n"]
    elif path == "/backend":
        body.update(backend=_backend_pid(), import_backend=IMPORT_BACKEND)
    elif path != "/ping":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


app = SessionMiddleware(counter, store, secret_key="gunicorn-test-secret")
