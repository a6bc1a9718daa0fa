"""Internal: the framework adapters' parts (ASGI and websockets, Flask, Flask-Login, Quart, Litestar)."""
