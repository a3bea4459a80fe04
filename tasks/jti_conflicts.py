"""Deliveries that reused a stored ``jti`` with a different body, kept for the operators' page.

Asgardeo sends one ``jti`` per event and the same body on every retry, so a second body under one ``jti`` means a
broken sender or someone else holding the webhook secret. The intake still answers 200 and applies nothing (the
first body stays the event); this list, the ``webhooks_jti_conflicts`` counter and a warning make it visible. Only
signed deliveries get here, and only digests are kept, never a body. Recording is best effort.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from tasks.redis_client import get_redis, key

log = logging.getLogger(__name__)
KEPT = 50
_LIST = "webhook:jti_conflicts"


def record_conflict(jti: str, event_type: str, stored_sha256: str, received_sha256: str) -> None:
    """Remember the newest :data:`KEPT` conflicts."""
    entry = {
        "jti": jti,
        "event_type": event_type,
        "at": time.time(),
        "stored": stored_sha256,
        "received": received_sha256,
    }
    try:
        pipe = get_redis().pipeline()
        pipe.lpush(key(_LIST), json.dumps(entry))
        pipe.ltrim(key(_LIST), 0, KEPT - 1)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not record a jti conflict", extra={"jti": jti, "error": type(exc).__name__})


def recent_conflicts() -> list[dict[str, Any]]:
    """Newest first: ``{"jti", "event_type", "at" (epoch s), "stored", "received"}``; empty when Redis is away."""
    try:
        raw: list[bytes] = get_redis().lrange(key(_LIST), 0, KEPT - 1)  # type: ignore[assignment]
    except redis.RedisError:
        return []
    return [json.loads(item) for item in raw]
