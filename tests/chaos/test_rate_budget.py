"""The shared SCIM rate budget holds when everything that calls Asgardeo runs at once: the drift check, the periodic
sweeps, webhooks' coalesced refreshes and a full reconciliation, in real worker and beat processes, against a
stand-in that enforces Asgardeo's per-IP limit over HTTP and answers 429 beyond it.

Together they ask for well over the limit (a drift sample each minute, a refresh per profile change at several a
second, a full run that must confirm dozens of unlisted users one GET each, a sweep every 15 s), so the budget is
what holds them back: the stand-in must count requests close to the limit in its busiest minute, never above it, and
answer no 429. With the budget set above the stand-in's limit (``BUDGET > LIMIT``), this test sees 429s.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tests.chaos.conftest import Pipeline, reading
from tests.polling import wait_for
from tests.worker_process import ProcfileProcess

SEED = 20261201
LIMIT = 200  # the stand-in's, per minute and IP: Asgardeo's documented figure
BUDGET = LIMIT  # SCIM_RATE_PER_MINUTE, as the deployment docs tell operators to set it
SEEDED = 500
GONE = 40  # deleted at the directory with their deliveries dropped: the full run confirms each with a GET
LOAD_SECONDS = 100
CHANGES_PER_SECOND = 3
FULL_RUN_AFTER_SECONDS = 15
LIMITED = ("/scim2/", "/oauth2/")


def limited_requests(stats: dict[str, Any]) -> int:
    """Requests the stand-in counted on the paths its rate limit covers (its admin routes are not among them)."""
    return sum(int(n) for rule, n in stats["requests"].items() if any(part in rule for part in LIMITED))


def busiest_minute(samples: list[tuple[float, int]]) -> int:
    """The most requests between two samples at most 60 s apart (``samples``: (monotonic time, running count))."""
    best, j = 0, 0
    for t, count in samples:
        while t - samples[j][0] > 60:
            j += 1
        best = max(best, count - samples[j][1])
    return best


def runs(kind: str, trigger: str | None = None) -> dict[str, int]:
    """``{status: count}`` of the sync runs of a kind (and trigger)."""
    from models.tables import SyncRun

    query = select(SyncRun.status, func.count()).where(SyncRun.kind == kind).group_by(SyncRun.status)
    if trigger is not None:
        query = query.where(SyncRun.trigger == trigger)
    with reading() as session:
        return {str(status): int(n) for status, n in session.execute(query).all()}


def test_drift_check_sweeps_refreshes_and_a_full_run_together_stay_inside_the_budget_and_earn_no_429(
    make_pipeline: Callable[..., Pipeline], tmp_path: Path, capsys: Any
) -> None:
    pipeline = make_pipeline(
        SCIM_RATE_PER_MINUTE=str(BUDGET),
        # Enough pool processes that the drift check, a full run, a sweep and refreshes all hold one at once.
        WORKER_CONCURRENCY="5",
        RECONCILE_CRON="0 2 1 1 *",
        RECONCILE_MAX_DEACTIVATE_SHARE="0.2",
        INCREMENTAL_SWEEP_SECONDS="15",
        INCREMENTAL_MARGIN_SECONDS="5",
        DRIFT_SAMPLE_PER_MINUTE="60",
    )
    directory = pipeline.standin.directory
    directory.seed(SEEDED, prefix="budget")
    assert pipeline.reconcile().status == "succeeded"  # in the test process, before the limit is on
    pipeline.subscribe(seed=SEED, drop_rate=1.0)
    rng = random.Random(SEED)
    ids = [user.id for user in directory.all_users()]
    for gone in rng.sample(ids, GONE):
        directory.delete_user(gone)
        ids.remove(gone)
    assert pipeline.admin.wait_for_deliveries(timeout=30)["idle"]
    pipeline.admin.set_chaos(seed=SEED)  # deliveries on again: profile changes below are delivered
    pipeline.admin.set_rate_limit(LIMIT)
    beat = ProcfileProcess("beat", {**pipeline.env, "BEAT_SCHEDULE_FILE": str(tmp_path / "beat-schedule")})
    pipeline.processes.append(beat)
    beat.start()
    # Beat's first drift check is a minute away; send one now (what beat does every minute) so it runs from the start.
    pipeline.broker.send("reconcile.drift_check")

    started = time.monotonic()
    samples: list[tuple[float, int]] = [(started, limited_requests(pipeline.admin.stats()))]
    changed = 0
    full_run_sent = False
    while (elapsed := time.monotonic() - started) < LOAD_SECONDS:
        if not full_run_sent and elapsed >= FULL_RUN_AFTER_SECONDS:
            pipeline.broker.send("reconcile.run", kwargs={"trigger": "budget"})
            full_run_sent = True
        # Profile changes at a steady pace: each is a partial webhook event, so a coalesced SCIM refresh.
        while changed < elapsed * CHANGES_PER_SECOND:
            directory.update_profile(rng.choice(ids), {"given_name": f"Budget{changed}"})
            changed += 1
        samples.append((time.monotonic(), limited_requests(pipeline.admin.stats())))
        time.sleep(0.5)
    load_seconds = time.monotonic() - started
    load_requests = samples[-1][1] - samples[0][1]

    # Everything asked for is done (or given up) without a 429; the full run finishes inside the same budget.
    full = wait_for(lambda: runs("full", "budget") if "running" not in runs("full", "budget") else None, 180, "the run")
    pipeline.drain(timeout=120)
    samples.append((time.monotonic(), limited_requests(pipeline.admin.stats())))
    stats = pipeline.admin.stats()
    metrics = pipeline.metrics()
    sweep, drift = pipeline.recorded("sync:incremental:sweep"), pipeline.recorded("drift:last")
    refreshes = runs("user", "event")
    busiest = busiest_minute(samples)
    with capsys.disabled():
        print(
            f"\nbudget {BUDGET}/min, stand-in limit {LIMIT}/min: {load_requests} requests in {load_seconds:.0f}s "
            f"of load ({60 * load_requests / load_seconds:.0f}/min), busiest minute {busiest}, 429s "
            f"{stats['rate_limited']}; budget waits {metrics.get('rate_budget_waits', 0):.0f} "
            f"({metrics.get('rate_budget_wait_seconds', 0):.0f}s); profile changes {changed}, refreshes {refreshes}; "
            f"full run {full}; last sweep {sweep}; last drift check {drift}"
        )
    assert stats["rate_limited"] == 0
    assert metrics.get("scim_throttled", 0) == 0
    # The budget, not a lack of demand, set the pace: close to the limit in the busiest minute, never above it.
    assert LIMIT * 0.85 <= busiest <= LIMIT
    assert metrics.get("rate_budget_waits", 0) > 0
    # And every caller had its share.
    assert full == {"succeeded": 1}
    assert refreshes.get("succeeded", 0) > 0
    assert sweep is not None
    assert sweep["status"] == "succeeded"  # a sweep that met the full run records nothing (it covers the sweep)
    assert drift is not None
    assert drift["checked"] > 0
