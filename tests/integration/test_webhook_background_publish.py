"""The intake's production publish path: the answer comes after the commit, a background thread sends the message."""

from __future__ import annotations

import json
import uuid
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
