"""Group commit at the intake: deliveries that share one commit still get their own answers, on the real database.

To put several deliveries in one batch, the writer is held on a first delivery while the table is locked; the
others queue behind it and are written together once the lock goes.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text

from models import db
from models.db import SessionFactory, get_engine, make_engine
from models.inbox import parse_envelope
from models.tables import WebhookEvent
from tasks import metrics
from tests.polling import wait_for
from tests.recording_publisher import RecordingPublisher, install_recorder
from tests.webhook_payloads import encode, event, sample, signed_headers
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
    poisoned = event("userProfileUpdated", addedClaims=[{"uri": "x", "value": "nul\u0000byte"}])
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
