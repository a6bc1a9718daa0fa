"""The benchmark's Django app (issue 26): app.py's routes and session contents, on Django.

Environment, as app.py's:
    BENCH_VARIANT    one of DJANGO_VARIANTS
    BENCH_PG_DSN     libpq URI of the PostgreSQL database (``django-db``, ``django-pgsession``)
    BENCH_REDIS_URL  Redis URL (``django-cache-redis``; default redis://127.0.0.1:6379/0)

Variants (one ``settings.configure()`` per process, so one variant per process):
    django-none         no session middleware; the routes do not touch a session (the floor)
    django-db           django.contrib.sessions.backends.db on the same PostgreSQL (Django's own
                        PostgreSQL backend, persistent connections: ``CONN_MAX_AGE = None``)
    django-cache-redis  django.contrib.sessions.backends.cache on Django's built-in RedisCache
    django-pgsession    ``SESSION_ENGINE = "pgsession_wsgi.django"`` on ``DATABASES["default"]``

Every variant keeps Django's defaults otherwise: only ``SessionMiddleware`` in ``MIDDLEWARE``
(none for ``django-none``), ``DEBUG = False``, sessions of ``SESSION_COOKIE_AGE`` (two weeks),
JSON serializer. Django's sessions are persistent by default, as ``/login`` makes the Flask ones.

Serve with gunicorn: ``gunicorn --chdir benchmarks 'django_app:create_app()'``.
``python django_app.py`` builds the app once, creates what the variant needs (``django_session``
by ``migrate``, our table at the first login) and checks that a login survives, then exits: run
it before the measured processes, so that no schema work falls into them.
"""

from __future__ import annotations

import os
from typing import Any

DJANGO_VARIANTS = ("django-none", "django-db", "django-cache-redis", "django-pgsession")
DJANGO_PG_VARIANTS = ("django-db", "django-pgsession")
DJANGO_REDIS_VARIANTS = ("django-cache-redis",)
SECRET_KEY = "benchmark-only-secret-key-not-for-production"

_configured: list[str] = []


def _databases(dsn: str) -> dict[str, Any]:
    """``DATABASES`` for the libpq URI ``dsn``: Django's PostgreSQL backend, persistent connections."""
    from psycopg2.extensions import parse_dsn

    parts = parse_dsn(dsn)
    return {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": parts.get("dbname", ""),
            "USER": parts.get("user", ""),
            "PASSWORD": parts.get("password", ""),
            "HOST": parts.get("host", ""),
            "PORT": parts.get("port", ""),
            # Django's default (0) opens a connection per request; a deployment keeps them.
            "CONN_MAX_AGE": None,
        }
    }


def _settings(variant: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "DEBUG": False,
        "SECRET_KEY": SECRET_KEY,
        "ROOT_URLCONF": __name__,
        "ALLOWED_HOSTS": ["127.0.0.1", "localhost"],
        "INSTALLED_APPS": [],
        "MIDDLEWARE": [],
        "USE_TZ": True,
    }
    if variant == "django-none":
        return values
    values["MIDDLEWARE"] = ["django.contrib.sessions.middleware.SessionMiddleware"]
    if variant in DJANGO_PG_VARIANTS:
        dsn = os.environ.get("BENCH_PG_DSN")
        if not dsn:
            raise RuntimeError("BENCH_PG_DSN is not set")
        values["DATABASES"] = _databases(dsn)
    if variant == "django-db":
        values["INSTALLED_APPS"] = ["django.contrib.sessions"]
        values["SESSION_ENGINE"] = "django.contrib.sessions.backends.db"
    elif variant == "django-cache-redis":
        url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        values["CACHES"] = {
            "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}
        }
        values["SESSION_ENGINE"] = "django.contrib.sessions.backends.cache"
    elif variant == "django-pgsession":
        values["SESSION_ENGINE"] = "pgsession_wsgi.django"  # PGSESSION_DATABASE: "default"
    return values


def _blob(size: int) -> str:
    import secrets

    return secrets.token_urlsafe(size)[:size]


def login(request: Any) -> Any:
    from django.http import HttpResponse

    if hasattr(request, "session"):
        request.session["user_id"] = "user-42"
        request.session["counter"] = 0
        size = int(request.GET.get("size") or 0)
        if size:
            request.session["blob"] = _blob(size)
        # Django's sessions are persistent unless SESSION_EXPIRE_AT_BROWSER_CLOSE: nothing to set.
    return HttpResponse("logged in")


def read(request: Any) -> Any:
    from django.http import HttpResponse

    user_id = request.session.get("user_id") if hasattr(request, "session") else None
    return HttpResponse(f"user_id={user_id}")


def write(request: Any) -> Any:
    from django.http import HttpResponse

    counter = 0
    if hasattr(request, "session"):
        counter = int(request.session.get("counter", 0)) + 1
        request.session["counter"] = counter
    return HttpResponse(f"counter={counter}")


def no_session(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse("no session")


def _urlpatterns() -> list[Any]:
    from django.urls import path

    return [path("login", login), path("read", read), path("write", write), path("none", no_session)]


def __getattr__(name: str) -> Any:  # ROOT_URLCONF: the patterns once Django is set up
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


def create_app(variant: str | None = None) -> Any:
    """The WSGI app of ``variant``. Django's settings are configured once per process: a second
    call with another variant raises."""
    variant = variant or os.environ.get("BENCH_VARIANT", "django-none")
    if variant not in DJANGO_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(DJANGO_VARIANTS)}")
    if _configured and _configured[0] != variant:
        raise RuntimeError(f"Django is configured for {_configured[0]!r} in this process, not {variant!r}")
    import django
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application

    if not _configured:
        settings.configure(**_settings(variant))
        django.setup()
        _configured.append(variant)
    return get_wsgi_application()


def login_cookie(wsgi_app: Any, size: int = 0) -> str:
    """``/login`` once: the ``name=value`` of the session cookie it sets."""
    from werkzeug.test import Client

    answer = Client(wsgi_app, use_cookies=False).get(f"/login?size={size}" if size else "/login")
    if answer.status_code != 200:
        raise RuntimeError(f"/login answered {answer.status}")
    cookies = answer.headers.getlist("Set-Cookie")
    if not cookies:
        raise RuntimeError("/login set no cookie")
    return cookies[0].split(";", 1)[0]


def prepare(variant: str) -> None:
    """Build the app, create what the variant stores sessions in, check that a login survives."""
    wsgi_app = create_app(variant)
    if variant == "django-none":
        return
    if variant == "django-db":
        from django.core.management import call_command

        call_command("migrate", "sessions", verbosity=0)
    from werkzeug.test import Client

    cookie = login_cookie(wsgi_app)
    body = Client(wsgi_app, use_cookies=False).get("/read", headers={"Cookie": cookie}).get_data()
    if b"user_id=user-42" not in body:
        raise RuntimeError(f"the session does not survive: /read answered {body!r}")


def prepare_in_child(variant: str, env: dict[str, str]) -> None:
    """``python django_app.py`` for ``variant`` in a process of its own (Django's settings are
    the process's): ``prepare`` before the measured processes start."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        env={**env, "BENCH_VARIANT": variant},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{variant} does not build:\n{done.stderr[-2000:]}")


if __name__ == "__main__":
    name = os.environ.get("BENCH_VARIANT", "django-none")
    prepare(name)
    print(f"app for variant {name!r} builds")
