"""The intake and end-to-end lag benchmarks on each broker, in the same run: Redis, then RabbitMQ.

    python -m bench.brokers [--events 3000] [--seconds 10]

Runs ``bench.intake`` and ``bench.e2e_lag`` twice as they are, each in its own process: once on the run's Redis as
the broker, once with ``CELERY_BROKER_URL`` naming a fresh RabbitMQ virtual host (quorum queues, publisher
confirms; Redis still holds results, rate budget and live stream). Writes ``bench/results/brokers.json`` with
each one's figures; the report puts them side by side. Needs RabbitMQ (``RABBITMQ_URL``, default
``amqp://guest:guest@127.0.0.1:5672/``) and ``rabbitmqctl`` on this machine; without them it says so and fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable

from bench import report
from bench._support import ROOT
from tests import rabbitmq


def run(module: str, args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{module} failed on {env.get('CELERY_BROKER_URL') or 'Redis'}:\n{done.stdout[-2000:]}")
    return done.stdout


def measure(args: argparse.Namespace, env: Callable[[], dict[str, str]]) -> dict[str, object]:
    """Both benchmarks, each in the environment ``env()`` makes for it.

    Each needs a broker of its own: the intake leaves its messages queued (no worker runs there), and an
    ``e2e_lag`` worker sharing them would first work through that backlog, which says nothing of the lag.
    """
    intake_args = ["--events", str(args.events), "--paced-seconds", "5", "--before-worker", ""]
    intake = report.intake_lines(run("bench.intake", intake_args, env()))
    run("bench.e2e_lag", ["--seconds", str(args.seconds)], env())
    lag = json.loads((report.RESULTS / "e2e_lag.json").read_text())
    return {"intake": intake.get("intake (saturated)"), "e2e_lag": lag["receipt_to_commit"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    rabbitmq.check_usable()
    base = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    # e2e_lag.json is rewritten by each run; the full benchmark run keeps its own copy from its own e2e_lag step.
    saved = (report.RESULTS / "e2e_lag.json").read_text() if (report.RESULTS / "e2e_lag.json").exists() else None
    try:
        # On Redis each benchmark's services() makes a fresh key prefix; on RabbitMQ a fresh virtual host does that.
        results = {"redis": measure(args, lambda: base)}
        results["rabbitmq"] = measure(args, lambda: {**base, "CELERY_BROKER_URL": rabbitmq.make_vhost("bench")})
    finally:
        rabbitmq.remove_all()
        if saved is not None:
            (report.RESULTS / "e2e_lag.json").write_text(saved)
    (report.RESULTS / "brokers.json").write_text(json.dumps(results, indent=2))
    for broker, figures in results.items():
        print(f"{broker}: intake {figures['intake']}, receipt-to-commit lag {figures['e2e_lag']}")


if __name__ == "__main__":
    main()
