"""Garbage-collection timing for benchmark runs, loaded by every Python process started with this folder on
``PYTHONPATH`` (bench.activity does that). Nothing here is part of the product.

With ``BENCH_GC_LOG`` set, each collection of the older generations (1 and 2), and any collection that takes 1 ms or
more, appends ``pid wall_time_s generation duration_ms collected`` to that file: one ``O_APPEND`` write, so forked
gunicorn and Celery children interleave whole lines.
"""

from __future__ import annotations

import gc
import os
import time

_path = os.environ.get("BENCH_GC_LOG")
if _path:
    _fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _started = [0.0]

    def _timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        took = (time.perf_counter() - _started[0]) * 1000
        if info["generation"] >= 1 or took >= 1.0:
            line = f"{os.getpid()} {time.time():.3f} {info['generation']} {took:.2f} {info['collected']}\n"
            os.write(_fd, line.encode())

    gc.callbacks.append(_timed)
