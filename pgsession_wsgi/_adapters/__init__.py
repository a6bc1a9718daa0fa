"""Internal: the framework adapters' parts, each a translation between a framework's own
session contract and the core (ASGI and websockets, Flask, Flask-Login, Quart, Litestar).
The public front ends are :mod:`pgsession_wsgi.asgi`, :mod:`pgsession_wsgi.flask`,
:mod:`pgsession_wsgi.quart` and :mod:`pgsession_wsgi.litestar`.
"""
