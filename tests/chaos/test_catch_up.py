"""Bounded staleness, tested end to end: the web tier is down while the directory changes, its deliveries fail, and
after the restart the table equals the directory within five minutes, without a nightly run, whether or not the
directory supports ``meta.lastModified`` filters; the SCIM rate limit is never hit.

Everything is real: a private stand-in over HTTP, gunicorn, a Celery worker and beat from the Procfile. The outage is
:data:`OUTAGE_SECONDS` (shorter than the two minutes of the issue, to keep CI time sane: what matters is that every
delivery made meanwhile failed, which the stand-in's ledger shows). Beat is down with the web tier (a deploy), the
periodic sweep is off and the nightly cron points at January: only the catch-up requested by gunicorn's start and the
drift check (for deletions, which no filter shows) repair the table.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from tests.chaos.conftest import Pipeline, mismatches
from tests.polling import wait_for
from tests.worker_process import ProcfileProcess

SEED = 20261130
SEEDED = 400
CHANGES = 500
OUTAGE_SECONDS = 40
DEADLINE_SECONDS = 300
# Updates, disables, deletions (and some enables and locks so the mix stays realistic); deletions stay under the
# guard's share (RECONCILE_MAX_DEACTIVATE_SHARE below), as in a real day.
WEIGHTS = {"update": 60, "disable": 20, "enable": 8, "lock": 8, "delete": 4}


def outage_changes(directory: Any, rng: random.Random, count: int) -> dict[str, int]:
    live = [u.id for u in directory.all_users()]
    done = dict.fromkeys(WEIGHTS, 0)
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    for i in range(count):
        kind = rng.choices(kinds, weights)[0]
        target = rng.choice(live)
        if kind == "update":
            field = rng.choice(("given_name", "family_name", "email", "groups"))
            value: Any = {
                "given_name": f"Given{i}",
                "family_name": f"Family{i}",
                "email": f"outage{i:05d}@example.com",
                "groups": rng.sample(("Employees", "Sales", "HR", "Finance"), rng.randint(0, 2)),
            }[field]
            directory.update_profile(target, {field: value})
        elif kind == "delete":
            directory.delete_user(target)
            live.remove(target)
        elif kind == "lock":
            directory.set_locked(target, True)
        else:
            directory.set_disabled(target, kind == "disable")
        done[kind] += 1
    return done


def full_runs() -> list[tuple[int, str]]:
    from models.db import unit_of_work
    from models.tables import SyncRun

    with unit_of_work() as session:
        # In id order: without it Postgres returns rows in heap order, which an UPDATE (a run finishing) changes.
        rows = session.execute(
            select(SyncRun.id, SyncRun.trigger).where(SyncRun.kind == "full").order_by(SyncRun.id)
        ).all()
    return [(int(run_id), str(trigger)) for run_id, trigger in rows]


def recorded(pipeline: Pipeline, name: str) -> dict[str, Any] | None:
    """A value the pipeline's processes keep in Redis (under their own key prefix)."""
    from tasks.redis_client import get_redis

    raw = get_redis().get(pipeline.env["REDIS_KEY_PREFIX"] + name)
    return dict(orjson.loads(raw)) if raw else None


@pytest.mark.timeout(DEADLINE_SECONDS + 300)
@pytest.mark.parametrize("filter_mode", ["honour", "refuse"])
def test_after_the_web_tier_was_down_the_table_has_no_difference_within_five_minutes_without_a_nightly_run(
    make_pipeline: Callable[..., Pipeline], tmp_path: Path, capsys: Any, filter_mode: str
) -> None:
    pipeline = make_pipeline(
        standin_overrides={"lastmodified_filter": filter_mode},
        SCIM_RATE_PER_MINUTE="200",
        RECONCILE_CRON="0 2 1 1 *",
        RECONCILE_MAX_DEACTIVATE_SHARE="0.1",
        INCREMENTAL_SWEEP_SECONDS="0",
        INCREMENTAL_MARGIN_SECONDS="20",
        DRIFT_SAMPLE_PER_MINUTE="150",
    )
    beat = ProcfileProcess("beat", {**pipeline.env, "BEAT_SCHEDULE_FILE": str(tmp_path / "beat-schedule")})
    pipeline.processes.append(beat)
    directory = pipeline.standin.directory
    directory.seed(SEEDED, prefix="outage")
    assert pipeline.reconcile().status == "succeeded"
    before = full_runs()
    pipeline.subscribe()
    outage_changes(directory, random.Random(SEED), 20)
    pipeline.drain(timeout=60)
    assert mismatches(pipeline.admin.dump()) == []

    # The outage: the web tier (and beat) stop and the directory changes. Asgardeo gives a delivery up after about
    # 20 s of retries; the stand-in's publisher, sequential, would need minutes to fail 500 deliveries one by one, so
    # it drops them instead (the same loss, sooner). One delivery is tried for real first, and fails.
    assert pipeline.web is not None
    pipeline.web.stop()
    stopped = time.monotonic()
    ledger = pipeline.admin.webhook_status()
    outage_changes(directory, random.Random(SEED + 1), 1)
    wait_for(lambda: pipeline.admin.webhook_status()["failed"] > ledger["failed"], 30, "a delivery to fail")
    pipeline.admin.set_chaos(seed=SEED, drop_rate=1.0)
    ledger = pipeline.admin.webhook_status()
    mix = outage_changes(directory, random.Random(SEED + 2), CHANGES - 1)
    wait_for(lambda: time.monotonic() - stopped >= OUTAGE_SECONDS, OUTAGE_SECONDS + 5, "the outage", interval=0.5)
    pipeline.admin.set_chaos(seed=SEED)
    after = pipeline.admin.webhook_status()
    dropped = after["dropped"] - ledger["dropped"]
    lost = mismatches(pipeline.admin.dump())
    # Every event of the outage was lost (a change that changes nothing, such as disabling a disabled user, emits none).
    assert dropped == after["emitted"] - ledger["emitted"] > CHANGES / 2
    assert len(lost) > 100

    # Back: Asgardeo's real limit from now on, and our budget at the same figure.
    pipeline.admin.set_rate_limit(200)
    restarted = time.monotonic()
    pipeline.web.start()
    beat.start()
    left: list[str] = lost
    progress: list[tuple[int, int]] = []
    while time.monotonic() - restarted < DEADLINE_SECONDS:
        left = mismatches(pipeline.admin.dump())
        progress.append((round(time.monotonic() - restarted), len(left)))
        if not left:
            break
        time.sleep(2)
    took = time.monotonic() - restarted
    catch_up = recorded(pipeline, "sync:incremental:catch_up")
    drift = recorded(pipeline, "drift:last")
    stats = pipeline.admin.stats()
    with capsys.disabled():
        print(
            f"\n[{filter_mode}] outage {time.monotonic() - stopped - took:.0f}s, changes {mix}, lost deliveries "
            f"{dropped} + 1, differences after the outage {len(lost)}, 0 differences after {took:.0f}s; catch-up "
            f"{catch_up}; last drift check {drift}; 429s {stats['rate_limited']}; (s, differences) {progress[::10]}"
        )
        if left and pipeline.worker is not None:
            print(f"worker:\n{pipeline.worker.log_tail(60)}\nbeat:\n{beat.log_tail(20)}")
    assert left == [], left[:5]
    assert took < DEADLINE_SECONDS
    assert catch_up is not None
    assert catch_up["basis"] == "last_delivery"
    if filter_mode == "honour":
        assert catch_up["mode"] == "filter"
        assert catch_up["status"] == "succeeded"
        assert full_runs() == before  # no nightly run, no full run at all
    else:
        assert catch_up["mode"] == "full"
        assert [trigger for _, trigger in full_runs()[len(before) :]] == ["catch_up"]
    assert stats["rate_limited"] == 0


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
    mix = {k: v for k, v in outage_changes(directory, random.Random(SEED + 3), 100).items() if k != "delete"}
    assert pipeline.admin.webhook_status()["dropped"] > 0
    assert mismatches(pipeline.admin.dump())
    # The first sweep is due one period after beat started; it must leave nothing but deletions (no filter shows
    # them, the drift check or the nightly run does) within that period and the sweep's own few seconds.
    wait_for(
        lambda: all("deleted in the directory" in m for m in mismatches(pipeline.admin.dump())),
        SWEEP_SECONDS + 30,
        f"the sweep to repair {mix}",
        interval=1,
    )
    assert time.monotonic() - changed < SWEEP_SECONDS + 30
    sweep = recorded(pipeline, "sync:incremental:sweep")
    assert sweep is not None
    assert (sweep["status"], sweep["mode"]) == ("succeeded", "filter")
    assert pipeline.admin.stats()["rate_limited"] == 0
