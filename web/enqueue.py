"""Sending a sync run's task after its row is committed, for the admin API and the console alike."""

from __future__ import annotations

import logging
from typing import Any

import kombu.exceptions
import redis

from models.db import unit_of_work
from models.guard_review import reopen
from models.runs import finish_run
from tasks.app import app as celery_app
from web.errors import APIError

log = logging.getLogger(__name__)

RECONCILE_TASK = "reconcile.run"
SYNC_USER_TASK = "users.sync"
REVIEW_TASK = "reconcile.review"


def enqueue_run(task: str, run_id: int, **kwargs: Any) -> None:
    """Send after commit; if the broker is away the run is marked failed and the caller gets 503."""
    try:
        celery_app.send_task(task, kwargs={"run_id": run_id, **kwargs})
    except (kombu.exceptions.OperationalError, redis.RedisError, OSError) as exc:
        log.warning("could not enqueue a sync", extra={"run_id": run_id, "error": type(exc).__name__})
        with unit_of_work() as session:
            finish_run(session, run_id, "failed", error="could not enqueue: the task broker is unavailable")
        raise APIError(503, "broker_unavailable", "The task queue is unavailable; try again shortly.") from exc


def enqueue_review(run_id: int, actor: str | None) -> None:
    """Send an approved review to a worker; if the broker is away the review is pending again and the caller 503."""
    try:
        celery_app.send_task(REVIEW_TASK, kwargs={"run_id": run_id, "actor": actor})
    except (kombu.exceptions.OperationalError, redis.RedisError, OSError) as exc:
        log.warning("could not enqueue a review", extra={"run_id": run_id, "error": type(exc).__name__})
        with unit_of_work() as session:
            reopen(session, run_id)
        raise APIError(503, "broker_unavailable", "The task queue is unavailable; try again shortly.") from exc
