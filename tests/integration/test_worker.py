from __future__ import annotations

from typing import Any

from tasks.health import ping


def test_ping_round_trips_through_a_real_worker(celery_worker: Any) -> None:
    assert ping.delay().get(timeout=20) == "pong"
