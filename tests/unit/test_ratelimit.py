"""The shared token bucket, on fakeredis with a controlled clock (the Lua script runs in fakeredis' Lua)."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from tasks.errors import TransientError
from tasks.ratelimit import BucketShape, RateBudget, RateBudgetTimeout


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms

    def sleep(self, seconds: float) -> None:
        self.ms += int(seconds * 1000) + 1


def budget(limit: int = 200, period: float = 60.0, **kwargs: object) -> tuple[RateBudget, Clock]:
    clock = Clock()
    client = fakeredis.FakeRedis()
    shape = BucketShape.for_limit(limit, period)
    return RateBudget(client, "bucket", shape, clock=clock, sleep=clock.sleep, **kwargs), clock  # type: ignore[arg-type]


def test_shape_never_grants_more_than_the_limit_in_one_period() -> None:
    for limit in (2, 3, 10, 200, 1000):
        shape = BucketShape.for_limit(limit)
        most = shape.burst + shape.refill_per_second * shape.period
        assert most <= limit + 1e-9
        if limit >= 10:
            assert 0.9 * limit <= most <= limit - 1 + 1e-9


def test_bad_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        BucketShape.for_limit(0)
    with pytest.raises(ValueError, match="period"):
        BucketShape.for_limit(10, period=0)


def test_full_bucket_grants_its_burst_then_asks_to_wait() -> None:
    rb, _ = budget(200)
    grants = [rb.try_acquire() for _ in range(rb.shape.burst)]
    assert grants == [0.0] * rb.shape.burst
    wait = rb.try_acquire()
    assert 0 < wait <= 60 / 189 + 0.01


def test_tokens_refill_with_time() -> None:
    rb, clock = budget(200)
    for _ in range(rb.shape.burst):
        rb.try_acquire()
    assert rb.try_acquire() > 0
    clock.ms += 1000
    assert rb.try_acquire() == 0.0


def test_requests_in_any_minute_stay_under_the_limit() -> None:
    rb, clock = budget(200, max_wait=5)
    start = clock.ms
    times = []
    while clock.ms - start < 180_000:
        rb.acquire()
        times.append(clock.ms)
    for i, t in enumerate(times):
        in_window = sum(1 for u in times[i:] if u < t + 60_000)
        assert in_window <= 199
    per_minute = len(times) / 3
    assert per_minute >= 0.9 * 200


def test_bucket_is_shared_by_two_budget_objects_on_one_key() -> None:
    clock = Clock()
    client = fakeredis.FakeRedis()
    shape = BucketShape.for_limit(40)
    a = RateBudget(client, "k", shape, clock=clock, sleep=clock.sleep)
    b = RateBudget(client, "k", shape, clock=clock, sleep=clock.sleep)
    granted = sum(1 for i in range(10) if (a if i % 2 else b).try_acquire() == 0.0)
    assert granted == shape.burst


def test_acquire_gives_up_after_the_bounded_wait() -> None:
    rb, _ = budget(2, period=600, max_wait=1.0)
    rb.acquire()
    with pytest.raises(RateBudgetTimeout):
        rb.acquire()


def test_timeout_is_a_transient_error() -> None:
    assert issubclass(RateBudgetTimeout, TransientError)


def test_redis_down_is_a_transient_error_not_a_free_pass() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    rb = RateBudget(client, "k", BucketShape.for_limit(10))
    with pytest.raises(TransientError, match="rate budget unavailable"):
        rb.acquire()


def test_corrupt_bucket_state_starts_a_fresh_bucket() -> None:
    rb, _ = budget(200)
    rb._client.hset("bucket", mapping={"tokens": "junk", "ts": "x"})
    assert rb.try_acquire() == 0.0
