"""The example apps, kept once: ``examples`` in the checkout, ``pgsession_wsgi.examples`` installed.

pyproject.toml maps this folder into the wheel, so ``pgsession-wsgi demo`` runs from a plain
``pip install`` while ``gunicorn examples.wsgi_app:app`` still works from the repository root.
The same files are imported under both names: import ``pgsession_wsgi`` absolutely, never with
relative imports.
"""
