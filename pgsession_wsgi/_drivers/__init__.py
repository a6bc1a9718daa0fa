"""Internal: the drivers, which only send statements and hand back their answers.

psycopg2 (sync) and psycopg 3 (async), the async pool and purge task, and the connection
helpers both use. The public pools and borrowed connections are :mod:`pgsession_wsgi.pool`,
:mod:`pgsession_wsgi.borrowed` and :mod:`pgsession_wsgi.async_borrowed`.
"""
