"""Which database errors say Postgres could not be reached (retry later, whole) and which are about the work."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest
from sqlalchemy import exc as sa_exc

from models.db import postgres_unreachable


def wrapped(error: Exception) -> sa_exc.DBAPIError:
    """As SQLAlchemy hands psycopg's error to the caller."""
    return sa_exc.DBAPIError.instance("SELECT 1", None, error, psycopg.Error)


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("connection refused"),  # client-side: no SQLSTATE
        psycopg.errors.ConnectionFailure("08006"),
        psycopg.errors.AdminShutdown("57P01"),
        psycopg.errors.CrashShutdown("57P02"),
        psycopg.errors.CannotConnectNow("57P03"),
        psycopg.InterfaceError("the connection is closed"),
    ],
)
def test_a_connection_that_failed_or_went_away_is_unreachable(error: Exception) -> None:
    assert postgres_unreachable(wrapped(error))


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.SerializationFailure("40001"),
        psycopg.errors.DeadlockDetected("40P01"),
        psycopg.errors.LockNotAvailable("55P03"),
        psycopg.errors.QueryCanceled("57014"),
        psycopg.errors.UniqueViolation("23505"),
        psycopg.errors.InvalidTextRepresentation("22P02"),
    ],
)
def test_an_error_about_the_statement_is_not(error: Exception) -> None:
    assert not postgres_unreachable(wrapped(error))


def test_no_connection_from_the_pool_is_unreachable_and_other_errors_are_not() -> None:
    assert postgres_unreachable(sa_exc.TimeoutError("QueuePool limit reached"))
    assert not postgres_unreachable(ValueError("a field the rules refuse"))
