"""Start child processes in their own process groups, relay their output, and stop every one of them.

Each child gets its own session (process group), so stopping a child also stops what it forked (gunicorn and Celery
workers fork). The groups are recorded in a state file: a run that was killed before it could clean up has its
leftovers stopped by the next run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

COLOURS = ("36", "33", "35", "32", "34", "31")


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


@dataclass
class Supervisor:
    state_file: Path
    children: list[Child] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stop_leftovers(self) -> int:
        """Stop process groups recorded by an earlier run that did not shut down cleanly. Returns how many."""
        if not self.state_file.exists():
            return 0
        try:
            groups = [int(pgid) for pgid in json.loads(self.state_file.read_text()).get("process_groups", [])]
        except (ValueError, OSError):
            groups = []
        stopped = sum(1 for pgid in groups if _signal_group(pgid, signal.SIGTERM))
        _wait_groups_gone(groups, timeout=10)
        for pgid in groups:
            _signal_group(pgid, signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
        return stopped

    def start(self, name: str, command: str, env: Mapping[str, str], cwd: Path) -> Child:
        process = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {command}"],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child = Child(name, process)
        colour = COLOURS[len(self.children) % len(COLOURS)]
        threading.Thread(target=self._relay, args=(child, colour), daemon=True).start()
        self.children.append(child)
        self._save()
        return child

    def _relay(self, child: Child, colour: str) -> None:
        stream: IO[bytes] | None = child.process.stdout
        if stream is None:
            return
        prefix = f"\033[{colour}m{child.name:>8} |\033[0m " if sys.stdout.isatty() else f"{child.name:>8} | "
        for raw in iter(stream.readline, b""):
            with self._lock:
                sys.stdout.write(prefix + raw.decode(errors="replace"))
                sys.stdout.flush()

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        groups = [c.process.pid for c in self.children]
        self.state_file.write_text(json.dumps({"supervisor": os.getpid(), "process_groups": groups}))

    def _reap(self) -> None:
        """Collect exited children, so a zombie leader does not keep its group looking alive."""
        for child in self.children:
            child.process.poll()

    def first_exited(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop_all(self, timeout: float = 15.0) -> None:
        """SIGTERM every group (newest first), wait up to ``timeout``, then SIGKILL what is left."""
        groups = [c.process.pid for c in reversed(self.children)]
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        _wait_groups_gone(groups, timeout, reap=self._reap)
        for pgid in groups:
            _signal_group(pgid, signal.SIGKILL)
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(5)
        self.children.clear()
        self.state_file.unlink(missing_ok=True)


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_groups_gone(groups: list[int], timeout: float, reap: Callable[[], None] = lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap()
        if not any(_group_alive(g) for g in groups):
            return
        time.sleep(0.1)
