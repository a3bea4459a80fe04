"""The stand-in's admin API refuses bodies it does not understand; its directory survives a restart when it has a
state file; its CLI finds the local run's stand-in by default and says so plainly when none answers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from asgardeo_standin.client import StandinAdmin
from asgardeo_standin.config import StandinConfig
from asgardeo_standin.server import DEMO_USERS, start_in_thread
from localrun.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "body",
    [
        {"Operations": [{"op": "replace", "path": "name.givenName", "value": "Ada"}]},
        {"givenName": "Ada"},
        ["given_name", "Ada"],
        {},
    ],
)
def test_an_update_body_it_does_not_understand_is_a_400_and_changes_nothing(body: object) -> None:
    with start_in_thread(StandinConfig(rate_limit_per_minute=0)) as handle:
        admin = StandinAdmin(handle.root_url)
        user = admin.create_user("ada@example.com", "Passw0rd!", given_name="Augusta")
        response = requests.patch(f"{handle.root_url}/_standin/users/{user['id']}", json=body, timeout=5)
        assert response.status_code == 400
        assert "given_name" in response.json()["detail"]
        assert handle.directory.get(user["id"]).given_name == "Augusta"
        assert admin.update_user(user["id"], given_name="Ada")["name"]["givenName"] == "Ada"


def test_unknown_keys_elsewhere_are_400_too() -> None:
    with start_in_thread(StandinConfig(rate_limit_per_minute=0)) as handle:
        root = handle.root_url
        assert requests.post(f"{root}/_standin/seed", json={"n": 5}, timeout=5).status_code == 400
        assert requests.post(f"{root}/_standin/users", json={"userName": "x"}, timeout=5).status_code == 400
        assert requests.put(f"{root}/_standin/ratelimit", json={"limit": 5}, timeout=5).status_code == 400
        assert handle.directory.count() == 0


def test_the_directory_survives_a_restart_with_the_same_ids(tmp_path: Path) -> None:
    state = tmp_path / "directory.json"
    config = StandinConfig(rate_limit_per_minute=0, seed_demo=True, state_file=str(state))
    with start_in_thread(config) as first:
        demo_ids = {u.username: u.id for u in first.directory.all_users()}
        StandinAdmin(first.root_url).create_user("kept@example.com", "Kept#2024")
        gone = StandinAdmin(first.root_url).create_user("gone@example.com")["id"]
        StandinAdmin(first.root_url).delete(gone)
    with start_in_thread(StandinConfig(rate_limit_per_minute=0, seed_demo=True, state_file=str(state))) as second:
        users = {u.username: u.id for u in second.directory.all_users()}
        assert {name: users[name] for name in demo_ids} == demo_ids
        assert set(users) == {*(u["username"] for u in DEMO_USERS), "kept@example.com"}
        assert second.directory.authenticate("kept@example.com", "Kept#2024") is not None
        assert gone in second.directory.deleted_ids()


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asgardeo_standin", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_cli_finds_the_local_runs_stand_in_and_says_plainly_when_none_answers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STANDIN_URL"}
    env["LOCALRUN_DATA_DIR"] = str(tmp_path)
    with start_in_thread(StandinConfig(rate_limit_per_minute=0, port=free_port())) as handle:
        (tmp_path / "standin-url").write_text(handle.root_url + "\n")
        seeded = _cli("seed", "3", env=env)
        assert seeded.returncode == 0, seeded.stderr
        assert handle.directory.count() == 3
    (tmp_path / "standin-url").unlink()
    env["STANDIN_URL"] = f"http://127.0.0.1:{free_port()}"
    refused = _cli("dump", env=env)
    assert refused.returncode == 2
    assert "no stand-in answers at" in refused.stderr
    assert "Traceback" not in refused.stderr
