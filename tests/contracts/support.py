"""What the contract tests share: the ``Set-Cookie`` headers of a response, read as a browser
reads them (attribute names in any case, flags without a value), and the ours-only mark."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest


@dataclass
class SetCookie:
    """One ``Set-Cookie`` header: the cookie and its attributes, names in lower case."""

    name: str
    value: str
    attributes: dict[str, str]

    def has(self, attribute: str) -> bool:
        return attribute.lower() in self.attributes

    def get(self, attribute: str) -> str | None:
        return self.attributes.get(attribute.lower())

    @property
    def expired(self) -> bool:
        """The browser drops the cookie at once: ``Max-Age`` of 0 or less, or ``Expires`` past."""
        max_age = self.get("max-age")
        if max_age is not None:
            return int(max_age) <= 0
        expires = self.get("expires")
        return expires is not None and parsedate_to_datetime(expires) <= datetime.now(timezone.utc)

    @property
    def ends_with_the_browser(self) -> bool:
        """A browser-session cookie: neither ``Max-Age`` nor ``Expires``."""
        return not self.has("max-age") and not self.has("expires")


def set_cookies(response: httpx.Response) -> list[SetCookie]:
    found = []
    for header in response.headers.get_list("set-cookie"):
        first, *rest = header.split(";")
        name, _, value = first.strip().partition("=")
        attributes = {}
        for part in rest:
            key, _, attribute_value = part.strip().partition("=")
            if key:
                attributes[key.strip().lower()] = attribute_value.strip()
        found.append(SetCookie(name, value, attributes))
    return found


def the_cookie(response: httpx.Response, name: str = "session") -> SetCookie:
    """The one ``Set-Cookie`` of ``name`` the response sends (fails if none or several)."""
    cookies = [cookie for cookie in set_cookies(response) if cookie.name == name]
    assert len(cookies) == 1, response.headers.get_list("set-cookie")
    return cookies[0]


def theirs_since(condition: bool, reason: str) -> Any:
    """Run a test against both, but skip the other library's run where its installed release
    lacks the feature (Python 3.9 gets Starlette 0.49, without ``partitioned``, for one)."""
    other = pytest.param("theirs", marks=pytest.mark.skipif(not condition, reason=reason))
    return pytest.mark.parametrize("flavour", [other, "ours"])


def ours_only(reason: str) -> Any:
    """Run a test against pgsession-wsgi alone: the other library differs on purpose, as
    docs/asgi.md says (``reason``); its run is skipped with that reason."""
    other = pytest.param("theirs", marks=pytest.mark.skip(reason=f"differs on purpose: {reason}"))
    return pytest.mark.parametrize("flavour", [other, "ours"])


def use_as_a_dictionary(session: Any) -> dict[str, Any]:
    """Every dictionary method an app uses, on ``session``; the answer is what each returned
    (the same for every framework's session, its own and ours)."""
    session.update({"a": 1, "b": 2})
    session.setdefault("c", 3)
    answers = {
        "get": session.get("a"),
        "get_missing": session.get("zz", "default"),
        "in": "b" in session,
        "pop": session.pop("b"),
        "pop_missing": session.pop("zz", None),
        "len": len(session),
        "keys": sorted(session.keys()),
        "items": sorted(session.items()),
    }
    del session["c"]
    answers["after_del"] = dict(session)
    return answers
