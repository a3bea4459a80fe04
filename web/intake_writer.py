"""Group commit for the webhook inbox: one thread per app (one app per web process) stores many deliveries in one
transaction.

Alone, each delivery costs Postgres a checkout ping, BEGIN, INSERT and COMMIT (a WAL flush): round trips that were
most of a request's time under load. Request threads hand their delivery to :meth:`InboxWriter.insert` and wait;
the writer stores everything pending in one statement and one commit (:func:`models.inbox.insert_events`) and wakes
each waiter with its own outcome, so a request still answers only after its row is committed.

A row Postgres refuses fails the whole statement; the writer then stores that batch row by row, so only the refused
delivery sees the error. A request that gives up waiting (:data:`WAIT_SECONDS`) may still have its row committed
later: nobody publishes it, and the relay re-sends it once it has sat ``queued`` for ``EVENT_REQUEUE_AFTER_SECONDS``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from sqlalchemy import exc as sa_exc

from models import inbox
from models.db import get_engine
from web.batch_thread import BatchThread

log = logging.getLogger(__name__)

BATCH = 100
MAX_PENDING = 1000
# Longer than a checkout that has to connect (connect_timeout 5 s) and a commit, shorter than gunicorn's timeout.
WAIT_SECONDS = 15.0


class _Pending:
    """One delivery waiting for its commit; ``done`` is released once ``outcome`` is set."""

    __slots__ = ("done", "envelope", "outcome", "raw_body", "settled")

    def __init__(self, envelope: inbox.Envelope, raw_body: str) -> None:
        self.envelope = envelope
        self.raw_body = raw_body
        self.outcome: int | Exception | None = None
        self.settled = False
        self.done = threading.Lock()
        self.done.acquire()

    def settle(self, outcome: int | Exception | None) -> None:
        self.outcome = outcome
        self.settled = True
        self.done.release()


class InboxWriter(BatchThread[_Pending]):
    """Stores deliveries for the request threads of one app, many per commit (made by :class:`web.intake.Intake`)."""

    thread_name = "inbox-writer"

    def __init__(self, *, batch: int = BATCH, max_pending: int = MAX_PENDING, wait_seconds: float = WAIT_SECONDS):
        super().__init__(max_pending=max_pending, batch=batch)
        self.wait_seconds = wait_seconds

    def insert(self, envelope: inbox.Envelope, raw_body: str) -> int | None:
        """Store one delivery and wait for its commit: the event's id, or ``None`` when its ``jti`` is already held.

        Raises ``DataError`` when Postgres refuses this row, the error that made the batch fail (Postgres
        unreachable), or ``TimeoutError`` when the queue stays full or the commit does not come in time.
        """
        self._ensure_thread()
        pending = _Pending(envelope, raw_body)
        deadline = time.monotonic() + self.wait_seconds
        try:
            self._queue.put(pending, timeout=self.wait_seconds)
        except queue.Full:
            raise TimeoutError("the inbox writer's queue is full") from None
        if not pending.done.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TimeoutError("the inbox writer did not commit in time")
        if isinstance(pending.outcome, Exception):
            raise pending.outcome
        return pending.outcome

    def _handle(self, items: list[_Pending]) -> None:
        try:
            self._write(items)
        except Exception as exc:  # the thread must outlive any one batch; its waiters get the error
            log.exception("inbox write failed", extra={"count": len(items)})
            for item in items:
                if not item.settled:
                    item.settle(exc)

    def _write(self, batch: list[_Pending]) -> None:
        try:
            # One statement is its own transaction: autocommit spares the BEGIN and COMMIT round trips.
            with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                ids = inbox.insert_events(conn, [(item.envelope, item.raw_body) for item in batch])
        except sa_exc.DataError as exc:
            if len(batch) == 1:
                batch[0].settle(exc)
                return
            # One row Postgres refuses must not cost the others theirs.
            for item in batch:
                self._write([item])
            return
        except sa_exc.SQLAlchemyError as exc:
            for item in batch:
                item.settle(exc)
            return
        for item, event_id in zip(batch, ids, strict=True):
            item.settle(event_id)
