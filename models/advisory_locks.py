"""Session-level Postgres advisory locks held on a dedicated connection: how a run (reconciliation, sweep,
housekeeping) makes sure it is the only one, across processes and machines.

The lock lives as long as its connection's session, so a process that dies releases it with its connection; no row
to clean up, no expiry to guess.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, func, select

POLL_SECONDS = 0.5


@contextmanager
def hold_advisory_lock(engine: Engine, key: int, *, wait_seconds: float = 0.0) -> Iterator[Connection | None]:
    """Try lock ``key`` for up to ``wait_seconds`` (default: without waiting); yields the connection that holds it
    (autocommit, no open transaction, free for the holder's own statements), or ``None`` when it was not taken.

    The lock is released when the block ends.
    """
    with engine.connect() as raw:
        conn = raw.execution_options(isolation_level="AUTOCOMMIT")
        deadline = time.monotonic() + wait_seconds
        while True:
            taken = bool(conn.execute(select(func.pg_try_advisory_lock(key))).scalar())
            if taken or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        try:
            yield conn if taken else None
        finally:
            if taken:
                conn.execute(select(func.pg_advisory_unlock(key)))
