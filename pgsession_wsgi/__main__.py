"""``python -m pgsession_wsgi``: the same as the ``pgsession-wsgi`` command."""

from .cli import main

raise SystemExit(main())
