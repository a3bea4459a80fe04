"""``housekeeping.run``: beat starts it every ``HOUSEKEEPING_INTERVAL_SECONDS``; the rules live in
:mod:`models.housekeeping`.

Each run reports what it removed three ways: one log line (carrying the task id), the ``housekeeping_removed``
counter per kind of row (``/metrics``), and the last report kept in Redis for the sync-health page. A run that finds
another one working is refused and removes nothing. Not retried: the next run starts from wherever this one ended.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from models.db import get_engine
from models.housekeeping import Report, Retention, housekeep, refresh_statistics
from models.settings import get_settings
from tasks import metrics
from tasks.app import app
from tasks.redis_client import get_redis, key

log = logging.getLogger(__name__)

_settings = get_settings()
# The run stops itself after HOUSEKEEPING_MAX_SECONDS (between batches); the limits only catch a stuck statement.
SOFT_LIMIT = int(_settings.housekeeping_max_seconds) + 120
LAST_REPORT_KEY = "housekeeping:last"


@app.task(name="housekeeping.run", bind=True, acks_late=True, soft_time_limit=SOFT_LIMIT, time_limit=SOFT_LIMIT + 30)
def run(self: Any) -> dict[str, Any]:
    """Apply the retention rules once; returns the report (``status``, ``removed`` per kind, ``batches``)."""
    settings = get_settings()
    report = housekeep(
        get_engine(),
        Retention.from_settings(settings),
        batch_size=settings.housekeeping_batch_size,
        max_seconds=settings.housekeeping_max_seconds,
        rest_ratio=settings.housekeeping_rest_ratio,
    )
    if report.status != "refused":
        report.analyzed = refresh_statistics(get_engine())
    outcome = report.as_dict()
    metrics.inc("housekeeping_runs", status=report.status)
    if report.status == "refused":
        log.info("housekeeping already running; this run is refused", extra={"housekeeping": outcome})
        return outcome
    for kind, count in report.removed.items():
        if count:
            metrics.inc("housekeeping_removed", count, kind=kind)
    log.info("housekeeping finished", extra={"housekeeping": outcome})
    remember(report, task_id=self.request.id)
    return outcome


def remember(report: Report, *, task_id: str | None) -> None:
    """Keep the report for the sync-health page (best effort: a Redis outage loses only this copy)."""
    entry = {**report.as_dict(), "task_id": task_id, "finished_at": time.time()}
    try:
        get_redis().set(key(LAST_REPORT_KEY), json.dumps(entry))
    except redis.RedisError as exc:
        log.warning("could not keep the housekeeping report", extra={"error": type(exc).__name__})


def last_report() -> dict[str, Any] | None:
    """The last finished run's report (``finished_at`` in epoch seconds), or ``None`` (none yet, or Redis away)."""
    try:
        raw = get_redis().get(key(LAST_REPORT_KEY))
    except redis.RedisError:
        return None
    if raw is None:
        return None
    found: dict[str, Any] = json.loads(raw)
    return found
