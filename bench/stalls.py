# ruff: noqa: PLC0415 - app modules load after the environment is set, exactly as a fresh process would
"""Where the intake's slow moments come from: the ``load`` run, second by second, beside what else was happening.

    python -m bench.stalls [--rate 200] [--seconds 30]

The same processes and load as ``bench.load`` (Procfile web and worker, signed ``userCreated`` deliveries open loop
at ``--rate``). For every second it prints the intake's p50, p99 and max beside: the garbage collections of the web
and worker processes (ms spent, and how many were full, generation 2), autovacuum at work in the database,
checkpoints, lock waits, the broker's queue depth, and the CPU used by web, worker and Postgres in that second. The
slowest seconds are listed last with what coincided with them. Results go to ``bench/results/stalls.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._support import ROOT, services
from bench.activity import Sampler, gc_env, read_gc_log, tree
from bench.intake import deliveries
from bench.load import paced_send, pct

RESULTS = ROOT / "bench" / "results" / "stalls.json"


def _stat(tick: dict[str, Any], table: str, index: int) -> int:
    """One of the sampler's per-table counters (see bench.activity's query); 0 where it is missing."""
    values = tick["tables"].get(table) or []
    return int(values[index] or 0) if len(values) > index else 0


def per_second(
    samples: list[tuple[float, float, int]],
    start: float,
    activity: list[dict[str, Any]],
    collections: list[tuple[int, float, int, float]],
    pids: dict[str, set[int]],
) -> list[dict[str, Any]]:
    """One row per second of the run, from the latency samples (offsets from ``start``), the sampler's ticks and
    the GC log."""
    seconds = int(max((at for at, _, _ in samples), default=0)) + 1
    rows = []
    for s in range(seconds):
        lat = [ms for at, ms, _ in samples if s <= at < s + 1]
        lo, hi = start + s, start + s + 1
        ticks = [a for a in activity if lo <= a["t"] < hi]
        before = [a for a in activity if a["t"] < lo]
        row: dict[str, Any] = {"s": s, "n": len(lat), "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99)}
        row["max_ms"] = round(max(lat), 1) if lat else float("nan")
        for name, members in pids.items():
            gcs = [(gen, ms) for pid, at, gen, ms in collections if pid in members and lo <= at < hi]
            row[f"{name}_gc_ms"] = round(sum(ms for _, ms in gcs), 1)
            row[f"{name}_gc_full"] = sum(1 for gen, _ in gcs if gen == 2)
            row[f"{name}_gc_max_ms"] = round(max((ms for _, ms in gcs), default=0.0), 1)
        row["autovacuum"] = "; ".join(sorted({a["autovacuum"] for a in ticks if a["autovacuum"]}))
        row["lock_waits"] = max((a["lock_waits"] for a in ticks), default=0)
        row["queue"] = max((a["queue"] for a in ticks), default=0)
        if ticks and before:
            first, last = before[-1], ticks[-1]
            span = last["t"] - first["t"]
            row["checkpoint"] = last["checkpoints"] - first["checkpoints"]
            row["checkpoint_buffers"] = last["buffers_checkpoint"] - first["buffers_checkpoint"]
            # Housekeeping's work shows as rows deleted and tables analysed (pg_stat counters, flushed within ~1 s).
            row["deleted"] = {t: _stat(last, t, 5) - _stat(first, t, 5) for t in last["tables"]}
            row["deleted"] = {t: n for t, n in row["deleted"].items() if n > 0}
            row["analyzed"] = sorted(t for t in last["tables"] if _stat(last, t, 6) > _stat(first, t, 6))
            for name in ("web", "worker", "postgres", "machine", "generator"):
                row[f"{name}_cpu_pct"] = round(100 * (last[f"{name}_cpu_s"] - first[f"{name}_cpu_s"]) / span)
            for resource in ("cpu", "io"):
                if f"{resource}_wait_us" in last and f"{resource}_wait_us" in first:
                    waited_ms = (last[f"{resource}_wait_us"] - first[f"{resource}_wait_us"]) / 1000
                    row[f"{resource}_wait_ms"] = round(waited_ms / span)
            ours = sum(row[f"{name}_cpu_pct"] for name in ("web", "worker", "postgres", "generator"))
            row["others_cpu_pct"] = max(0, row["machine_cpu_pct"] - ours)
        rows.append(row)
    return rows


def median_second(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The median of each numeric figure over every second: what the slowest seconds are to be read against."""
    # Every figure any second has: the first second has no CPU figures (no sample before it).
    names = list(dict.fromkeys(k for r in rows for k, v in r.items() if isinstance(v, int | float) and k != "s"))
    return {
        name: round(statistics.median(values), 1)
        for name in names
        if (values := [r[name] for r in rows if isinstance(r.get(name), int | float) and r[name] == r[name]])
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    gc_log = Path(tempfile.mkstemp(prefix="bench-gc-", suffix=".log")[1])

    with services() as base_env:
        sys.path.insert(0, str(ROOT))
        from localrun.embedded import free_port
        from tests.worker_process import VENV_BIN, Broker, ProcfileProcess, wait_http_ok

        port = free_port()
        env = {**base_env, "PATH": f"{VENV_BIN}{os.pathsep}{base_env.get('PATH', '')}", "LOG_LEVEL": "WARNING"}
        env = gc_env(env, gc_log)
        web = ProcfileProcess("web", {**env, "WEB_BIND": f"127.0.0.1:{port}"}).start()
        worker = ProcfileProcess("worker", env).start()
        broker = Broker(env)
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/healthz", process=web)
            broker.wait_ready(process=worker)
            paced_send(port, deliveries(200), rate=100, clients=4)
            pids = {"web": web.process.pid, "worker": worker.process.pid}  # type: ignore[union-attr]
            sampler = Sampler(env["DATABASE_URL"], env["REDIS_URL"], env["REDIS_KEY_PREFIX"], pids).start()
            members = {name: {p.pid for p in tree(pid)} for name, pid in pids.items()}
            start = time.time()
            samples = paced_send(port, deliveries(int(args.rate * args.seconds)), rate=args.rate, clients=args.clients)
            deadline = time.monotonic() + 60
            while broker.backlog() and time.monotonic() < deadline:
                time.sleep(0.2)
            activity = sampler.stop()
        finally:
            broker.close()
            worker.close()
            web.close()
    collections = read_gc_log(gc_log)
    gc_log.unlink(missing_ok=True)
    rows = per_second(samples, start, activity, collections, members)
    last = activity[-1]["tables"] if activity else {}
    result = {"rate_per_s": args.rate, "seconds": args.seconds, "per_second": rows, "tables_at_end": last}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    head = (
        "   s     n   p50    p99    max | web gc ms/full/max | wrk gc ms/full/max | ckpt  lockw queue |"
        " cpu% web wrk pg gen others | wait cpu io ms | autovacuum"
    )
    print(head)
    for r in rows:
        print(
            f"{r['s']:4d} {r['n']:5d} {r['p50_ms']:5.1f} {r['p99_ms']:6.1f} {r['max_ms']:6.1f} |"
            f" {r['web_gc_ms']:6.1f} {r['web_gc_full']:2d} {r['web_gc_max_ms']:6.1f} |"
            f" {r['worker_gc_ms']:6.1f} {r['worker_gc_full']:2d} {r['worker_gc_max_ms']:6.1f} |"
            f" {r.get('checkpoint', 0):3d} {r['lock_waits']:5d} {r['queue']:5d} |"
            f" {r.get('web_cpu_pct', 0):4d} {r.get('worker_cpu_pct', 0):4d} {r.get('postgres_cpu_pct', 0):4d}"
            f" {r.get('generator_cpu_pct', 0):4d} {r.get('others_cpu_pct', 0):4d} |"
            f" {r.get('cpu_wait_ms', 0):4d} {r.get('io_wait_ms', 0):3d} |"
            f" {r['autovacuum']}"
        )
    print(f"median second: {median_second(rows)}")
    print("slowest seconds by p99:")
    for r in sorted(rows, key=lambda r: -r["p99_ms"])[:6]:
        print(
            f"  s={r['s']} p99 {r['p99_ms']} ms max {r['max_ms']} ms, web gc max {r['web_gc_max_ms']} ms, "
            f"autovacuum {r['autovacuum'] or '-'}, checkpoint {r.get('checkpoint', 0)}, queue {r['queue']}, "
            f"cpu% of others on the machine {r.get('others_cpu_pct', '-')}, deleted {r.get('deleted') or '-'}, "
            f"analyzed {r.get('analyzed') or '-'}, waited for cpu {r.get('cpu_wait_ms', '-')} ms,"
            f" for io {r.get('io_wait_ms', '-')} ms"
        )
    print(f"autovacuum/analyze counts at end: { {t: v[2:4] for t, v in last.items()} }")
    print(f"written {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
