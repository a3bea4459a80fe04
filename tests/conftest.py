"""Test-run wiring: real Postgres and Redis, a fresh database and key prefix per run, migrations applied.

The environment is set in ``pytest_configure``, before any test module imports the app, because the settings and
the Celery configuration are read at import time exactly as in production.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.services import ServiceUnavailable, TestServices

_services = TestServices()
_services_error: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _services_error  # noqa: PLW0603
    try:
        _services.start()
    except ServiceUnavailable as exc:
        if os.environ.get("CI") == "true":
            raise pytest.UsageError(f"CI must not skip integration tests: {exc}") from exc
        _services_error = str(exc)
        return
    os.environ.update(
        APP_ENV="test",
        DATABASE_URL=_services.database_url,
        REDIS_URL=_services.redis_url,
        REDIS_KEY_PREFIX=_services.key_prefix,
    )
    from models import migrate  # noqa: PLC0415 - must follow the environment set above
    from models.settings import get_settings  # noqa: PLC0415

    get_settings.cache_clear()
    migrate.upgrade()


def pytest_unconfigure(config: pytest.Config) -> None:
    from models.db import reset_engine  # noqa: PLC0415

    reset_engine()
    _services.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without servers (only possible outside CI) the integration and e2e tests skip with the reason."""
    if _services_error is None:
        return
    skip = pytest.mark.skip(reason=_services_error)
    for item in items:
        if "/unit/" not in str(item.path):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def services() -> TestServices:
    return _services


@pytest.fixture
def db_session() -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test (SQLAlchemy's external-transaction recipe)."""
    from models.db import get_engine  # noqa: PLC0415

    connection = get_engine().connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


TABLES = ("user_changes", "sessions", "webhook_events", "sync_runs", "users")


@pytest.fixture
def clean_db() -> Iterator[None]:
    """For tests whose writes are committed by other threads or processes (web, worker): empty the tables after."""
    from models.db import get_engine  # noqa: PLC0415

    yield
    with get_engine().begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))


@pytest.fixture
def clean_redis() -> Iterator[None]:
    """Delete this run's Redis keys after the test (Celery's queues included)."""
    from tasks.redis_client import get_redis  # noqa: PLC0415

    yield
    client = get_redis()
    for key in client.scan_iter(match=f"{_services.key_prefix}*", count=1000):
        client.delete(key)
