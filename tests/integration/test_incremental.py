"""Incremental syncs against a private stand-in over real HTTP (real Postgres and Redis): the meta.lastModified
filter where the directory honours it, a full run where it refuses or ignores it (remembered), the shared run lock,
and where a catch-up after a web start begins."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.integration.sync_support import FaultyHTTP, client_for, private_standin, start_run


@pytest.fixture
def directory(clean_db: None, clean_redis: None) -> Iterator[Any]:
    with private_standin() as handle:
        yield handle


def statuses() -> dict[str, str]:
    from models.db import unit_of_work
    from models.tables import User

    with unit_of_work() as session:
        return {u.asgardeo_id: u.status for u in session.execute(select(User)).scalars()}


def in_sync(handle: Any) -> Any:
    """A full run first: the table holds the directory."""
    from tasks.reconcile import reconcile_all

    assert reconcile_all(start_run(), client=client_for(handle)).status == "succeeded"


def counting_http() -> tuple[FaultyHTTP, list[dict[str, Any]]]:
    http = FaultyHTTP()
    listings: list[dict[str, Any]] = []
    lock = threading.Lock()

    def before(method: str, url: str, params: dict[str, Any]) -> None:
        if url.endswith("/scim2/Users"):
            with lock:
                listings.append(params)

    http.before = before
    return http, listings


def disable_some(handle: Any, count: int) -> tuple[int, set[str]]:
    """Disable ``count`` users at the directory, behind the service's back; returns (the instant before, their ids)."""
    users = handle.directory.all_users()
    before = max(u.last_modified_ms for u in users) + 1
    time.sleep(0.002)
    return before, {handle.directory.set_disabled(u.id, True).id for u in users[10 : 10 + count]}


def test_an_incremental_sync_lists_only_the_users_changed_since_its_point_and_repairs_them(
    directory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from tasks.incremental import sync_changed_since

    caplog.set_level(logging.INFO, logger="tasks.incremental")

    directory.directory.seed(250, prefix="inc")
    in_sync(directory)
    point, changed = disable_some(directory, 7)
    http, listings = counting_http()
    outcome = sync_changed_since(point, trigger="sweep", client=client_for(directory, http=http))
    assert (outcome["status"], outcome["mode"]) == ("succeeded", "filter")
    assert (outcome["seen"], outcome["updated"], outcome["pages"]) == (7, 7, 1)
    assert len(listings) == 1
    assert listings[0]["filter"].startswith('meta.lastModified ge "')
    local = statuses()
    assert {i for i, s in local.items() if s == "inactive"} == changed
    finished = [r for r in caplog.records if r.getMessage() == "incremental sync finished"]
    assert [(r.__dict__["mode"], r.__dict__["repaired"]) for r in finished] == [("filter", 7)]


@pytest.mark.parametrize("mode", ["refuse", "ignore"])
def test_a_directory_without_the_filter_gets_a_full_run_and_the_finding_is_remembered(
    directory: Any, mode: str
) -> None:
    from tasks.incremental import filter_unsupported, last_outcomes, sync_changed_since

    directory.directory.seed(250, prefix="inc")
    in_sync(directory)
    directory.config.lastmodified_filter = mode
    point, changed = disable_some(directory, 5)
    # A deletion too: the fallback is a full run, which confirms and retires the unlisted user.
    gone = directory.directory.all_users()[40].id
    directory.directory.delete_user(gone)
    http, listings = counting_http()
    outcome = sync_changed_since(point, trigger="catch_up", client=client_for(directory, http=http))
    assert (outcome["mode"], outcome["status"]) == ("full", "succeeded"), outcome
    assert outcome["reason"] == f"filter {mode}d"
    assert filter_unsupported() == f"{mode}d"
    local = statuses()
    assert {i for i, s in local.items() if s == "inactive"} == changed
    assert local[gone] == "deleted"
    assert last_outcomes()["catch_up"]["run_id"] == outcome["run_id"]
    # Remembered: the next sync does not ask with a filter again.
    listings.clear()
    again = sync_changed_since(point, trigger="sweep", client=client_for(directory, http=http))
    assert again["mode"] == "full"
    assert listings
    assert not [p for p in listings if "filter" in p]


def test_a_full_run_waits_for_an_incremental_sync_that_holds_the_run_lock(directory: Any) -> None:
    from models.db import get_engine
    from models.runs import INCREMENTAL_LOCK_KEY, hold_run_lock
    from tasks.reconcile import reconcile_all

    directory.directory.seed(20, prefix="inc")
    held = threading.Event()
    release = threading.Event()

    def incremental() -> None:
        engine = get_engine()
        with hold_run_lock(engine, INCREMENTAL_LOCK_KEY) as marked, hold_run_lock(engine) as taken:
            assert marked
            assert taken
            held.set()
            release.wait(10)

    holder = threading.Thread(target=incremental)
    holder.start()
    try:
        assert held.wait(10)
        threading.Timer(1.5, release.set).start()
        outcome = reconcile_all(start_run(), client=client_for(directory))
    finally:
        release.set()
        holder.join()
    assert outcome.status == "succeeded"
    assert len(statuses()) == directory.directory.count()


def test_an_incremental_sync_meeting_a_full_run_does_nothing(directory: Any) -> None:
    from models.db import get_engine
    from models.runs import hold_run_lock
    from tasks.incremental import sync_changed_since

    with hold_run_lock(get_engine()) as taken:
        assert taken
        outcome = sync_changed_since(0, trigger="sweep", client=client_for(directory))
    assert outcome["status"] == "busy"
    assert statuses() == {}


def test_a_catch_up_starts_at_the_last_delivery_accepted_before_the_web_tier_started(clean_db: None) -> None:
    from models.db import unit_of_work
    from models.tables import WebhookEvent
    from tasks.incremental import catch_up_point

    started = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert catch_up_point(int(started.timestamp() * 1000)) is None
    with unit_of_work() as session:
        moments = (started - timedelta(minutes=7), started - timedelta(minutes=3), started + timedelta(minutes=1))
        for n, at in enumerate(moments):
            session.add(
                WebhookEvent(
                    jti=f"jti-{n}",
                    event_type="userProfileUpdated",
                    event_uri="https://schemas.identity.wso2.org/events/user/event-type/userProfileUpdated",
                    asgardeo_id=f"user-{n}",
                    iat=int(at.timestamp() * 1000),
                    payload={},
                    received_at=at,
                )
            )
    basis, point_ms = catch_up_point(int(started.timestamp() * 1000)) or ("", 0)
    assert basis == "last_delivery"
    assert point_ms == int((started - timedelta(minutes=3)).timestamp() * 1000)
