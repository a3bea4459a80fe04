"""Single-user sync (``users.sync``) against the shared stand-in: fetch, upsert, 404 tombstone, failures."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.integration.sync_support import FaultyHTTP, client_for
from tests.polling import wait_for


def new_directory_user(standin_admin: Any, **fields: Any) -> dict[str, Any]:
    name = f"sync-{uuid.uuid4().hex[:10]}@example.com"
    return dict(standin_admin.create_user(name, email=name, given_name="Sam", family_name="Sync", **fields))


def local(asgardeo_id: str) -> Any:
    from models.db import unit_of_work
    from models.users import get_by_asgardeo_id

    with unit_of_work() as session:
        return get_by_asgardeo_id(session, asgardeo_id)


def run_count() -> int:
    from models.db import unit_of_work
    from models.tables import SyncRun

    with unit_of_work() as session:
        return int(session.execute(select(func.count()).select_from(SyncRun)).scalar_one())


def test_unknown_user_is_created_and_recorded_as_a_user_run(standin: Any, standin_admin: Any, clean_db: None) -> None:
    from models.db import unit_of_work
    from models.runs import get_run
    from tasks.users import sync_user

    resource = new_directory_user(standin_admin, groups=["Employees"])
    result = sync_user(resource["id"], trigger="test")
    assert (result.status, result.action) == ("succeeded", "created")
    user = local(resource["id"])
    assert (user.username, user.first_name, user.status, user.groups) == (
        resource["userName"].removeprefix("DEFAULT/"),
        "Sam",
        "active",
        ["Employees"],
    )
    with unit_of_work() as session:
        row = get_run(session, result.run_id)
        assert (row.kind, row.status, row.asgardeo_id, row.created, row.trigger) == (
            "user",
            "succeeded",
            resource["id"],
            1,
            "test",
        )


def test_update_keeps_local_fields_and_disabled_user_becomes_inactive(
    standin: Any, standin_admin: Any, clean_db: None
) -> None:
    from models.db import unit_of_work
    from models.users import get_by_asgardeo_id
    from tasks.users import sync_user

    resource = new_directory_user(standin_admin)
    sync_user(resource["id"], trigger="test")
    with unit_of_work() as session:
        user = get_by_asgardeo_id(session, resource["id"])
        user.role, user.employee_id, user.department = "hr", "E-9", "People"
    standin_admin.update_user(resource["id"], given_name="Samantha")
    standin_admin.disable(resource["id"])
    result = sync_user(resource["id"], trigger="test")
    user = local(resource["id"])
    assert result.action == "deactivated"
    assert (user.first_name, user.status, user.role, user.employee_id, user.department) == (
        "Samantha",
        "inactive",
        "hr",
        "E-9",
        "People",
    )


def test_user_gone_from_directory_becomes_deleted_and_loses_sessions(
    standin: Any, standin_admin: Any, clean_db: None
) -> None:
    from models.db import unit_of_work
    from models.sessions import find_active_session
    from models.users import get_by_asgardeo_id
    from tasks.users import sync_user
    from tests.factories import login

    resource = new_directory_user(standin_admin)
    sync_user(resource["id"], trigger="test")
    with unit_of_work() as session:
        token = login(session, get_by_asgardeo_id(session, resource["id"])).token
    standin_admin.delete(resource["id"])
    result = sync_user(resource["id"], trigger="test")
    assert (result.status, result.action) == ("succeeded", "deleted")
    assert local(resource["id"]).status == "deleted"
    with unit_of_work() as session:
        assert find_active_session(session, token) is None
    assert sync_user(resource["id"], trigger="test").action == "unchanged"


@pytest.mark.parametrize("bad", ["", "../../Users", "a" * 65, "id with space", "x?filter=y", "ü-nicode"])
def test_hostile_ids_are_rejected_without_a_request_or_a_row(bad: str, clean_db: None) -> None:
    from tasks.users import sync_user

    before = run_count()
    result = sync_user(bad, trigger="test")
    assert result.status == "rejected"
    assert run_count() == before


def test_transient_failure_keeps_the_run_open_for_retry(standin: Any, clean_db: None, clean_redis: None) -> None:
    from models.db import unit_of_work
    from models.runs import get_run
    from tasks.users import SyncPending, sync_user

    http = FaultyHTTP()
    http.fault = lambda _m, url, _p: 503 if "/scim2/" in url else None
    client = client_for(standin, http=http, max_attempts=2)
    with pytest.raises(SyncPending) as pending:
        sync_user(str(uuid.uuid4()), trigger="test", client=client)
    with unit_of_work() as session:
        row = get_run(session, pending.value.run_id)
        assert (row.status, "503" in (row.error or "")) == ("running", True)


def user_runs(asgardeo_id: str) -> list[Any]:
    from models.db import unit_of_work
    from models.tables import SyncRun

    with unit_of_work() as session:
        return list(session.execute(select(SyncRun).where(SyncRun.asgardeo_id == asgardeo_id)).scalars())


def test_a_retry_finishes_the_run_row_its_first_attempt_started(
    celery_worker: Any,
    standin: Any,
    standin_admin: Any,
    clean_db: None,
    clean_redis: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tasks.users
    from tasks.users import sync

    resource = new_directory_user(standin_admin)
    failures = iter(range(2))  # both attempts of the client's first call; the task's retry then gets through
    http = FaultyHTTP()
    http.fault = lambda _m, url, _p: 503 if "/scim2/Users/" in url and next(failures, None) is not None else None
    client = client_for(standin, http=http, max_attempts=2)
    monkeypatch.setattr(tasks.users, "ScimClient", lambda: client)
    sent = sync.apply_async((resource["id"],), {"trigger": "test"})
    runs = wait_for(
        lambda: [r for r in user_runs(resource["id"]) if r.status != "running"], 30, "the retried sync to finish"
    )
    assert [(r.status, r.created, r.error, r.task_id) for r in runs] == [("succeeded", 1, None, sent.id)]
    assert len(user_runs(resource["id"])) == 1
    assert http.injected == 2


def test_the_last_retry_records_the_give_up_on_the_run_row(
    celery_worker: Any, standin: Any, clean_db: None, clean_redis: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.users
    from tasks.users import MAX_RETRIES, sync

    http = FaultyHTTP()
    http.fault = lambda _m, url, _p: 503 if "/scim2/" in url else None
    client = client_for(standin, http=http, max_attempts=2)
    monkeypatch.setattr(tasks.users, "ScimClient", lambda: client)
    target = str(uuid.uuid4())
    # Sent as the last retry: the real backoff would take a minute.
    sync.apply_async((target,), {"trigger": "test"}, retries=MAX_RETRIES)
    runs = wait_for(lambda: [r for r in user_runs(target) if r.status != "running"], 30, "the sync to give up")
    assert [(r.status, r.failed, (r.error or "").startswith("gave up:"), "503" in (r.error or "")) for r in runs] == [
        ("failed", 1, True, True)
    ]


def test_refused_credentials_fail_the_run_without_retry(standin: Any, clean_db: None, clean_redis: None) -> None:
    from models.db import unit_of_work
    from models.runs import get_run
    from models.settings import get_settings
    from tasks.scim import ScimClient
    from tasks.users import sync_user

    client = ScimClient(standin.base_url, "hrms-m2m", "wrong-secret", settings=get_settings())
    result = sync_user(str(uuid.uuid4()), trigger="test", client=client)
    assert result.status == "failed"
    with unit_of_work() as session:
        assert get_run(session, result.run_id).status == "failed"


def test_refresh_request_reaches_the_worker_and_syncs_the_user(
    celery_worker: Any, standin: Any, standin_admin: Any, clean_db: None
) -> None:
    from tasks.coalesce import request_user_refresh

    resource = new_directory_user(standin_admin)
    assert request_user_refresh(resource["id"], trigger="test")
    deadline = time.monotonic() + 30
    while local(resource["id"]) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert local(resource["id"]) is not None
    assert local(resource["id"]).first_name == "Sam"


def test_task_rejects_non_string_ids(celery_worker: Any, clean_db: None) -> None:
    from tasks.users import sync

    before = run_count()
    assert sync.apply_async(args=[12345], ignore_result=False).get(timeout=30)["status"] == "rejected"
    assert run_count() == before
