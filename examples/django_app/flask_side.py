"""The Flask side of the shared-login example: the same table, secret and cookie as the Django
project, so a login there is a login here (``gunicorn flask_side:app -b 127.0.0.1:8001``)."""

import os
from html import escape

from flask import Flask, redirect, session
from flask_login import LoginManager, UserMixin, current_user, logout_user

from pgsession_wsgi.flask import PgSession

DJANGO_URL = os.environ.get("DJANGO_URL", "http://127.0.0.1:8000/")

app = Flask(__name__)
app.config.update(
    SECRET_KEY=os.environ["SECRET_KEY"],  # Django's SECRET_KEY
    PGSESSION_DSN=os.environ["DATABASE_URL"],
    PGSESSION_SCHEMA=os.environ.get("PGSESSION_SCHEMA", "public"),
    SESSION_COOKIE_NAME="session",  # Django's SESSION_COOKIE_NAME
    SESSION_COOKIE_SECURE=os.environ.get("COOKIE_SECURE", "") == "1",
    PGSESSION_LOGOUT_ENDS_SESSION=True,  # logout_user() ends the shared session: Django's too
)
PgSession(app)
login_manager = LoginManager(app)


class User(UserMixin):
    """A Django user, by the primary key Django's login wrote under ``_user_id``."""

    def __init__(self, user_id: str) -> None:
        self.id = user_id


login_manager.user_loader(User)


@app.get("/")
def index() -> str:
    """Who Flask-Login sees, and what the Django side counted in the same session."""
    if current_user.is_authenticated:
        who = (
            f"Flask-Login sees Django user #{escape(current_user.get_id())}. "
            '<form method="post" action="/logout"><button>Log out (here and on Django)</button></form>'
        )
    else:
        who = "Nobody is logged in: log in on the Django side."
    return (
        f"<!doctype html><title>Flask side</title><h1>Flask side</h1><p>{who}"
        f"<p>Django's visit counter in this session: {escape(str(session.get('visits', 0)))}"
        f'<p><a href="{escape(DJANGO_URL)}">The Django side</a>'
    )


@app.post("/logout")
def logout() -> object:
    """Flask-Login's logout, which ends the whole shared session."""
    logout_user()
    return redirect("/")
