"""Internal: what a store decides and sends, written once for both drivers (no I/O).

The decisions are in :mod:`pgsession_wsgi.store_steps`, the SQL text in :mod:`pgsession_wsgi.sql`."""
