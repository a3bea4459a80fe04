"""Benchmark: the OIDC callback's own server time, excluding the provider's round trips.

Runs the product's app (Flask test client, no HTTP server in between) against the Asgardeo stand-in over real HTTP,
on a fresh Postgres database and Redis prefix. Each iteration starts a login, lets the stand-in issue a code (its
session cookie skips the password form after the first sign-in) and times ``/auth/callback``. The callback reports
the provider's share (code exchange; discovery and JWKS are cached after the first login) in ``Server-Timing``;
the callback's own time is the measured wall time minus that share. It covers state handling, ID token signature
and claims validation, the user lookup, the session insert and commit, and the follow-up enqueue to Redis.

Baselines measured in the same run: ``/healthz`` (a bare endpoint through the same middleware) and ``/auth/me``
with a Bearer token (the session lookup alone).

    python -m bench.login_callback [--iterations 300]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import requests

from bench._support import ROOT, services

TARGET_P50_MS = 5.0
RESULTS = ROOT / "bench" / "results" / "login_callback.json"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed(call: Callable[[], Any], iterations: int) -> list[float]:
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()

    with services():
        from tests.stack import STACK  # noqa: PLC0415 - after the environment is set

        os.environ.update(STACK.environment(), LOG_LEVEL="WARNING")
        from models.settings import get_settings  # noqa: PLC0415 - after the environment is set

        get_settings.cache_clear()
        from asgardeo_standin.client import StandinAdmin  # noqa: PLC0415 - after the environment is set
        from asgardeo_standin.server import start_in_thread  # noqa: PLC0415 - after the environment is set
        from web import create_app  # noqa: PLC0415 - after the environment is set

        standin = start_in_thread(STACK.standin_config())
        try:
            run(standin, StandinAdmin(standin.root_url), create_app(get_settings()), args.iterations)
        finally:
            standin.stop()


def run(standin: Any, admin: Any, app: Any, iterations: int) -> None:
    client = app.test_client()
    password = "Bench#Passw0rd"
    admin.create_user("bench@example.com", password=password, email="bench@example.com", given_name="Bench")
    browser = requests.Session()  # the person's browser at the provider: signs in once, then keeps its session

    def code_callback() -> str:
        start = client.get("/auth/login")
        authorize = start.headers["Location"]
        answer = browser.get(authorize, allow_redirects=False, timeout=10)
        if answer.status_code == 200:
            answer = browser.post(
                authorize,
                data={"username": "bench@example.com", "password": password},
                allow_redirects=False,
                timeout=10,
            )
        location = str(answer.headers["Location"])
        return location[location.index("/auth/callback") :]

    own: list[float] = []
    provider: list[float] = []
    token = ""
    for i in range(iterations + 20):
        path = code_callback()
        started = time.perf_counter()
        response = client.get(path, headers={"Accept": "application/json"})
        wall = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.get_data(as_text=True)
        idp = float(re.search(r"idp;dur=([0-9.]+)", response.headers["Server-Timing"]).group(1))  # type: ignore[union-attr]
        token = response.get_json()["session_token"]
        if i >= 20:  # warm-up: first login creates the user and fills the discovery and JWKS caches
            own.append(wall - idp)
            provider.append(idp)

    bare = timed(lambda: client.get("/healthz"), iterations)
    me = timed(lambda: client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}), iterations)

    def line(name: str, values: list[float]) -> str:
        return f"{name:<44} p50 {statistics.median(values):7.2f} ms   p95 {percentile(values, 0.95):7.2f} ms"

    print(f"login callback benchmark, {iterations} iterations after 20 warm-up logins")
    print(line("baseline: GET /healthz (bare endpoint)", bare))
    print(line("baseline: GET /auth/me (session lookup)", me))
    print(line("callback, own server time (excl. provider)", own))
    print(line("callback, provider round trips (reported)", provider))
    p50 = statistics.median(own)
    print(
        f"ratio callback/healthz p50: {p50 / statistics.median(bare):.1f}x   "
        f"callback/session-lookup p50: {p50 / statistics.median(me):.1f}x"
    )
    print(f"target p50 <= {TARGET_P50_MS} ms: {'met' if p50 <= TARGET_P50_MS else 'NOT met'}")

    def summary(values: list[float]) -> dict[str, float]:
        return {"p50_ms": round(statistics.median(values), 2), "p95_ms": round(percentile(values, 0.95), 2)}

    result = {
        "iterations": iterations,
        "callback_own": summary(own),
        "provider_round_trips": summary(provider),
        "baseline_healthz": summary(bare),
        "baseline_session_lookup": summary(me),
        "ratio_vs_healthz_p50": round(p50 / statistics.median(bare), 2),
        "ratio_vs_session_lookup_p50": round(p50 / statistics.median(me), 2),
        "target_p50_ms": TARGET_P50_MS,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
