"""Internal: the parts of the ``pgsession-wsgi`` command (:mod:`pgsession_wsgi.cli`): its
argument parser, its maintenance commands and the demo."""
