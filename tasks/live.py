"""The live stream's publishing side: applied user changes go out on Redis pub/sub after their commit.

Publishing is best effort: a subscriber that misses a message catches up from the audit trail by ``Last-Event-ID``,
so a Redis hiccup here must never fail the task that made the change.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

import redis

from models.users import Change
from tasks.redis_client import get_redis, key

log = logging.getLogger(__name__)


def channel() -> str:
    return key("live:users")


def publish_changes(changes: Iterable[Change]) -> int:
    """Publish each change (call after the transaction that wrote them committed). Returns how many went out."""
    sent = 0
    try:
        client = get_redis()
        pipe = client.pipeline(transaction=False)
        for change in changes:
            pipe.publish(channel(), json.dumps(change.as_message(), default=str))
            sent += 1
        if sent:
            pipe.execute()
    except redis.RedisError as exc:
        log.warning(
            "live stream publish failed; subscribers will resume from the audit trail",
            extra={"error": type(exc).__name__, "count": sent},
        )
        return 0
    return sent
