"""Internal: the ASGI ``SessionMiddleware``'s arguments, checked and resolved at construction."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, cast

from ..errors import ConfigurationError

STARLETTE_OPTIONS: Mapping[str, str] = {
    "session_cookie": "cookie_name",
    "max_age": "idle_timeout",
    "path": "cookie_path",
    "same_site": "cookie_samesite",
    "https_only": "cookie_secure",
    "domain": "cookie_domain",
    "partitioned": "cookie_partitioned",
}

_T = TypeVar("_T")


class _Default:
    """An option's default, told apart from the same value passed, so that a Starlette name and
    the option of ours it sets are refused together even when ours is given its default value."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def _default(value: _T) -> _T:
    """``value`` as a :class:`_Default`, typed as the value itself so signatures keep their types."""
    return cast(_T, _Default(value))


#: A Starlette name not passed.
_UNSET: Any = _Default(None)


def _from_starlette(name: str, value: Any) -> dict[str, Any]:
    """Starlette's ``name=value`` as options of ours (see :data:`STARLETTE_OPTIONS`)."""
    if name == "max_age":
        return {"permanent": False} if value is None else {"idle_timeout": value, "permanent": True}
    if name == "same_site" and isinstance(value, str) and value.lower() in ("lax", "strict", "none"):
        value = value.capitalize()
    return {STARLETTE_OPTIONS[name]: value}


def _resolve_options(arguments: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Starlette's names applied to the middleware's ``arguments``: the options, which name set which."""
    ours = {name: arguments[name] for name in (*STARLETTE_OPTIONS.values(), "permanent")}
    given = {name for name, value in ours.items() if not isinstance(value, _Default)}
    options = {name: value.value if isinstance(value, _Default) else value for name, value in ours.items()}
    renamed: dict[str, str] = {}
    for name in STARLETTE_OPTIONS:
        value = arguments[name]
        if isinstance(value, _Default):
            continue
        for option, converted in _from_starlette(name, value).items():
            if option in given:
                raise ConfigurationError(
                    f"both {name} (Starlette's name) and {option} were passed, and {name} sets "
                    f"{option}: pass only one of them"
                )
            options[option] = converted
        renamed[STARLETTE_OPTIONS[name]] = name
    return options, renamed


def _in_names_given(message: str, renamed: Mapping[str, str]) -> str:
    """A message about our options, naming those passed by Starlette's names as passed."""
    for option, name in renamed.items():
        message = re.sub(rf"\b{option}\b", name, message)
    return message


def _path_prefixes(paths: str | Iterable[str]) -> tuple[str, ...]:
    """``exclude_paths`` checked: one prefix or several, each kept without a trailing slash."""
    prefixes = []
    for path in [paths] if isinstance(paths, str) else paths:
        if not isinstance(path, str):
            raise ConfigurationError(
                f"exclude_paths holds {path!r}: each entry is a path prefix, a str such as '/static' "
                "(which leaves out /static and everything under it)"
            )
        if not path.startswith("/"):
            raise ConfigurationError(
                f"exclude_paths entry {path!r} must start with '/': e.g. '/static', which leaves out "
                "/static and everything under it"
            )
        prefix = path.rstrip("/")
        if not prefix:
            raise ConfigurationError(
                "exclude_paths entry '/' would leave every route without a session: list the ones "
                "that use none ('/static', '/health'), or leave the middleware out"
            )
        prefixes.append(prefix)
    return tuple(prefixes)


def _is_starlette_secret(value: Any) -> bool:
    """Whether ``value`` is Starlette's ``Secret``."""
    datastructures = sys.modules.get("starlette.datastructures")  # never imports Starlette
    return datastructures is not None and isinstance(value, getattr(datastructures, "Secret", ()))
