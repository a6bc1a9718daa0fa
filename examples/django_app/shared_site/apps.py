"""The example's app: a Django login is also written where Flask-Login reads it."""

import os

from django.apps import AppConfig


def _demo_user(sender: AppConfig, **kwargs: object) -> None:
    """After ``migrate`` made auth's tables: a user ``demo`` (password ``DEMO_PASSWORD``, default
    ``demo-password``)."""
    if sender.label != "auth":
        return
    from django.contrib.auth.models import User

    if not User.objects.filter(username="demo").exists():
        User.objects.create_user("demo", password=os.environ.get("DEMO_PASSWORD", "demo-password"))


class SharedSiteConfig(AppConfig):
    """Connects the Flask-Login bridge and the demo user."""

    name = "shared_site"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in
        from django.db.models.signals import post_migrate

        from pgsession_wsgi.django import mirror_login_for_flask_login

        user_logged_in.connect(mirror_login_for_flask_login)
        post_migrate.connect(_demo_user)
