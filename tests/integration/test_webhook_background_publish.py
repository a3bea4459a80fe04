"""The intake's production publish path: the answer comes after the commit, a background thread sends the message."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from models import inbox
from models.db import SessionFactory, get_engine
from models.tables import User, WebhookEvent
from tasks.events import ApplyPublisher
from tests.polling import wait_for
from tests.webhook_payloads import claims, encode, event, signed_headers
from web.intake_publisher import BackgroundPublisher

pytestmark = pytest.mark.usefixtures("clean_db", "clean_redis")


def statuses() -> dict[str, str]:
    get_engine()
    with SessionFactory() as session:
        rows = session.execute(select(WebhookEvent.jti, WebhookEvent.status)).all()
    return {row.jti: row.status for row in rows}


def test_accepted_events_are_committed_before_the_answer_and_applied_by_the_worker(
    client: FlaskClient, celery_worker: Any
) -> None:
    uids = [str(uuid.uuid4()) for _ in range(5)]
    for uid in uids:
        body = event("userCreated", uid, claims=claims(username=f"{uid}@example.com"))
        raw = encode(body)
        response = client.post("/webhooks/asgardeo", data=raw, headers=signed_headers(raw))
        assert response.status_code == 202
        assert response.get_json()["queued"] is True
        # Committed before the 202: another connection sees the row at once.
        assert body["jti"] in statuses()
    wait_for(lambda: set(statuses().values()) == {"applied"} and len(statuses()) == 5, what="all applied")
    with SessionFactory() as session:
        found = set(session.execute(select(User.asgardeo_id).where(User.asgardeo_id.in_(uids))).scalars())
    assert found == set(uids)


def test_broker_down_in_the_background_leaves_committed_events_received_for_the_relay() -> None:
    background = BackgroundPublisher(ApplyPublisher("redis://127.0.0.1:1/0"))
    ids = []
    for _ in range(3):
        body = event("userDisabled", str(uuid.uuid4()))
        with get_engine().begin() as conn:
            event_id = inbox.insert_event(conn, inbox.parse_envelope(body), json.dumps(body))
        assert event_id is not None
        ids.append(event_id)
        assert background.submit(event_id)
    assert background.flush(10)
    assert set(statuses().values()) == {"received"}


class RecordingPublisher(ApplyPublisher):
    """The real publisher to the run's broker, remembering the id lists it was handed (each list becomes messages
    of up to APPLY_BATCH_SIZE ids)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[int]] = []

    def publish(self, event_ids: Iterable[int]) -> list[int]:
        ids = list(event_ids)
        self.calls.append(ids)
        return super().publish(ids)


def test_events_submitted_one_by_one_share_messages() -> None:
    """At a steady trickle each event would otherwise travel alone, and the worker pays Celery's cost per message
    for each; while events keep coming, the publisher's linger puts those that arrive within it into one message."""
    publisher = RecordingPublisher()
    background = BackgroundPublisher(publisher, linger=0.5)
    ids = [2**40 + n for n in range(10)]  # ids of no event: a worker that takes them skips them
    for event_id in ids:
        assert background.submit(event_id)
        time.sleep(0.005)  # one by one, as paced deliveries arrive
    assert background.flush(10)
    assert publisher.calls == [ids[:1], ids[1:]]  # the first came alone and went at once; the rest shared


def test_a_lone_event_is_not_held_back_by_the_linger() -> None:
    publisher = RecordingPublisher()
    background = BackgroundPublisher(publisher, linger=30)
    assert background.submit(2**40)
    assert background.flush(5)
    assert publisher.calls == [[2**40]]
