"""The broker setting: Redis by default, RabbitMQ with quorum queues and publisher confirms when named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG_PROBE = """
import json, celeryconfig as c
print(json.dumps({
    "broker": c.broker_url,
    "backend": c.result_backend,
    "transport": c.broker_transport_options,
    "queues": {q.name: [q.exchange.type, q.queue_arguments] for q in c.task_queues},
}))
"""


def celery_config(**env: str) -> dict[str, object]:
    """celeryconfig as a fresh process reads it from ``env`` (it is read once, at import, like in production)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "REDIS_KEY_PREFIX")}
    done = subprocess.run(
        [sys.executable, "-c", CONFIG_PROBE],
        cwd=ROOT / "tests",  # no .env here
        env={**clean, "PYTHONPATH": str(ROOT), "APP_ENV": "test", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_broker_is_redis_unless_named() -> None:
    settings = Settings(redis_url="redis://r:6379/0")
    assert settings.broker_url == "redis://r:6379/0"
    assert not settings.broker_is_rabbitmq


def test_an_amqp_url_selects_rabbitmq() -> None:
    settings = Settings(redis_url="redis://r:6379/0", celery_broker_url="amqp://u:p@mq:5672/hrms")
    assert settings.broker_url == "amqp://u:p@mq:5672/hrms"
    assert settings.broker_is_rabbitmq


def test_an_unknown_broker_scheme_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "kafka://k:9092")
    with pytest.raises(SettingsError, match="CELERY_BROKER_URL"):
        load_settings()


def test_on_redis_the_queues_are_plain_and_keys_carry_the_prefix() -> None:
    config = celery_config(REDIS_URL="redis://r:6379/0", REDIS_KEY_PREFIX="dep1:")
    assert config["broker"] == config["backend"] == "redis://r:6379/0"
    assert config["transport"]["global_keyprefix"] == "dep1:"  # type: ignore[index]
    assert config["queues"]["events"] == ["direct", None]  # type: ignore[index]


def test_on_rabbitmq_queues_are_quorum_behind_topic_exchanges_with_confirmed_publishes() -> None:
    config = celery_config(REDIS_URL="redis://r:6379/0", CELERY_BROKER_URL="amqp://u:p@mq:5672/hrms")
    assert config["broker"] == "amqp://u:p@mq:5672/hrms"
    assert config["backend"] == "redis://r:6379/0"  # results stay on Redis
    assert config["transport"] == {"confirm_publish": True}
    queues = config["queues"]
    assert set(queues) == {"default", "events", "users", "reconcile"}  # type: ignore[arg-type]
    assert all(q == ["topic", {"x-queue-type": "quorum"}] for q in queues.values())  # type: ignore[attr-defined]
