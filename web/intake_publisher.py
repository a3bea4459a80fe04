"""Announcing committed inbox events to the workers off the request thread, and leaving the rest to the relay.

The intake commits the inbox row as ``queued`` and hands its id to :meth:`BackgroundPublisher.submit`; one thread
per app publishes in batches through a :class:`tasks.events.ApplyPublisher` and marks what the broker refused
``received`` (:func:`leave_for_relay`), so a web request ends at its commit. Items still in memory when the process
dies were never sent, and their rows are still ``queued``: the relay re-sends them after
``EVENT_REQUEUE_AFTER_SECONDS``. A clean exit drains the queue first (``atexit``, bounded).
"""

from __future__ import annotations

import atexit
import logging
import queue
import time
from collections.abc import Callable, Sequence

from sqlalchemy import exc as sa_exc

from models import inbox
from models.db import unit_of_work
from tasks.events import ApplyPublisher
from web.batch_thread import BatchThread

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
BATCH = 200
FLUSH_SECONDS = 5.0
# While deliveries keep coming, how long the publisher waits after an event for more to share its message (a lone
# event goes at once; see BatchThread). At a steady 100-200 deliveries/s a web process otherwise sends each event
# alone, and the worker pays Celery's cost per message (about 3 ms of CPU, more than the apply) for every one; 50 ms
# puts 3-10 in a message for at most 50 ms of added lag.
LINGER_SECONDS = 0.05


def leave_for_relay(event_ids: Sequence[int]) -> None:
    """No message went out for these events: mark them ``received`` so the next relay run (30 s) sends them.

    If Postgres refuses too, they stay ``queued`` and the relay re-sends them once ``EVENT_REQUEUE_AFTER_SECONDS``
    have passed; either way nothing is lost.
    """
    try:
        with unit_of_work() as session:
            inbox.mark_received(session, event_ids)
    except sa_exc.SQLAlchemyError as exc:
        log.warning("could not mark events received", extra={"count": len(event_ids), "error": type(exc).__name__})
        return
    log.warning("events stored; the relay will enqueue them", extra={"count": len(event_ids)})


class BackgroundPublisher(BatchThread[int]):
    """Sends ``events.apply_batch`` messages from one thread, so a web request ends at its commit (module docstring)."""

    thread_name = "event-publisher"

    def __init__(
        self,
        publisher: ApplyPublisher,
        *,
        on_unsent: Callable[[Sequence[int]], None] = leave_for_relay,
        max_pending: int = MAX_PENDING,
        batch: int = BATCH,
        linger: float = LINGER_SECONDS,
    ) -> None:
        super().__init__(max_pending=max_pending, batch=batch, linger=linger)
        self.publisher = publisher
        self.on_unsent = on_unsent
        self._exit_hook = False

    def submit(self, event_id: int) -> bool:
        """Hand one committed event to the thread; ``False`` when the queue is full (the caller publishes inline)."""
        self._ensure_thread()
        try:
            self._queue.put_nowait(event_id)
        except queue.Full:
            return False
        return True

    def _started(self) -> None:
        if not self._exit_hook:
            atexit.register(self.flush, FLUSH_SECONDS)
            self._exit_hook = True

    def _handle(self, items: list[int]) -> None:
        try:
            unsent = self.publisher.publish(items)
            if unsent:
                self.on_unsent(unsent)
        except Exception:  # the thread must outlive any one batch; those rows stay queued for the relay
            log.exception("background publish failed", extra={"count": len(items)})
        finally:
            for _ in items:
                self._queue.task_done()

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted so far was published or handed to the relay; ``False`` on timeout."""
        pending = self._queue
        deadline = time.monotonic() + timeout
        with pending.all_tasks_done:
            while pending.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                pending.all_tasks_done.wait(remaining)
        return True
