"""Service-wide counters and histograms kept in Redis, so every web and worker process on every machine adds to one
set of numbers and any web process can export them.

Recording is cheap and never fails the caller: increments collect in process memory and a background thread flushes
them to Redis once a second (one pipelined round trip). A Redis outage loses at most those seconds of counts.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import os
import threading
import time
from collections import defaultdict
from collections.abc import Mapping

import redis

from tasks.redis_client import get_redis, key

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
# Upper bounds of the latency buckets, in seconds (Prometheus ``le`` labels).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _field(name: str, labels: Mapping[str, str]) -> str:
    """``name|k=v|k=v`` with sorted labels: the Redis hash field of one series."""
    return "|".join([name, *(f"{k}={labels[k]}" for k in sorted(labels))])


def parse_field(field: str) -> tuple[str, dict[str, str]]:
    name, *pairs = field.split("|")
    return name, dict(pair.split("=", 1) for pair in pairs)


class _Recorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, float] = defaultdict(float)
        self._pid = 0
        self._thread: threading.Thread | None = None

    def add(self, field: str, amount: float) -> None:
        with self._lock:
            self._pending[field] += amount
            if self._pid != os.getpid():
                self._start()

    def _start(self) -> None:
        """(Re)start the flusher in this process: a forked child does not inherit the parent's thread."""
        self._pid = os.getpid()
        self._pending = defaultdict(float, self._pending) if self._thread is None else defaultdict(float)
        self._thread = threading.Thread(target=self._loop, name="metrics-flush", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, defaultdict(float)
        if not batch:
            return
        try:
            pipe = get_redis().pipeline(transaction=False)
            for field, amount in batch.items():
                pipe.hincrbyfloat(key("metrics"), field, amount)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("metrics flush failed; these counts are lost", extra={"error": type(exc).__name__})


_recorder = _Recorder()
atexit.register(_recorder.flush)


def inc(name: str, amount: float = 1.0, **labels: str) -> None:
    """Add to a counter, e.g. ``inc("webhooks_rejected", reason="bad_signature")``."""
    _recorder.add(_field(name, labels), amount)


def observe(name: str, seconds: float, **labels: str) -> None:
    """Record a duration in the histogram ``name`` (cumulative buckets, sum and count as Prometheus expects)."""
    buckets, total, count = _histogram_fields(name, tuple(sorted(labels.items())))
    for bound, bucket in buckets:
        if seconds <= bound:
            _recorder.add(bucket, 1)
    _recorder.add(total, seconds)
    _recorder.add(count, 1)


@functools.lru_cache(maxsize=256)
def _histogram_fields(name: str, labels: tuple[tuple[str, str], ...]) -> tuple[tuple[tuple[float, str], ...], str, str]:
    """The hash fields of one histogram series, built once: the intake observes every delivery, and building a
    dozen field strings per call was a few percent of a web process's CPU."""
    plain = dict(labels)
    bounds = (*LATENCY_BUCKETS, math.inf)
    buckets = tuple((b, _field(f"{name}_bucket", {**plain, "le": "+Inf" if b == math.inf else str(b)})) for b in bounds)
    return buckets, _field(f"{name}_sum", plain), _field(f"{name}_count", plain)


def flush() -> None:
    """Write pending counts now (tests, and before a process exits)."""
    _recorder.flush()


def read_all() -> dict[str, float]:
    """Every series as ``{field: value}``, for the exporter."""
    raw: dict[bytes, bytes] = get_redis().hgetall(key("metrics"))  # type: ignore[assignment]
    return {f.decode(): float(v) for f, v in raw.items()}
