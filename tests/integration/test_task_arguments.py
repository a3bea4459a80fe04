"""Malformed task messages (a bug elsewhere, or a task sent by hand from Flower) change nothing and do not stop the
worker from doing the next real piece of work."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from models.db import unit_of_work
from models.tables import UserChange, WebhookEvent
from tasks import app as celery_app
from tasks.events import apply
from tasks.health import ping
from tasks.login import login_followup

HOSTILE = ["1; DROP TABLE users", -5, 0, True, None, 2**70, [1], {"id": 1}]


def _rows() -> tuple[int, int]:
    with unit_of_work() as session:
        return (
            int(session.scalar(select(func.count()).select_from(WebhookEvent)) or 0),
            int(session.scalar(select(func.count()).select_from(UserChange)) or 0),
        )


@pytest.mark.parametrize("value", HOSTILE)
def test_apply_refuses_malformed_event_ids(value: Any, clean_db: None) -> None:
    assert apply(value) == "rejected"
    assert _rows() == (0, 0)


@pytest.mark.parametrize("value", HOSTILE)
def test_login_followup_refuses_malformed_ids(value: Any, clean_db: None) -> None:
    assert login_followup(value, 1) is None
    assert login_followup(1, value) is None
    assert _rows() == (0, 0)


def test_worker_survives_a_burst_of_malformed_messages(celery_worker: Any, clean_db: None) -> None:
    for value in HOSTILE:
        celery_app.send_task("events.apply", args=[value])
        celery_app.send_task("users.login_followup", args=[value, value])
    celery_app.send_task("events.apply", args=[1, 2, 3])  # wrong arity: the task fails before our code runs
    celery_app.send_task("events.apply", kwargs={"unexpected": 1})
    assert ping.delay().get(timeout=30) == "pong"
    assert _rows() == (0, 0)
