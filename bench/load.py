# ruff: noqa: PLC0415 - app modules load after the environment is set, exactly as a fresh process would
"""A bounded load run: signed webhooks at a fixed rate for a while, intake latency per window and process memory.

    python -m bench.load [--rate 200] [--seconds 30] [--window 5]

Processes as the Procfile starts them (``web``: gunicorn with gunicorn.conf.py, ``worker``: the Celery worker line),
on a fresh database and Redis prefix, loopback only. The generator sends ``userCreated`` deliveries open-loop at
``--rate`` (each send is due at ``start + i / rate``, so a slow answer does not slow the offered load) and is bounded
by count and time. Reported: intake latency (p50/p99) per ``--window``-second window, which should stay flat, and
the resident memory (RSS, whole process trees) of web and worker at start and end, which should stay bounded; the
first window is the baseline of the ratios. Results go to ``bench/results/load.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

import psutil

from bench._support import ROOT, median, services
from bench._support import load as send
from bench.intake import deliveries

RESULTS = ROOT / "bench" / "results" / "load.json"
WARM_UP_SECONDS = 5.0


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its children (gunicorn and Celery fork workers), in MB."""
    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return round(total / 2**20, 1)


def pct(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2) if ordered else float("nan")


def paced_send(port: int, bodies: list[tuple[bytes, dict[str, str]]], rate: float, clients: int) -> list[tuple]:
    """Send every body once, open loop at ``rate``; returns ``(offset_s, latency_ms, status)`` per send."""
    samples: list[tuple[float, float, int]] = []
    lock = threading.Lock()
    start = time.time()

    def record(_index: int, sent_at: float, latency_ms: float, status: int) -> None:
        with lock:
            samples.append((sent_at - start, latency_ms, status))

    send(port, "/webhooks/asgardeo", bodies, concurrency=clients, rate=rate, timeout=3600, on_response=record)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    count = int(args.rate * args.seconds)

    with services() as base_env:
        sys.path.insert(0, str(ROOT))
        from localrun.embedded import free_port
        from tests.worker_process import VENV_BIN, Broker, ProcfileProcess, wait_http_ok

        port = free_port()
        env = {**base_env, "PATH": f"{VENV_BIN}{os.pathsep}{base_env.get('PATH', '')}", "LOG_LEVEL": "WARNING"}
        web = ProcfileProcess("web", {**env, "WEB_BIND": f"127.0.0.1:{port}"}).start()
        worker = ProcfileProcess("worker", env).start()
        broker = Broker(env)
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/healthz", process=web)
            broker.wait_ready(process=worker)
            # Warm-up at the run's rate with all its clients (connections, the web workers' request threads,
            # imports, plans), so the first window, the baseline of the ratios, is a steady one.
            paced_send(port, deliveries(int(args.rate * WARM_UP_SECONDS)), rate=args.rate, clients=args.clients)
            rss_start = {"web_mb": tree_rss_mb(web.process.pid), "worker_mb": tree_rss_mb(worker.process.pid)}  # type: ignore[union-attr]
            samples = paced_send(port, deliveries(count), rate=args.rate, clients=args.clients)
            deadline = time.monotonic() + 120
            while broker.backlog() and time.monotonic() < deadline:
                time.sleep(0.2)
            rss_end = {"web_mb": tree_rss_mb(web.process.pid), "worker_mb": tree_rss_mb(worker.process.pid)}  # type: ignore[union-attr]
            drained = broker.backlog() == 0
        finally:
            broker.close()
            worker.close()
            web.close()

    windows: list[dict[str, Any]] = []
    spans = int(args.seconds // args.window)
    for n in range(spans):
        lat = [ms for at, ms, _ in samples if n * args.window <= at < (n + 1) * args.window]
        windows.append({"from_s": n * args.window, "n": len(lat), "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99)})
    statuses: dict[str, int] = {}
    for _, _, status in samples:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    elapsed = max((at for at, _, _ in samples), default=0.0)
    result = {
        "setup": {
            "web": "Procfile web (gunicorn --config gunicorn.conf.py, gthread 2x8)",
            "worker": "Procfile worker (celery -A tasks worker, prefork, concurrency 2)",
            "rate_per_s": args.rate,
            "seconds": args.seconds,
            "clients": args.clients,
        },
        "sent": len(samples),
        "achieved_rate_per_s": round(len(samples) / elapsed, 1) if elapsed else 0.0,
        "statuses": statuses,
        "windows": windows,
        "p50_ms": round(median([ms for _, ms, _ in samples]), 2),
        "p99_ms": pct([ms for _, ms, _ in samples], 0.99),
        "ratio_last_vs_first_window_p50": round(windows[-1]["p50_ms"] / windows[0]["p50_ms"], 2) if windows else None,
        "ratio_last_vs_first_window_p99": round(windows[-1]["p99_ms"] / windows[0]["p99_ms"], 2) if windows else None,
        "rss_start": rss_start,
        "rss_end": rss_end,
        "rss_growth_mb": {k: round(rss_end[k] - rss_start[k], 1) for k in rss_start},
        "worker_drained": drained,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load: {result['sent']} signed webhooks at {args.rate:.0f}/s for {args.seconds:.0f}s, statuses {statuses}")
    for w in windows:
        print(f"  window {w['from_s']:5.0f}s  n={w['n']:5d}  p50 {w['p50_ms']:7.2f} ms  p99 {w['p99_ms']:7.2f} ms")
    p50_ratio, p99_ratio = result["ratio_last_vs_first_window_p50"], result["ratio_last_vs_first_window_p99"]
    print(f"last/first window: p50 {p50_ratio}x, p99 {p99_ratio}x")
    print(f"RSS start {rss_start} end {rss_end} growth {result['rss_growth_mb']} MB; worker drained: {drained}")
    print(f"written {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
