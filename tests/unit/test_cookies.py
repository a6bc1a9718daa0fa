"""Ids, signatures and cookie attributes, without a database.

The headers are checked whole: a browser only replaces or drops a cookie whose name, path and
domain match, and each refused setting says which option to change.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from typing import Any

import pytest
from itsdangerous import Signer

from pgsession_wsgi import ConfigurationError
from pgsession_wsgi.cookies import (
    CookieSettings,
    HmacIdSigner,
    check_prefix,
    hash_session_id,
    new_session_id,
)


def test_ids_are_256_bit_and_unique() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 43 for i in ids)  # 32 bytes in url-safe base64


def test_ids_come_from_the_secrets_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids are drawn from the OS CSPRNG through ``secrets``: replacing it changes the ids."""
    asked: list[int] = []

    def fake_token_urlsafe(nbytes: int) -> str:
        asked.append(nbytes)
        return "from-secrets"

    monkeypatch.setattr(secrets, "token_urlsafe", fake_token_urlsafe)
    assert new_session_id() == "from-secrets"
    assert asked == [32]


def test_seeding_random_does_not_repeat_ids() -> None:
    """``random`` is predictable (and pytest-randomly seeds it): ids must not come from it."""
    state = random.getstate()
    try:
        random.seed(1234)
        first = new_session_id()
        random.seed(1234)
        second = new_session_id()
    finally:
        random.setstate(state)
    assert first != second


def test_hash_is_sha256_of_the_id() -> None:
    assert hash_session_id("abc") == hashlib.sha256(b"abc").digest()


def test_sign_and_verify() -> None:
    signer = HmacIdSigner("secret")
    sid = new_session_id()
    value = signer.sign(sid)
    assert value.startswith(sid + ".")
    assert signer.unsign(value) == (sid, False)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),
        lambda v: v.split(".")[0],
        lambda v: v + "x",
        lambda v: "x" + v,
        lambda v: "",
        lambda v: v.replace(".", ".."),
    ],
)
def test_tampered_values_are_refused(mangle: object) -> None:
    signer = HmacIdSigner("secret")
    value = signer.sign(new_session_id())
    assert signer.unsign(mangle(value)) is None  # type: ignore[operator]


def test_fallback_keys_verify_but_never_sign() -> None:
    old = HmacIdSigner("old")
    current = HmacIdSigner("new", fallback_secret_keys=["old"])
    sid = new_session_id()
    assert current.unsign(old.sign(sid)) == (sid, True)
    assert old.unsign(current.sign(sid)) is None
    assert HmacIdSigner("other").unsign(old.sign(sid)) is None


def test_the_signature_is_itsdangerous_hmac_sha256_with_our_salt() -> None:
    """cookies.xǁHmacIdSignerǁ__init____mutmut_1, _2, _20: the cookie format issued cookies keep
    across upgrades is itsdangerous's Signer with salt "pgsession-wsgi", HMAC key derivation and
    SHA-256."""
    session_id = "A" * 43
    expected = Signer("k", salt="pgsession-wsgi", key_derivation="hmac", digest_method=hashlib.sha256).sign(
        session_id
    )
    assert HmacIdSigner("k").sign(session_id) == expected.decode("ascii")


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="secret_key"):
        HmacIdSigner("")


def test_an_empty_secret_key_is_refused_saying_what_to_pass() -> None:
    """cookies.xǁHmacIdSignerǁ__init__ message mutants."""
    with pytest.raises(ConfigurationError) as refused:
        HmacIdSigner("")
    assert str(refused.value) == "secret_key is empty: pass a long random string, e.g. secrets.token_hex(32)"


def test_cookie_defaults_are_safe() -> None:
    header = CookieSettings().set_header("v", 60, "http")
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Max-Age=60" in header
    assert "Secure" not in header
    assert "Secure" in CookieSettings().set_header("v", 60, "https")


def test_prefixed_and_forced_cookies_decide_secure_by_themselves() -> None:
    """cookies.xǁCookieSettingsǁis_secure__mutmut_5, _6, _7, _9."""
    assert CookieSettings(name="__Secure-s").is_secure("http") is True
    assert CookieSettings(name="__Host-s").is_secure("http") is True
    assert CookieSettings(secure=True).is_secure("http") is True
    assert CookieSettings(secure=False).is_secure("https") is False
    assert CookieSettings().is_secure("https") is True
    assert CookieSettings().is_secure("http") is False
    # Browsers match the prefixes in any case: so does the Secure flag.
    assert CookieSettings(name="__HOST-s").is_secure("http") is True
    assert CookieSettings(name="__secure-s").is_secure("http") is True
    assert CookieSettings(name="__Hosts").is_secure("http") is False


def test_the_cookie_carries_its_path() -> None:
    """cookies.xǁCookieSettingsǁset_header__mutmut_12 (a Path other than "/")."""
    header = CookieSettings(path="/app").set_header("v", None, "http")
    assert header == "session=v; HttpOnly; Path=/app; SameSite=Lax"


def test_the_deleting_cookie_keeps_every_attribute_of_the_cookie_it_deletes() -> None:
    """cookies.xǁCookieSettingsǁdelete_header__mutmut_4.._22: a browser only drops a cookie whose
    name, path and domain match, and Secure/SameSite keep the deletion itself acceptable."""
    cookie = CookieSettings(name="s", path="/app", domain="example.com", samesite="Strict")
    assert cookie.delete_header("https") == (
        "s=; Domain=example.com; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Secure; HttpOnly;"
        " Path=/app; SameSite=Strict"
    )
    assert CookieSettings(httponly=False, samesite=None).delete_header("http") == (
        "session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/"
    )


def test_cookie_has_no_domain_unless_one_is_set() -> None:
    """Without Domain the browser sends the cookie to this host only, not to its subdomains."""
    for scheme in ("http", "https"):
        assert "domain" not in CookieSettings().set_header("v", 60, scheme).lower()
        assert "domain" not in CookieSettings().delete_header(scheme).lower()
    assert "Domain=example.com" in CookieSettings(domain="example.com").set_header("v", 60, "http")
    assert "Domain=example.com" in CookieSettings(domain="example.com").delete_header("http")


def test_host_prefix_forces_secure_and_forbids_domain_and_path() -> None:
    header = CookieSettings(name="__Host-session").set_header("v", None, "http")
    assert "Secure" in header and "Path=/" in header and "Domain" not in header
    with pytest.raises(ConfigurationError, match="__Host-session"):
        CookieSettings(name="__Host-session", domain="example.com")
    with pytest.raises(ConfigurationError, match="__Host-session"):
        CookieSettings(name="__Host-session", path="/app")
    with pytest.raises(ConfigurationError, match="Secure"):
        CookieSettings(name="__Host-session", secure=False)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"name": "a b"}, "cookie_name 'a b' is not a valid cookie name: use letters, digits, - and _"),
        ({"name": ""}, "cookie_name '' is not a valid cookie name: use letters, digits, - and _"),
        ({"samesite": "lax"}, "cookie_samesite must be 'Lax', 'Strict', 'None' or None, not 'lax'"),
        (
            {"samesite": "None", "secure": False},
            "cookie_samesite='None' needs Secure cookies: drop cookie_secure=False",
        ),
        (
            {"name": "__Secure-s", "secure": False},
            "a cookie named '__Secure-s' must be Secure: drop cookie_secure=False",
        ),
        (
            {"name": "__Host-s", "secure": False},
            "a cookie named '__Host-s' must be Secure: drop cookie_secure=False",
        ),
        (
            {"name": "__Host-s", "path": "/app"},
            "a cookie named '__Host-s' must have cookie_path='/' and cookie_domain=None",
        ),
        (
            {"name": "__Host-s", "domain": "example.com"},
            "a cookie named '__Host-s' must have cookie_path='/' and cookie_domain=None",
        ),
        # Browsers match the prefixes whatever their case (RFC 6265bis).
        (
            {"name": "__host-s", "path": "/app"},
            "a cookie named '__host-s' must have cookie_path='/' and cookie_domain=None",
        ),
        (
            {"name": "__HOST-s", "domain": "example.com"},
            "a cookie named '__HOST-s' must have cookie_path='/' and cookie_domain=None",
        ),
        (
            {"name": "__SECURE-s", "secure": False},
            "a cookie named '__SECURE-s' must be Secure: drop cookie_secure=False",
        ),
    ],
    ids=[
        "space",
        "empty",
        "samesite-case",
        "samesite-none",
        "secure",
        "host-secure",
        "host-path",
        "host-domain",
        "host-lower-path",
        "host-upper-domain",
        "secure-upper",
    ],
)
def test_cookie_settings_refuse_what_a_browser_would_drop_saying_why(options: Any, message: str) -> None:
    """cookies.xǁCookieSettingsǁ__post_init__ mutants: each refusal, and its exact message."""
    with pytest.raises(ConfigurationError) as refused:
        CookieSettings(**options)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    "options",
    [
        {"samesite": "None"},
        {"samesite": "None", "secure": True},
        {"samesite": "Strict", "secure": False},
        {"samesite": None},
        {"name": "__Secure-s", "path": "/app", "domain": "example.com"},
        {"name": "__Host-s", "secure": True},
        {"name": "Host-s", "secure": False, "path": "/app"},
        {"name": "x__Host-s", "secure": False, "domain": "example.com"},
    ],
)
def test_cookie_settings_accept_what_the_rules_allow(options: Any) -> None:
    """cookies.xǁCookieSettingsǁ__post_init__ mutants that refuse too much."""
    CookieSettings(**options)


def test_oversized_and_non_ascii_cookies_are_ignored() -> None:
    settings = CookieSettings()
    assert settings.read("session=" + "a" * 5000) is None
    # Refused by the cookie layer itself, before any signer (a custom one too) sees it: as typed,
    # and as WSGI hands UTF-8 bytes over (decoded as Latin-1).
    assert settings.read("session=\u00e9t\u00e9") is None
    assert settings.read("session=\u00c3\u00a9t\u00c3\u00a9") is None
    assert settings.read('session="' + "\u00e9" * 10 + '"') is None
    assert settings.read("session=" + "a" * 4096) == "a" * 4096  # the limit itself is still read
    # A neighbour cookie holding bytes that are not UTF-8 does not hide ours.
    assert settings.read("other=\u00e9\u00ff; session=abc") == "abc"
    assert settings.read("other=1") is None
    assert settings.read("session=abc") == "abc"


def test_cookie_header_parsing_edge_cases() -> None:
    settings = CookieSettings()
    assert settings.read('session="abc"') == "abc"  # quoted, as some clients send it
    assert settings.read("a=1;session=first; session=second") == "first"
    assert settings.read("  session = spaced ; b=2") == "spaced"
    assert settings.read("mysession=x; session_old=y") is None  # names must match exactly
    assert settings.read("session=") is None
    assert settings.read("session") is None


def test_reading_the_cookie_splits_at_the_first_equals_sign_and_unquotes_only_pairs() -> None:
    """cookies.xǁCookieSettingsǁread__mutmut_6, _12, _13."""
    cookie = CookieSettings()
    assert cookie.read("session=a=b") == "a=b"
    assert cookie.read('session="') == '"'
    assert cookie.read('session=""') is None
    assert cookie.read('session="v"') == "v"


def test_check_prefix_names_the_options_as_the_caller_calls_them() -> None:
    """A Flask or Quart config names the options by its keys: the messages use those names."""
    keys = {"secure": "SECURE_KEY", "path": "PATH_KEY", "domain": "DOMAIN_KEY"}
    with pytest.raises(ConfigurationError, match=r"'__Host-s' must have PATH_KEY='/' and DOMAIN_KEY=None$"):
        check_prefix("__Host-s", "/app", None, None, keys)
    with pytest.raises(ConfigurationError, match=r"'__Host-s' must have PATH_KEY='/' and DOMAIN_KEY=None$"):
        check_prefix("__Host-s", "/", "example.com", True, keys)
    with pytest.raises(ConfigurationError, match=r"'__Secure-s' must be Secure: drop SECURE_KEY=False$"):
        check_prefix("__Secure-s", "/app", "example.com", False, keys)
    check_prefix("__Host-s", "/", None, None, keys)  # what a __Host- cookie needs
    check_prefix("__Secure-s", "/app", "example.com", None, keys)  # Secure is all __Secure- needs
    check_prefix("session", "/app", "example.com", False, keys)  # no prefix: no constraint
