"""What Asgardeo last said about our webhook subscription, per channel, for the operators' page.

The WebSub handshake is an unauthenticated GET: anyone can send one with any topic. So what it may record is
limited to what cannot hurt:

- Only a topic of a channel this service knows is recorded, and only for the organisation in ``WEBHOOK_ORG`` when it
  is set (another organisation's topic is refused before it gets here). The record has one fixed slot per channel,
  so junk topics can neither fill the table nor evict the real channel's entry.
- A subscribe and an unsubscribe are kept side by side: a forged unsubscribe cannot erase when the subscription was
  last confirmed, and the page shows when signed deliveries kept arriving after an unsubscribe (which Asgardeo
  would not send).

Recording is best effort: the handshake answer never depends on it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import redis

from tasks.redis_client import get_redis, key

log = logging.getLogger(__name__)

# Asgardeo's event channels (the shared Asgardeo notes list these; a channel added later is answered, not recorded).
KNOWN_CHANNELS = frozenset({"user", "registration", "login", "session", "credential", "role", "token"})
# ``{rootOrg}.{orgId}.schema.wso2.v1.event.{channel}`` as Asgardeo sends it, and the schema URI that self-hosted
# WSO2 and the local stand-in use (it names no organisation).
_ASGARDEO_TOPIC = re.compile(
    r"(?P<org>[A-Za-z0-9_-]{1,100})\.[A-Za-z0-9_-]{1,100}\.schema\.wso2\.v1\.event\.(?P<ch>\w{1,40})"
)
_SCHEMA_TOPIC = re.compile(r"https://schemas\.identity\.wso2\.org/events/(?P<ch>\w{1,40})")
_HASH = "webhook:handshakes"


def topic_channel(topic: str, org: str | None) -> str | None:
    """The channel of ``topic`` when it belongs to this deployment: to organisation ``org`` when one is set
    (an organisation-less schema URI then does not count), to anyone otherwise. None for any other topic."""
    if match := _ASGARDEO_TOPIC.fullmatch(topic):
        if org and match["org"] != org:
            return None
        return match["ch"]
    if not org and (match := _SCHEMA_TOPIC.fullmatch(topic)):
        return match["ch"]
    return None


def record_handshake(topic: str, mode: str, lease_seconds: str | None, *, org: str | None) -> None:
    """Record an answered handshake in its channel's slot; other topics are logged and not recorded."""
    channel = topic_channel(topic, org)
    if channel not in KNOWN_CHANNELS:
        log.info("websub handshake not recorded: not a known channel of this organisation", extra={"mode": mode})
        return
    now = time.time()
    try:
        client = get_redis()
        raw = client.hget(key(_HASH), channel)
        entry: dict[str, Any] = json.loads(raw) if isinstance(raw, bytes) else {}
        entry.update(topic=topic, mode=mode, at=now)
        if mode == "subscribe":
            entry.update(subscribed_at=now, lease_seconds=lease_seconds)
        else:
            entry["unsubscribed_at"] = now
        client.hset(key(_HASH), channel, json.dumps(entry))
    except redis.RedisError as exc:
        log.warning("could not record the webhook handshake", extra={"error": type(exc).__name__})


def subscriptions() -> dict[str, dict[str, Any]]:
    """``{channel: {"topic", "mode", "at", "subscribed_at", "unsubscribed_at", "lease_seconds"}}`` (times in epoch
    seconds, absent when never seen); empty when nothing was recorded or Redis is away."""
    try:
        raw: dict[bytes, bytes] = get_redis().hgetall(key(_HASH))  # type: ignore[assignment]
    except redis.RedisError:
        return {}
    return {channel.decode(): json.loads(value) for channel, value in raw.items()}
