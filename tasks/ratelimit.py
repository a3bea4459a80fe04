"""The shared SCIM/OAuth rate budget: one Redis token bucket for every process that calls Asgardeo.

Asgardeo allows ``SCIM_RATE_PER_MINUTE`` (200) requests per minute per source IP over ``/scim2/*`` and
``/oauth2/*`` together and answers 429 beyond that. Every request of every worker, web process and command goes
through :meth:`RateBudget.acquire` first, so a burst of webhook refreshes plus a nightly reconciliation together
stay inside that budget.

The bucket holds ``burst`` tokens and refills at ``(limit - burst - 1) / period`` tokens a second, so any window of
``period`` seconds grants at most ``limit - 1`` requests: Asgardeo counts in fixed windows whose start we cannot see,
and a bucket that granted ``limit`` per period plus a full burst could cross that line at a window boundary. The one
spare request absorbs network jitter. Refill and take happen in one Lua script, atomic across processes, on the
Redis server's clock (``TIME``), so machines with skewed clocks still share one budget.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from models.settings import Settings, get_settings
from tasks.errors import TransientError
from tasks.redis_client import get_redis, key

log = logging.getLogger(__name__)

# KEYS[1] the bucket (hash: tokens, ts). ARGV: capacity, refill per ms, now in ms ('' = Redis TIME), key ttl in ms.
# Returns 0 when a token was taken, else the milliseconds until one will be there.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now
if ARGV[3] == '' then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
    now = tonumber(ARGV[3])
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
    tokens = capacity
    ts = now
end
if now > ts then
    tokens = math.min(capacity, tokens + (now - ts) * rate)
    ts = now
end
local wait = 0
if tokens >= 1 then
    tokens = tokens - 1
else
    wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return wait
"""


class RateBudgetTimeout(TransientError):
    """No request slot became free within the caller's bounded wait."""


@dataclass(frozen=True)
class BucketShape:
    """Capacity and refill of a bucket that grants at most ``limit - 1`` requests in any ``period`` seconds."""

    limit: int
    period: float
    burst: int
    refill_per_second: float

    @classmethod
    def for_limit(cls, limit: int, period: float = 60.0, burst: int | None = None) -> BucketShape:
        if limit < 1 or period <= 0:
            raise ValueError("a rate budget needs limit >= 1 and period > 0")
        chosen = burst if burst is not None else max(1, limit // 20)
        chosen = max(1, min(chosen, limit))
        refill = max(limit - chosen - 1, 1) / period
        return cls(limit=limit, period=period, burst=chosen, refill_per_second=refill)


class RateBudget:
    """A token bucket in Redis shared by every process using the same ``bucket_key``.

    ``clock`` (milliseconds) exists for tests; by default the Redis server's clock is used.
    """

    def __init__(
        self,
        client: redis.Redis,
        bucket_key: str,
        shape: BucketShape,
        *,
        max_wait: float = 60.0,
        clock: Callable[[], int] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._key = bucket_key
        self.shape = shape
        self.max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self._script = client.register_script(_TAKE)
        self._ttl_ms = int(max(shape.period, shape.burst / shape.refill_per_second) * 2000) + 1000

    def try_acquire(self) -> float:
        """Take a token if one is there: 0.0 on success, else the seconds until the next token."""
        now = "" if self._clock is None else str(self._clock())
        rate_per_ms = self.shape.refill_per_second / 1000.0
        wait_ms = self._script(keys=[self._key], args=[self.shape.burst, repr(rate_per_ms), now, self._ttl_ms])
        return int(wait_ms) / 1000.0

    def acquire(self, max_wait: float | None = None) -> float:
        """Block until a token is taken; returns the seconds waited.

        Raises :class:`RateBudgetTimeout` when none is free within ``max_wait`` (default: the budget's own), and
        :class:`TransientError` when Redis cannot be asked: without the shared budget nobody can promise Asgardeo
        stays under its limit, so the call is not made.
        """
        limit = self.max_wait if max_wait is None else max_wait
        started = time.monotonic()
        while True:
            try:
                wait = self.try_acquire()
            except redis.RedisError as exc:
                raise TransientError(f"rate budget unavailable: {type(exc).__name__}") from exc
            waited = time.monotonic() - started
            if wait <= 0:
                return waited
            if waited + wait > limit:
                raise RateBudgetTimeout(f"no request slot within {limit:.1f}s")
            # A little jitter so processes woken for the same token do not all ask at the same instant.
            self._sleep(wait + random.uniform(0, min(wait, 0.05)))  # noqa: S311 - jitter, not security


def budget_for(
    base_url: str, settings: Settings | None = None, client: redis.Redis | None = None, *, period: float = 60.0
) -> RateBudget:
    """The shared budget for calls to ``base_url`` (one bucket per Asgardeo organisation URL)."""
    settings = settings or get_settings()
    shape = BucketShape.for_limit(settings.scim_rate_per_minute, period)
    return RateBudget(
        client or get_redis(),
        key(f"ratelimit:{base_url.rstrip('/')}"),
        shape,
        max_wait=settings.scim_rate_max_wait_seconds,
    )
