"""Celery configuration, read from the environment through the settings object.

Delivery is at-least-once: tasks acknowledge after they finish and go back to the queue if their worker dies, so
every task must be safe to run twice (they are: inbox status, upserts keyed on ``asgardeo_id``, a stale guard).
"""

from __future__ import annotations

from celery.schedules import crontab
from kombu.entity import Exchange, Queue

from models.settings import SettingsError, get_settings

_settings = get_settings()

# The longest task is a full reconciliation: 10,000 pages at Asgardeo's 200 requests a minute is 50 minutes.
RECONCILE_SOFT_LIMIT = 2 * 3600
RECONCILE_HARD_LIMIT = RECONCILE_SOFT_LIMIT + 300

broker_url = _settings.broker_url
result_backend = _settings.redis_url
broker_connection_retry_on_startup = True
if _settings.broker_is_rabbitmq:
    # A publish returns only once RabbitMQ has stored the message (on a quorum of nodes), so the intake's 202 and
    # the relay's "sent" mean what they say. Unacknowledged messages return to the queue when the consumer's
    # channel closes; RabbitMQ's own ``consumer_timeout`` (rabbitmq.conf) must outlast the longest task.
    broker_transport_options: dict[str, object] = {"confirm_publish": True}
    # An AMQP connection is a handshake of several round trips; a busy broker may take longer than Celery's 4 s.
    broker_connection_timeout = 10.0
else:
    broker_transport_options = {
        # A message unacknowledged this long is handed to another worker; it must outlast the longest task, or a
        # reconciliation would be started twice.
        "visibility_timeout": RECONCILE_HARD_LIMIT + 1800,
        "global_keyprefix": _settings.redis_key_prefix,
    }
result_backend_transport_options = {"global_keyprefix": _settings.redis_key_prefix}
result_expires = 24 * 3600

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_track_started = True
task_ignore_result = True
# Default limits for short tasks; the reconciliation task sets its own, longer ones.
task_soft_time_limit = 60
task_time_limit = 90

# Flower and the operators' dashboards read these events.
worker_send_task_events = True
task_send_sent_event = True

QUEUE_NAMES = ("default", "events", "users", "reconcile")
task_default_queue = "default"


def _queue(name: str) -> Queue:
    """A task queue; on RabbitMQ a replicated quorum queue behind its own topic exchange.

    Quorum queues survive the loss of a minority of broker nodes without losing a message. Celery delays
    countdown/ETA tasks on them through RabbitMQ itself (native delayed delivery), which routes only through topic
    (or fanout) exchanges; on a direct exchange a retry's countdown would be held in the worker's memory instead.
    """
    if not _settings.broker_is_rabbitmq:
        return Queue(name)
    return Queue(
        name,
        Exchange(name, type="topic"),
        routing_key=name,
        queue_arguments={"x-queue-type": "quorum"},
    )


task_queues = tuple(_queue(name) for name in QUEUE_NAMES)
task_routes = {
    "events.*": {"queue": "events"},
    "users.*": {"queue": "users"},
    "reconcile.*": {"queue": "reconcile"},
}

beat_schedule: dict[str, dict[str, object]] = {
    # Re-sends inbox events whose message never reached (or was lost from) the broker.
    "events-relay": {"task": "events.relay", "schedule": 30.0, "options": {"expires": 25}},
}


def _crontab(expression: str) -> crontab:
    """``RECONCILE_CRON`` (``minute hour day-of-month month day-of-week``, UTC) as a Celery crontab."""
    parts = expression.split()
    if len(parts) != 5:
        raise SettingsError(f"RECONCILE_CRON must have 5 fields (minute hour dom month dow), got {expression!r}")
    minute, hour, day_of_month, month_of_year, day_of_week = parts
    try:
        return crontab(minute, hour, day_of_week, day_of_month, month_of_year)
    except ValueError as exc:
        raise SettingsError(f"RECONCILE_CRON is not a valid cron expression: {exc}") from exc


# The nightly full reconciliation; a trigger while a run is running is refused by the task, not queued twice.
beat_schedule["reconcile-nightly"] = {
    "task": "reconcile.run",
    "schedule": _crontab(_settings.reconcile_cron),
    "kwargs": {"trigger": "beat"},
    "options": {"expires": 3600},
}

# Retention (models/housekeeping.py): small batches, one run at a time; a run still going when the next is due
# refuses the newcomer, so an expired message is no loss.
beat_schedule["housekeeping"] = {
    "task": "housekeeping.run",
    "schedule": _settings.housekeeping_interval_seconds,
    "options": {"expires": _settings.housekeeping_interval_seconds},
}
# The incremental sweep: users changed since the last sweep, so a change whose webhook was lost is repaired within
# one period. It shares the run lock with the nightly run (a sweep meeting a full run does nothing).
if _settings.incremental_sweep_seconds > 0:
    beat_schedule["reconcile-sweep"] = {
        "task": "reconcile.sweep",
        "schedule": float(_settings.incremental_sweep_seconds),
        "options": {"expires": _settings.incremental_sweep_seconds},
    }
# The drift check: a few users fetched from SCIM every minute, compared with the table and repaired.
if _settings.drift_sample_per_minute > 0:
    beat_schedule["reconcile-drift-check"] = {
        "task": "reconcile.drift_check",
        "schedule": 60.0,
        "options": {"expires": 55},
    }

worker_hijack_root_logger = False
