"""Internal: what a store decides and sends, written once for both drivers (no I/O).

Steps and their statements (:mod:`.exchange`), prepared statements, the table's layout check
and its DDL, a purge's progress, and the base both stores share. The decisions themselves are
in :mod:`pgsession_wsgi.store_steps`, the SQL text in :mod:`pgsession_wsgi.sql`.
"""
