"""Internal: the psycopg2 (sync) and psycopg 3 (async) drivers, which only send statements and read
their answers, with the async pool and purge task."""
