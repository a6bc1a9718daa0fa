"""What a driver's exception means for the store: the connection broke, or the statement failed.

psycopg2 raises a bare ``DatabaseError`` with no SQLSTATE, "server closed the connection
unexpectedly", when the server goes away while libpq has not yet marked the connection bad (seen
under load when a primary crashed in a failover: a 500 where a 503 was due). No server sent that
error, so it is the connection breaking, as an ``OperationalError`` is: a read is retried on a
fresh connection, and a write that cannot be retried is a 503 (StoreUnavailable).
"""

from __future__ import annotations

from types import ModuleType

import psycopg
import psycopg2
import pytest

from pgsession_wsgi._store.exchange import DriverErrors
from pgsession_wsgi.errors import SessionError, StoreUnavailable
from pgsession_wsgi.store_steps import StoreSteps

DRIVERS = [pytest.param(psycopg2, id="psycopg2"), pytest.param(psycopg, id="psycopg")]


def steps_for(driver: ModuleType) -> StoreSteps:
    return StoreSteps(
        "public", "sessions", {}, statement_timeout=None, unlogged=None, create=False,
        store_class="PostgresStore", errors=DriverErrors(driver),
    )  # fmt: skip


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_bare_database_error_no_server_sent_is_a_broken_connection(driver: ModuleType) -> None:
    steps = steps_for(driver)
    gone = driver.DatabaseError("server closed the connection unexpectedly")
    steps.fail(gone, last=False)  # returns: tried again on a fresh connection
    with pytest.raises(StoreUnavailable, match="lost the connection to PostgreSQL"):
        steps.fail(gone, last=True)


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_error_the_server_sent_is_not_taken_for_a_broken_connection(driver: ModuleType) -> None:
    steps = steps_for(driver)
    for error in (driver.errors.UniqueViolation("duplicate key"), driver.ProgrammingError("no results")):
        with pytest.raises(SessionError, match="the session store failed") as raised:
            steps.fail(error, last=False)
        assert not isinstance(raised.value, StoreUnavailable)
