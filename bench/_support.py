# ruff: noqa: PLC0415 - app modules load after the environment is set, exactly as a fresh process would
"""Shared plumbing for the webhook benchmarks: servers, the app under test, a paced HTTP load generator."""

from __future__ import annotations

import gc
import http.client
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localrun.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-webhook-secret"


def bench_app() -> Any:
    """The product's app plus a bare endpoint (same server, same middleware) to compare against."""
    from flask import jsonify, request

    from web import create_app

    app = create_app()

    @app.post("/bench/bare")
    def bare() -> Any:
        request.get_data()  # receive the body as the intake does: left unread, it stalls the keep-alive connection
        return jsonify(status="accepted"), 202

    return app


@contextmanager
def services() -> Iterator[dict[str, str]]:
    """A fresh database (migrated) and Redis key prefix, on CI's servers or embedded ones; the env for children.

    On exit the process's environment and cached settings and clients are as before, so a benchmark can take
    fresh services more than once in one process."""
    sys.path.insert(0, str(ROOT))
    from tests.services import TestServices

    names = ("APP_ENV", "DATABASE_URL", "REDIS_URL", "REDIS_KEY_PREFIX", "WEBHOOK_SECRETS", "LOG_LEVEL")
    saved = {name: os.environ.get(name) for name in names}
    svc = TestServices()
    svc.start()
    env = dict(
        os.environ,
        APP_ENV="test",
        DATABASE_URL=svc.database_url,
        REDIS_URL=svc.redis_url,
        REDIS_KEY_PREFIX=svc.key_prefix,
        WEBHOOK_SECRETS=SECRET,
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    os.environ.update({name: env[name] for name in names})
    from models import migrate
    from models.settings import get_settings
    from tasks.redis_client import get_redis

    get_settings.cache_clear()
    get_redis.cache_clear()
    migrate.upgrade()
    try:
        yield env
    finally:
        from models.db import reset_engine

        reset_engine()
        svc.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()
        get_redis.cache_clear()


def queued_event_ids(queue: str) -> list[int]:
    """The inbox ids carried by the messages waiting in ``queue`` (``events.apply_batch`` carries several, and
    ``events.apply`` one), read without taking them: a Redis list's items, or RabbitMQ's messages fetched and then
    returned unacknowledged."""
    import base64
    import json

    from models.settings import get_settings
    from tasks.app import app
    from tasks.redis_client import get_redis, key

    def ids(body: bytes) -> list[int]:
        args = json.loads(body)[0]
        return list(args[0]) if isinstance(args[0], list) else [args[0]]

    if not get_settings().broker_is_rabbitmq:
        found: list[int] = []
        for raw in get_redis().lrange(key(queue), 0, -1):
            envelope = json.loads(raw)
            found += ids(base64.b64decode(envelope["body"]))
        return found
    from amqp.exceptions import ChannelError

    found = []
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        try:
            while (message := channel.basic_get(queue, no_ack=False)) is not None:
                found += ids(message.body)
        except ChannelError:  # not declared yet: nothing was ever sent to it
            return []
        finally:
            channel.close()  # unacknowledged, every message goes back to the queue
    return found


def wait_http(port: int, deadline_seconds: float = 30) -> None:
    """Until ``GET /healthz`` on loopback ``port`` answers 200; ``RuntimeError`` after ``deadline_seconds``."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered /healthz on port {port}")


@dataclass(frozen=True)
class Server:
    port: int
    pid: int

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server's process tree (master and workers) so far."""
        return tree_cpu_seconds(self.pid)


def tree_cpu_seconds(pid: int) -> float:
    """User plus system CPU time so far of process ``pid`` and its descendants (those that ended are not counted)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


@contextmanager
def gunicorn(
    env: dict[str, str], workers: int = 2, threads: int = 8, worker_class: str | None = None
) -> Iterator[Server]:
    """The bench app under gunicorn with the service's own ``gunicorn.conf.py`` (its worker class unless
    ``worker_class`` names another), on a free loopback port."""
    port = free_port()
    cmd = [
        str(ROOT / ".venv/bin/gunicorn"),
        "--config",
        str(ROOT / "gunicorn.conf.py"),
        "--bind",
        f"127.0.0.1:{port}",
        *(["--worker-class", worker_class] if worker_class else []),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--log-level",
        "warning",
        "bench._support:bench_app()",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_http(port)
        yield Server(port, proc.pid)
    finally:
        proc.terminate()
        proc.wait(15)


@contextmanager
def celery_worker(
    env: dict[str, str], concurrency: int = 2, extra: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker process on the events, users and default queues; ``extra`` arguments are added."""
    cmd = [
        str(ROOT / ".venv/bin/celery"),
        "-A",
        "tasks",
        "worker",
        "--queues",
        "events,users,default",
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        *extra,
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class Result:
    sent: int
    seconds: float
    latencies_ms: list[float]
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))] if data else float("nan")

    def line(self, label: str) -> str:
        return (
            f"{label:<28} {self.rate:8.0f}/s  p50 {self.pct(0.5):6.1f} ms  p95 {self.pct(0.95):6.1f} ms  "
            f"p99 {self.pct(0.99):6.1f} ms  n={self.sent} statuses={self.statuses}"
        )


def load(
    port: int,
    path: str,
    bodies: Sequence[tuple[bytes, dict[str, str]]],
    *,
    concurrency: int,
    rate: float | None = None,
    timeout: float = 60.0,
    on_response: Callable[[int, float, float, int], None] | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Send every body once over keep-alive connections; ``rate`` paces the sends (open loop: send ``i`` is due at
    ``start + i / rate``), else as fast as possible. Bounded by count and by ``timeout`` seconds.

    ``on_response(index, sent_at_epoch_s, latency_ms, status)`` sees every answer, for callers that need per-send
    records (lag, latency windows). ``stop``, once set, ends the sending early (a run timed around another event).

    The cyclic garbage collector is off while it sends: this process is the measuring instrument, and one of its
    full collections (88 ms, seen in a soak once its records had grown) delayed every answer in flight, which then
    counted as the server's latency. What it allocates while sending holds no reference cycles worth collecting."""
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    cursor = iter(range(len(bodies)))
    start = time.perf_counter()
    stop_at = start + timeout

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            with lock:
                index = next(cursor, None)
            if index is None or time.perf_counter() > stop_at or (stop is not None and stop.is_set()):
                break
            if rate:
                due = start + index / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            raw, headers = bodies[index]
            sent_at = time.time()
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=raw, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                status = 0
            elapsed = (time.perf_counter() - t0) * 1000
            if on_response is not None:
                on_response(index, sent_at, elapsed, status)
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    collecting = gc.isenabled()
    gc.disable()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        if collecting:
            gc.enable()
    seconds = time.perf_counter() - start
    return Result(len(latencies), seconds, latencies, statuses)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
