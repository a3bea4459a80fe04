#!/usr/bin/env python3
"""The second command: install and run the test suite (``python3 scripts/test.py [pytest args]``).

Also runs the linters and the type checker first, as CI does; pass ``--no-lint`` to skip them locally.

Without pytest arguments the suite runs twice: whole on Redis as the broker, then the integration and chaos tests
again on RabbitMQ (``BROKER_UNDER_TEST=rabbitmq``; ``RABBITMQ_URL``, default ``amqp://guest:guest@127.0.0.1:5672/``).
Where no RabbitMQ answers, the second pass says why it did not run, and fails under ``CI=true``. With pytest
arguments only the first pass runs; prefix ``BROKER_UNDER_TEST=rabbitmq`` to run them on RabbitMQ.
"""

from __future__ import annotations

import os
import subprocess
import sys

from bootstrap import ROOT, ensure_venv

RABBITMQ_PASS = ["tests/integration", "tests/chaos"]


def rabbitmq_unavailable(python: str) -> str | None:
    """Why the RabbitMQ pass cannot run here, or ``None``."""
    probe = "from tests import rabbitmq; rabbitmq.check_usable()"
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["unknown error"])[-1]


if __name__ == "__main__":
    python = str(ensure_venv("local,test,dev"))
    os.chdir(ROOT)
    args = sys.argv[1:]
    if "--no-lint" in args:
        args.remove("--no-lint")
    else:
        for check in (["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]):
            print(f"[test] {' '.join(check)}", flush=True)
            subprocess.run([python, "-m", *check], check=True)
    # Without column positions no traceback parses source with ``ast``. In CPython 3.11 a garbage collection during
    # pytest's own ``ast.parse`` (formatting a failure) can run a finalizer that fails, e.g. Celery's
    # ``AsyncResult.__del__`` once a test's result store is gone; formatting that exception parsed source again,
    # inside the first parse, and pytest died on "AST constructor recursion depth mismatch" before it printed the
    # failure (CI, 2026-12-06; reproduced with a failing ``__del__`` in a reference cycle, gone with this flag).
    pytest = [python, "-X", "no_debug_ranges", "-m", "pytest"]
    paths_given = any(not arg.startswith("-") and os.path.exists(arg.split("::")[0]) for arg in args)
    first = subprocess.run([*pytest, *args], check=False).returncode
    if first != 0 or paths_given or os.environ.get("BROKER_UNDER_TEST"):
        sys.exit(first)
    reason = rabbitmq_unavailable(python)
    if reason is not None:
        print(f"[test] the RabbitMQ pass did not run: {reason}", flush=True)
        sys.exit(1 if os.environ.get("CI") == "true" else 0)
    print(f"[test] RabbitMQ pass: {' '.join(RABBITMQ_PASS)} with BROKER_UNDER_TEST=rabbitmq", flush=True)
    env = {**os.environ, "BROKER_UNDER_TEST": "rabbitmq"}
    sys.exit(subprocess.run([*pytest, *args, *RABBITMQ_PASS], env=env, check=False).returncode)
