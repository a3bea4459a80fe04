"""The process's Redis client and the key prefix every key of ours carries."""

from __future__ import annotations

from functools import lru_cache

import redis

from models.settings import get_settings


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    """A pooled client with short timeouts: callers on a request path must fail fast when Redis is away.

    redis-py notices a fork and opens fresh connections in the child, so one client per process is safe.
    """
    return redis.Redis.from_url(
        get_settings().redis_url,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
        decode_responses=False,
    )


def key(name: str) -> str:
    """``name`` under the deployment's ``REDIS_KEY_PREFIX``, so deployments and test runs never share keys."""
    return f"{get_settings().redis_key_prefix}{name}"
