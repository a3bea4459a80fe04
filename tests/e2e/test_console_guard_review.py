"""A run the deactivation guard stopped is reviewed in a real browser over the real worker and stand-in: the page
gives the numbers and the users, and an approval retires only those Asgardeo really no longer has."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from models.db import unit_of_work
from models.tables import User, UserChange
from tests.e2e.console_support import many_users, sign_in_with_cookie
from tests.integration.auth_support import new_standin_user

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("clean_db", "clean_redis")]


def _statuses(prefix: str) -> dict[str, str]:
    with unit_of_work() as session:
        rows = session.execute(select(User.asgardeo_id, User.status).where(User.asgardeo_id.like(f"{prefix}-%")))
        return dict(rows.tuples().all())


def test_guarded_run_is_approved_and_only_the_really_gone_are_retired(
    browser_context: Any, live_server: Any, standin_admin: Any, celery_worker: Any, make_signed_in_user: Any
) -> None:
    from playwright.sync_api import expect

    admin = new_standin_user(standin_admin)
    reviewer = admin["_username"]
    _, token = make_signed_in_user(role="admin", email=reviewer, asgardeo_id=admin["id"])
    directory_size = int(standin_admin.seed(0)["total"])
    # Local users Asgardeo does not know: well past the default 5% guard whatever else the shared stand-in holds.
    prefix = f"ghost{uuid.uuid4().hex[:6]}"
    ghosts = directory_size // 10 + 20
    many_users(ghosts, prefix=prefix)

    page = sign_in_with_cookie(browser_context, live_server.url, token)
    page.goto(live_server.url + "/admin/sync")
    page.get_by_role("button", name="Run a full reconciliation now").click()
    expect(page.locator("#run-status")).to_have_text("guarded", timeout=90_000)
    numbers = page.locator("#review-numbers")
    expect(numbers).to_contain_text(f"missed {ghosts} of {directory_size + ghosts} users")
    expect(page.locator("#candidates tbody tr")).to_have_count(min(ghosts, 200))
    assert set(_statuses(prefix).values()) == {"active"}

    # Three of them are in the directory after all (the listing missed them): approval must keep those.
    back = [f"{prefix}-1", f"{prefix}-2", f"{prefix}-3"]
    for asgardeo_id in back:
        standin_admin.create_user(f"{asgardeo_id}@example.com", id=asgardeo_id, given_name="Back", family_name="Again")

    page.get_by_role("button", name="Approve: re-confirm and retire the really gone").click()
    expect(page.locator("#review-status")).to_have_text("approved", timeout=90_000)
    expect(page.locator('[data-counter="outcomes.retired"]')).to_have_text(str(ghosts - 3))
    expect(page.locator('[data-counter="outcomes.kept"]')).to_have_text("3")
    expect(page.locator("#review")).to_contain_text(f"Approved by {reviewer}")

    statuses = _statuses(prefix)
    assert {aid for aid, status in statuses.items() if status == "active"} == set(back)
    assert sum(1 for status in statuses.values() if status == "deleted") == ghosts - 3
    with unit_of_work() as session:
        actors = set(
            session.execute(
                select(UserChange.actor).where(UserChange.action == "deleted", UserChange.source == "guard_review")
            ).scalars()
        )
    assert actors == {reviewer}

    # Deciding twice is refused; nothing changes.
    response = page.request.post(page.url.split("#")[0] + "/review/dismiss", headers={"Accept": "application/json"})
    assert response.status in (403, 409)
