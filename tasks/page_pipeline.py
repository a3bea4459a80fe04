"""The full run's listing as a pipeline: pages fetched ahead on one thread, written on :data:`PAGE_WRITERS` threads
with one database connection each, and each transaction's counters collected on the calling thread.

The threads are here for speed alone; what a page means is the caller's ``write``. Why each one exists:

- **Fetch ahead** (:func:`prefetched`): the next pages are requested while earlier ones are written, never more than
  :data:`PREFETCH_PAGES` ahead, so memory stays flat.
- **Several writers**: Postgres works on one page's transaction while Python parses and sends the next. Pages are
  disjoint, so their transactions contend only on the run row, which each updates last.
- **One connection per writer** for the whole listing (:class:`_WriterConnections`): checking one out per
  transaction costs a pre-ping round trip each time (measured: about a tenth of a 100,000-user run on 2 cores).
- **ANALYZE beside them** (:class:`_Planner`): while a run grows ``users`` (a first sync), its statistics are
  refreshed on a thread of their own so the writers' plans fit the table's size.

A re-run is as safe as ``write`` is: nothing here writes on its own except the ``ANALYZE``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from models.db import get_engine
from models.housekeeping import analyze_table, planned_rows
from models.runs import Counters
from tasks.scim import Listing

log = logging.getLogger(__name__)

PREFETCH_PAGES = 4
# Pages already fetched when a writer is free go into one transaction, up to this many (fewer commits, lock and run
# row updates per user). Under the rate limit pages arrive one at a time, so each transaction holds one page.
BATCH_PAGES = 4
# Concurrent page transactions: Postgres works on one while Python parses and sends the next.
PAGE_WRITERS = 3
# Re-ANALYZE ``users`` whenever this run has grown it past twice what the planner last counted (and by at least this
# many rows). Without it a first sync into an empty table runs on plans made for an empty table: the upsert's join
# and the audit rows' foreign-key checks (cached per connection) scan the whole table for every page, so the run
# slows down quadratically (measured: 100,000 users, Postgres CPU 10-28 s instead of about 4 s).
ANALYZE_MIN_GROWTH = 5_000

# A writer's transaction: a session on the writer's own connection, committed when the block ends without error.
Transaction = Callable[[], AbstractContextManager[Session]]
# Writes some pages in one transaction; returns one delta per page.
WritePages = Callable[[list[Listing], Transaction], list[Counters]]


def write_listing(
    pages: Iterator[Listing], write: WritePages, counters: Counters, progress: Callable[[Counters], None]
) -> None:
    """Hand ``pages`` to ``write`` on :data:`PAGE_WRITERS` threads, each call with the pages fetched by the time a
    writer is free (at least one, at most :data:`BATCH_PAGES`), and add every delta it returns to ``counters`` on
    this thread, calling ``progress`` after each (in the order the transactions finish).

    At most ``SCIM_LIST_CONCURRENCY + PREFETCH_PAGES + PAGE_WRITERS * BATCH_PAGES`` pages are in memory. The first
    error, of the listing or of a write, is raised once the writes already started have ended; the deltas of those
    that committed are added first (without ``progress``), so ``counters`` agree with what was committed.
    """
    inflight: set[Future[list[Counters]]] = set()
    planner = _Planner()
    connections = _WriterConnections()

    def collect(block: bool) -> None:
        done, _ = wait(inflight, return_when=FIRST_COMPLETED) if block else (set(inflight), None)
        for future in [f for f in done if f.done()]:
            inflight.discard(future)
            for delta in future.result():
                counters.add(delta)
                progress(counters)
                planner.grew(delta.created)

    with ThreadPoolExecutor(max_workers=PAGE_WRITERS, thread_name_prefix="reconcile-writer") as pool:
        try:
            for listings in prefetched(pages, batch=BATCH_PAGES):
                inflight.add(pool.submit(write, listings, connections.transaction))
                if len(inflight) >= PAGE_WRITERS:
                    collect(block=True)
            while inflight:
                collect(block=True)
        finally:
            # On failure, count what the pages already written committed, so the run row and the outcome agree.
            for future in inflight:
                future.cancel()
            for future in wait(inflight).done:
                if not future.cancelled() and future.exception() is None:
                    for delta in future.result():
                        counters.add(delta)
            connections.close()
            planner.wait()


class _End:
    pass


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetched(pages: Iterator[Listing], depth: int = PREFETCH_PAGES, batch: int = 1) -> Iterator[list[Listing]]:
    """Iterate ``pages`` with up to ``depth`` fetched ahead by a helper thread, in lists of the pages already there
    (at least one, at most ``batch``); errors surface in order, after the pages fetched before them."""
    slots: queue.Queue[Listing | _End | _Failed] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Listing | _End | _Failed) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for page in pages:
                if not put(page):
                    return
            put(_End())
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(_Failed(exc))

    worker = threading.Thread(target=produce, name="scim-prefetch", daemon=True)
    worker.start()
    try:
        last: _End | _Failed | None = None
        while last is None:
            taken: list[Listing] = []
            item = slots.get()
            while True:
                if isinstance(item, _End | _Failed):
                    last = item
                    break
                taken.append(item)
                if len(taken) >= batch:
                    break
                try:
                    item = slots.get_nowait()
                except queue.Empty:
                    break
            if taken:
                yield taken
        if isinstance(last, _Failed):
            raise last.exc
    finally:
        stop.set()
        worker.join(timeout=5)


class _WriterConnections:
    """One connection per writer thread for the whole listing, each transaction a session bound to it."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._opened: list[Connection] = []
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = get_engine().connect()
            with self._lock:
                self._opened.append(connection)
        with Session(bind=connection, expire_on_commit=False) as session, session.begin():
            yield session

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()


class _Planner:
    """Keeps the planner's row count of ``users`` within a factor of two of the truth while a run inserts.

    ``ANALYZE`` runs on its own thread (one at a time), so the page writers are not kept waiting for it.
    """

    def __init__(self) -> None:
        self.counted = planned_rows(get_engine(), "users")
        self.created = 0
        self._running: threading.Thread | None = None

    def grew(self, created: int) -> None:
        self.created += created
        if self.created < ANALYZE_MIN_GROWTH or self.counted + self.created < 2 * max(self.counted, 1):
            return
        if self._running is not None and self._running.is_alive():
            return
        self.counted += self.created
        self.created = 0
        self._running = threading.Thread(target=self._analyze, args=(self.counted,), name="reconcile-analyze")
        self._running.start()

    def wait(self) -> None:
        if self._running is not None:
            self._running.join()

    @staticmethod
    def _analyze(rows: int) -> None:
        started = time.monotonic()
        try:
            analyze_table(get_engine(), "users")
        except SQLAlchemyError as exc:  # only a planner hint: the run goes on with the old statistics
            log.warning("users not re-analyzed", extra={"error": type(exc).__name__})
            return
        log.info("users re-analyzed", extra={"rows": rows, "seconds": round(time.monotonic() - started, 3)})
