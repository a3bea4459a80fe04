"""A large housekeeping backlog and a housekeeping run in a process of its own: shared by the large-backlog test and
``bench.housekeeping``, which measure the intake beside such a run (the test asserts what a design fault breaks,
the benchmark reports the tail)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from sqlalchemy import text

from models.db import get_engine
from tests.worker_process import ROOT

BULK_EVENTS = """
INSERT INTO webhook_events (jti, event_type, event_uri, asgardeo_user_id, iat, payload, status, received_at,
                            queued_at, processed_at, updated_at, attempts)
SELECT 'old-' || g, 'userUpdated', 'https://schemas.identity.wso2.org/events/user/event-type/userUpdated',
       md5(g::text), 1, jsonb_build_object('jti', 'old-' || g, 'events', jsonb_build_object('u', repeat('x', 200))),
       'applied', t, t, t, t, 1
FROM generate_series(1, :n) AS g, LATERAL (SELECT now() - make_interval(days => :days) + g * interval '1 ms') AS s(t)
"""
"""``:n`` applied events received ``:days`` days ago (1 ms apart), each with a 200-byte payload."""


def settle_backlog(rows: int, *, older_than_checkpoint: bool = False) -> None:
    """``rows`` old applied events, written through to the disk before any timing starts.

    - ``VACUUM`` first clears the last round's deleted rows, as autovacuum would in production (it is off on the
      test server).
    - ``CHECKPOINT``, by default before the insert: the run's deletes then change pages already changed since the
      last checkpoint, and write no full-page images to the WAL, in every run. Otherwise whether they did depended
      on whether one of Postgres's timed checkpoints (every 5 minutes) fell between the insert and the run. With
      ``older_than_checkpoint`` it comes after the insert, as in production, where a backlog is always older than
      the last checkpoint and its deletion writes each page whole once (about 110 MB of WAL per 200,000 rows
      against about 20 MB).
    - ``os.sync()`` after it: the backlog's own writes (about 100 MB of table and as much WAL for 200,000 rows)
      otherwise reach the disk while the intake is timed, and its commits wait behind them for their WAL flush
      (answers of 60-110 ms in whichever window followed an insert, with or without housekeeping).
    """
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM webhook_events"))
        if not older_than_checkpoint:
            conn.execute(text("CHECKPOINT"))
        conn.execute(text(BULK_EVENTS), {"n": rows, "days": 40})
        conn.execute(text("ANALYZE webhook_events"))
        if older_than_checkpoint:
            conn.execute(text("CHECKPOINT"))
    os.sync()


# The run's own bound on its time, far above what 200,000 rows take (8-12 s on 2 cores).
MAX_SECONDS = 120

# Housekeeping as beat runs it: in a process of its own (a worker's), with the settings' batch size and rest. The
# process imports and connects first and starts on a line on stdin, so its start-up is no part of the comparison.
_HOUSEKEEPING = """
import json, sys
from models.db import get_engine
from models.housekeeping import Retention, housekeep
from models.settings import get_settings
settings = get_settings()
get_engine().connect().close()
print("ready", flush=True)
sys.stdin.readline()
report = housekeep(get_engine(), Retention.from_settings(settings), batch_size=settings.housekeeping_batch_size,
                   max_seconds={max_seconds}, rest_ratio=settings.housekeeping_rest_ratio)
print(json.dumps(report.as_dict()), flush=True)
"""


class HousekeepingProcess:
    """One housekeeping run in a child process with ``env``: ready on entry, started by :meth:`go`."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _HOUSEKEEPING.format(max_seconds=MAX_SECONDS)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout

    def __enter__(self) -> HousekeepingProcess:
        assert self.stdout.readline().strip() == "ready", "the housekeeping process did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.wait()

    def go(self) -> None:
        self.stdin.write("go\n")
        self.stdin.flush()

    def running(self) -> bool:
        return self.process.poll() is None

    def report(self) -> dict[str, Any]:
        """The run's report (``Report.as_dict``), once it has ended."""
        return dict(json.loads(self.stdout.read()))
