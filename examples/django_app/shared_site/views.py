"""Four pages: who is logged in, a login form, logout, and "your devices"."""

import os
from html import escape

from django.contrib.auth import authenticate, login, logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import get_token

from pgsession_wsgi.django import log_out_other_sessions, sessions_for_user

FLASK_URL = os.environ.get("FLASK_URL", "http://127.0.0.1:8001/")


def _page(request: HttpRequest, body: str) -> HttpResponse:
    return HttpResponse(f"<!doctype html><title>Django side</title><h1>Django side</h1>{body}")


def _form(request: HttpRequest, action: str, fields: str, button: str) -> str:
    token = escape(get_token(request))
    return (
        f'<form method="post" action="{action}"><input type="hidden" name="csrfmiddlewaretoken" '
        f'value="{token}">{fields}<button>{button}</button></form>'
    )


def index(request: HttpRequest) -> HttpResponse:
    """Who is logged in, and a counter kept in the session."""
    request.session["visits"] = request.session.get("visits", 0) + 1
    if request.user.is_authenticated:
        who = f"Logged in as <b>{escape(request.user.get_username())}</b>. "
        who += _form(request, "/logout/", "", "Log out") + '<p><a href="/devices/">Your devices</a>'
    else:
        who = 'Not logged in. <a href="/login/">Log in</a>'
    return _page(
        request,
        f"<p>{who}<p>Visits to this page in this session: {request.session['visits']}"
        f'<p>The Flask side, same session: <a href="{escape(FLASK_URL)}">{escape(FLASK_URL)}</a>',
    )


def login_page(request: HttpRequest) -> HttpResponse:
    """A login form; django.contrib.auth's login() moves the session to a new id."""
    error = ""
    if request.method == "POST":
        username, password = request.POST.get("username"), request.POST.get("password")
        user = authenticate(request, username=username, password=password)
        if user is not None:
            login(request, user)
            return HttpResponseRedirect("/")
        error = "<p>Wrong username or password."
    fields = '<input name="username" placeholder="demo"> <input name="password" type="password"> '
    return _page(request, error + _form(request, "/login/", fields, "Log in"))


def logout_page(request: HttpRequest) -> HttpResponse:
    """logout() flushes the session: its row is deleted, for the Flask side too."""
    if request.method == "POST":
        logout(request)
    return HttpResponseRedirect("/")


def devices(request: HttpRequest) -> HttpResponse:
    """The user's sessions; a button ends all but this one."""
    if not request.user.is_authenticated:
        return HttpResponseRedirect("/login/")
    ended = ""
    if request.method == "POST":
        ended = f"<p>Logged out {log_out_other_sessions(request)} other session(s)."
    rows = "".join(
        f"<li>{escape(s.fingerprint)}{' (this one)' if s.current else ''}, "
        f"last used {s.accessed_at:%Y-%m-%d %H:%M}"
        for s in sessions_for_user(request)
    )
    button = _form(request, "/devices/", "", "Log out other devices")
    return _page(request, f'{ended}<ul>{rows}</ul>{button}<p><a href="/">Back</a>')
