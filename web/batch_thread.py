"""A bounded queue drained in batches by one thread per process, started on first use.

Each web app has two (:class:`web.intake.Intake`): the inbox writer (group commit) and the background publisher.
Both must start their thread lazily in the process that uses it: gunicorn forks its workers, and a thread (or a
pooled connection) does not survive a fork, so a forked child starts with an empty queue and its own thread.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class BatchThread(Generic[T]):
    """Subclasses implement :meth:`_handle`, which must deal with every failure of its own items: an exception
    escaping it would end the thread.

    ``linger`` seconds: while items keep coming (the last batch was handled less than ``linger`` ago), a batch waits
    that long after its first item for more (up to ``batch``); otherwise, and with 0, it takes only what is already
    there. Like Nagle's algorithm: a lone item goes at once, and a steady stream trades at most ``linger`` of
    latency for fewer, larger batches.

    ``idle`` seconds: once that long has passed without items, :meth:`_idle` runs (once per quiet spell; never with
    ``None``), so a subclass can let go of what it keeps between batches. Like :meth:`_handle`, it must not raise.
    """

    thread_name = "batch-thread"

    def __init__(self, *, max_pending: int, batch: int, linger: float = 0.0, idle: float | None = None) -> None:
        self.max_pending = max_pending
        self.batch = batch
        self.linger = linger
        self.idle = idle
        self._lock = threading.Lock()
        self._queue: queue.Queue[T] = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None
        self._pid = 0

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: what the parent holds is the parent's to finish; start empty.
                self._queue = queue.Queue(self.max_pending)
                self._pid = os.getpid()
                self._thread = None
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
                self._thread.start()
                self._started()

    def _started(self) -> None:
        """Runs under the lock each time a thread starts."""

    def _run(self) -> None:
        pending = self._queue
        last = -math.inf
        while True:
            try:
                first = pending.get(timeout=self.idle)
            except queue.Empty:
                self._idle()
                first = pending.get()
            items = [first]
            now = time.monotonic()
            until = now + self.linger if now - last < self.linger else now
            while len(items) < self.batch:
                wait = until - time.monotonic()
                try:
                    items.append(pending.get(timeout=wait) if wait > 0 else pending.get_nowait())
                except queue.Empty:
                    break
            self._handle(items)
            last = time.monotonic()

    def _handle(self, items: list[T]) -> None:
        raise NotImplementedError

    def _idle(self) -> None:
        """Runs on the thread after ``idle`` seconds without items."""
