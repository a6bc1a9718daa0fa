"""Settings: everything from the environment, as a deployed app reads it.

``DATABASE_URL`` (``postgresql://user:password@host:5432/dbname``, its query string becoming libpq
options) holds Django's tables and the sessions; ``SECRET_KEY`` signs the session cookie and must
be the Flask app's too.
"""

import os
from urllib.parse import parse_qsl, unquote, urlsplit

SECRET_KEY = os.environ["SECRET_KEY"]
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
ROOT_URLCONF = "shared_site.urls"
WSGI_APPLICATION = "shared_site.wsgi.application"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "shared_site.apps.SharedSiteConfig",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Django's SessionMiddleware, answering a database outage with a 503 and Retry-After
    # instead of a 500: see docs/django.md.
    "pgsession_wsgi.django.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

_url = urlsplit(os.environ["DATABASE_URL"])
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(_url.path.lstrip("/")),
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
        "OPTIONS": dict(parse_qsl(_url.query)),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True

# The sessions: pgsession-wsgi's engine on DATABASES["default"], in the table the Flask app uses.
SESSION_ENGINE = "pgsession_wsgi.django"
SESSION_COOKIE_NAME = "session"  # the Flask app's (Flask's default): one cookie for both
PGSESSION_SCHEMA = os.environ.get("PGSESSION_SCHEMA", "public")
SESSION_COOKIE_SECURE = os.environ.get("COOKIE_SECURE", "") == "1"  # 1 behind https
