"""Internal: the parts of the request algorithm behind :mod:`pgsession_wsgi.core` (no I/O).

The operations the core asks a store to run, when a save needs a statement, a session's life
(its lifetime, its expiry, its permanence) and the checks on what an app puts in it.
"""
