from __future__ import annotations

import pytest
from pydantic import SecretStr

from models.settings import Settings
from tasks.flower_guard import guard_flower

FLOWER_ARGV = ["celery", "-A", "tasks", "flower", "--port=5555"]


def test_flower_without_credentials_is_refused_outside_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    with pytest.raises(SystemExit, match="FLOWER_BASIC_AUTH"):
        guard_flower(Settings(app_env="test"), FLOWER_ARGV)


def test_credentials_from_settings_are_handed_to_flower(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    guard_flower(Settings(app_env="test", flower_basic_auth=SecretStr("ops:pw")), FLOWER_ARGV)
    import os

    assert os.environ["FLOWER_BASIC_AUTH"] == "ops:pw"


def test_other_processes_are_not_affected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    guard_flower(Settings(app_env="production"), ["celery", "-A", "tasks", "worker"])
