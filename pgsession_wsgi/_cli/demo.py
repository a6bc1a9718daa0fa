"""``pgsession-wsgi demo``: an example app served on a database, yours or a private embedded one."""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import os
import secrets
import signal
import socket
from types import ModuleType
from typing import Any

from ..errors import ConfigurationError
from ..store import PostgresStore
from .common import EXIT_FAILURE, PROG, _describe_dsn, _dsn_and_source, _redact, _say, _tell, _trap, _where

# The checkout's examples/ folder, which the wheel ships as this package (see pyproject.toml).
_EXAMPLES = "pgsession_wsgi.examples"


def _default_app() -> str:
    """The Flask example when Flask is installed (the ``demo`` extra brings it), else the plain one."""
    return "flask" if importlib.util.find_spec("flask") is not None else "wsgi"


def _load_example(name: str) -> ModuleType:
    """Import an example; that starts nothing, so a missing dependency shows before any database does."""
    module_name = f"{_EXAMPLES}.{name}_app"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing in (_EXAMPLES, module_name):
            raise ConfigurationError(
                f"the example apps are not installed ({module_name} is missing): reinstall with "
                "`pip install --force-reinstall 'pgsession-wsgi[demo]'`, or in a source checkout "
                "`pip install -e '.[demo]'`"
            ) from exc
        if name == "flask" and missing.partition(".")[0] == "flask":
            raise ConfigurationError(
                "the Flask example needs Flask, which is not installed: "
                "`pip install 'pgsession-wsgi[demo]'` (or `pip install flask`), "
                "or serve the plain WSGI example with --app wsgi"
            ) from exc
        raise ConfigurationError(
            f"the {name} example needs the module {missing or '?'}, which is not installed: "
            "`pip install 'pgsession-wsgi[demo]'`"
        ) from exc


def _check_port(host: str, port: int) -> None:
    """Refuse now, by binding as werkzeug does, an address werkzeug would refuse only after setup."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        found = socket.getaddrinfo(host.strip("[]"), port, family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        address = found[0][4]
    except (OSError, UnicodeError):
        raise ConfigurationError(
            f"--host {host} is not an address this machine can listen on: give an IP address, such "
            "as 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        ) from None
    try:
        # Inside the try: a kernel without IPv6 resolves "::1" but refuses the socket itself.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            message = (
                f"port {port} on {host} is already in use: stop what listens there, or pick "
                "another port with --port"
            )
        elif exc.errno == errno.EACCES:
            message = f"port {port} needs privileges this user lacks: pick a port above 1023 with --port"
        elif exc.errno == errno.EADDRNOTAVAIL:
            message = (
                f"--host {host} is not an address of this machine: use 127.0.0.1, or 0.0.0.0 for "
                "every interface"
            )
        else:
            message = (
                f"cannot listen on port {port} of {host} ({exc.strerror}): pick another with --port or --host"
            )
        raise ConfigurationError(message) from None


def _cmd_demo(args: argparse.Namespace) -> int:
    """Serve an example app, on your database or on a private one that is deleted afterwards."""
    example = _load_example(args.app or _default_app())
    _check_port(args.host, args.port)
    dsn, source = _dsn_and_source(args)
    server = None
    if dsn:
        # Redacted too: the user name may be the password (postgres:postgres).
        _say(_redact(f"{PROG} demo: using PostgreSQL from {source} ({_describe_dsn(dsn)})", dsn))
    else:
        from ..embedded import start_embedded

        try:
            server = start_embedded()
        except RuntimeError as exc:  # initdb or pg_ctl failed; the message carries the server log
            _tell(f"{PROG} demo: error: the embedded PostgreSQL did not start: {exc}")
            return EXIT_FAILURE
        unused = (
            '; DATABASE_URL is not used by the demo: pass --dsn "$DATABASE_URL" to serve from there'
            if os.environ.get("DATABASE_URL")
            else ""
        )
        _say(
            f"{PROG} demo: no --dsn or PGSESSION_DSN given, using a private embedded PostgreSQL "
            f"in {server.data_dir} (deleted when the demo stops{unused})"
        )
        dsn = server.dsn
    previous: dict[int, Any] = {}
    try:
        # Fail now, not on the first request, when the database is unreachable or unsuitable.
        setup = PostgresStore(dsn, args.table, args.schema, purge_interval=None)
        try:
            setup.create_table()
        finally:
            setup.close()
        secret_key = os.environ.get("SECRET_KEY") or secrets.token_hex(32)
        app = example.create_app(dsn, secret_key, table=args.table, schema=args.schema)
        _say(
            f"{PROG} demo: serving {example.__name__} on http://{args.host}:{args.port}/ "
            f"(sessions in {_where(args)}); press Ctrl-C to stop"
        )
        # SIGTERM, and SIGINT (ignored in a background job), stop the server: no orphaned PostgreSQL.
        previous = _trap(signal.default_int_handler)
        from werkzeug.serving import run_simple

        run_simple(args.host, args.port, app, threaded=True)  # returns on Ctrl-C
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if server is not None:
            server.close()
    _say(f"{PROG} demo: stopped" + (" and deleted the embedded PostgreSQL" if server else ""))
    return 0
