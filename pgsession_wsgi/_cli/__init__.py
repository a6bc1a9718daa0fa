"""Internal: the parts of the ``pgsession-wsgi`` command (:mod:`pgsession_wsgi.cli`)."""
