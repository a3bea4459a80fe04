"""No Docker engine runs here, so check what can be checked: the files parse and agree with the Procfile."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from localrun.procfile import read_procfile

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, dict[str, object]]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services: dict[str, dict[str, object]] = data["services"]
    return services


def _shell_command(service: dict[str, object]) -> str:
    command = service["command"]
    assert isinstance(command, list)
    assert command[:2] == ["sh", "-c"]
    return str(command[2])


def test_procfile_has_the_four_processes() -> None:
    assert list(read_procfile()) == ["web", "worker", "beat", "flower"]


def test_compose_runs_every_procfile_process_with_the_same_command() -> None:
    services = _compose()
    for name, command in read_procfile().items():
        assert _shell_command(services[name]) == command, name


def test_dockerfile_default_command_is_the_procfile_web_line() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert read_procfile()["web"] in dockerfile


def test_compose_has_backing_services_with_healthchecks_and_a_named_postgres_volume() -> None:
    services = _compose()
    for name in ("postgres", "redis", "web", "worker"):
        assert "healthcheck" in services[name], name
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]  # type: ignore[operator]
    redis_command = services["redis"]["command"]
    assert isinstance(redis_command, list)
    assert "noeviction" in redis_command


def test_flower_is_published_on_loopback_only() -> None:
    assert _compose()["flower"]["ports"] == ["127.0.0.1:5555:5555"]


def test_procfile_parser_rejects_malformed_lines(tmp_path: Path) -> None:
    bad = tmp_path / "Procfile"
    bad.write_text("web gunicorn app\n")
    with pytest.raises(ValueError, match="Procfile:1"):
        read_procfile(bad)


def test_flowers_own_task_store_is_bounded() -> None:
    # Flower keeps every task it saw in memory and, with --persistent, in its db file; unbounded, it grows for months.
    # The local run and compose start the Procfile's line (checked above).
    assert "--max_tasks=10000" in read_procfile()["flower"]


def test_beat_schedules_housekeeping() -> None:
    import celeryconfig

    assert celeryconfig.beat_schedule["housekeeping"]["task"] == "housekeeping.run"
