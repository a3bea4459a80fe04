# ruff: noqa: PLC0415 - app modules load after the environment is set, exactly as a fresh process would
"""How fast the worker applies webhook events, and what each costs it: a backlog drained by ``celery -c 2``.

    python -m bench.drain [--events 4000] [--concurrency 2] [--worker-args "--prefetch-multiplier 4"]

The intake (gunicorn as configured) accepts ``--events`` signed ``userCreated`` deliveries with no worker running,
so each waits in the inbox with its message in the broker; then a Celery worker starts (``--concurrency`` prefork
processes) and the clock runs from its first applied event until every event is applied. Reported: events applied
per second, the worker process tree's CPU time per event, and the same-run baseline: ``events.apply_batch``'s own
function (on batches of the publisher's size) called in this process on a second backlog of the same shape (no
broker, no Celery), per second and CPU per event. The difference is what Celery's messaging, the prefork pool and
the task events cost. Loopback only, bounded in time; fails loudly unless every accepted event was applied. Results
go to ``bench/results/drain.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time

from bench._support import ROOT, celery_worker, gunicorn, load, services, tree_cpu_seconds
from bench.intake import deliveries

RESULTS = ROOT / "bench" / "results" / "drain.json"
DRAIN_DEADLINE_SECONDS = 300.0


def accept(env: dict[str, str], count: int) -> list[int]:
    """``count`` deliveries accepted by the intake; returns the inbox ids of the accepted events."""
    from sqlalchemy import select

    from models.db import SessionFactory, get_engine
    from models.tables import WebhookEvent

    with gunicorn(env) as server:
        result = load(server.port, "/webhooks/asgardeo", deliveries(count), concurrency=16, timeout=120)
    if result.statuses.get(202) != count:
        raise SystemExit(f"the intake did not accept every delivery: {result.statuses}")
    get_engine()
    with SessionFactory() as session:
        return list(session.execute(select(WebhookEvent.id).where(WebhookEvent.status != "applied")).scalars())


def unapplied() -> int:
    from sqlalchemy import func, select

    from models.db import SessionFactory
    from models.tables import WebhookEvent

    with SessionFactory() as session:
        statement = select(func.count()).select_from(WebhookEvent).where(WebhookEvent.status != "applied")
        return int(session.execute(statement).scalar_one())


def worker_drain(env: dict[str, str], events: int, concurrency: int, extra: list[str]) -> dict[str, float]:
    """Start the worker on the backlog and time it until nothing is unapplied."""
    with celery_worker(env, concurrency, extra) as proc:
        # The clock for the rate starts at the first applied event, so the worker's start-up is not counted.
        first_at = cpu_at_first = None
        applied_at_first = 0
        deadline = time.monotonic() + DRAIN_DEADLINE_SECONDS
        while (left := unapplied()) > 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"the worker left {left} events unapplied after {DRAIN_DEADLINE_SECONDS:.0f} s")
            if first_at is None and left < events:
                first_at, cpu_at_first, applied_at_first = time.monotonic(), tree_cpu_seconds(proc.pid), events - left
            time.sleep(0.05)
        if first_at is None or cpu_at_first is None:
            raise SystemExit("the backlog was applied before the first poll; use more --events")
        seconds = time.monotonic() - first_at
        cpu = tree_cpu_seconds(proc.pid) - cpu_at_first
        measured = events - applied_at_first
    return {"events": measured, "per_second": measured / seconds, "cpu_ms_per_event": cpu / measured * 1000}


def direct_apply(ids: list[int]) -> dict[str, float]:
    """The task's own function, called here on batches of the publisher's size one after another: the floor the
    worker is compared with."""
    from models.events import apply_events
    from tasks.events import APPLY_BATCH_SIZE, SERVICES

    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(ids), APPLY_BATCH_SIZE):
        batch = ids[start : start + APPLY_BATCH_SIZE]
        outcomes = apply_events(batch, services=SERVICES)
        if any(outcome.status != "applied" for outcome in outcomes):
            raise SystemExit(f"a batch of {batch[0]}..{batch[-1]} was not wholly applied")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"events": len(ids), "per_second": len(ids) / wall, "cpu_ms_per_event": cpu / len(ids) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--worker-args", default="", help="extra arguments for the worker, for an experiment")
    args = parser.parse_args()
    with services() as env:
        ids = accept(env, args.events)
        direct = direct_apply(ids[: max(1, args.events // 4)])
    with services() as env:
        accept(env, args.events)
        worker = worker_drain(env, args.events, args.concurrency, shlex.split(args.worker_args))
    ratio = worker["per_second"] / direct["per_second"]
    print(f"worker drain (celery -c {args.concurrency}): {worker['per_second']:.0f} events/s, "
          f"{worker['cpu_ms_per_event']:.2f} ms worker CPU per event (n={worker['events']:.0f})")  # fmt: skip
    print(f"direct apply_events loop (one thread): {direct['per_second']:.0f} events/s, "
          f"{direct['cpu_ms_per_event']:.2f} ms CPU per event (n={direct['events']:.0f})")  # fmt: skip
    print(f"ratio worker/direct: {ratio:.2f}x events/s")
    RESULTS.write_text(json.dumps({"worker": worker, "direct": direct, "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
