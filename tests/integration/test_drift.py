"""The drift check against a private stand-in over real HTTP (real Postgres and Redis): differences made behind the
service's back are found, measured and repaired; a 404 retires only through the confirm path; the sample walks the
table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from tests.integration.sync_support import client_for, private_standin, start_run


@pytest.fixture
def directory(clean_db: None, clean_redis: None) -> Iterator[Any]:
    with private_standin() as handle:
        handle.directory.seed(100, prefix="drift")
        from tasks.reconcile import reconcile_all

        assert reconcile_all(start_run(), client=client_for(handle)).status == "succeeded"
        yield handle


def rows() -> dict[str, Any]:
    from models.db import unit_of_work
    from models.tables import User

    with unit_of_work() as session:
        return {u.asgardeo_id: u for u in session.execute(select(User)).scalars()}


def test_differences_behind_the_services_back_raise_the_drift_share_are_repaired_and_it_falls_to_zero(
    directory: Any,
) -> None:
    from models.db import unit_of_work
    from models.tables import User
    from tasks.drift import check_drift, last_check

    ids = sorted(rows())
    # Behind the service's back: the table edited directly, and the directory changed without a webhook.
    with unit_of_work() as session:
        session.execute(update(User).where(User.asgardeo_id.in_(ids[:6])).values(email="wrong@example.com"))
    disabled = {directory.directory.set_disabled(i, True).id for i in ids[50:54]}
    first = check_drift(100, client=client_for(directory))
    assert (first.checked, first.differing) == (100, 10)
    assert first.share == pytest.approx(0.10)
    assert first.oldest_difference_seconds > 0
    assert last_check() == pytest.approx(vars(first))
    local = rows()
    assert {i for i, u in local.items() if u.status == "inactive"} == disabled
    assert all(local[i].email != "wrong@example.com" for i in ids[:6])
    second = check_drift(100, client=client_for(directory))
    assert (second.differing, second.share, second.oldest_difference_seconds) == (0, 0.0, 0.0)


def test_the_sample_reads_the_table_without_parallel_workers(directory: Any) -> None:
    """Every minute, on two cores: parallel workers would take the intake's core for the scan's duration."""
    from sqlalchemy import text

    from models.db import unit_of_work
    from models.users import least_recently_confirmed

    with unit_of_work() as session:
        session.execute(text("SET LOCAL parallel_setup_cost = 0"))
        session.execute(text("SET LOCAL parallel_tuple_cost = 0"))
        session.execute(text("SET LOCAL min_parallel_table_scan_size = 0"))
        assert len(least_recently_confirmed(session, 20)) == 20
        plan = "\n".join(
            session.execute(
                text(
                    "EXPLAIN SELECT asgardeo_id FROM users WHERE status <> 'deleted' AND source_version > 0"
                    " ORDER BY last_synced_at ASC NULLS FIRST, id LIMIT 20"
                )
            ).scalars()
        )
    assert "Gather" not in plan, plan


def test_the_sample_takes_the_least_recently_confirmed_users_first(directory: Any) -> None:
    from tasks.drift import _sample, check_drift

    first = {i for i, _ in _sample(40)}
    check_drift(40, client=client_for(directory))
    second = {i for i, _ in _sample(40)}
    assert not first & second
    check_drift(40, client=client_for(directory))
    check_drift(40, client=client_for(directory))
    # 120 checks over 100 users: everyone was confirmed at least once, so the oldest confirmation is recent.
    assert len({i for i, _ in _sample(100)}) == 100


def test_a_background_404_retires_only_when_the_listing_and_a_second_get_agree(directory: Any) -> None:
    from asgardeo_standin.client import StandinAdmin
    from tasks.drift import check_drift

    ids = sorted(rows())
    present, gone = ids[3], ids[4]
    directory.directory.delete_user(gone)
    StandinAdmin(directory.root_url).fail_get(present, 404, times=1)
    result = check_drift(100, client=client_for(directory))
    assert (result.missing, result.retired) == (2, 1)
    local = rows()
    assert local[present].status == "active"
    assert (local[gone].status, local[gone].retired_by) == ("deleted", "absence")


def test_the_sync_health_page_and_the_metrics_show_the_drift(
    directory: Any, client: FlaskClient, request: pytest.FixtureRequest
) -> None:
    from models.db import unit_of_work
    from models.tables import User
    from tasks.drift import check_drift

    ids = sorted(rows())
    with unit_of_work() as session:
        session.execute(update(User).where(User.asgardeo_id.in_(ids[:5])).values(first_name="Wrong"))
    check_drift(50, client=client_for(directory))
    # Signed in only now: the admin's row is unknown to this directory, and the drift check would retire it.
    admin_headers: dict[str, str] = request.getfixturevalue("admin_headers")
    summary = client.get("/admin/health/summary", headers=admin_headers).get_json()
    assert summary["staleness"]["drift"]["differing"] > 0
    assert summary["staleness"]["oldest_confirmed_at"] is not None
    page = client.get("/admin/health", headers=admin_headers).get_data(as_text=True)
    assert 'id="drift-share"' in page
    scraped = client.get("/metrics").get_data(as_text=True)
    share = next(line for line in scraped.splitlines() if line.startswith("asgardeo_sync_drift_share "))
    assert float(share.split()[1]) > 0
    assert "asgardeo_sync_drift_checked_total" in scraped
