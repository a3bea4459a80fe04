"""Group commit for the webhook inbox: one thread per app (one app per web process) stores many deliveries in one
transaction.

Alone, each delivery costs Postgres a checkout ping, BEGIN, INSERT and COMMIT (a WAL flush): round trips that were
most of a request's time under load. Request threads hand their delivery to :meth:`InboxWriter.insert` and wait;
the writer stores everything pending in one statement and one commit (:func:`models.inbox.insert_events`) and wakes
each waiter with its own outcome, so a request still answers only after its row is committed.

The writer thread keeps its connection (autocommit, set once) from batch to batch while deliveries keep coming.
Checking one out per batch cost a pre-ping round trip, a new ``Connection`` and switching autocommit on and off: about
13% of a web process's CPU at 100 deliveries/s, where most batches hold one or two rows. What the pre-ping guarded
against is now a retry: a batch whose held connection fails (Postgres restarted, or ended the idle session) is
written once more on a newly checked-out, pre-pinged one, and only if that fails too do its waiters get the error.
After :data:`IDLE_SECONDS` without deliveries the connection goes back to the pool.

A row Postgres refuses fails the whole statement; the writer then stores that batch row by row, so only the refused
delivery sees the error. A request that gives up waiting (:data:`WAIT_SECONDS`) may still have its row committed
later: nobody publishes it, and the relay re-sends it once it has sat ``queued`` for ``EVENT_REQUEUE_AFTER_SECONDS``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from models import inbox
from models.db import get_engine
from web.batch_thread import BatchThread

log = logging.getLogger(__name__)

BATCH = 100
MAX_PENDING = 1000
# Longer than a checkout that has to connect (connect_timeout 5 s) and a commit, shorter than gunicorn's timeout.
WAIT_SECONDS = 15.0
# A writer this long without deliveries gives its connection back to the pool, where the request threads can use it
# (and a test's many apps, whose writer threads never end, do not each keep one checked out). Deliveries further
# apart than this pay a checkout each, as before: at under one a second its cost does not show.
IDLE_SECONDS = 1.0
# The held connection's failures that a new connection may not have: the batch is written once more on one.
CONNECTION_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError)


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

    def __init__(
        self,
        *,
        batch: int = BATCH,
        max_pending: int = MAX_PENDING,
        wait_seconds: float = WAIT_SECONDS,
        idle_seconds: float = IDLE_SECONDS,
    ):
        super().__init__(max_pending=max_pending, batch=batch, idle=idle_seconds)
        self.wait_seconds = wait_seconds
        # Used by the writer thread only: its connection between batches, and the process it came from.
        self._conn: Connection | None = None
        self._conn_pid = 0

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

    def _idle(self) -> None:
        """:data:`IDLE_SECONDS` without deliveries: the connection goes back to the pool."""
        self._release()

    def _write(self, batch: list[_Pending]) -> None:
        try:
            ids = self._insert([(item.envelope, item.raw_body) for item in batch])
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

    def _insert(self, rows: list[tuple[inbox.Envelope, str | None]]) -> list[int | None]:
        """:func:`models.inbox.insert_events` on the held connection; if that connection fails, once more on a new one.

        A DataError leaves the connection as it was: in autocommit a failed statement leaves nothing open on it.
        """
        held = self._held()
        if held is not None:
            try:
                return inbox.insert_events(held, rows)
            except CONNECTION_ERRORS as exc:
                # Postgres may have ended it while it sat between batches (a restart, idle_session_timeout, a cut
                # idle TCP connection), which the pool's pre-ping used to catch at each checkout. The new connection
                # is pre-pinged, so the retry fails only when Postgres is out of reach. Should the failed statement
                # have committed, the retry finds the rows and answers "duplicate"; the relay sends those events.
                log.warning(
                    "inbox writer's connection failed; retrying on a new one", extra={"error": type(exc).__name__}
                )
                self._release(discard=True)
        # One statement is its own transaction: autocommit spares the BEGIN and COMMIT round trips.
        conn = get_engine().connect().execution_options(isolation_level="AUTOCOMMIT")
        self._conn, self._conn_pid = conn, os.getpid()
        try:
            return inbox.insert_events(conn, rows)
        except CONNECTION_ERRORS:
            self._release(discard=True)
            raise

    def _held(self) -> Connection | None:
        """The connection kept from the last batch, unless it must not be used again: a forked copy of the parent's,
        one from an engine ``reset_engine`` disposed (tests switch databases), or one SQLAlchemy found broken."""
        conn = self._conn
        if conn is not None and (self._conn_pid != os.getpid() or conn.engine is not get_engine() or conn.invalidated):
            self._release(discard=True)
        return self._conn

    def _release(self, *, discard: bool = False) -> None:
        """Give the held connection back to the pool, or with ``discard`` close it, so a broken one is never pooled.

        A forked copy's is only forgotten: its socket is the parent's (as in ``models.db.dispose_after_fork``).
        """
        conn, self._conn = self._conn, None
        if conn is None or self._conn_pid != os.getpid():
            return
        if discard:
            conn.invalidate()
        conn.close()
