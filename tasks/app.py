"""The Celery application. Worker and beat load it with ``celery -A tasks``."""

from __future__ import annotations

import math
from typing import Any

from celery import Celery, signals

from models import logs
from models.db import dispose_after_fork
from models.heap import freeze_startup_heap
from models.settings import get_settings
from tasks.event_loop_start import install as mend_event_loop_start
from tasks.flower_guard import guard_flower

app = Celery(
    "asgardeo_sync",
    include=[
        "tasks.health",
        "tasks.events",
        "tasks.login",
        "tasks.reconcile",
        "tasks.users",
        "tasks.guard_review",
        "tasks.housekeeping",
        "tasks.incremental",
        "tasks.drift",
    ],
)
app.config_from_object("celeryconfig")
guard_flower(get_settings())


def broker_countdown(seconds: float) -> float:
    """A task delay the broker honours. On RabbitMQ's quorum queues Celery delays a task through RabbitMQ itself
    (native delayed delivery), which counts whole seconds and refuses a delay between 0 and 1 (the publish raises,
    and the task is lost); there a fractional delay is rounded up. On Redis the worker times it to the millisecond.
    """
    if seconds > 0 and get_settings().broker_is_rabbitmq:
        return float(math.ceil(seconds))
    return seconds


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    """Replace Celery's own logging with the shared JSON configuration."""
    logs.configure_logging(get_settings().log_level)


@signals.worker_init.connect
def _mend_event_loop_start(**_: Any) -> None:
    """A broker close at the start of the worker's event loop must restart its consumer (tasks/event_loop_start.py)."""
    mend_event_loop_start()


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """Pooled connections inherited from the parent must not be used by the child. The tasks are loaded: freeze
    them so full garbage collections do not stall each task (models/heap.py)."""
    dispose_after_fork()
    freeze_startup_heap()


_log_tokens: dict[str, Any] = {}


@signals.task_prerun.connect
def _bind_task_id(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """Every log line a task writes carries its task id and name."""
    if task_id is not None:
        _log_tokens[task_id] = logs.push(task_id=task_id, task=getattr(task, "name", None))


@signals.task_postrun.connect
def _unbind_task_id(task_id: str | None = None, **_: Any) -> None:
    token = _log_tokens.pop(task_id, None) if task_id is not None else None
    if token is not None:
        logs.pop(token)
