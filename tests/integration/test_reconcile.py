"""Full reconciliation against a private Asgardeo stand-in per test (real HTTP, real Postgres and Redis)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.integration.sync_support import FaultyHTTP, client_for, private_standin, start_run


@pytest.fixture
def directory(clean_db: None, clean_redis: None) -> Iterator[Any]:
    with private_standin() as handle:
        yield handle


def local_users() -> dict[str, Any]:
    from models.db import unit_of_work
    from models.tables import User

    with unit_of_work() as session:
        return {u.asgardeo_id: u for u in session.execute(select(User)).scalars()}


def run_row(run_id: int) -> Any:
    from models.db import unit_of_work
    from models.runs import get_run

    with unit_of_work() as session:
        return get_run(session, run_id)


def reconcile(handle: Any, **kwargs: Any) -> Any:
    from tasks.reconcile import reconcile_all

    client_kwargs = {
        k: kwargs.pop(k)
        for k in list(kwargs)
        if k in ("http", "page_size", "max_attempts", "list_concurrency", "rate_per_minute", "period")
    }
    return reconcile_all(start_run(), client=client_for(handle, **client_kwargs), **kwargs)


def seeded_ids(handle: Any) -> list[str]:
    return [u.id for u in handle.directory.all_users()]


def test_empty_table_gets_every_directory_user_created(directory: Any) -> None:
    directory.directory.seed(250, prefix="empty")
    reports: list[tuple[str, int, int]] = []
    outcome = reconcile(directory, progress=lambda phase, c: reports.append((phase, c.pages_done, c.seen)))
    listing = [r for r in reports if r[0] == "listing"]
    assert [pages for _, pages, _ in listing] == [1, 2, 3]  # pages may finish out of order; counts only grow
    assert listing[-1][2] == 250
    assert reports[-1][0] == "done"
    assert outcome.status == "succeeded"
    users = local_users()
    assert set(users) == set(seeded_ids(directory))
    assert all(u.status == "active" and u.last_seen_run_id == outcome.run_id for u in users.values())
    sample = directory.directory.all_users()[7]
    assert users[sample.id].username == sample.username
    assert users[sample.id].first_name == sample.given_name
    assert set(users[sample.id].groups) == set(sample.groups)
    row = run_row(outcome.run_id)
    assert (row.pages_done, row.seen, row.created, row.total_results, row.finished_at is not None) == (
        3,
        250,
        250,
        250,
        True,
    )


def test_second_run_over_an_unchanged_directory_changes_nothing(directory: Any) -> None:
    from models.db import unit_of_work
    from models.tables import UserChange

    directory.directory.seed(120, prefix="same")
    reconcile(directory)
    with unit_of_work() as session:
        before = session.execute(select(func.count()).select_from(UserChange)).scalar_one()
    outcome = reconcile(directory)
    with unit_of_work() as session:
        after = session.execute(select(func.count()).select_from(UserChange)).scalar_one()
    assert (outcome.status, outcome.counters.unchanged, outcome.counters.created, after) == (
        "succeeded",
        120,
        0,
        before,
    )


def test_changed_disabled_and_removed_users_are_repaired_keeping_local_fields(directory: Any) -> None:
    from models.db import unit_of_work
    from models.sessions import find_active_session
    from models.tables import User, UserChange
    from tests.factories import login

    directory.directory.seed(40, prefix="fix")
    changed, disabled, removed, *_ = seeded_ids(directory)
    reconcile(directory)
    with unit_of_work() as session:
        for row in session.execute(select(User).where(User.asgardeo_id.in_([changed, disabled, removed]))).scalars():
            row.role, row.employee_id, row.department = "manager", "E-1", "Finance"
        tokens = {
            aid: login(session, session.execute(select(User).where(User.asgardeo_id == aid)).scalar_one()).token
            for aid in (disabled, removed)
        }
    directory.directory.update_profile(changed, {"given_name": "Renamed", "email": "renamed@example.com"})
    directory.directory.set_disabled(disabled, True)
    directory.directory.delete_user(removed)

    outcome = reconcile(directory, max_deactivate_share=0.1)

    users = local_users()
    assert outcome.status == "succeeded"
    assert (users[changed].first_name, users[changed].email) == ("Renamed", "renamed@example.com")
    assert users[disabled].status == "inactive"
    assert users[removed].status == "deleted"
    for aid in (changed, disabled, removed):
        assert (users[aid].role, users[aid].employee_id, users[aid].department) == ("manager", "E-1", "Finance")
    with unit_of_work() as session:
        assert all(find_active_session(session, token) is None for token in tokens.values())
        actions = dict(
            session.execute(
                select(UserChange.asgardeo_id, UserChange.action).where(UserChange.run_id == outcome.run_id)
            ).all()
        )
    assert actions == {changed: "updated", disabled: "deactivated", removed: "deleted"}
    assert (outcome.counters.deactivated, outcome.counters.updated) == (1, 2)


def test_guard_stops_a_mass_deactivation_and_changes_nothing(directory: Any) -> None:
    directory.directory.seed(40, prefix="guard")
    doomed = seeded_ids(directory)[:5]
    reconcile(directory)
    for aid in doomed:
        directory.directory.delete_user(aid)

    outcome = reconcile(directory)  # default share 5% of 40 allows 2

    assert outcome.status == "guarded"
    assert "guard" in (outcome.error or "")
    users = local_users()
    assert all(users[aid].status == "active" for aid in doomed)
    row = run_row(outcome.run_id)
    assert (row.status, row.deactivated) == ("guarded", 0)


def test_listing_that_fails_at_a_later_page_deactivates_nobody(directory: Any) -> None:
    directory.directory.seed(250, prefix="partial")
    gone = seeded_ids(directory)[0]
    reconcile(directory)
    directory.directory.delete_user(gone)
    http = FaultyHTTP()
    http.fault = lambda _m, _u, params: 503 if params.get("startIndex") == 201 else None

    outcome = reconcile(directory, http=http, max_deactivate_share=1.0, max_attempts=3)

    assert outcome.status == "failed"
    assert "incomplete" in (outcome.error or "")
    assert local_users()[gone].status == "active"
    row = run_row(outcome.run_id)
    assert (row.status, row.pages_done, row.deactivated) == ("failed", 2, 0)
    assert http.injected == 3


def test_malformed_page_counts_as_an_incomplete_listing(directory: Any) -> None:
    directory.directory.seed(150, prefix="garbled")
    gone = seeded_ids(directory)[-1]
    reconcile(directory)
    directory.directory.delete_user(gone)
    http = FaultyHTTP()
    http.fault = lambda _m, _u, params: 200 if params.get("startIndex") == 101 else None  # body is not a ListResponse

    outcome = reconcile(directory, http=http, max_deactivate_share=1.0)

    assert outcome.status == "failed"
    assert local_users()[gone].status == "active"


def test_users_added_and_removed_mid_run_are_handled(directory: Any) -> None:
    """One page at a time, so the change lands at a known point: after page 1, before pages 101 and 201."""
    directory.directory.seed(250, prefix="shift")
    ids = seeded_ids(directory)
    first, late_removed = ids[0], ids[-1]
    reconcile(directory)
    http = FaultyHTTP()
    state = {"done": False}

    def change_directory(_method: str, _url: str, params: dict[str, Any]) -> None:
        if params.get("startIndex") == 101 and not state["done"]:
            state["done"] = True
            directory.directory.delete_user(first)  # shifts every later index down by one
            directory.directory.delete_user(late_removed)  # not listed yet
            directory.directory.create_user("newcomer@example.com", email="newcomer@example.com")

    http.before = change_directory
    outcome = reconcile(directory, http=http, max_deactivate_share=1.0, list_concurrency=1)

    users = local_users()
    assert outcome.status == "succeeded"
    shifted = ids[100]  # old index 101: after the shift it sat on page 1, which was already read
    assert users[shifted].status == "active"
    assert users[shifted].last_seen_run_id == outcome.run_id
    assert users[late_removed].status == "deleted"
    newcomer = directory.directory.find_by_username("newcomer@example.com")
    assert users[newcomer.id].status == "active"
    # Listed before its removal: still active until the next run (or its webhook) says otherwise.
    assert users[first].status == "active"
    assert outcome.counters.deactivated == 1
    second = reconcile(directory, max_deactivate_share=1.0)
    assert local_users()[first].status == "deleted"
    assert second.counters.deactivated == 1


def test_directory_changes_during_a_concurrent_listing_never_cost_a_present_user(directory: Any) -> None:
    """With pages in flight together the change lands before or after any of them: whatever the order, nobody still
    in the directory is deactivated, and the next run leaves the table equal to the directory."""
    directory.directory.seed(250, prefix="shiftc")
    ids = seeded_ids(directory)
    first, late_removed = ids[0], ids[-1]
    reconcile(directory)
    http = FaultyHTTP()
    lock = threading.Lock()
    state = {"done": False}

    def change_directory(_method: str, _url: str, params: dict[str, Any]) -> None:
        with lock:
            if params.get("startIndex") == 101 and not state["done"]:
                state["done"] = True
                directory.directory.delete_user(first)
                directory.directory.delete_user(late_removed)
                directory.directory.create_user("newcomer@example.com", email="newcomer@example.com")

    http.before = change_directory
    outcome = reconcile(directory, http=http, max_deactivate_share=1.0, list_concurrency=3)

    present = set(seeded_ids(directory))
    users = local_users()
    assert outcome.status == "succeeded"
    assert state["done"]
    # The newcomer is listed or not depending on whether its page was served before it was created (pages are in
    # flight together); the next run, or its webhook, brings it. Everyone else present must be there and active.
    newcomers = present - set(ids)
    assert all(users[aid].status == "active" for aid in present - newcomers)
    assert all(users[aid].status == "active" for aid in newcomers if aid in users)
    assert users[late_removed].status in ("active", "deleted")  # listed before its removal, or confirmed gone
    reconcile(directory, max_deactivate_share=1.0)
    final = local_users()
    assert {aid for aid, user in final.items() if user.status == "active"} == present
    assert final[first].status == final[late_removed].status == "deleted"


def test_second_concurrent_run_is_refused(directory: Any) -> None:
    from models.db import get_engine, unit_of_work
    from models.runs import RunInProgress, hold_run_lock, start_full_run

    first = start_run()
    with unit_of_work() as session, pytest.raises(RunInProgress) as refused:
        start_full_run(session, trigger="test")
    assert refused.value.run_id == first
    with hold_run_lock(get_engine()) as taken:
        assert taken
        from tasks.reconcile import reconcile_all

        outcome = reconcile_all(first, client=client_for(directory))
    assert outcome.status == "refused"
    assert run_row(first).status == "failed"


def test_abandoned_running_row_without_lock_holder_is_retired_by_the_next_trigger(clean_db: None) -> None:
    from datetime import timedelta

    from models.db import unit_of_work
    from models.runs import RunInProgress, start_full_run

    stuck = start_run()
    with unit_of_work() as session, pytest.raises(RunInProgress):
        start_full_run(session, trigger="test")  # fresh heartbeat: maybe still queued
    with unit_of_work() as session:
        fresh = start_full_run(session, trigger="test", stale_after=timedelta(0)).id
    assert fresh != stuck
    assert run_row(stuck).status == "failed"


def test_429_storm_and_5xx_errors_are_survived(directory: Any) -> None:
    directory.directory.seed(300, prefix="storm")
    http = FaultyHTTP()
    calls = {"n": 0}

    def flaky(_method: str, _url: str, _params: dict[str, Any]) -> int | None:
        calls["n"] += 1
        return {1: 429, 2: 429, 3: 502, 5: 429, 6: 503, 7: 500, 9: 504}.get(calls["n"])

    http.fault = flaky
    outcome = reconcile(directory, http=http)
    assert outcome.status == "succeeded"
    assert len(local_users()) == 300
    assert http.injected == 7


def test_real_429s_from_a_rate_limited_directory_are_survived(clean_db: None, clean_redis: None) -> None:
    from asgardeo_standin.client import StandinAdmin

    with private_standin(rate_limit_per_minute=6) as handle:
        admin = StandinAdmin(handle.root_url)
        admin.set_rate_limit(6, window_seconds=1.0)
        handle.directory.seed(60, prefix="limited")
        from tasks.reconcile import reconcile_all

        client = client_for(handle, page_size=10, max_attempts=8, backoff_base=0.2, backoff_cap=1.0)
        outcome = reconcile_all(start_run(), client=client)
        stats = admin.stats()
    assert outcome.status == "succeeded"
    assert len(local_users()) == 60
    assert stats["rate_limited"] > 0
    assert client.retries >= stats["rate_limited"]


def test_request_rate_stays_within_the_budget(clean_db: None, clean_redis: None) -> None:
    import time

    from asgardeo_standin.client import StandinAdmin

    limit, window = 40, 4.0
    with private_standin(rate_limit_per_minute=limit) as handle:
        admin = StandinAdmin(handle.root_url)
        admin.set_rate_limit(limit, window_seconds=window)
        handle.directory.seed(400, prefix="budget")
        from tasks.reconcile import reconcile_all

        client = client_for(handle, rate_per_minute=limit, period=window, page_size=10)
        started = time.monotonic()
        outcome = reconcile_all(start_run(), client=client)
        elapsed = time.monotonic() - started
        stats = admin.stats()
    assert outcome.status == "succeeded"
    assert len(local_users()) == 400
    assert stats["rate_limited"] == 0
    assert client.requests_sent == 41  # one token, forty pages
    shape = client.budget.shape
    # Throttled, not merely lucky: 41 requests need at least this long at the bucket's refill rate.
    assert elapsed >= (41 - shape.burst) / shape.refill_per_second * 0.95


def test_task_reports_progress_and_result_through_the_worker(
    celery_worker: Any, standin: Any, standin_admin: Any, clean_db: None
) -> None:
    from tasks.reconcile import run

    prefix = f"task{id(object()) % 100000}"
    standin_admin.seed(30, prefix=prefix)
    result = run.apply_async(kwargs={"trigger": "test"})
    outcome = result.get(timeout=120)
    assert outcome["status"] in ("succeeded", "guarded")
    assert outcome["seen"] >= 30
    row = run_row(outcome["run_id"])
    assert (row.trigger, row.task_id) == ("test", result.id)
    users = local_users()
    assert sum(1 for u in users.values() if (u.username or "").startswith(prefix)) == 30


def test_task_refuses_bad_run_ids(celery_worker: Any, clean_db: None) -> None:
    from tasks.reconcile import run

    assert run.apply_async(kwargs={"run_id": "1; DROP TABLE users"}).get(timeout=30)["status"] == "rejected"
    assert run.apply_async(kwargs={"run_id": -4}).get(timeout=30)["status"] == "rejected"
    assert run.apply_async(kwargs={"run_id": 987654}).get(timeout=30)["status"] == "refused"


def test_waits_for_the_rate_budget_are_counted_on_the_run(directory: Any) -> None:
    directory.directory.seed(500, prefix="budget")
    outcome = reconcile(directory, rate_per_minute=3, period=1.0)
    row = run_row(outcome.run_id)
    assert outcome.status == "succeeded"
    assert row.budget_waits > 0
    assert row.budget_wait_ms > 0
    assert (row.budget_waits, row.budget_wait_ms) == (outcome.counters.budget_waits, outcome.counters.budget_wait_ms)
