"""The README's first command on embedded defaults: everything comes up, proves itself, and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from localrun.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]


def _run_check(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "REDIS_KEY_PREFIX")}
    # The local run must not inherit the test run's wiring: it sets up its own stand-in and secrets.
    for name in list(env):
        if name.startswith(("ASGARDEO_", "OIDC_", "SCIM_", "WEBHOOK_", "PUBLIC_BASE_URL", "SECRET_KEY", "APP_ENV")):
            env.pop(name)
    env["LOCALRUN_DATA_DIR"] = str(data_dir)
    ports = [str(free_port()) for _ in range(5)]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "localrun",
            "--check",
            "--web-port",
            ports[0],
            "--flower-port",
            ports[1],
            "--standin-port",
            ports[2],
            "--postgres-port",
            ports[3],
            "--redis-port",
            ports[4],
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _processes_using(data_dir: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline:
            found.append(cmdline)
    return found


@pytest.mark.slow
def test_local_run_comes_up_on_embedded_servers_twice_and_leaves_no_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "local"
    first = _run_check(data_dir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "check passed" in first.stdout
    assert "embedded PostgreSQL" in first.stdout
    assert "embedded Redis" in first.stdout
    assert _processes_using(data_dir) == []

    second = _run_check(data_dir)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    assert _processes_using(data_dir) == []


@pytest.mark.slow
def test_restarting_the_local_run_twice_keeps_one_row_per_demo_user_and_changes_nothing(tmp_path: Path) -> None:
    """The stand-in keeps its directory, so restarts bring the same demo users with the same ids: each --check's
    full reconciliation after the first creates, updates and retires nobody (it used to create two new rows per
    restart and end guarded)."""
    data_dir = tmp_path / "local"
    summaries = []
    for _ in range(3):
        result = _run_check(data_dir)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        summaries.append(next(line for line in result.stdout.splitlines() if "full reconciliation run" in line))
    assert "seen 2, created 2, updated 0, deactivated 0" in summaries[0]
    for later in summaries[1:]:
        assert "succeeded: seen 2, created 0, updated 0, deactivated 0" in later
    banner = result.stdout
    for shown in ("/admin/users", "/admin/sync", "/api-docs", "flask --app", "asgardeo-standin", "Admin#2024"):
        assert shown in banner
    assert "printed above" not in banner
    assert "FLOWER_URL=http://127.0.0.1:" in (data_dir / "run.env").read_text()


def test_a_second_concurrent_run_is_refused(tmp_path: Path) -> None:
    import fcntl

    data_dir = tmp_path / "local"
    data_dir.mkdir()
    with (data_dir / "run.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = _run_check(data_dir)
    assert result.returncode != 0
    assert "another local run" in result.stderr
    assert _processes_using(data_dir) == []
