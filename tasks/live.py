"""The live stream's publishing side: applied user changes go out on Redis pub/sub after their commit.

One message per call, holding the JSON array of that transaction's changes: a reconciliation page of hundreds of
users is one PUBLISH, not hundreds (measured: per-change publishing took a tenth of a 100,000-user run's Python
time). Subscribers (:mod:`web.live`) split the array into one Server-Sent Event per change.

Publishing is best effort: a subscriber that misses a message catches up from the audit trail by ``Last-Event-ID``,
so a Redis hiccup here must never fail the task that made the change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import orjson
import redis

from models.users import Change
from tasks.redis_client import get_redis, key

log = logging.getLogger(__name__)


def channel() -> str:
    return key("live:users")


def publish_changes(changes: Iterable[Change]) -> int:
    """Publish the changes as one message (call after the transaction that wrote them committed).

    Returns how many changes went out.
    """
    messages = [change.as_message() for change in changes]
    return publish_encoded(orjson.dumps(messages, default=str), len(messages)) if messages else 0


def publish_encoded(messages: bytes, count: int) -> int:
    """Publish ``count`` changes already encoded as one JSON array (see
    :attr:`models.users.UpsertResult.encoded_changes`). Returns how many went out."""
    if count <= 0:
        return 0
    try:
        get_redis().publish(channel(), messages)
    except redis.RedisError as exc:
        log.warning(
            "live stream publish failed; subscribers will resume from the audit trail",
            extra={"error": type(exc).__name__, "count": count},
        )
        return 0
    return count
