"""The session's options are defined once (``SessionOptions``): every front end takes them with the
same defaults and meanings, under its own names where its framework has some."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import timedelta
from typing import Any

import pytest

from pgsession_wsgi import ConfigurationError, SessionMiddleware, SessionOptions
from pgsession_wsgi.core import SessionCore

FIELDS = {option.name: option.default for option in dataclasses.fields(SessionOptions)}


def _defaults(callable_: Any) -> dict[str, Any]:
    parameters = inspect.signature(callable_).parameters.values()
    return {p.name: getattr(p.default, "value", p.default) for p in parameters if p.default is not p.empty}


def test_the_wsgi_middleware_takes_every_option_with_its_default() -> None:
    defaults = _defaults(SessionMiddleware)
    assert {name: defaults.get(name, "missing") for name in FIELDS} == FIELDS


def test_the_asgi_middleware_takes_every_option_but_key_prefix_with_its_default() -> None:
    asgi = pytest.importorskip("pgsession_wsgi.asgi")
    defaults = _defaults(asgi.SessionMiddleware)
    expected = {name: default for name, default in FIELDS.items() if name != "key_prefix"}
    assert {name: defaults.get(name, "missing") for name in expected} == expected


def test_litestars_config_takes_every_option_with_its_default_under_litestars_names() -> None:
    litestar = pytest.importorskip("pgsession_wsgi.litestar")
    ours = {
        litestar.OPTION_NAMES.get(f.name, f.name): f.default
        for f in dataclasses.fields(litestar.PgSessionConfig)
    }
    ours["idle_timeout"] = timedelta(seconds=ours["idle_timeout"])
    ours["cookie_samesite"] = ours["cookie_samesite"].title()
    # Litestar's session config has neither a key prefix nor a Partitioned cookie.
    expected = {
        name: default for name, default in FIELDS.items() if name not in ("key_prefix", "cookie_partitioned")
    }
    assert {name: ours.get(name, "missing") for name in expected} == expected


def test_among_takes_the_options_and_leaves_the_rest() -> None:
    options = SessionOptions.among({"app": object(), "cookie_name": "sid", "max_size": 10, "autoload": False})
    assert (options.cookie_name, options.max_size, options.idle_timeout) == ("sid", 10, timedelta(days=31))


def test_a_core_from_options_checks_them() -> None:
    with pytest.raises(ConfigurationError, match="idle_timeout must be positive, not 0"):
        SessionCore.from_options(SessionOptions("k" * 32, idle_timeout=0))
    core = SessionCore.from_options(
        SessionOptions("k" * 32, cookie_name="sid", touch_interval=timedelta(days=30))
    )
    assert core.cookie.name == "sid"
    assert core.policy.touch_interval == timedelta(days=31) / 10  # capped at a tenth of idle_timeout


def test_the_secret_and_signer_stay_out_of_the_options_repr() -> None:
    assert "hunter2" not in repr(SessionOptions("hunter2-" * 5, fallback_secret_keys=["old-hunter2"]))
