"""Internal: the parts of the request algorithm behind :mod:`pgsession_wsgi.core` (no I/O)."""
