"""A small Django project whose sessions live in pgsession-wsgi's table, shared with flask_side.py."""
