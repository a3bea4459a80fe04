# ruff: noqa: PLC0415 - app modules load after the environment is set, exactly as a fresh process would
"""Steady state: deliveries at a fixed rate for a long while, with housekeeping on a shortened schedule.

    python -m bench.soak [--rate 200] [--seconds 600] [--window 5] [--inbox-retention-seconds 360]

Web, worker and beat run as the Procfile starts them, on a fresh database and Redis prefix, loopback only. Beat
runs the relay and housekeeping (every ``--housekeeping-every`` seconds). Retention is shortened: inbox events are
kept ``--inbox-retention-seconds`` (at least WEBHOOK_MAX_AGE_SECONDS + 300 s, which the settings insist on, so the
soak sets WEBHOOK_MAX_AGE_SECONDS to 60 s and builds every delivery just before it is sent), sessions and runs
for 30 s. Beside the webhooks, the soak writes what logins and single-user syncs would: 2 sessions a second (living
10 s, one in four revoked) and a finished single-user run a second.

Deliveries: ``userCreated`` for new users, every 5th a ``userDeleted`` of an earlier one (neither asks for a SCIM
refresh). Reported per ``--window`` seconds: intake p50/p99, end-to-end lag p50/p99 of the events received in the
window (receipt to applied, read a window later), apply backlog (broker queue and unapplied inbox rows), RSS of
the web and worker process trees, and row counts and sizes of the inbox, sessions and runs tables. At the end, the
ledger: every accepted delivery is applied (still in the inbox as ``applied``, or already removed by housekeeping,
which removes only applied and ignored events), nothing failed or left pending, and each created user exists.
Results go to ``bench/results/soak.json``. The checks the issue sets are printed with the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench._support import ROOT, SECRET, load, services
from bench.activity import Sampler, gc_env, read_gc_log, tree
from bench.load import pct
from bench.stalls import median_second, per_second
from tests.services import libpq_url

RESULTS = ROOT / "bench" / "results" / "soak.json"
EVENT_URI = "https://schemas.identity.wso2.org/events/user/event-type/{}"
SIDE_TABLES = ("webhook_events", "sessions", "sync_runs")
CPU_COLUMNS = ("web", "worker", "postgres", "generator", "others")
SLOWEST_SECONDS = 12
WARM_UP_SECONDS = 5.0


class Deliveries(Sequence[tuple[bytes, dict[str, str]]]):
    """``count`` deliveries, each built when the sender asks for it (fresh ``iat``): ``userCreated`` for a new user,
    every 5th a ``userDeleted`` of a user created earlier. Remembers which users were created, to delete some."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.lock = threading.Lock()
        self.created: list[str] = []
        self.creates = 0
        self._creating: dict[int, str] = {}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[bytes, dict[str, str]]:  # type: ignore[override]
        with self.lock:
            if index % 5 == 4 and self.created:
                uid, name = self.created.pop(0), "userDeleted"
            else:
                uid, name = str(uuid.uuid4()), "userCreated"
                self._creating[index] = uid
        user: dict[str, Any] = {"id": uid}
        if name == "userCreated":
            user["claims"] = [{"uri": "http://wso2.org/claims/username", "value": f"{uid}@example.com"}]
        body = {"iss": "https://api.asgardeo.io/t/soak", "jti": str(uuid.uuid4()), "iat": int(time.time() * 1000)}
        body["events"] = {EVENT_URI.format(name): {"user": user}}
        raw = json.dumps(body, separators=(",", ":")).encode()
        sig = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        return raw, {"Content-Type": "application/json", "X-Hub-Signature": sig}

    def answered(self, index: int, status: int) -> None:
        with self.lock:
            uid = self._creating.pop(index, None)
            if uid is not None and status == 202:
                self.created.append(uid)
                self.creates += 1


def send(port: int, rate: float, seconds: float, clients: int, plan: Deliveries) -> list[tuple[float, float, int]]:
    """Open loop at ``rate`` for ``seconds`` through the shared generator: ``(send time, latency ms, status)``."""
    samples: list[tuple[float, float, int]] = []
    lock = threading.Lock()

    def record(index: int, sent_at: float, latency_ms: float, status: int) -> None:
        plan.answered(index, status)
        with lock:
            samples.append((sent_at, latency_ms, status))

    load(port, "/webhooks/asgardeo", plan, concurrency=clients, rate=rate, timeout=seconds + 60, on_response=record)
    return samples


def _send_from_child(pipe: Connection, port: int, rate: float, seconds: float, clients: int) -> None:
    """The sender process: warm up, say so, send the run when told to, and hand back its samples and the number of
    users it created (warm-up included)."""
    warm_up = Deliveries(int(rate * WARM_UP_SECONDS))
    pipe.recv()
    send(port, rate, WARM_UP_SECONDS, clients, warm_up)
    pipe.send("warm")
    pipe.recv()
    plan = Deliveries(int(rate * seconds))
    samples = send(port, rate, seconds, clients, plan)
    pipe.send((samples, plan.creates + warm_up.creates))


class Sender:
    """:func:`send` in a spawned process of its own; :meth:`warm_up`, then :meth:`run` for the timed samples."""

    def __init__(self, port: int, rate: float, seconds: float, clients: int) -> None:
        self.seconds = seconds
        context = multiprocessing.get_context("spawn")
        self.pipe, theirs = context.Pipe()
        self.process = context.Process(target=_send_from_child, args=(theirs, port, rate, seconds, clients))
        self.process.start()
        assert self.process.pid is not None
        self.pid: int = self.process.pid

    def warm_up(self) -> None:
        self.pipe.send("warm up")
        self._expect(WARM_UP_SECONDS + 120)

    def run(self) -> tuple[list[tuple[float, float, int]], int]:
        self.pipe.send("run")
        samples, creates = self._expect(self.seconds + 120)
        return samples, creates

    def _expect(self, timeout: float) -> Any:
        if not self.pipe.poll(timeout):
            raise RuntimeError(f"the sender process did not answer within {timeout:.0f} s")
        return self.pipe.recv()

    def close(self) -> None:
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


class SideTraffic:
    """Logins and single-user syncs, as rows: what housekeeping must keep in check besides the inbox."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="side-traffic", daemon=True)

    def run(self) -> None:
        from models.db import unit_of_work
        from models.runs import finish_run, start_user_run
        from models.sessions import create_session, revoke_session
        from models.tables import User

        with unit_of_work() as session:
            people = [User(asgardeo_id=f"soak-{n}", username=f"soak-{n}@example.com") for n in range(20)]
            session.add_all(people)
        n = 0
        while not self.stop.wait(0.5):
            with unit_of_work() as session:
                issued = create_session(session, people[n % len(people)], ttl_seconds=10)
                if n % 4 == 0:
                    revoke_session(session, issued.session_id, reason="logout")
                if n % 2 == 0:
                    run = start_user_run(session, f"soak-{n % 20}", trigger="soak")
                    finish_run(session, run.id, "succeeded")
            n += 1


LAG_SQL = """
SELECT count(*),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY lag), percentile_disc(0.99) WITHIN GROUP (ORDER BY lag)
FROM (SELECT CAST(extract(epoch FROM coalesce(processed_at, now()) - received_at) * 1000 AS float8) AS lag
      FROM webhook_events WHERE received_at >= to_timestamp(%s) AND received_at < to_timestamp(%s)) s
"""


class LagWatcher:
    """Every window, the lag of the events received in the window before last (a window's time to apply them)."""

    def __init__(self, conninfo: str, start: float, window: float) -> None:
        self.conninfo, self.start_at, self.window = conninfo, start, window
        self.found: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-watcher", daemon=True)

    def start(self) -> LagWatcher:
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(30)
        return self.found

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            n = 0
            while True:
                due = self.start_at + (n + 2) * self.window
                if self._stop.wait(max(0.0, due - time.time())) and time.time() < due:
                    return
                lo = self.start_at + n * self.window
                count, p50, p99 = conn.execute(LAG_SQL, (lo, lo + self.window)).fetchone()  # type: ignore[misc]
                self.found.append({"window": n, "events": count, "lag_p50_ms": p50, "lag_p99_ms": p99})
                n += 1


def windows(
    samples: list[tuple[float, float, int]],
    start: float,
    window: float,
    activity: list[dict[str, Any]],
    lags: list[dict[str, Any]],
    spans: int,
) -> list[dict[str, Any]]:
    rows = []
    by_window = {lag["window"]: lag for lag in lags}
    for n in range(spans):
        lo, hi = start + n * window, start + (n + 1) * window
        lat = [ms for at, ms, _ in samples if lo <= at < hi]
        ticks = [a for a in activity if lo <= a["t"] < hi]
        last = ticks[-1] if ticks else {}
        inbox = last.get("inbox", {})
        tables = last.get("tables", {})
        lag = by_window.get(n, {})
        before = [a for a in activity if a["t"] < lo]
        cpu: dict[str, int] = {}
        if ticks and before:
            span = last["t"] - before[-1]["t"]
            for name in ("web", "worker", "postgres", "generator", "machine"):
                cpu[name] = round(100 * (last[f"{name}_cpu_s"] - before[-1][f"{name}_cpu_s"]) / span)
            cpu["others"] = max(0, cpu.pop("machine") - sum(cpu.values()))
        rows.append(
            {
                "from_s": round(n * window, 1),
                "n": len(lat),
                "p50_ms": pct(lat, 0.5),
                "p99_ms": pct(lat, 0.99),
                "lag_p50_ms": round(lag["lag_p50_ms"], 1) if lag.get("lag_p50_ms") is not None else None,
                "lag_p99_ms": round(lag["lag_p99_ms"], 1) if lag.get("lag_p99_ms") is not None else None,
                "queue": max((a["queue"] for a in ticks), default=0),
                "unapplied": inbox.get("received", 0) + inbox.get("queued", 0),
                "web_rss_mb": round(last.get("web_rss_mb", 0.0), 1),
                "worker_rss_mb": round(last.get("worker_rss_mb", 0.0), 1),
                "rows": {t: tables.get(t, [0])[0] for t in SIDE_TABLES},
                "bytes": {t: tables.get(t, [0, 0, 0, 0, 0])[4] for t in SIDE_TABLES},
                "inbox_rows": tables.get("webhook_events", [0])[0],
                "cpu_pct": cpu,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--inbox-retention-seconds", type=float, default=360.0)
    parser.add_argument("--side-retention-seconds", type=float, default=30.0)
    parser.add_argument("--housekeeping-every", type=float, default=15.0)
    args = parser.parse_args()

    with services() as base_env:
        sys.path.insert(0, str(ROOT))
        from localrun.embedded import free_port
        from tests.worker_process import VENV_BIN, Broker, ProcfileProcess, wait_http_ok

        port = free_port()
        scratch = Path(tempfile.mkdtemp(prefix="soak-"))
        schedule, gc_log = scratch / "beat-schedule", scratch / "gc.log"
        settings = {
            "WEBHOOK_MAX_AGE_SECONDS": "60",
            "INBOX_RETENTION_DAYS": str(args.inbox_retention_seconds / 86400),
            "SESSION_RETENTION_HOURS": str(args.side_retention_seconds / 3600),
            "RUN_RETENTION_DAYS": str(args.side_retention_seconds / 86400),
            "HOUSEKEEPING_INTERVAL_SECONDS": str(args.housekeeping_every),
            "HOUSEKEEPING_MAX_SECONDS": str(max(5.0, args.housekeeping_every * 0.8)),
        }
        env = {
            **base_env,
            **settings,
            "PATH": f"{VENV_BIN}{os.pathsep}{base_env.get('PATH', '')}",
            "LOG_LEVEL": "WARNING",
            "BEAT_SCHEDULE_FILE": str(schedule),
        }
        env = gc_env(env, gc_log)
        os.environ.update(settings)
        from models.settings import get_settings

        get_settings.cache_clear()
        web = ProcfileProcess("web", {**env, "WEB_BIND": f"127.0.0.1:{port}"}).start()
        worker = ProcfileProcess("worker", env).start()
        beat = ProcfileProcess("beat", {**env, "LOG_LEVEL": "INFO"}).start()
        broker = Broker(env)
        side = SideTraffic()
        sender = Sender(port, args.rate, args.seconds, args.clients)
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/healthz", process=web)
            broker.wait_ready(process=worker)
            # The deliveries go from a process of their own (the sender), so what else this process does (the
            # sampler, the lag watcher, the side traffic) never holds the senders' interpreter lock while an answer
            # waits to be timed. The sampler and the side traffic start first and the warm-up runs at the soak's rate
            # with all its clients, so the first window is as steady as the rest: new connections and the web
            # workers' new request threads once made the first window's p99 twice the median's.
            pids = {"web": web.process.pid, "worker": worker.process.pid}  # type: ignore[union-attr]
            members = {name: {p.pid for p in tree(pid)} for name, pid in pids.items()}
            sampler = Sampler(
                env["DATABASE_URL"],
                env["REDIS_URL"],
                env["REDIS_KEY_PREFIX"],
                pids,
                interval=1.0,
                generator_pids=(sender.pid,),
            )
            sampler.start()
            side.thread.start()
            sender.warm_up()
            start = time.time()
            watcher = LagWatcher(libpq_url(env["DATABASE_URL"]), start, args.window).start()
            samples, creates = sender.run()
            side.stop.set()
            deadline = time.monotonic() + 180
            while broker.backlog() and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(args.window * 2)
            lags = watcher.stop()
            activity = sampler.stop()
            ledger = final_ledger(env, creates, samples)
        finally:
            sender.close()
            broker.close()
            beat.close()
            worker.close()
            web.close()

    spans = int(args.seconds // args.window)
    rows = windows(samples, start, args.window, activity, lags, spans)
    report = summarise(args, rows, activity, ledger)
    # The slowest seconds beside what coincided with them: how the stalls' cause is named.
    collections = read_gc_log(gc_log)
    seconds = per_second([(at - start, ms, st) for at, ms, st in samples], start, activity, collections, members)
    report["slowest_seconds"] = sorted(seconds, key=lambda r: -r["p99_ms"])[:SLOWEST_SECONDS]
    report["median_second"] = median_second(seconds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "windows": rows, **report}, indent=2) + "\n")
    print_report(args, rows, report)
    return 0 if report["ledger"]["balanced"] else 1


def final_ledger(env: dict[str, str], creates: int, samples: list[tuple[float, float, int]]) -> dict[str, Any]:
    """Accepted deliveries against what the database and housekeeping's counter say happened to them."""
    import psycopg
    import redis

    statuses: dict[str, int] = {}
    for _, _, status in samples:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    with psycopg.connect(libpq_url(env["DATABASE_URL"]), autocommit=True) as conn:
        inbox = dict(conn.execute("SELECT status, count(*) FROM webhook_events GROUP BY status").fetchall())
        users = conn.execute("SELECT count(*) FROM users WHERE asgardeo_id NOT LIKE 'soak-%'").fetchone()[0]  # type: ignore[index]
    metrics = redis.Redis.from_url(env["REDIS_URL"]).hgetall(f"{env['REDIS_KEY_PREFIX']}metrics")
    removed = int(float(metrics.get(b"housekeeping_removed|kind=inbox", b"0")))
    accepted = int(float(metrics.get(b"webhooks_received", b"0")))
    applied = inbox.get("applied", 0) + removed
    pending = inbox.get("received", 0) + inbox.get("queued", 0)
    return {
        "statuses": statuses,
        "accepted": accepted,
        "accepted_by_client": statuses.get("202", 0),
        "applied_in_inbox": inbox.get("applied", 0),
        "removed_by_housekeeping": removed,
        "failed": inbox.get("failed", 0),
        "pending": pending,
        "users_created": creates,
        "users_in_table": users,
        "balanced": applied == accepted and pending == 0 and inbox.get("failed", 0) == 0 and users == creates,
    }


def summarise(
    args: argparse.Namespace, rows: list[dict[str, Any]], activity: list[dict[str, Any]], ledger: dict[str, Any]
) -> dict[str, Any]:
    full = [r for r in rows if r["n"]]
    median_p99 = statistics.median(r["p99_ms"] for r in full) if full else float("nan")
    worst = max((r["p99_ms"] for r in full), default=float("nan"))
    lag_p99 = [r["lag_p99_ms"] for r in rows if r["lag_p99_ms"] is not None]
    first, last = (activity[0], activity[-1]) if activity else ({}, {})

    def growth(name: str) -> dict[str, float]:
        start, end = first.get(f"{name}_rss_each_mb", []), last.get(f"{name}_rss_each_mb", [])
        return {
            "tree_mb": round(last.get(f"{name}_rss_mb", 0) - first.get(f"{name}_rss_mb", 0), 1),
            "largest_process_mb": round(max(end, default=0) - max(start, default=0), 1),
        }

    reached = [r for r in rows if r["from_s"] >= args.inbox_retention_seconds + 2 * args.housekeeping_every]
    flat: dict[str, Any] = {}
    if len(reached) >= 2:
        for table in SIDE_TABLES:
            values = [r["rows"][table] for r in reached]
            flat[table] = {
                "rows_min": min(values),
                "rows_max": max(values),
                "rows_last": values[-1],
                "bytes_first": reached[0]["bytes"][table],
                "bytes_last": reached[-1]["bytes"][table],
            }
    return {
        "median_window_p99_ms": round(median_p99, 2),
        "worst_window_p99_ms": worst,
        "worst_vs_median_p99": round(worst / median_p99, 2) if median_p99 else None,
        "lag_p99_worst_ms": max(lag_p99, default=None),
        "memory_growth": {"web": growth("web"), "worker": growth("worker")},
        "after_retention_window": flat or "not reached (run longer than the inbox retention)",
        "ledger": ledger,
    }


def print_report(args: argparse.Namespace, rows: list[dict[str, Any]], report: dict[str, Any]) -> None:
    print(
        f"soak: {args.rate:.0f}/s for {args.seconds:.0f}s, windows of {args.window:.0f}s; inbox kept "
        f"{args.inbox_retention_seconds:.0f}s, sessions and runs {args.side_retention_seconds:.0f}s, "
        f"housekeeping every {args.housekeeping_every:.0f}s"
    )
    print(
        " from_s     n  p50 ms  p99 ms | lag p50  lag p99 | queue unapplied | web MB worker MB |"
        " inbox sessions runs | cpu% web wrk pg gen others"
    )
    for r in rows:
        lag50 = f"{r['lag_p50_ms']:7.1f}" if r["lag_p50_ms"] is not None else "      -"
        lag99 = f"{r['lag_p99_ms']:8.1f}" if r["lag_p99_ms"] is not None else "       -"
        print(
            f" {r['from_s']:6.0f} {r['n']:5d} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f} | {lag50} {lag99} |"
            f" {r['queue']:5d} {r['unapplied']:9d} | {r['web_rss_mb']:6.1f} {r['worker_rss_mb']:9.1f} |"
            f" {r['rows']['webhook_events']:6d} {r['rows']['sessions']:8d} {r['rows']['sync_runs']:4d} |"
            f" {' '.join(str(r['cpu_pct'].get(k, '-')) for k in CPU_COLUMNS)}"
        )
    ratio = report["worst_vs_median_p99"]
    print(
        f"intake p99: median window {report['median_window_p99_ms']} ms, worst {report['worst_window_p99_ms']} ms"
        f" ({ratio}x; target <= 2x): {'met' if ratio is not None and ratio <= 2 else 'NOT met'}"
    )
    lag = report["lag_p99_worst_ms"]
    print(
        f"end-to-end lag p99, worst window: {lag} ms (target <= 1000 ms): "
        f"{'met' if lag is not None and lag <= 1000 else 'NOT met'}"
    )
    memory = report["memory_growth"]
    print(f"memory growth (start to end): web {memory['web']} MB, worker {memory['worker']} MB (target <= 50 MB)")
    print(f"tables once the retention window is reached: {report['after_retention_window']}")
    ledger = report["ledger"]
    print(f"ledger: {ledger}")
    typical = report["median_second"]
    print(
        f"median second: p99 {typical.get('p99_ms')} ms | cpu% web {typical.get('web_cpu_pct', '-')} worker"
        f" {typical.get('worker_cpu_pct', '-')} pg {typical.get('postgres_cpu_pct', '-')} | waited for cpu"
        f" {typical.get('cpu_wait_ms', '-')} ms, io {typical.get('io_wait_ms', '-')} ms"
    )
    print("slowest seconds (from the start), with what coincided:")
    for r in report["slowest_seconds"]:
        print(
            f"  s={r['s']} p99 {r['p99_ms']} ms max {r['max_ms']} ms | gc max web {r['web_gc_max_ms']} ms,"
            f" worker {r['worker_gc_max_ms']} ms |"
            f" checkpoint buffers {r.get('checkpoint_buffers', 0)} |"
            f" deleted {r.get('deleted') or '-'} | analyzed {r.get('analyzed') or '-'} |"
            f" autovacuum {r['autovacuum'] or '-'} | cpu% web {r.get('web_cpu_pct', '-')} worker"
            f" {r.get('worker_cpu_pct', '-')} pg {r.get('postgres_cpu_pct', '-')} others {r.get('others_cpu_pct', '-')}"
            f" | waited for cpu {r.get('cpu_wait_ms', '-')} ms, io {r.get('io_wait_ms', '-')} ms"
        )
    print(f"written {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    raise SystemExit(main())
