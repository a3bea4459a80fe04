"""Test-run wiring: real Postgres and Redis, a fresh database and key prefix per run, migrations applied.

The environment is set in ``pytest_configure``, before any test module imports the app, because the settings and
the Celery configuration are read at import time exactly as in production.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tests import rabbitmq
from tests.services import ServiceUnavailable, TestServices
from tests.stack import STACK, WEBHOOK_SECRET, LiveServer

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
    broker: dict[str, str] = {}
    if rabbitmq.selected():
        try:
            rabbitmq.check_usable()
            broker["CELERY_BROKER_URL"] = rabbitmq.make_vhost("run")
        except rabbitmq.RabbitUnavailable as exc:
            if os.environ.get("CI") == "true":
                raise pytest.UsageError(f"CI must not skip the RabbitMQ run: {exc}") from exc
            _services_error = f"BROKER_UNDER_TEST=rabbitmq, but {exc}"
            return
    os.environ.update(
        APP_ENV="test",
        DATABASE_URL=_services.database_url,
        REDIS_URL=_services.redis_url,
        REDIS_KEY_PREFIX=_services.key_prefix,
        **STACK.environment(),
        **broker,
    )
    from models import migrate
    from models.settings import get_settings

    get_settings.cache_clear()
    migrate.upgrade()


def pytest_unconfigure(config: pytest.Config) -> None:
    from models.db import reset_engine

    reset_engine()
    _services.stop()
    rabbitmq.remove_all()


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
    from models.db import get_engine

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
    from models.db import get_engine

    yield
    # A worker thread may still be finishing a task that touches these tables (a login follow-up, say); its row
    # locks can deadlock with TRUNCATE's table locks. Postgres picks a victim; when it is us, try again.
    for attempt in range(10):
        try:
            with get_engine().begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '3s'"))
                conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
            return
        except OperationalError:
            if attempt == 9:
                raise
            time.sleep(0.2)


@pytest.fixture
def clean_redis() -> Iterator[None]:
    """Delete this run's Redis keys after the test (Celery's queues included)."""
    from tasks.redis_client import get_redis

    yield
    client = get_redis()
    for key in client.scan_iter(match=f"{_services.key_prefix}*", count=1000):
        client.delete(key)


@pytest.fixture
def app(clean_db: None) -> Flask:
    """A Flask app on this run's database and Redis; tables are emptied after the test."""
    from models.settings import get_settings
    from web import create_app

    application = create_app(get_settings())
    application.config["TESTING"] = True
    return application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_signed_in_user() -> Callable[..., tuple[int, str]]:
    """Build a committed user with a live session; returns ``(user id, session token)`` for Bearer calls."""
    from models.db import unit_of_work
    from tests.factories import login, make_user

    def build(role: str = "employee", **fields: object) -> tuple[int, str]:
        with unit_of_work() as session:
            user = make_user(session, role=role, **fields)
            issued = login(session, user)
            return user.id, issued.token

    return build


@pytest.fixture
def admin_headers(make_signed_in_user: Callable[..., tuple[int, str]]) -> dict[str, str]:
    _, token = make_signed_in_user(role="admin")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def celery_worker() -> Iterator[Any]:
    """A real Celery worker in this process (thread pool) consuming every queue of the run's real broker."""
    from celery.contrib.testing.worker import start_worker

    from tasks import app as celery_app
    from tasks.health import ping

    queues = [q.name for q in celery_app.conf.task_queues]
    # Celery's own ping check reads a result that this app's task_ignore_result drops; ours keeps its result.
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        queues=queues,
        shutdown_timeout=30,
        loglevel="WARNING",
    ) as worker:
        assert ping.delay().get(timeout=30) == "pong"
        yield worker


@pytest.fixture(scope="session")
def standin() -> Iterator[Any]:
    """The Asgardeo stand-in over real HTTP, configured as the product's settings expect (see tests/stack.py).

    Shared by the whole run: tests create their own users in it rather than assume an empty directory.
    """
    from asgardeo_standin.server import start_in_thread

    handle = start_in_thread(STACK.standin_config())
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def standin_admin(standin: Any) -> Any:
    from asgardeo_standin.client import StandinAdmin

    return StandinAdmin(standin.root_url)


@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    """The product's Flask app served over real HTTP on ``PUBLIC_BASE_URL`` (threaded werkzeug server)."""
    server = LiveServer(STACK.web_port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def subscribed(standin_admin: Any, live_server: LiveServer) -> Iterator[Any]:
    """The shared stand-in's webhooks sent to the live server, every channel verified; unsubscribed after the test
    once its deliveries are out."""
    status = standin_admin.set_webhook(live_server.url + "/webhooks/asgardeo", WEBHOOK_SECRET, wait_verified=10)
    assert status["verified"], status
    yield standin_admin
    standin_admin.wait_for_deliveries(timeout=30)
    standin_admin.set_webhook(None)
