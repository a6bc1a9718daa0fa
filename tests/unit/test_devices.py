"""``describe_user_agent``: the few words a "your devices" page shows for a login's browser."""

from __future__ import annotations

import pytest

from pgsession_wsgi.devices import UNKNOWN_BROWSER, describe_user_agent

# User-Agent headers as the browsers send them (current versions, and a few older shapes).
AGENTS = [
    ("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", "Firefox on Linux"),
    ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
     "Firefox on Linux"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0",
     "Firefox on Windows"),
    ("Mozilla/5.0 (Android 14; Mobile; rv:128.0) Gecko/128.0 Firefox/128.0", "Firefox on Android"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "FxiOS/128.0 Mobile/15E148 Safari/605.1.15", "Firefox on iOS"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Safari/537.36", "Chrome on Windows"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Safari/537.36", "Chrome on macOS"),
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Mobile Safari/537.36", "Chrome on Android"),
    ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Safari/537.36", "Chrome on ChromeOS"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1", "Chrome on iOS"),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "HeadlessChrome/126.0.0.0 Safari/537.36", "Chrome on Linux"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.68", "Edge on Windows"),
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Mobile Safari/537.36 EdgA/126.0.2592.80", "Edge on Android"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Safari/537.36 OPR/111.0.0.0", "Opera on Windows"),
    ("Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36", "Samsung Internet on Android"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.5 Safari/605.1.15", "Safari on macOS"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.5 Mobile/15E148 Safari/604.1", "Safari on iOS"),
    ("Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.5 Mobile/15E148 Safari/604.1", "Safari on iPadOS"),
]


@pytest.mark.parametrize("agent, expected", AGENTS, ids=[expected for _, expected in AGENTS])
def test_a_browser_and_its_system(agent: str, expected: str) -> None:
    assert describe_user_agent(agent) == expected


@pytest.mark.parametrize("agent, expected", [
    # A system it knows, with a browser it does not: the system is still worth saying.
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) SomeNewBrowser/1.0",
     "Unknown browser on Linux"),
    # A browser without a system it knows.
    ("Mozilla/5.0 (X11; NetBSD amd64; rv:128.0) Gecko/20100101 Firefox/128.0", "Firefox"),
])
def test_half_known(agent: str, expected: str) -> None:
    assert describe_user_agent(agent) == expected


@pytest.mark.parametrize("agent", [
    None, "", "   ", "curl/8.5.0", "python-requests/2.32.3", "Wget/1.21.4", "Mozilla/5.0",
    "Firefox", "firefox/128.0",  # a name alone, or not as a browser writes it
    "NotFirefox/1.0", "<b>Chrome/1</b>",  # a product token that merely contains one
    "<script>alert(1)</script>", "x" * 100_000,
])
def test_anything_else_is_an_unknown_browser(agent: str | None) -> None:
    assert describe_user_agent(agent) == UNKNOWN_BROWSER == "Unknown browser"


def test_the_words_come_from_a_fixed_list() -> None:
    """Whatever the header says, the description is one of our own phrases (safe to show)."""
    seen = {describe_user_agent(agent) for agent, _ in AGENTS}
    seen |= {describe_user_agent(agent) for agent in (
        '"><img src=x onerror=alert(1)> Firefox/1 (Windows', "<b>Chrome/1</b> (Linux; <i>)",
        "Mozilla/5.0 (Windows NT 10.0) \x00\udcff Firefox/1.0", "Edg/ OPR/ (Windows; iPhone)",
    )}
    assert "Firefox on Windows" in seen and "Unknown browser on Linux" in seen
    for described in seen:
        assert all(word.isalnum() for word in described.split()), described
