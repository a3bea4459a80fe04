"""``/admin/sync`` and ``flask sync run``: start runs, refuse a second one, validate input, list history."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select


def run_count() -> int:
    from models.db import unit_of_work
    from models.tables import SyncRun

    with unit_of_work() as session:
        return int(session.execute(select(func.count()).select_from(SyncRun)).scalar_one())


def wait_finished(run_id: int, timeout: float = 60) -> Any:
    from models.db import unit_of_work
    from models.runs import get_run

    deadline = time.monotonic() + timeout
    while True:
        with unit_of_work() as session:
            row = get_run(session, run_id)
            if row is not None and row.status != "running":
                return row
        assert time.monotonic() < deadline, f"run {run_id} did not finish"
        time.sleep(0.05)


@pytest.fixture
def directory_admin(
    standin_admin: Any, make_signed_in_user: Callable[..., tuple[int, str]]
) -> tuple[str, dict[str, str]]:
    """An admin who also exists in the directory, so a full run does not retire them."""
    name = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    resource = standin_admin.create_user(name, email=name)
    _, token = make_signed_in_user(role="admin", asgardeo_id=resource["id"], username=name, email=name)
    return resource["id"], {"Authorization": f"Bearer {token}"}


def test_sync_needs_a_session(client: FlaskClient) -> None:
    assert client.post("/admin/sync").status_code == 401
    assert client.get("/admin/sync/runs").status_code == 401


def test_sync_needs_the_admin_role(client: FlaskClient, make_signed_in_user: Callable[..., tuple[int, str]]) -> None:
    _, token = make_signed_in_user(role="hr")
    response = client.post("/admin/sync", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"
    assert run_count() == 0


def test_full_sync_starts_a_run_that_the_worker_finishes(
    client: FlaskClient, celery_worker: Any, standin: Any, directory_admin: tuple[str, dict[str, str]]
) -> None:
    _, headers = directory_admin
    response = client.post("/admin/sync", headers=headers)
    assert response.status_code == 202
    body = response.get_json()
    assert body["kind"] == "full"
    assert response.headers["Location"] == f"/admin/sync/runs/{body['run_id']}"
    row = wait_finished(body["run_id"])
    assert row.status == "succeeded"
    assert row.trigger == "admin"
    assert row.seen >= 1
    shown = client.get(body["url"], headers=headers).get_json()
    assert (shown["id"], shown["status"], shown["seen"]) == (row.id, "succeeded", row.seen)


def test_second_full_sync_while_one_runs_answers_409_with_its_id(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    from models.db import get_engine, unit_of_work
    from models.runs import hold_run_lock, start_full_run

    with unit_of_work() as session:
        running = start_full_run(session, trigger="test").id
    with hold_run_lock(get_engine()) as taken:
        assert taken
        response = client.post("/admin/sync", headers=admin_headers)
    assert response.status_code == 409
    body = response.get_json()
    assert (body["error"], body["run_id"]) == ("sync_running", running)
    assert "detail" in body
    assert run_count() == 1


def test_single_user_sync_runs_on_the_worker(
    client: FlaskClient, celery_worker: Any, standin_admin: Any, admin_headers: dict[str, str]
) -> None:
    from models.db import unit_of_work
    from models.users import get_by_asgardeo_id

    name = f"one-{uuid.uuid4().hex[:8]}@example.com"
    resource = standin_admin.create_user(name, email=name, given_name="Una")
    response = client.post("/admin/sync", json={"user_id": resource["id"]}, headers=admin_headers)
    assert response.status_code == 202
    row = wait_finished(response.get_json()["run_id"])
    assert (row.kind, row.status, row.asgardeo_id, row.created) == ("user", "succeeded", resource["id"], 1)
    with unit_of_work() as session:
        assert get_by_asgardeo_id(session, resource["id"]).first_name == "Una"


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"json": {"user_id": 42}}, 400, "invalid_user_id"),
        ({"json": {"user_id": ""}}, 400, "invalid_user_id"),
        ({"json": {"user_id": "a" * 65}}, 400, "invalid_user_id"),
        ({"json": {"user_id": "../../etc/passwd"}}, 400, "invalid_user_id"),
        ({"json": {"user_id": None}}, 400, "invalid_user_id"),
        ({"json": {"user_id": ["x"]}}, 400, "invalid_user_id"),
        ({"json": {"user_id": "abc", "role": "admin"}}, 400, "invalid_body"),
        ({"json": {"userid": "abc"}}, 400, "invalid_body"),
        ({"json": ["abc"]}, 400, "invalid_body"),
        ({"json": "abc"}, 400, "invalid_body"),
        ({"data": "{not json", "content_type": "application/json"}, 400, "invalid_body"),
        ({"data": "user_id=abc", "content_type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
        ({"data": '{"user_id": "' + "a" * 5000 + '"}', "content_type": "application/json"}, 413, "body_too_large"),
    ],
)
def test_bad_sync_requests_get_a_clear_4xx_and_start_nothing(
    client: FlaskClient, admin_headers: dict[str, str], kwargs: dict[str, Any], status: int, error: str
) -> None:
    response = client.post("/admin/sync", headers=admin_headers, **kwargs)
    assert response.status_code == status
    body = response.get_json()
    assert body["error"] == error
    assert body["detail"]
    assert run_count() == 0


def test_run_history_pages_newest_first(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    from models.db import unit_of_work
    from models.runs import finish_run, start_user_run

    with unit_of_work() as session:
        ids = []
        for n in range(5):
            run = start_user_run(session, f"user-{n}", trigger="test")
            finish_run(session, run.id, "succeeded")
            ids.append(run.id)
    first = client.get("/admin/sync/runs?limit=2", headers=admin_headers).get_json()
    assert [r["id"] for r in first["runs"]] == ids[::-1][:2]
    second = client.get(
        f"/admin/sync/runs?limit=2&before_id={first['next_before_id']}", headers=admin_headers
    ).get_json()
    assert [r["id"] for r in second["runs"]] == ids[::-1][2:4]
    last = client.get(
        f"/admin/sync/runs?limit=2&before_id={second['next_before_id']}", headers=admin_headers
    ).get_json()
    assert ([r["id"] for r in last["runs"]], last["next_before_id"]) == ([ids[0]], None)
    only_full = client.get("/admin/sync/runs?kind=full", headers=admin_headers).get_json()
    assert only_full["runs"] == []


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "limit=-1", "limit=abc", "before_id=x", "kind=weird", "limit=" + "9" * 40]
)
def test_bad_history_queries_are_400(client: FlaskClient, admin_headers: dict[str, str], query: str) -> None:
    response = client.get(f"/admin/sync/runs?{query}", headers=admin_headers)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_parameter"


@pytest.mark.parametrize("path", ["/admin/sync/runs/999999", "/admin/sync/runs/abc", "/admin/sync/runs/" + "9" * 30])
def test_unknown_run_is_404_json(client: FlaskClient, admin_headers: dict[str, str], path: str) -> None:
    response = client.get(path, headers=admin_headers)
    assert response.status_code == 404
    assert set(response.get_json()) >= {"error", "detail"}


def test_cli_syncs_one_user(app: Any, standin_admin: Any) -> None:
    from models.db import unit_of_work
    from models.users import get_by_asgardeo_id

    name = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    resource = standin_admin.create_user(name, email=name)
    result = app.test_cli_runner().invoke(args=["sync", "run", "--user", resource["id"]])
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output
    with unit_of_work() as session:
        assert get_by_asgardeo_id(session, resource["id"]) is not None


def test_cli_full_run_prints_progress(app: Any, standin: Any, clean_redis: None) -> None:
    result = app.test_cli_runner().invoke(args=["sync", "run"])
    assert re.search(r"^run \d+ started$", result.output, re.MULTILINE)
    assert "pages" in result.output
    assert ("succeeded" in result.output) == (result.exit_code == 0)


def test_cli_refuses_a_second_run_and_a_bad_id(app: Any) -> None:
    from models.db import get_engine, unit_of_work
    from models.runs import hold_run_lock, start_full_run

    runner = app.test_cli_runner()
    bad = runner.invoke(args=["sync", "run", "--user", "../x"])
    assert bad.exit_code != 0
    assert "not an Asgardeo user id" in bad.output
    with unit_of_work() as session:
        running = start_full_run(session, trigger="test").id
    with hold_run_lock(get_engine()):
        refused = runner.invoke(args=["sync", "run"])
    assert refused.exit_code == 1
    assert f"run {running} is already running" in refused.output
