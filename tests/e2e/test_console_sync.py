"""An admin runs a full reconciliation from the sync page in a real browser, over the real worker and stand-in, and
watches its counters move without a reload while the stand-in rate-limits the listing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.console_support import sign_in_with_cookie
from tests.integration.auth_support import new_standin_user

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("clean_db", "clean_redis")]


@pytest.fixture
def admin_page(browser_context: Any, live_server: Any, make_signed_in_user: Any, standin_admin: Any) -> Any:
    """An admin who is in the directory too (a full run retires local users Asgardeo does not know)."""
    resource = new_standin_user(standin_admin)
    _, token = make_signed_in_user(role="admin", email="sync-admin@example.com", asgardeo_id=resource["id"])
    return sign_in_with_cookie(browser_context, live_server.url, token)


@pytest.fixture
def rate_limited(standin_admin: Any) -> Iterator[Any]:
    """The stand-in answers at most 3 requests per second (429 beyond), as a small Asgardeo tenant would."""
    standin_admin.set_rate_limit(3, window_seconds=1.0)
    try:
        yield standin_admin
    finally:
        standin_admin.set_rate_limit(0)


def _run_a_full_reconciliation(page: Any, base_url: str) -> None:
    page.goto(base_url + "/admin/sync")
    page.get_by_role("button", name="Run a full reconciliation now").click()
    page.wait_for_url(base_url + "/admin/sync/runs/*")


def test_full_reconciliation_finishes_with_its_result_on_the_page(
    admin_page: Any, live_server: Any, standin_admin: Any, celery_worker: Any
) -> None:
    from playwright.sync_api import expect

    total = standin_admin.seed(30, prefix=f"full-{uuid.uuid4().hex[:6]}-")["total"]
    page = admin_page
    _run_a_full_reconciliation(page, live_server.url)
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=60_000)
    created = int(page.locator('[data-counter="created"]').inner_text())
    assert created >= 30
    assert int(page.locator('[data-counter="seen"]').inner_text()) == total
    page.get_by_role("link", name="Sync", exact=True).first.click()
    row = page.locator("#runs tbody tr").first
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("sync-admin@example.com")


def test_counters_move_without_a_reload_during_a_rate_limited_run(
    admin_page: Any, live_server: Any, rate_limited: Any, celery_worker: Any
) -> None:
    from playwright.sync_api import expect

    rate_limited.seed(3000, prefix=f"rl-{uuid.uuid4().hex[:6]}-")
    page = admin_page
    _run_a_full_reconciliation(page, live_server.url)
    page.evaluate("window.__sameDocument = 'yes'")
    seen_values: set[int] = set()
    deadline = time.monotonic() + 120
    while len(seen_values) < 3 and time.monotonic() < deadline:
        if page.evaluate("window.__sameDocument") != "yes":
            break
        text = page.locator('[data-counter="seen"]').inner_text()
        if text.isdigit() and int(text) > 0:
            seen_values.add(int(text))
        page.wait_for_timeout(200)
    assert len(seen_values) >= 3, f"the counter showed only {sorted(seen_values)} before the run ended"
    expect(page.locator("[data-estimate]")).to_contain_text("left")
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=180_000)
