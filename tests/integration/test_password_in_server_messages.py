"""A server's refusal quotes names back; when one is the password, no message of ours repeats it.

``postgres:postgres`` is a common pair: the server answers 'database "..." does not exist' or
'password authentication failed for user "..."', and the stores put that first line in their
StoreUnavailable (issue 20: a DSN's password never appears in any message of ours).
"""

from __future__ import annotations

import traceback

import psycopg2.extensions
import pytest

from pgsession_wsgi import PostgresStore, StoreUnavailable
from pgsession_wsgi.async_store import AsyncPostgresStore

SECRET = "Zq9-hunter2-secret"


def dsn_naming_the_password(pg_dsn: str) -> str:
    """The test server, with the password set and a database named like it (which is missing)."""
    params = psycopg2.extensions.parse_dsn(pg_dsn)
    params.update(password=SECRET, dbname=SECRET)
    return psycopg2.extensions.make_dsn(**params)


def shown(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) + repr(exc)


def test_the_sync_store_hides_a_password_the_server_quotes(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(dsn_naming_the_password(pg_dsn), purge_interval=None)
    try:
        with pytest.raises(StoreUnavailable, match="does not exist") as raised:
            store.sessions_for_user(1)
    finally:
        store.close()
    assert SECRET not in shown(raised.value)
    assert '"********"' in str(raised.value)
    assert SECRET not in caplog.text


async def test_the_async_store_hides_a_password_the_server_quotes(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = AsyncPostgresStore(dsn_naming_the_password(pg_dsn), purge_interval=None, pool_timeout=5)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await store.open()
    finally:
        await store.close()
    assert SECRET not in shown(raised.value)
    assert SECRET not in "".join(r.getMessage() for r in caplog.records if r.name == "pgsession_wsgi")
