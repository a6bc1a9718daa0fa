"""Contract tests: each documented behaviour of another session library, run against that library
and against pgsession-wsgi (a parametrised fixture builds the same app with each), so that a
switch keeps what the app relied on. Differences kept on purpose run against ours only, with the
reason docs/asgi.md gives."""
