"""What the processes and Postgres are doing while a benchmark sends load: sampled beside the latency figures.

:class:`Sampler` polls, every ``interval`` seconds on its own connection: Postgres's checkpoint counters, the
autovacuum workers at work in the benchmark's database and on which table, lock waits, the inbox's live and dead
rows, table sizes, rows deleted and ANALYZE runs per table, the broker's queue depth, the inbox backlog (events not
applied yet), the CPU time and memory (RSS, whole process trees) of the product's processes and of Postgres, and
the machine's CPU and I/O pressure stalls.
:func:`gc_env` puts bench/probe on ``PYTHONPATH``, so every Python process started with it logs its slow garbage
collections (see bench/probe/sitecustomize.py), and :func:`read_gc_log` reads them back.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis

from tests.services import libpq_url

PROBE = Path(__file__).resolve().parent / "probe"
TABLES = ("webhook_events", "sessions", "sync_runs", "user_changes", "users")

_SQL = """
SELECT
  {checkpoints},
  (SELECT coalesce(string_agg(regexp_replace(query, '^autovacuum: ', ''), '; '), '')
     FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' AND datname = current_database()) AS autovacuum,
  (SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock') AS lock_waits,
  (SELECT json_object_agg(relname, json_build_array(n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count,
                                                    pg_total_relation_size(relid), n_tup_del, analyze_count))
     FROM pg_stat_user_tables) AS tables,
  -- Only the backlog, through the status index: counting every status read the whole inbox each second, 20-77 ms
  -- of a Postgres backend at 72,000 rows, which the soak then measured as the service's own stalls.
  (SELECT json_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM webhook_events
                                           WHERE status IN ('received', 'queued') GROUP BY status) s) AS inbox,
  pg_backend_pid() AS backend_pid
"""


# Postgres 17 moved the checkpoint counters from pg_stat_bgwriter to pg_stat_checkpointer.
_CHECKPOINTS_OLD = (
    "(SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) AS checkpoints,"
    " (SELECT buffers_checkpoint FROM pg_stat_bgwriter) AS buffers_checkpoint"
)
_CHECKPOINTS_NEW = (
    "(SELECT num_timed + num_requested FROM pg_stat_checkpointer) AS checkpoints,"
    " (SELECT buffers_written FROM pg_stat_checkpointer) AS buffers_checkpoint"
)


def gc_env(env: Mapping[str, str], log_path: Path) -> dict[str, str]:
    """``env`` with the GC probe on ``PYTHONPATH`` writing to ``log_path``."""
    path = os.pathsep.join(p for p in (str(PROBE), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, "BENCH_GC_LOG": str(log_path)}


def read_gc_log(log_path: Path) -> list[tuple[int, float, int, float]]:
    """``(pid, wall_time_s, generation, duration_ms)`` per logged collection."""
    if not log_path.exists():
        return []
    rows = []
    for line in log_path.read_text().splitlines():
        pid, at, generation, took, _ = line.split()
        rows.append((int(pid), float(at), int(generation), float(took)))
    return rows


def pressure() -> dict[str, int]:
    """Linux's pressure-stall totals (microseconds since boot; empty where /proc/pressure is absent): ``cpu_wait_us``,
    time some runnable task waited for a CPU, and ``io_wait_us``, time some task waited for I/O. A slow second with
    a jump in one of them was the machine's, not the service's code."""
    found: dict[str, int] = {}
    for resource in ("cpu", "io"):
        try:
            line = Path(f"/proc/pressure/{resource}").read_text().splitlines()[0]
        except OSError:
            continue
        found[f"{resource}_wait_us"] = int(line.rsplit("total=", 1)[1])
    return found


def tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _usage(procs: list[psutil.Process]) -> tuple[float, float, list[float]]:
    """CPU seconds (user + system) and RSS (MB) of the whole tree, and RSS of each process."""
    cpu, rss, each = 0.0, 0.0, []
    for proc in procs:
        try:
            times = proc.cpu_times()
            mem = proc.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            continue
        cpu += times.user + times.system
        rss += mem
        each.append(mem)
    return cpu, rss, each


class Sampler:
    """Samples in a thread until :meth:`stop`; ``samples`` holds one dict per tick (``t`` is epoch seconds)."""

    def __init__(
        self,
        database_url: str,
        redis_url: str,
        key_prefix: str,
        pids: Mapping[str, int],
        *,
        interval: float = 0.25,
        queues: tuple[str, ...] = ("events", "default", "users", "reconcile"),
        generator_pids: tuple[int, ...] = (),
    ) -> None:
        self.conninfo = libpq_url(database_url)
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.key_prefix = key_prefix
        self.pids = dict(pids)
        self.interval = interval
        self.queues = queues
        # This process and those that send the load besides it (a soak's sender): the generator's CPU. Made once, so a
        # sender that has exited (after its run) is skipped rather than looked up again.
        self.generator = [psutil.Process(), *(psutil.Process(pid) for pid in generator_pids)]
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="activity-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(10)
        return self.samples

    def _run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            recent = conn.info.server_version >= 170000
            statement = _SQL.replace("{checkpoints}", _CHECKPOINTS_NEW if recent else _CHECKPOINTS_OLD)
            postmaster: psutil.Process | None = None
            while not self._stop.is_set():
                began = time.time()
                row = conn.execute(statement).fetchone()  # type: ignore[call-overload]
                assert row is not None
                checkpoints, buffers, autovacuum, lock_waits, tables, inbox, backend_pid = row
                if postmaster is None:
                    postmaster = psutil.Process(backend_pid).parent()
                sample: dict[str, Any] = {
                    "t": began,
                    "checkpoints": checkpoints,
                    "buffers_checkpoint": buffers,
                    "autovacuum": autovacuum,
                    "lock_waits": lock_waits,
                    "tables": tables or {},
                    "inbox": inbox or {},
                    "queue": sum(int(self.redis.llen(f"{self.key_prefix}{q}")) for q in self.queues),
                }
                for name, pid in self.pids.items():
                    cpu, rss, each = _usage(tree(pid))
                    sample[f"{name}_cpu_s"] = cpu
                    sample[f"{name}_rss_mb"] = rss
                    sample[f"{name}_rss_each_mb"] = each
                if postmaster is not None:
                    sample["postgres_cpu_s"] = _usage(tree(postmaster.pid))[0]
                # The whole machine, and this benchmark process with its senders (the load generator): what is left
                # over is other people's work on a shared machine.
                sample.update(pressure())
                total = psutil.cpu_times()
                sample["machine_cpu_s"] = sum(total) - total.idle - getattr(total, "iowait", 0.0)
                sample["generator_cpu_s"] = _usage(self.generator)[0]
                self.samples.append(sample)
                self._stop.wait(max(0.0, self.interval - (time.time() - began)))
