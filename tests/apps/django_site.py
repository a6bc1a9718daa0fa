"""A Django site for the Django tests: settings made once per process (only when a Django test
runs), a few views, their URLconf, and a fixture-style helper putting each test in its own schema.

Django reads its settings once per process, so ``configure(dsn)`` configures them the first time
and checks the database is the same the next time. Each test then gets its own schema through
``in_schema``: Django's connection (and so Django's own ``django_session``) and the engine's table
live there, by ``OPTIONS["options"] = "-c search_path=<schema>"`` and ``PGSESSION_SCHEMA``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2.extensions

SECRET = "django-tests-secret-long-enough-to-be-a-real-key-0123456789"
_configured_dsn: str | None = None


def configure(dsn: str) -> None:
    """Configure Django for this process (once), on the test database ``dsn``."""
    global _configured_dsn
    import django
    from django.conf import settings

    if _configured_dsn is not None:
        assert _configured_dsn == dsn, "Django is configured for another database in this process"
        return
    parts = psycopg2.extensions.parse_dsn(dsn)
    settings.configure(
        DEBUG=False,
        SECRET_KEY=SECRET,
        ALLOWED_HOSTS=["testserver", "localhost"],
        ROOT_URLCONF="apps.django_site",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": parts.get("dbname", "postgres"),
                "USER": parts.get("user", ""),
                "PASSWORD": parts.get("password", ""),
                "HOST": parts.get("host", ""),
                "PORT": parts.get("port", ""),
                "OPTIONS": {},
            }
        },
        SESSION_ENGINE="pgsession_wsgi.django",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],  # fast, for tests only
        USE_TZ=True,
        PGSESSION_PURGE_INTERVAL=None,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    _configured_dsn = dsn


@contextmanager
def in_schema(schema: str, **overrides: Any) -> Iterator[None]:
    """Django's connection and the engine's table in ``schema`` for the block; settings overridden."""
    from django.conf import settings
    from django.db import connections
    from django.test.utils import override_settings

    from pgsession_wsgi.django import close_stores

    options = settings.DATABASES["default"].setdefault("OPTIONS", {})
    connection = connections["default"]
    connection.close()
    options["options"] = f"-c search_path={schema}"
    connection.settings_dict.setdefault("OPTIONS", {})["options"] = options["options"]
    try:
        with override_settings(PGSESSION_SCHEMA=schema, **overrides):
            yield
    finally:
        close_stores()
        connection.close()
        options.pop("options", None)
        connection.settings_dict["OPTIONS"].pop("options", None)


def create_django_tables(*, auth: bool = False) -> None:
    """Django's own ``django_session`` (and the auth tables), made from the models' DDL in the
    current schema, as ``migrate`` would make them."""
    from django.contrib.sessions.models import Session
    from django.db import connection

    models: list[Any] = [Session]
    if auth:
        from django.contrib.auth.models import Group, Permission, User
        from django.contrib.contenttypes.models import ContentType

        models = [ContentType, Permission, Group, User, *models]
    with connection.schema_editor() as editor:
        for model in models:
            editor.create_model(model)


# -- views ------------------------------------------------------------------------------------


def _json(data: Any, status: int = 200) -> Any:
    from django.http import HttpResponse

    return HttpResponse(json.dumps(data, default=str), status=status, content_type="application/json")


def write(request: Any) -> Any:
    """Every query parameter into the session."""
    for key, value in request.GET.items():
        request.session[key] = value
    return _json({"ok": True})


def read(request: Any) -> Any:
    """The session's data, as the view sees it."""
    return _json(dict(request.session.items()))


def nothing(request: Any) -> Any:
    """A view that never touches the session."""
    return _json({"ok": True})


def login_view(request: Any) -> Any:
    """``django.contrib.auth.login`` for the user named in ``?username=``."""
    from django.contrib.auth import login
    from django.contrib.auth.models import User

    user = User.objects.get(username=request.GET["username"])
    login(request, user)
    return _json({"user": user.pk})


def logout_view(request: Any) -> Any:
    """``django.contrib.auth.logout``: Django flushes the session."""
    from django.contrib.auth import logout

    logout(request)
    return _json({"ok": True})


def whoami(request: Any) -> Any:
    """Who Django's auth says is logged in."""
    user = request.user
    return _json({"user": user.pk if user.is_authenticated else None})


def devices(request: Any) -> Any:
    """The logged-in user's sessions, as a "your devices" page lists them."""
    from pgsession_wsgi.django import sessions_for_user

    return _json([{"fingerprint": s.fingerprint, "current": s.current} for s in sessions_for_user(request)])


def log_out_others(request: Any) -> Any:
    """End the user's other sessions."""
    from pgsession_wsgi.django import log_out_other_sessions

    return _json({"ended": log_out_other_sessions(request)})


def clear(request: Any) -> Any:
    """Empty the session without flushing it."""
    request.session.clear()
    return _json({"ok": True})


def expiry(request: Any) -> Any:
    """``set_expiry`` with ``?seconds=`` (an int) or ``?browser=1`` (0), then a write."""
    if "browser" in request.GET:
        request.session.set_expiry(0)
    else:
        request.session.set_expiry(int(request.GET["seconds"]))
    request.session["expiry_set"] = True
    return _json({"age": request.session.get_expiry_age()})


def unstorable(request: Any) -> Any:
    """A value the codec refuses: ``UnstorableValue``, a session error other than an outage."""
    request.session["handle"] = object()
    return _json({"ok": True})


def _urlpatterns() -> list[Any]:
    from django.urls import path

    views = (write, read, nothing, whoami, devices, log_out_others, clear, expiry, unstorable)
    return [
        *(path(f"{view.__name__}/", view) for view in views),
        path("login/", login_view),
        path("logout/", logout_view),
    ]


def __getattr__(name: str) -> Any:
    # Django reads urlpatterns from the ROOT_URLCONF module once settings are configured.
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)
