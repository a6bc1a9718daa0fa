#!/usr/bin/env python
"""The Django side of the shared-login example: ``python manage.py migrate``, then ``runserver``."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shared_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
