"""Small WSGI apps and helpers for the reliability tests (gunicorn imports the apps by module)."""
