"""examples/django_app, run as its README says: ``manage.py migrate``, then the Django project and
the Flask app on one table and one cookie, each through its own test client, in a process of its
own (Django reads its settings module once per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import psycopg2.extensions
import pytest

pytest.importorskip("django", reason="Django is not installed (pip install 'pgsession-wsgi[django]')")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_app"

# Logs in on the Django side, then asks the Flask side who it sees, logs out there, and asks
# Django again: one JSON line of what each saw.
SCRIPT = r"""
import json
import django
django.setup()
from django.test import Client
from flask_side import app

django_client = Client()  # as Django's test client does, it skips the CSRF check
django_client.post("/login/", {"username": "demo", "password": "pw-for-the-test"})
cookie = django_client.cookies["session"].value
django_home = django_client.get("/").content.decode()
devices = django_client.get("/devices/").content.decode()

flask_client = app.test_client()
flask_client.set_cookie("session", cookie)
flask_home = flask_client.get("/").get_data(as_text=True)
flask_client.post("/logout")
after = django_client.get("/").content.decode()
print(json.dumps({"django": django_home, "devices": devices, "flask": flask_home, "after": after}))
"""


def test_a_django_login_is_a_flask_login_and_a_flask_logout_ends_both(pg_dsn: str, schema: str) -> None:
    parts = psycopg2.extensions.parse_dsn(pg_dsn)
    user, password = quote(parts.get("user", ""), safe=""), quote(parts.get("password", ""), safe="")
    auth = user + (f":{password}" if password else "")
    host, port, dbname = (
        parts.get("host", "localhost"),
        parts.get("port", "5432"),
        parts.get("dbname", "postgres"),
    )
    query = "options=" + quote(f"-c search_path={schema}", safe="")
    if host.startswith("/"):  # a Unix socket (the embedded server)
        url = f"postgresql://{auth}@/{dbname}?host={quote(host, safe='')}&port={port}&{query}"
    else:
        url = f"postgresql://{auth}@{host}:{port}/{dbname}?{query}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PGSESSION_")}
    env.update(
        DATABASE_URL=url,
        SECRET_KEY="example-test-secret-0123456789abcdef0123456789abcdef",
        PGSESSION_SCHEMA=schema,
        DEMO_PASSWORD="pw-for-the-test",
        DJANGO_SETTINGS_MODULE="shared_site.settings",
        PYTHONPATH=str(EXAMPLE),
        ALLOWED_HOSTS="testserver",
    )
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Logged in as <b>demo</b>" in seen["django"]
    assert "(this one)" in seen["devices"]
    assert "Flask-Login sees Django user #1" in seen["flask"]
    assert "Visits" not in seen["flask"] and "visit counter in this session: 1" in seen["flask"]
    assert "Not logged in" in seen["after"]
