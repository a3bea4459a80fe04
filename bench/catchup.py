# ruff: noqa: PLC0415 - app modules load after the environment is set, exactly as a fresh process would
"""The catch-up after an outage of the web tier: users repaired per second, and the time to 0 differences.

    python -m bench.catchup [--outage-seconds 120] [--changes 500] [--users 400] [--drift-per-minute 75]

For each case (the directory honours ``meta.lastModified`` filters; it refuses them, so the catch-up is a full run):
web, worker and beat run as the Procfile starts them, on a fresh database and Redis prefix, against an Asgardeo
stand-in on loopback whose deliveries go to the web tier. ``--users`` users are synced and subscribed; then web and
beat stop for ``--outage-seconds`` while ``--changes`` changes (updates, disables, enables, locks, a few deletions)
are made at the directory, spread over the outage; every delivery of them fails (the stand-in's ledger is checked).
Then Asgardeo's 200/min limit is switched on, our budget is the same, web and beat start again and the table is
compared with the directory every ``--poll-seconds`` until it has 0 differences (bounded by ``--deadline-seconds``).
The periodic sweep is off and the nightly run is not due: only the catch-up gunicorn asks for and the drift check
(for deletions, which no filter shows; ``--drift-per-minute`` users a minute, first a minute after beat starts)
repair the table.

Reported per case: the differences the outage left, the catch-up's own time and users repaired per second, the
time from the restart until only deletions differed and until nothing did, 429s; and the same-run baseline: a full
reconciliation over the same directory afterwards (users listed per second). Results go to
``bench/results/catchup.json``. The two cases run one after the other, so they do not disturb each other's timings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._support import ROOT, services

RESULTS = ROOT / "bench" / "results" / "catchup.json"
SEED = 20261130
DELETED = "deleted in the directory"
MARGIN_SECONDS = 5


def seconds_between(started: str, finished: str) -> float:
    return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()


def run_seconds(run_id: int) -> float | None:
    """A sync run's duration from its own row (``finished_at - started_at``)."""
    from models.db import unit_of_work
    from models.tables import SyncRun

    with unit_of_work() as session:
        run = session.get(SyncRun, run_id)
        if run is None or run.started_at is None or run.finished_at is None:
            return None
        return (run.finished_at - run.started_at).total_seconds()


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def run_case(base_env: dict[str, str], mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """One outage and its repair against a stand-in whose filter support is ``mode`` (``honour`` or ``refuse``)."""
    import orjson

    from asgardeo_standin.client import StandinAdmin
    from asgardeo_standin.server import start_in_thread
    from localrun.embedded import free_port
    from tasks.redis_client import get_redis
    from tests.chaos.conftest import WEIGHTS, mismatches, random_changes
    from tests.stack import STACK, WEBHOOK_SECRET
    from tests.worker_process import VENV_BIN, Broker, ProcfileProcess, isolated_env, wait_http_ok

    port = free_port()
    handle = start_in_thread(
        STACK.standin_config(port=0, lastmodified_filter=mode, webhook_retry_backoff_s=(0.0, 0.0, 0.0))
    )
    admin = StandinAdmin(handle.root_url)
    env = isolated_env(
        base_env,
        **{
            **STACK.environment(),
            "WEBHOOK_SECRETS": WEBHOOK_SECRET,
            "ASGARDEO_BASE_URL": handle.base_url,
            "PATH": f"{VENV_BIN}{os.pathsep}{base_env.get('PATH', '')}",
            "SCIM_RATE_PER_MINUTE": "200",
            "RECONCILE_CRON": "0 2 1 1 *",
            "RECONCILE_MAX_DEACTIVATE_SHARE": "0.1",
            "INCREMENTAL_SWEEP_SECONDS": "0",
            "INCREMENTAL_MARGIN_SECONDS": str(MARGIN_SECONDS),
            "DRIFT_SAMPLE_PER_MINUTE": str(args.drift_per_minute),
            "WEB_BIND": f"127.0.0.1:{port}",
            "BEAT_SCHEDULE_FILE": str(Path(tempfile.mkdtemp(prefix="catchup-beat-")) / "schedule"),
        },
    )
    web, worker, beat = (ProcfileProcess(name, env) for name in ("web", "worker", "beat"))
    broker = Broker(env)
    rng = random.Random(SEED)

    def recorded(name: str) -> dict[str, Any] | None:
        raw = get_redis().get(env["REDIS_KEY_PREFIX"] + name)
        return dict(orjson.loads(raw)) if raw else None

    def restart_catch_up() -> dict[str, Any] | None:
        """The restart's catch-up; the first start's was recorded too (skipped: never in sync then), without a basis."""
        found = recorded("sync:incremental:catch_up")
        return found if found and "basis" in found else None

    try:
        worker.start()
        web.start()
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", process=web)
        broker.wait_ready(process=worker)
        handle.directory.seed(args.users, prefix=f"catchup-{mode}")
        seeded = time.time()
        first = broker.send("reconcile.run", kwargs={"trigger": "bench"}).get(timeout=300)
        assert first["status"] == "succeeded", first
        status = admin.set_webhook(f"http://127.0.0.1:{port}/webhooks/asgardeo", WEBHOOK_SECRET, wait_verified=15)
        assert status["verified"], status
        # A delivery accepted just before the outage, more than the margin after the seed: the catch-up then lists
        # only the users changed since, as in a directory whose users were not all created a moment before.
        wait_until(lambda: time.time() - seeded > MARGIN_SECONDS + 1, MARGIN_SECONDS + 5, "the seed to age")
        random_changes(handle.directory, rng, 10, first=0)
        admin.wait_for_deliveries(timeout=30)
        wait_until(lambda: not mismatches(admin.dump()), 60, "the deliveries before the outage")
        ledger = admin.webhook_status()

        web.stop()
        stopped = time.monotonic()
        batches = 10
        per_batch = args.changes // batches
        spread = args.outage_seconds * 0.75
        mix = dict.fromkeys(WEIGHTS, 0)
        for batch in range(batches):
            due = batch * spread / (batches - 1)
            wait_until(lambda: time.monotonic() - stopped >= due, due + 5, "the next batch", interval=0.1)  # noqa: B023
            made = random_changes(handle.directory, rng, per_batch, first=1000 + batch * per_batch)
            mix = {kind: mix[kind] + made[kind] for kind in WEIGHTS}
        admin.wait_for_deliveries(timeout=max(5.0, args.outage_seconds - spread))
        wait_until(lambda: time.monotonic() - stopped >= args.outage_seconds, args.outage_seconds + 5, "the outage")
        after = admin.webhook_status()
        deliveries = {k: int(after[k]) - int(ledger[k]) for k in ("emitted", "delivered", "failed", "dropped")}
        if deliveries["failed"] != deliveries["emitted"] or deliveries["delivered"]:
            raise RuntimeError(f"not every delivery of the outage failed: {deliveries}")
        lost = mismatches(admin.dump())
        outage = time.monotonic() - stopped

        admin.set_rate_limit(200)
        restarted = time.monotonic()
        web.start()
        beat.start()
        only_deletions_after = zero_after = None
        progress: list[tuple[float, int]] = []
        while time.monotonic() - restarted < args.deadline_seconds:
            left = mismatches(admin.dump())
            since = round(time.monotonic() - restarted, 1)
            progress.append((since, len(left)))
            if only_deletions_after is None and all(DELETED in line for line in left):
                only_deletions_after = since
            if not left:
                zero_after = since
                break
            time.sleep(args.poll_seconds)
        catch_up = wait_until(restart_catch_up, 60, "the catch-up's outcome")
        rate_limited = admin.stats()["rate_limited"]

        # The same-run baseline: a full reconciliation over the same directory, now in sync (users listed per second).
        baseline = broker.send("reconcile.run", kwargs={"trigger": "bench"}).get(timeout=600)
        full_seconds = run_seconds(int(baseline["run_id"]))
    finally:
        for process in (beat, web, worker):
            process.close()
        admin.set_webhook(None)
        handle.stop()
        broker.close()

    took = seconds_between(catch_up["started_at"], catch_up["finished_at"])
    repaired = int(catch_up.get("created") or 0) + int(catch_up.get("updated") or 0)
    repaired += int(catch_up.get("deactivated") or 0)
    listed = int(catch_up.get("seen") or 0)
    return {
        "mode": mode,
        "outage_seconds": round(outage, 1),
        "changes": mix,
        "deliveries_during_outage": deliveries,
        "differences_after_outage": len(lost),
        "users_differing": len({line.split(":", 1)[0] for line in lost}),
        "deleted_differing": sum(DELETED in line for line in lost),
        "catch_up": {
            "mode": catch_up.get("mode"),
            "status": catch_up.get("status"),
            "seconds": round(took, 3),
            "listed": listed,
            "repaired": repaired,
            "repaired_per_second": round(repaired / took, 1) if took else None,
            "listed_per_second": round(listed / took, 1) if took else None,
        },
        "only_deletions_left_after_s": only_deletions_after,
        "zero_differences_after_s": zero_after,
        "rate_limited_429": rate_limited,
        "progress": progress[:: max(1, len(progress) // 20)],
        "baseline_full_run": {
            "status": baseline.get("status"),
            "seen": baseline.get("seen"),
            "seconds": full_seconds,
            "users_per_second": round(int(baseline.get("seen") or 0) / full_seconds, 1) if full_seconds else None,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-seconds", type=float, default=120.0)
    parser.add_argument("--changes", type=int, default=500)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--drift-per-minute", type=int, default=75)
    parser.add_argument("--deadline-seconds", type=float, default=600.0)
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--modes", default="honour,refuse", help="filter support at the stand-in, comma-separated")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    cases = []
    for mode in args.modes.split(","):
        with services() as base_env:
            case = run_case(base_env, mode, args)
        cases.append(case)
        up = case["catch_up"]
        print(
            f"[{mode}] outage {case['outage_seconds']:.0f}s, {case['differences_after_outage']} differences "
            f"({case['users_differing']} users, {case['deleted_differing']} deleted); catch-up ({up['mode']}) "
            f"{up['seconds']:.2f}s: {up['repaired']} repaired ({up['repaired_per_second']}/s), {up['listed']} listed; "
            f"only deletions left after {case['only_deletions_left_after_s']}s, 0 differences after "
            f"{case['zero_differences_after_s']}s; 429s {case['rate_limited_429']}; baseline full run "
            f"{case['baseline_full_run']}",
            flush=True,
        )
    results = {"args": vars(args), "load_average": [round(x, 1) for x in os.getloadavg()], "cases": cases}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {RESULTS.relative_to(ROOT)}")
    met = all(c["zero_differences_after_s"] is not None and c["rate_limited_429"] == 0 for c in cases)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
