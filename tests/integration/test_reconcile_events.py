"""Flower shows a running reconciliation's counters: the task sends them as ``task-progress`` events."""

from __future__ import annotations

import threading
from typing import Any

from tasks import app as celery_app


def test_reconciliation_sends_progress_events_flower_can_show(
    celery_worker: Any, standin: Any, standin_admin: Any, clean_db: None
) -> None:
    from tasks.reconcile import run

    standin_admin.seed(20, prefix=f"flowerprogress{id(object()) % 100000}")
    seen: list[dict[str, Any]] = []
    ready = threading.Event()
    stop = threading.Event()

    def listen() -> None:
        with celery_app.connection_for_read() as connection:
            receiver = celery_app.events.Receiver(connection, handlers={"task-progress": seen.append})
            ready.set()
            while not stop.is_set():
                try:
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)
                except TimeoutError:
                    continue
                except OSError:
                    continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10)
    outcome = run.apply_async(kwargs={"trigger": "test"}).get(timeout=120)
    stop.set()
    listener.join(5)
    progress = [event for event in seen if event.get("run_id") == outcome["run_id"]]
    assert progress, "no task-progress event reached the event bus"
    assert progress[-1]["seen"] >= 20
    assert {"pages_done", "created", "deactivated"} <= set(progress[-1])
