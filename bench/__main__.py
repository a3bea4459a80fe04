"""Run every benchmark, each in its own process, and write one report: ``python -m bench [--quick]``.

Runs bench.intake, bench.e2e_lag (when present), bench.drain, bench.login_callback, bench.reconcile, bench.load, a
short bench.soak, bench.housekeeping (the intake beside a run over a large backlog), bench.brokers (intake and lag
on Redis and on RabbitMQ) and bench.catchup one after the other (they would disturb each other's timings if run
together), keeps each one's output in
``bench/results/<name>.out``, then writes ``bench/results/report.md`` and ``report.json`` (see bench/report.py).
``--quick`` runs shorter variants (about 9 minutes instead of about 20; the catch-up's two outages take most of
it). A benchmark that fails is reported as such; the others still run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from bench import report

ROOT = Path(__file__).resolve().parent.parent

PLAN: dict[str, tuple[list[str], list[str]]] = {
    # name: (full arguments, --quick arguments)
    "intake": ([], ["--events", "2000", "--paced-seconds", "5"]),
    "e2e_lag": ([], ["--seconds", "8"]),
    "drain": ([], ["--events", "2000"]),
    "login_callback": ([], ["--iterations", "100"]),
    "reconcile": (["--sizes", "10000,100000"], ["--sizes", "10000", "--skip-limited"]),
    "load": ([], ["--seconds", "10"]),
    "brokers": ([], ["--events", "1500", "--seconds", "6"]),
    # The full soak is ``python -m bench.soak`` (10 minutes); here a short form, shorter than its inbox retention.
    "soak": (["--seconds", "120"], ["--seconds", "30"]),
    "housekeeping": ([], ["--rows", "50000", "--rounds", "1"]),
    # The two-minute outage with 500 changes; --quick shortens the outage and the directory.
    "catchup": ([], ["--outage-seconds", "30", "--changes", "200", "--users", "200", "--drift-per-minute", "100"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, same figures")
    parser.add_argument("--only", default="", help="comma-separated subset, e.g. intake,load")
    args = parser.parse_args()
    chosen = [n for n in PLAN if not args.only or n in args.only.split(",")]
    runs: dict[str, dict[str, object]] = {}
    for name in chosen:
        if not (ROOT / "bench" / f"{name}.py").exists():
            print(f"[bench] {name}: not present, skipped", flush=True)
            continue
        full, quick = PLAN[name]
        command = [sys.executable, "-m", f"bench.{name}", *(quick if args.quick else full)]
        print(f"[bench] {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        out = report.RESULTS / f"{name}.out"
        with out.open("w") as sink:
            code = subprocess.call(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        seconds = time.monotonic() - started
        runs[name] = {"command": f"python {' '.join(command[1:])}", "seconds": round(seconds, 1), "exit": code}
        print(f"[bench] {name}: exit {code} in {seconds:.0f}s (output in {out.relative_to(ROOT)})", flush=True)
    md_path, json_path = report.write(runs, report.server_versions())
    print(md_path.read_text())
    print(f"[bench] written {md_path.relative_to(ROOT)} and {json_path.relative_to(ROOT)}")
    return 1 if any(r["exit"] for r in runs.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
