"""Benchmark: full reconciliation from a SCIM stand-in, against two baselines measured in the same run.

    python -m bench.reconcile [--sizes 10000,100000] [--limited-users 19000] [--skip-limited]

For each directory size (stand-in in its own process, rate limit off, table empty at the start of every variant):

- ``reconcile``: :func:`tasks.reconcile.reconcile_all` as production runs it (HTTP listing, one upsert statement per
  page, audit rows, run row per page, live publish) -> users/s and peak RSS growth of this process.
- ``rerun_unchanged``: the same again over the table it just filled (the nightly case: nothing to change, every
  user still read, compared and stamped with the run id). Information only; no target.
- ``per_user_loop``: how the old endpoint worked: the same HTTP listing, then for each user a SELECT, an INSERT or
  UPDATE through the ORM and a COMMIT. Measured on the first ``--loop-sample`` users only (it is slow), as users/s.
- ``raw_floor``: the same rows, already in memory (no HTTP), written with psycopg ``executemany`` of one
  ``INSERT ... ON CONFLICT DO UPDATE`` in batches of 1,000: the most a database round trip allows. It is noisy on
  a shared machine, so one warm-up run is discarded and the median of ``--floor-reps`` runs is used, each starting
  from the same state as the reconciliation (empty tables).

Each line also records the load average at its start: the machine is shared, and a load well above the core count
slows every variant (the floor too, which is why the ratios matter more than the absolute numbers).

Then, with the stand-in's 200 requests/minute limit on, a reconciliation of ``--limited-users`` users (about one
minute of requests) through the shared budget -> achieved requests/minute and the stand-in's 429 count.

Needs Postgres and Redis: ``DATABASE_URL``/``REDIS_URL`` or embedded servers (tests/services.py). Prints a table and
writes ``bench/results/reconcile.json``.
"""

# The app reads its settings at import time, so its modules are imported after services() set the environment.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import psycopg
import requests
from sqlalchemy import select, text

from bench._support import ROOT, services
from localrun.embedded import free_port
from tests.services import libpq_url

RESULTS = ROOT / "bench" / "results" / "reconcile.json"
M2M_ID, M2M_SECRET, ORG = "bench-m2m", "bench-m2m-secret", "bench"


@contextmanager
def reconcile_services() -> Iterator[None]:
    """The benchmarks' fresh database and Redis prefix (:func:`bench._support.services`), plus the SCIM client's
    credentials, which every stand-in started here accepts."""
    os.environ.update(
        SCIM_CLIENT_ID=M2M_ID,
        SCIM_CLIENT_SECRET=M2M_SECRET,
        ASGARDEO_BASE_URL="http://127.0.0.1:1/t/bench",  # replaced per stand-in
    )
    with services():
        from models import logs

        logs.configure_logging("WARNING")
        yield


@contextmanager
def standin(users: int, rate_limit: int) -> Iterator[str]:
    """The stand-in in its own process (as Asgardeo would be: not sharing this process's GIL); yields the base URL."""
    port = free_port()
    env = dict(
        os.environ,
        STANDIN_ORG=ORG,
        STANDIN_M2M_CLIENT_ID=M2M_ID,
        STANDIN_M2M_CLIENT_SECRET=M2M_SECRET,
        PYTHONPATH=str(ROOT),
    )
    cmd = [sys.executable, "-m", "asgardeo_standin", "serve", "--port", str(port), "--rate-limit", str(rate_limit)]
    if users:
        cmd += ["--seed", str(users)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                health = requests.get(f"{root}/_standin/health", timeout=2).json()
                if health.get("users", 0) >= users:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("stand-in did not start")
            time.sleep(0.2)
        yield f"{root}/t/{ORG}"
    finally:
        proc.terminate()
        proc.wait(10)


class PeakRss:
    """Samples this process's RSS every 20 ms; ``growth`` is peak minus the value at start, in MB."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.start = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def truncate() -> None:
    from models.db import get_engine

    with get_engine().begin() as conn:
        conn.execute(text("TRUNCATE user_changes, sessions, sync_runs, users RESTART IDENTITY CASCADE"))


def scim_client(base_url: str, rate_per_minute: int = 1_000_000) -> Any:
    """A client with the shared budget sized to ``rate_per_minute`` (unlimited runs must not be throttled by us)."""
    from models.settings import get_settings
    from tasks.scim import ScimClient

    settings = get_settings().model_copy(update={"scim_rate_per_minute": rate_per_minute})
    return ScimClient(base_url, M2M_ID, M2M_SECRET, settings=settings)


def run_reconcile(base_url: str, *, from_empty: bool = True) -> dict[str, Any]:
    from models.db import unit_of_work
    from models.runs import start_full_run
    from tasks.reconcile import reconcile_all

    if from_empty:
        truncate()
    gc.collect()
    with unit_of_work() as session:
        run_id = start_full_run(session, trigger="bench").id
    client = scim_client(base_url)
    load = os.getloadavg()[0]
    with PeakRss() as rss:
        started = time.perf_counter()
        cpu_started = time.process_time()
        outcome = reconcile_all(run_id, client=client)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    assert outcome.status == "succeeded", outcome
    return {
        "seconds": round(elapsed, 3),
        "users": outcome.counters.seen,
        "created": outcome.counters.created,
        "unchanged": outcome.counters.unchanged,
        "users_per_s": round(outcome.counters.seen / elapsed, 1),
        "peak_rss_growth_mb": round(rss.growth_mb, 1),
        "requests": client.requests_sent,
        "process_cpu_seconds": round(cpu, 2),
        "load_average": round(load, 1),
    }


def run_per_user_loop(base_url: str, sample: int) -> dict[str, Any]:
    """The old endpoint: list, then per user SELECT + INSERT/UPDATE + COMMIT through the ORM."""
    from models.db import SessionFactory, get_engine
    from models.tables import User

    truncate()
    get_engine()
    client = scim_client(base_url)
    done = 0
    started = time.perf_counter()
    with SessionFactory() as session:
        for page in client.iter_pages():
            for record in page.users:
                user = session.execute(select(User).where(User.asgardeo_id == record.asgardeo_id)).scalar_one_or_none()
                if user is None:
                    user = User(asgardeo_id=record.asgardeo_id, role="employee")
                    session.add(user)
                user.username, user.email = record.username, record.email
                user.first_name, user.last_name = record.first_name, record.last_name
                user.groups, user.status = sorted(record.groups), record.status
                user.source_version = record.source_version
                session.commit()
                done += 1
                if done >= sample:
                    break
            if done >= sample:
                break
    elapsed = time.perf_counter() - started
    return {"seconds": round(elapsed, 3), "users": done, "users_per_s": round(done / elapsed, 1)}


def fetch_rows(base_url: str) -> list[Any]:
    from tasks.scim import parse_user

    root = base_url.split("/t/", maxsplit=1)[0]
    dump = requests.get(f"{root}/_standin/dump", timeout=300).json()
    return [parse_user(resource) for resource in dump["users"]]


def run_raw_floor(records: list[Any], reps: int) -> dict[str, Any]:
    """One warm-up run, then the median of ``reps`` runs, each from empty tables."""
    runs = [_raw_floor_once(records) for _ in range(reps + 1)][1:]
    seconds = statistics.median(runs)
    return {
        "seconds": round(seconds, 3),
        "users": len(records),
        "users_per_s": round(len(records) / seconds, 1),
        "runs_seconds": [round(r, 3) for r in runs],
        "load_average": round(os.getloadavg()[0], 1),
    }


def _raw_floor_once(records: list[Any]) -> float:
    truncate()
    dsn = libpq_url(os.environ["DATABASE_URL"])
    sql = (
        "INSERT INTO users (asgardeo_id, username, email, first_name, last_name, groups, status, source_version,"
        " last_synced_at) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, now())"
        " ON CONFLICT (asgardeo_id) DO UPDATE SET username = EXCLUDED.username, email = EXCLUDED.email,"
        " first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, groups = EXCLUDED.groups,"
        " status = EXCLUDED.status, source_version = EXCLUDED.source_version, last_synced_at = now()"
    )
    rows = [
        (
            r.asgardeo_id,
            r.username,
            r.email,
            r.first_name,
            r.last_name,
            json.dumps(sorted(r.groups)),
            r.status,
            r.source_version,
        )
        for r in records
    ]
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        for start in range(0, len(rows), 1000):
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(sql, rows[start : start + 1000])
    return time.perf_counter() - started


def run_limited(users: int) -> dict[str, Any]:
    from models.db import unit_of_work
    from models.runs import start_full_run
    from tasks.reconcile import reconcile_all

    truncate()
    with standin(users, rate_limit=200) as base_url:
        client = scim_client(base_url, rate_per_minute=200)
        with unit_of_work() as session:
            run_id = start_full_run(session, trigger="bench").id
        started = time.perf_counter()
        outcome = reconcile_all(run_id, client=client)
        elapsed = time.perf_counter() - started
        stats = requests.get(base_url.split("/t/", maxsplit=1)[0] + "/_standin/stats", timeout=10).json()
    requests_made = client.requests_sent
    per_minute = requests_made / elapsed * 60
    return {
        "users": outcome.counters.seen,
        "status": outcome.status,
        "seconds": round(elapsed, 2),
        "requests": requests_made,
        "requests_per_minute": round(per_minute, 1),
        "budget_per_minute": 200,
        "budget_used": round(per_minute / 200, 3),
        "rate_limited_429": stats["rate_limited"],
        "client_retries": client.retries,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--loop-sample", type=int, default=5000)
    parser.add_argument("--floor-reps", type=int, default=3)
    parser.add_argument("--limited-users", type=int, default=19000)
    parser.add_argument("--skip-limited", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "sizes": {}}
    with reconcile_services():
        for size in (int(s) for s in args.sizes.split(",")):
            with standin(size, rate_limit=0) as base_url:
                records = fetch_rows(base_url)
                entry = {
                    "reconcile": run_reconcile(base_url),
                    "rerun_unchanged": run_reconcile(base_url, from_empty=False),
                    "per_user_loop": run_per_user_loop(base_url, min(size, args.loop_sample)),
                    "raw_floor": run_raw_floor(records, args.floor_reps),
                }
                del records
            rec, loop, raw = entry["reconcile"], entry["per_user_loop"], entry["raw_floor"]
            again = entry["rerun_unchanged"]
            entry["ratio_vs_per_user_loop"] = round(rec["users_per_s"] / loop["users_per_s"], 2)
            entry["ratio_vs_raw_floor"] = round(rec["users_per_s"] / raw["users_per_s"], 3)
            results["sizes"][str(size)] = entry
            print(
                f"{size:>7} users: reconcile {rec['seconds']:.2f}s {rec['users_per_s']:>9.0f} users/s "
                f"peak RSS +{rec['peak_rss_growth_mb']:.1f} MB | per-user loop {loop['users_per_s']:>7.0f} users/s "
                f"(x{entry['ratio_vs_per_user_loop']}) | raw floor {raw['users_per_s']:>8.0f} users/s "
                f"(x{entry['ratio_vs_raw_floor']}; floor runs {raw['runs_seconds']}s) | load {rec['load_average']} | "
                f"unchanged re-run {again['seconds']:.2f}s {again['users_per_s']:.0f} users/s",
                flush=True,
            )
        sizes = sorted(results["sizes"], key=int)
        if len(sizes) >= 2:
            small, large = results["sizes"][sizes[0]], results["sizes"][sizes[-1]]
            results["peak_rss_growth_difference_mb"] = round(
                large["reconcile"]["peak_rss_growth_mb"] - small["reconcile"]["peak_rss_growth_mb"], 1
            )
            print(f"peak RSS growth, largest minus smallest: {results['peak_rss_growth_difference_mb']} MB")
        if not args.skip_limited:
            limited = run_limited(args.limited_users)
            results["rate_limited"] = limited
            print(
                f"200/min limit: {limited['requests']} requests in {limited['seconds']}s = "
                f"{limited['requests_per_minute']}/min ({limited['budget_used']:.0%} of budget), "
                f"429s: {limited['rate_limited_429']}, status {limited['status']}"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
