"""Asgardeo-like rate limiting: a per-minute request budget per client IP, answering 429 when spent.

A fixed one-minute window per IP, as coarse as Asgardeo's documented "200 requests per minute per source IP".
A budget of 0 turns limiting off (benchmarks). Thread-safe; the budget can change at run time.
"""

from __future__ import annotations

import threading
import time


class RateLimiter:
    """Counts requests per (IP, minute window)."""

    def __init__(self, per_minute: int, window_s: float = 60.0) -> None:
        self._lock = threading.Lock()
        self._per_minute = per_minute
        self._window_s = window_s
        self._windows: dict[str, tuple[float, int]] = {}
        self.rejected = 0

    @property
    def per_minute(self) -> int:
        return self._per_minute

    def configure(self, per_minute: int, window_s: float | None = None) -> None:
        """Change the budget and start fresh windows for every IP."""
        with self._lock:
            self._per_minute = per_minute
            if window_s is not None:
                self._window_s = window_s
            self._windows.clear()

    def allow(self, ip: str) -> bool:
        """Record one request from ``ip``; False when it exceeds the budget (the caller answers 429)."""
        if self._per_minute <= 0:
            return True
        now = time.monotonic()
        with self._lock:
            start, used = self._windows.get(ip, (now, 0))
            if now - start >= self._window_s:
                start, used = now, 0
            if used >= self._per_minute:
                self.rejected += 1
                return False
            self._windows[ip] = (start, used + 1)
            return True
