"""Group commit at the intake: deliveries that share one commit still get their own answers, on the real database.

To put several deliveries in one batch, the writer is held on a first delivery while the table is locked; the
others queue behind it and are written together once the lock goes. The writer's connection is watched through the
pool's events on its thread: which backends it checks out, and when it gives one back.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from flask import Flask
from psycopg import sql
from sqlalchemy import event, select, text
from sqlalchemy.exc import DataError, OperationalError

from models import db
from models.db import SessionFactory, get_engine, make_engine
from models.inbox import parse_envelope
from models.tables import WebhookEvent
from tasks import metrics
from tests.polling import wait_for
from tests.recording_publisher import RecordingPublisher, install_recorder
from tests.services import TestServices, libpq_url
from tests.webhook_payloads import encode, sample, signed_headers
from tests.webhook_payloads import event as webhook_event
from web.intake import current_intake
from web.intake_writer import InboxWriter

URL = "/webhooks/asgardeo"


@pytest.fixture
def recorder(app: Flask, clean_redis: None) -> Iterator[RecordingPublisher]:
    publisher = install_recorder(app)
    yield publisher
    metrics.flush()  # the intake's counts, before clean_redis deletes them: later tests read exact values


def stored_jtis() -> list[str]:
    get_engine()
    with SessionFactory() as session:
        return list(session.execute(select(WebhookEvent.jti).order_by(WebhookEvent.id)).scalars())


def deliver_all(app: Flask, bodies: list[dict[str, Any]]) -> tuple[list[threading.Thread], list[Any]]:
    """Post each body from its own thread; the answers land in the returned list, in the bodies' order."""
    answers: list[Any] = [None] * len(bodies)

    def post(index: int) -> None:
        raw = encode(bodies[index])
        answers[index] = app.test_client().post(URL, data=raw, headers=signed_headers(raw))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    return threads, answers


def lock_waiters() -> int:
    with get_engine().connect() as conn:
        count: int = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        ).scalar_one()
        return count


def writer_queue_size(app: Flask) -> int:
    with app.app_context():
        return current_intake().writer._queue.qsize()


@contextmanager
def one_batch(app: Flask, bodies: list[dict[str, Any]]) -> Iterator[list[Any]]:
    """Deliver ``bodies`` so that the writer stores them in one statement; yields their answers once all are in."""
    with get_engine().connect() as locker:
        locker.execute(text("LOCK TABLE webhook_events IN SHARE MODE"))
        first, first_answer = deliver_all(app, [sample("userCreated")])
        wait_for(lambda: lock_waiters() >= 1, what="the writer to wait on the table lock")
        threads, answers = deliver_all(app, bodies)
        wait_for(lambda: writer_queue_size(app) == len(bodies), what="every delivery to queue")
        locker.rollback()
    for thread in [*first, *threads]:
        thread.join(20)
    assert first_answer[0].status_code == 202
    yield answers


def test_a_row_postgres_refuses_is_400_and_the_rest_of_its_batch_is_stored(
    app: Flask, recorder: RecordingPublisher
) -> None:
    good = [sample("userCreated") for _ in range(4)]
    poisoned = webhook_event("userProfileUpdated", addedClaims=[{"uri": "x", "value": "nul\u0000byte"}])
    bodies = [*good[:2], poisoned, *good[2:]]
    with one_batch(app, bodies) as answers:
        assert [a.status_code for a in answers] == [202, 202, 400, 202, 202]
        assert answers[2].get_json()["error"] == "invalid_envelope"
    stored = stored_jtis()
    assert poisoned["jti"] not in stored
    assert all(body["jti"] in stored for body in good)
    assert {a.get_json()["id"] for a in answers if a.status_code == 202} <= set(recorder.sent)
    assert len(recorder.sent) == 5  # the holding delivery and the four good ones


def test_concurrent_copies_of_one_jti_are_accepted_once_and_the_rest_are_duplicates(
    app: Flask, recorder: RecordingPublisher
) -> None:
    body = sample("userCreated")
    with one_batch(app, [body] * 5) as answers:
        assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 202]
        assert sorted(a.get_json()["status"] for a in answers) == ["accepted"] + ["duplicate"] * 4
    assert stored_jtis().count(body["jti"]) == 1
    assert len(recorder.sent) == 2  # the holding delivery and this one


def test_every_delivery_waiting_while_postgres_is_down_is_503_and_nothing_is_stored(
    app: Flask, recorder: RecordingPublisher
) -> None:
    real = db.get_engine()
    dead = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    db._engine = dead
    try:
        threads, answers = deliver_all(app, [sample("userCreated") for _ in range(5)])
        for thread in threads:
            thread.join(20)
    finally:
        db._engine = real
        dead.dispose()
    assert [a.status_code for a in answers] == [503] * 5
    assert all(a.headers["Retry-After"] == "5" for a in answers)
    assert stored_jtis() == []
    assert recorder.sent == []


def test_a_delivery_whose_commit_does_not_come_in_time_raises_timeout(app: Flask) -> None:
    writer = InboxWriter(wait_seconds=0.3)
    envelope = parse_envelope(sample("userCreated", jti=str(uuid.uuid4())))
    with get_engine().connect() as locker:
        locker.execute(text("LOCK TABLE webhook_events IN SHARE MODE"))
        with pytest.raises(TimeoutError):
            writer.insert(envelope, "{}")
        locker.rollback()
    # The writer still commits it once the lock goes; the relay sends such an event later.
    wait_for(lambda: envelope.jti in stored_jtis(), what="the late commit")


# Longer than any of these tests, so that their writers keep their connection until told otherwise.
HOLD_SECONDS = 10.0


def store(writer: InboxWriter, body: dict[str, Any] | None = None) -> int | None:
    """One delivery through ``writer`` (a fresh ``userCreated`` unless ``body``): its id, ``None`` for a duplicate."""
    body = body or sample("userCreated")
    return writer.insert(parse_envelope(body), encode(body).decode())


@contextmanager
def writer_pool_events(writer: InboxWriter, name: str) -> Iterator[list[int]]:
    """The backend pids of the pool's ``name`` events (``checkout``, ``checkin``) on ``writer``'s thread."""
    pids: list[int] = []

    def record(dbapi_connection: Any, *_: Any) -> None:
        if threading.current_thread() is writer._thread:
            pids.append(dbapi_connection.info.backend_pid)

    engine = get_engine()
    event.listen(engine, name, record)
    try:
        yield pids
    finally:
        event.remove(engine, name, record)


def terminate(backend_pid: int) -> None:
    """End a backend as a Postgres restart or ``idle_session_timeout`` would, and wait until it is gone."""
    with get_engine().connect() as conn:
        assert conn.execute(
            text("SELECT pg_terminate_backend(CAST(:pid AS integer), 5000)"), {"pid": backend_pid}
        ).scalar_one()


def test_the_writer_keeps_one_connection_from_batch_to_batch(clean_db: None) -> None:
    writer = InboxWriter(idle_seconds=HOLD_SECONDS)
    with writer_pool_events(writer, "checkout") as checkouts:
        ids = [store(writer) for _ in range(5)]
    assert all(isinstance(event_id, int) for event_id in ids)
    assert len(checkouts) == 1


def test_a_held_connection_postgres_ended_is_replaced_and_no_delivery_sees_it(
    clean_db: None, caplog: pytest.LogCaptureFixture
) -> None:
    writer = InboxWriter(idle_seconds=HOLD_SECONDS)
    with writer_pool_events(writer, "checkout") as checkouts:
        first = sample("userCreated")
        assert store(writer, first)
        terminate(checkouts[0])
        later = [sample("userCreated") for _ in range(3)]
        assert all(store(writer, body) for body in later)
    assert "retrying on a new one" in caplog.text
    assert len(checkouts) == 2
    assert checkouts[1] != checkouts[0]
    assert stored_jtis() == [body["jti"] for body in [first, *later]]


def test_when_the_new_connection_fails_too_the_waiter_gets_the_error(
    clean_db: None, services: TestServices, caplog: pytest.LogCaptureFixture
) -> None:
    writer = InboxWriter(idle_seconds=HOLD_SECONDS)
    with writer_pool_events(writer, "checkout") as checkouts:
        assert store(writer)
    get_engine().dispose()  # no pooled connection left to fall back on: the retry has to connect
    database = sql.Identifier(services.database_name)
    server = libpq_url(services.server_url)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(database))
        try:
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", [checkouts[0]])
            lost = sample("userCreated")
            with pytest.raises(OperationalError):  # the intake answers 503 (web.webhooks.DB_UNAVAILABLE)
                store(writer, lost)
            assert "retrying on a new one" in caplog.text  # the held connection failed first
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(database))
    assert store(writer)
    assert lost["jti"] not in stored_jtis()


def test_a_row_postgres_refuses_does_not_cost_the_writer_its_connection(clean_db: None) -> None:
    writer = InboxWriter(idle_seconds=HOLD_SECONDS)
    poisoned = webhook_event("userProfileUpdated", addedClaims=[{"uri": "x", "value": "nul\u0000byte"}])
    with writer_pool_events(writer, "checkout") as checkouts:
        assert store(writer)
        with pytest.raises(DataError):
            store(writer, poisoned)
        assert store(writer)
    assert len(checkouts) == 1


def test_after_reset_engine_the_writer_connects_through_the_new_engine(clean_db: None) -> None:
    writer = InboxWriter(idle_seconds=HOLD_SECONDS)
    assert store(writer)
    old = get_engine()
    db.reset_engine()
    with writer_pool_events(writer, "checkout") as checkouts:
        assert get_engine() is not old
        assert store(writer)
    assert len(checkouts) == 1


def test_a_quiet_writer_gives_its_connection_back_to_the_pool(clean_db: None) -> None:
    writer = InboxWriter(idle_seconds=0.1)
    with writer_pool_events(writer, "checkout") as checkouts, writer_pool_events(writer, "checkin") as checkins:
        assert store(writer)
        wait_for(lambda: checkins, what="the quiet writer to check its connection in")
        assert store(writer)
    assert len(checkouts) == 2
