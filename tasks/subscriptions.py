"""What Asgardeo last said about our webhook subscription, per channel, for the operators' page.

Each WebSub handshake (subscribe or unsubscribe) is recorded in a Redis hash keyed by topic. Recording is best effort:
the handshake answer never depends on it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from tasks.redis_client import get_redis, key

log = logging.getLogger(__name__)
MAX_TOPICS = 50


def record_handshake(topic: str, mode: str, lease_seconds: str | None) -> None:
    entry = {"mode": mode, "at": time.time(), "lease_seconds": lease_seconds}
    try:
        client = get_redis()
        if client.hlen(key("webhook:subscriptions")) < MAX_TOPICS or client.hexists(
            key("webhook:subscriptions"), topic
        ):
            client.hset(key("webhook:subscriptions"), topic, json.dumps(entry))
    except redis.RedisError as exc:
        log.warning("could not record the webhook handshake", extra={"error": type(exc).__name__})


def subscriptions() -> dict[str, dict[str, Any]]:
    """``{topic: {"mode", "at" (epoch s), "lease_seconds"}}``; empty when nothing was recorded or Redis is away."""
    try:
        raw: dict[bytes, bytes] = get_redis().hgetall(key("webhook:subscriptions"))  # type: ignore[assignment]
    except redis.RedisError:
        return {}
    return {topic.decode(): json.loads(value) for topic, value in raw.items()}
