"""The websocket ``Origin`` check shared by the ASGI middleware, Quart and Litestar, without a
database: which pages may open a websocket that gets the session, and the warning line that is
the only trace of a refused handshake.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pgsession_wsgi import ConfigurationError
from pgsession_wsgi._adapters.websocket import WebsocketOrigins

OPTION = "websocket_origins"


def refusal(caplog: pytest.LogCaptureFixture) -> str:
    """The one warning line of a refused handshake."""
    lines = [r for r in caplog.records if r.name == "pgsession_wsgi"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.WARNING
    return lines[0].getMessage()


def allows(
    origin: str | list[str],
    scheme: str = "ws",
    host: str | None = "app.example",
    server: Any = None,
    listed: list[str] | None = None,
) -> bool:
    origins = [origin] if isinstance(origin, str) else origin
    return WebsocketOrigins(listed or [], OPTION).allows(origins, scheme, host, server)


# --- what counts as one origin ---------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        "https://app.example?",  # an empty query
        "https://app.example#",  # an empty fragment
        "https://app.example?q=1",
        "https://app.example#top",
        "https://user@app.example",
        "https://user:pw@app.example",
        "https://bad!host.example",
        "https://app.example/",
        "ftp://app.example",
        "null",
        "https://",
    ],
)
def test_an_entry_that_is_not_exactly_an_origin_is_a_configuration_error(entry: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        WebsocketOrigins([entry], OPTION)
    assert str(raised.value).startswith(f"{OPTION} {entry!r} is not an origin")


def test_a_refused_entry_says_how_to_write_one() -> None:
    with pytest.raises(ConfigurationError) as raised:
        WebsocketOrigins(["https://app.example.com/"], "PGSESSION_WEBSOCKET_ORIGINS")
    assert str(raised.value) == (
        "PGSESSION_WEBSOCKET_ORIGINS 'https://app.example.com/' is not an origin: write "
        "scheme://host[:port] with http or https and nothing after it (no path, no trailing "
        "slash), e.g. 'https://app.example.com'"
    )


@pytest.mark.parametrize("entry", [None, 443, b"https://app.example"])
def test_an_entry_that_is_not_a_string_is_a_configuration_error(entry: Any) -> None:
    with pytest.raises(ConfigurationError) as raised:
        WebsocketOrigins(["https://app.example", entry], OPTION)
    assert str(raised.value).startswith(f"{OPTION} {entry!r} is not an origin")


@pytest.mark.parametrize(
    "origin",
    [
        "http://app.example?",
        "http://app.example#",
        "http://app.example?q=1",
        "http://app.example#top",
        "http://user@app.example",
        "http://bad!host.example",
    ],
)
def test_an_origin_header_with_more_than_an_origin_is_refused(
    origin: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "pgsession_wsgi")
    # listed and own alike: "app.example" (and, for the bad host, that host too)
    listed = ["http://app.example", "http://user.example"]
    host = "bad!host.example" if "!" in origin else "app.example"
    assert not allows(origin, host=host, listed=listed)
    assert f"Origin {origin!r} " in refusal(caplog)


def test_an_origin_is_kept_in_one_spelling() -> None:
    origins = WebsocketOrigins(
        [
            "HTTPS://App.Example:443",
            "http://[::1]:8000",
            "http://[2001:DB8::1]",
            "http://127.0.0.1:80",
            "https://app.example:8443",
        ],
        OPTION,
    )
    assert origins.listed == {
        "https://app.example",
        "http://[::1]:8000",
        "http://[2001:db8::1]",
        "http://127.0.0.1",
        "https://app.example:8443",
    }


def test_one_string_is_one_origin() -> None:
    assert WebsocketOrigins("https://app.example", OPTION).listed == {"https://app.example"}


@pytest.mark.parametrize(
    "origin", ["https://app.example", "https://APP.example:443", "http://localhost:3000"]
)
def test_a_listed_origin_is_allowed_in_any_spelling(origin: str) -> None:
    listed = ["https://app.example", "http://localhost:3000"]
    assert allows(origin, host="elsewhere.example", listed=listed)


# --- the app's own origin ------------------------------------------------------------------


def test_no_origin_header_is_not_a_browser_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    assert WebsocketOrigins([], OPTION).allows([], "wss", None, None)
    assert not caplog.records


@pytest.mark.parametrize(
    ("scheme", "origin", "other"),
    [
        ("ws", "http://app.example", "https://app.example"),
        ("wss", "https://app.example", "http://app.example"),
        ("http", "http://app.example", "https://app.example"),
        ("https", "https://app.example", "http://app.example"),
    ],
)
def test_the_own_origin_is_the_requests_scheme_and_host(
    scheme: str, origin: str, other: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "pgsession_wsgi")
    assert allows(origin, scheme=scheme)
    assert not allows(other, scheme=scheme)
    assert f"this app's own origin ({origin})" in refusal(caplog)


def test_the_host_header_wins_over_the_servers_address(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pgsession_wsgi")
    server = ("10.0.0.1", 8000)
    assert allows("http://app.example:8080", host="app.example:8080", server=server)
    assert not allows("http://10.0.0.1:8000", host="app.example:8080", server=server)
    assert "own origin (http://app.example:8080)" in refusal(caplog)


@pytest.mark.parametrize(
    ("scheme", "server", "own"),
    [
        ("ws", ("10.0.0.1", 8000), "http://10.0.0.1:8000"),
        ("wss", ["10.0.0.1", 8443], "https://10.0.0.1:8443"),
        ("ws", ("10.0.0.1", 80), "http://10.0.0.1"),
        ("ws", ("10.0.0.1", None), "http://10.0.0.1"),
        ("ws", ("::1", 8000), "http://[::1]:8000"),
        ("wss", ("2001:db8::1", 443), "https://[2001:db8::1]"),
    ],
)
def test_without_a_host_header_the_own_origin_is_the_servers_address(
    scheme: str, server: Any, own: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "pgsession_wsgi")
    assert allows(own, scheme=scheme, host=None, server=server)
    assert not allows("http://evil.example", scheme=scheme, host=None, server=server)
    assert f"own origin ({own})" in refusal(caplog)


@pytest.mark.parametrize(
    "server",
    [None, ("", 8000), (None, 8000), ("/tmp/app.sock", None), ("10.0.0.1",), ("10.0.0.1", 80, 1)],
)
def test_without_a_host_header_or_a_usable_server_address_only_listed_origins_may(
    server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "pgsession_wsgi")
    assert allows("https://app.example", host=None, server=server, listed=["https://app.example"])
    # "none" is what a missing address would read as
    assert not allows("http://none:8000", host=None, server=server)
    assert "own origin (unknown: no usable Host header)" in refusal(caplog)


def test_an_empty_host_header_is_no_own_origin(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pgsession_wsgi")
    assert not allows("http://none", host="", server=("10.0.0.1", 8000))
    assert "own origin (unknown: no usable Host header)" in refusal(caplog)


# --- the refusal's warning line ------------------------------------------------------------


def test_a_refusal_is_one_warning_naming_the_origin_the_own_origin_and_the_option(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "pgsession_wsgi")
    origins = WebsocketOrigins(["https://app.example"], "PGSESSION_WEBSOCKET_ORIGINS")
    assert not origins.allows(["https://evil.example"], "wss", "api.example", None)
    message = refusal(caplog)
    assert message.startswith("websocket handshake refused (403): ")
    assert "Origin 'https://evil.example' is not this app's own origin (https://api.example)" in message
    assert "nor in PGSESSION_WEBSOCKET_ORIGINS; list it there" in message


def test_several_origin_headers_are_refused_and_all_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pgsession_wsgi")
    assert not allows(["http://app.example", "http://app.example"])
    assert "Origin 'http://app.example, http://app.example' " in refusal(caplog)


@pytest.mark.parametrize("length", [199, 200])
def test_an_origin_of_up_to_200_characters_is_shown_whole(
    length: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "pgsession_wsgi")
    origin = "https://" + "a" * (length - len("https://.example")) + ".example"
    assert len(origin) == length
    assert not allows(origin)
    assert f"Origin {origin!r} is not" in refusal(caplog)


def test_a_longer_origin_is_cut_at_200_characters(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pgsession_wsgi")
    origin = "https://" + "a" * 300 + ".example"
    assert not allows(origin)
    assert f"Origin {origin[:200] + '...'!r} is not" in refusal(caplog)
