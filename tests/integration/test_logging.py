"""Log lines are JSON, carry the ids that tie a story together, and never carry a secret."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from models import logs
from tasks.health import ping


@pytest.fixture
def json_lines() -> Iterator[Any]:
    """Every line the service's JSON formatter writes during the test, parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    try:
        yield read
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def test_request_lines_are_json_with_the_request_id(client: FlaskClient, json_lines: Any) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "req-123"})
    assert response.headers["X-Request-ID"] == "req-123"
    lines = [line for line in json_lines() if line["msg"] == "request"]
    assert lines
    assert lines[-1]["request_id"] == "req-123"
    assert lines[-1]["status"] == 200


def test_hostile_request_ids_are_replaced(client: FlaskClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "x" * 500})
    assert response.headers["X-Request-ID"] != "x" * 500
    assert len(response.headers["X-Request-ID"]) == 32


def test_bound_ids_and_extras_appear_and_secret_keys_are_dropped(json_lines: Any) -> None:
    with logs.bind(jti="evt-1", run_id=7, user_id="u-1"):
        logging.getLogger("test").info("applied", extra={"token": "tok-secret", "password": "pw-secret", "n": 3})
    line = json_lines()[-1]
    assert (line["jti"], line["run_id"], line["user_id"], line["n"]) == ("evt-1", 7, "u-1", 3)
    assert "tok-secret" not in json.dumps(line)
    assert "pw-secret" not in json.dumps(line)


def test_task_lines_carry_the_task_id(celery_worker: Any, json_lines: Any) -> None:
    result = ping.delay()
    assert result.get(timeout=20) == "pong"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        traced = [line for line in json_lines() if line.get("task_id") == result.id]
        if traced:
            break
        time.sleep(0.05)
    assert traced
    assert traced[-1]["task"] == "health.ping"
