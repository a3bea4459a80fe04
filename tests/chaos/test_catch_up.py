"""Bounded staleness, tested end to end: the web tier is down for two minutes while the directory changes, every
delivery made meanwhile fails, and after the restart the table equals the directory within five minutes, without a
nightly run, whether or not the directory supports ``meta.lastModified`` filters; the SCIM rate limit is never hit.

Everything is real: private stand-ins over HTTP, gunicorn, Celery workers and beat from the Procfile. The two cases
(filter honoured, filter refused) run side by side, each a pipeline with its own stand-in, key prefix and database,
so the two-minute outage is waited for once. Beat is down with the web tier (a deploy), the periodic sweep is off and
the nightly cron points at January: only the catch-up requested by gunicorn's start and the drift check (for
deletions, which no filter shows) repair the table.

The drift check's sample (:data:`DRIFT_PER_MINUTE`) is chosen so that it alone could not make the deadline: it would
need ``SEEDED / DRIFT_PER_MINUTE`` minutes (over five) after its first tick a minute after beat starts; with the
catch-up it only has the users the catch-up did not list (the unchanged and the deleted) left to walk.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.chaos.conftest import WEIGHTS, Pipeline, random_changes, reading
from tests.polling import wait_for
from tests.worker_process import ProcfileProcess

SEED = 20261130
SEEDED = 400
CHANGES = 500
OUTAGE_SECONDS = 120
# The changes are spread over the outage's first part, in batches; the rest lets the last deliveries fail.
CHANGE_BATCHES = 10
CHANGING_SECONDS = 90
DEADLINE_SECONDS = 300
DRIFT_PER_MINUTE = 75
MARGIN_SECONDS = 5
DELETED = "deleted in the directory"


def full_runs(database_url: str | None = None) -> list[tuple[int, str]]:
    from models.tables import SyncRun

    with reading(database_url) as session:
        # In id order: without it Postgres returns rows in heap order, which an UPDATE (a run finishing) changes.
        rows = session.execute(
            select(SyncRun.id, SyncRun.trigger).where(SyncRun.kind == "full").order_by(SyncRun.id)
        ).all()
    return [(int(run_id), str(trigger)) for run_id, trigger in rows]


def changed_users(differences: list[str]) -> set[str]:
    """The users whose differences a change-time filter shows (every kind but a deletion)."""
    return {line.split(":", 1)[0] for line in differences if DELETED not in line}


@dataclass
class Case:
    """One pipeline through the outage, and what it showed."""

    mode: str
    pipeline: Pipeline
    beat: ProcfileProcess
    rng: random.Random
    full_runs_before: list[tuple[int, str]] = field(default_factory=list)
    ledger: dict[str, Any] = field(default_factory=dict)
    mix: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WEIGHTS, 0))
    lost: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    only_deletions_after: float | None = None
    zero_after: float | None = None
    progress: list[tuple[int, int]] = field(default_factory=list)

    def ledger_delta(self) -> dict[str, int]:
        now = self.pipeline.admin.webhook_status()
        return {k: int(now[k]) - int(self.ledger[k]) for k in ("emitted", "delivered", "failed", "dropped")}


def prepare(make_pipeline: Callable[..., Pipeline], tmp_path: Path, mode: str, own_database: bool) -> Case:
    """A pipeline in sync with 400 users, subscribed, its deliveries applied; beat made but not started."""
    pipeline = make_pipeline(
        own_database=own_database,
        # No pause between retries: the stand-in sends one delivery at a time, and 500 failures at its usual 0.75 s
        # each would outlast the outage. Each still fails for real, after four refused connections.
        standin_overrides={"lastmodified_filter": mode, "webhook_retry_backoff_s": (0.0, 0.0, 0.0)},
        SCIM_RATE_PER_MINUTE="200",
        RECONCILE_CRON="0 2 1 1 *",
        RECONCILE_MAX_DEACTIVATE_SHARE="0.1",
        INCREMENTAL_SWEEP_SECONDS="0",
        INCREMENTAL_MARGIN_SECONDS=str(MARGIN_SECONDS),
        DRIFT_SAMPLE_PER_MINUTE=str(DRIFT_PER_MINUTE),
    )
    beat = ProcfileProcess("beat", {**pipeline.env, "BEAT_SCHEDULE_FILE": str(tmp_path / f"beat-{mode}")})
    pipeline.processes.append(beat)
    pipeline.standin.directory.seed(SEEDED, prefix=f"outage-{mode}")
    seeded = time.time()
    assert pipeline.reconcile_on_worker()["status"] == "succeeded"
    case = Case(mode, pipeline, beat, random.Random(SEED), full_runs(pipeline.database_url))
    pipeline.subscribe()
    # The last delivery before the outage comes more than the margin after the seed, so the catch-up lists only the
    # users changed since (as in a directory whose users were not all created a moment before the outage).
    wait_for(lambda: time.time() - seeded > MARGIN_SECONDS + 1, MARGIN_SECONDS + 5, "the seed to age", interval=0.2)
    random_changes(pipeline.standin.directory, case.rng, 20)
    pipeline.drain(timeout=60)
    assert pipeline.differences() == []
    assert pipeline.admin.webhook_status()["failed"] == 0
    return case


@pytest.mark.timeout(OUTAGE_SECONDS + DEADLINE_SECONDS + 240)
def test_after_two_minutes_down_the_table_has_no_difference_within_five_minutes_with_and_without_the_filter(
    make_pipeline: Callable[..., Pipeline], tmp_path: Path, capsys: Any
) -> None:
    cases = [
        prepare(make_pipeline, tmp_path, "honour", own_database=False),
        prepare(make_pipeline, tmp_path, "refuse", own_database=True),
    ]

    # The outage: the web tier (and beat) stop and the directories change; every delivery fails (connection
    # refused, retried, given up) while the web tier is still down, which the stand-ins' ledgers show.
    for case in cases:
        assert case.pipeline.web is not None
        case.ledger = case.pipeline.admin.webhook_status()
        case.pipeline.web.stop()
    stopped = time.monotonic()
    per_batch = CHANGES // CHANGE_BATCHES
    for batch in range(CHANGE_BATCHES):
        due = batch * CHANGING_SECONDS / (CHANGE_BATCHES - 1)
        wait_for(lambda: time.monotonic() - stopped >= due, due + 5, "the next batch of changes", interval=0.2)  # noqa: B023
        for case in cases:
            made = random_changes(case.pipeline.standin.directory, case.rng, per_batch, first=1000 + batch * per_batch)
            case.mix = {kind: case.mix[kind] + made[kind] for kind in WEIGHTS}
    for case in cases:
        assert case.pipeline.admin.wait_for_deliveries(timeout=OUTAGE_SECONDS - CHANGING_SECONDS - 5)["idle"]
    wait_for(lambda: time.monotonic() - stopped >= OUTAGE_SECONDS, OUTAGE_SECONDS + 5, "the outage", interval=0.5)
    for case in cases:
        delta = case.ledger_delta()
        # Every event of the outage failed, none was delivered (a change that changes nothing, such as disabling a
        # disabled user, emits none).
        assert delta["failed"] == delta["emitted"] > CHANGES * 0.8, delta
        assert (delta["delivered"], delta["dropped"]) == (0, 0), delta
        assert case.pipeline.admin.webhook_status()["pending"] == 0
        case.lost = case.pipeline.differences()
        assert len(case.lost) > 200, case.lost[:5]

    # Back: Asgardeo's real limit from now on, and our budget at the same figure.
    outage = time.monotonic() - stopped
    for case in cases:
        case.pipeline.admin.set_rate_limit(200)
        assert case.pipeline.web is not None
        case.pipeline.web.start()
        case.beat.start()
    restarted = time.monotonic()
    polls = 0
    while time.monotonic() - restarted < DEADLINE_SECONDS and polls < DEADLINE_SECONDS:
        polls += 1
        waiting = [case for case in cases if case.zero_after is None]
        if not waiting:
            break
        for case in waiting:
            case.left = case.pipeline.differences()
            since = time.monotonic() - restarted
            case.progress.append((round(since), len(case.left)))
            if case.only_deletions_after is None and not changed_users(case.left):
                case.only_deletions_after = since
            if not case.left:
                case.zero_after = since
        time.sleep(1)

    with capsys.disabled():
        for case in cases:
            catch_up = case.pipeline.recorded("sync:incremental:catch_up")
            print(
                f"\n[{case.mode}] outage {outage:.0f}s, changes {case.mix}, deliveries {case.ledger_delta()}, "
                f"differences after the outage {len(case.lost)} ({len(changed_users(case.lost))} users changed, "
                f"{len(case.lost) - len([x for x in case.lost if DELETED not in x])} deleted); only deletions left "
                f"after {case.only_deletions_after}s, 0 differences after {case.zero_after}s; catch-up {catch_up}; "
                f"last drift check {case.pipeline.recorded('drift:last')}; "
                f"429s {case.pipeline.admin.stats()['rate_limited']}; (s, differences) {case.progress[::10]}"
            )
            if case.left and case.pipeline.worker is not None:
                print(f"worker:\n{case.pipeline.worker.log_tail(60)}\nbeat:\n{case.beat.log_tail(20)}")
    for case in cases:
        assert case.left == [], (case.mode, case.left[:5])
        assert case.zero_after is not None
        assert case.zero_after < DEADLINE_SECONDS
        catch_up = case.pipeline.recorded("sync:incremental:catch_up")
        assert catch_up is not None, case.mode
        assert catch_up["basis"] == "last_delivery"
        runs_since = full_runs(case.pipeline.database_url)[len(case.full_runs_before) :]
        if case.mode == "honour":
            assert catch_up["mode"] == "filter"
            assert catch_up["status"] == "succeeded"
            # The catch-up, not the drift check, repaired every change a filter shows.
            assert catch_up["updated"] >= len(changed_users(case.lost))
            # It listed the users changed since the last delivery, not everyone: the drift check had the rest to walk.
            assert catch_up["seen"] < SEEDED * 0.9
            assert runs_since == []  # no nightly run, no full run at all
        else:
            assert catch_up["mode"] == "full"
            assert [trigger for _, trigger in runs_since] == ["catch_up"]
        assert case.pipeline.admin.stats()["rate_limited"] == 0


SWEEP_SECONDS = 20


@pytest.mark.timeout(240)
def test_changes_whose_deliveries_were_dropped_are_repaired_by_the_sweep_within_one_period(
    make_pipeline: Callable[..., Pipeline], tmp_path: Path
) -> None:
    """No downtime: every delivery is dropped silently while the directory changes; beat's sweep (the drift check
    off, so it alone) repairs the table within one period of its own."""
    pipeline = make_pipeline(
        SCIM_RATE_PER_MINUTE="200",
        RECONCILE_CRON="0 2 1 1 *",
        INCREMENTAL_SWEEP_SECONDS=str(SWEEP_SECONDS),
        INCREMENTAL_MARGIN_SECONDS="5",
        DRIFT_SAMPLE_PER_MINUTE="0",
    )
    directory = pipeline.standin.directory
    directory.seed(200, prefix="dropped")
    assert pipeline.reconcile().status == "succeeded"
    pipeline.subscribe(seed=SEED, drop_rate=1.0)
    pipeline.admin.set_rate_limit(200)
    beat = ProcfileProcess("beat", {**pipeline.env, "BEAT_SCHEDULE_FILE": str(tmp_path / "beat-schedule")})
    pipeline.processes.append(beat)
    beat.start()
    changed = time.monotonic()
    mix = {k: v for k, v in random_changes(directory, random.Random(SEED + 3), 100).items() if k != "delete"}
    assert pipeline.admin.webhook_status()["dropped"] > 0
    assert pipeline.differences()
    # The first sweep is due one period after beat started; it must leave nothing but deletions (no filter shows
    # them, the drift check or the nightly run does) within that period and the sweep's own few seconds.
    wait_for(
        lambda: all(DELETED in m for m in pipeline.differences()),
        SWEEP_SECONDS + 30,
        f"the sweep to repair {mix}",
        interval=1,
    )
    assert time.monotonic() - changed < SWEEP_SECONDS + 30
    sweep = pipeline.recorded("sync:incremental:sweep")
    assert sweep is not None
    assert (sweep["status"], sweep["mode"]) == ("succeeded", "filter")
    assert pipeline.admin.stats()["rate_limited"] == 0
