"""A module whose optional extra is not installed says which ``pip install`` adds it (issue 21, 4a).

Each case imports one of our modules in a fresh interpreter where a third-party package is
blocked (``sys.modules[name] = None``, which makes its import fail as a missing package does),
and reads what the import raised.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import json, sys
    for name in sys.argv[2].split(","):
        sys.modules[name] = None
    try:
        exec(sys.argv[1])
    except BaseException as exc:
        types = [c.__name__ for c in type(exc).__mro__]
        print(json.dumps({"types": types, "name": getattr(exc, "name", None), "message": str(exc)}))
    else:
        print(json.dumps(None))
    """
)


def import_without(statement: str, blocked: str) -> dict[str, object] | None:
    """What ``statement`` raised in a fresh interpreter without the (comma-separated) packages."""
    command = [sys.executable, "-c", PROBE, statement, blocked]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, object] | None = json.loads(done.stdout.strip().splitlines()[-1])
    return result


CASES = [
    ("from pgsession_wsgi.asgi import AsyncPostgresStore, SessionMiddleware", "psycopg", "asgi"),
    ("from pgsession_wsgi.asgi import AsyncPostgresStore", "psycopg_pool", "asgi"),
    ("import pgsession_wsgi.async_store", "psycopg", "asgi"),
    ("import pgsession_wsgi.quart", "psycopg", "asgi"),
    ("import pgsession_wsgi.flask", "flask", "flask"),
    ("import pgsession_wsgi.sqlalchemy", "sqlalchemy", "sqlalchemy"),
    ("import pgsession_wsgi.litestar", "litestar", "litestar"),
    ("import pgsession_wsgi.django", "django", "django"),
    ("from pgsession_wsgi.django import SessionMiddleware, SessionStore", "django", "django"),
]


@pytest.mark.parametrize("statement, blocked, extra", CASES, ids=[case[0] for case in CASES])
def test_a_missing_extra_names_the_pip_install_that_adds_it(statement: str, blocked: str, extra: str) -> None:
    raised = import_without(statement, blocked)
    assert raised is not None
    assert "ModuleNotFoundError" in raised["types"] and "SessionError" in raised["types"]  # type: ignore[operator]
    assert raised["name"] == blocked
    assert f"pip install 'pgsession-wsgi[{extra}]'" in str(raised["message"])
    assert f"No module named '{blocked}'" in str(raised["message"])


def test_quart_itself_missing_names_quart_and_the_asgi_extra() -> None:
    raised = import_without("import pgsession_wsgi.quart", "quart")
    assert raised is not None and raised["name"] == "quart"
    assert "pip install quart 'pgsession-wsgi[asgi]'" in str(raised["message"])


def test_the_asgi_middleware_alone_needs_no_extra() -> None:
    """Only the store needs psycopg 3: the middleware imports (and runs on another async store) without it."""
    assert import_without("from pgsession_wsgi.asgi import SessionMiddleware", "psycopg,psycopg_pool") is None


def test_a_missing_package_that_is_no_extra_of_ours_is_left_as_it_was() -> None:
    """A module an extra's package needs in turn is not ours to explain: the plain error stays."""
    raised = import_without("import pgsession_wsgi.flask", "jinja2")
    assert raised is not None
    assert raised["types"][0] == "ModuleNotFoundError" and raised["name"] == "jinja2"  # type: ignore[index]
