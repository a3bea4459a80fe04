"""A page on another port of the same host is same-site, so Chromium sends the admin's SameSite=Lax cookie with its
requests: its form posts and no-cors fetches must still be refused and start nothing, and it must not be able to
frame the admin's pages (clickjacking). The app's own pages run their scripts under the CSP without a violation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from models.db import unit_of_work
from models.tables import SyncRun
from tests.e2e.other_origin import other_origin

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("clean_db", "clean_redis")]


@pytest.fixture
def attacker(live_server: Any) -> Iterator[str]:
    """A page that posts to ``/admin/sync`` on load (``/form``), one that frames ``/admin/health`` (``/frame``), and
    an idle page for fetches, all on another origin of the same site."""
    pages = {
        "/form": f'<form id="f" method="post" action="{live_server.url}/admin/sync"></form>'
        '<script>document.getElementById("f").submit();</script>',
        "/frame": f'<iframe id="victim" src="{live_server.url}/admin/health"></iframe>',
    }
    with other_origin(lambda path: f"<!doctype html><html><body>{pages.get(path, '<p>idle</p>')}</body></html>") as url:
        yield url


def _runs() -> int:
    with unit_of_work() as session:
        return session.execute(select(func.count()).select_from(SyncRun)).scalar_one()


def test_same_site_form_post_to_start_a_sync_is_refused(
    signed_in_admin_page: Any, attacker: str, live_server: Any
) -> None:
    page = signed_in_admin_page
    with page.expect_response(f"{live_server.url}/admin/sync") as answer:
        page.goto(f"{attacker}/form")
    assert answer.value.status == 403
    # Without the cookie the 403 would prove nothing.
    assert answer.value.request.all_headers().get("cookie")
    assert _runs() == 0


def test_same_site_no_cors_fetch_is_refused(signed_in_admin_page: Any, attacker: str, live_server: Any) -> None:
    page = signed_in_admin_page
    page.goto(f"{attacker}/idle")
    with page.expect_response(f"{live_server.url}/admin/events/replay-failed") as answer:
        page.evaluate(
            "url => fetch(url, {method: 'POST', mode: 'no-cors', credentials: 'include'}).then(() => true)",
            f"{live_server.url}/admin/events/replay-failed",
        )
    assert answer.value.status == 403
    with page.expect_response(f"{live_server.url}/admin/sync") as answer:
        page.evaluate(
            "url => fetch(url, {method: 'POST', mode: 'no-cors', credentials: 'include'}).then(() => true)",
            f"{live_server.url}/admin/sync",
        )
    assert answer.value.status == 403
    assert _runs() == 0


def test_the_apps_own_page_can_post_with_its_token(signed_in_admin_page: Any, live_server: Any) -> None:
    page = signed_in_admin_page
    page.goto(f"{live_server.url}/admin/health")
    status = page.evaluate(
        """() => fetch('/admin/sync', {method: 'POST', credentials: 'same-origin', headers: {
               'X-CSRF-Token': document.querySelector('meta[name="csrf-token"]').content}}).then(r => r.status)"""
    )
    assert status == 202
    assert _runs() == 1


def test_another_site_cannot_frame_the_admin_pages(signed_in_admin_page: Any, attacker: str, live_server: Any) -> None:
    page = signed_in_admin_page
    with page.expect_response(f"{live_server.url}/admin/health") as answer:
        page.goto(f"{attacker}/frame")
    assert answer.value.status == 200  # the page was served with the cookie, and the browser refused to show it
    assert answer.value.headers["x-frame-options"] == "DENY"
    frame = page.frame_locator("#victim")
    # goto waited for the load event, which waits for the frame. Chromium replaces a refused frame with its own
    # error document: the health page's heading is not in it.
    assert frame.locator("h1", has_text="Sync health").count() == 0


@pytest.mark.parametrize("path", ["/admin/health", "/admin/live", "/profile", "/auth/logout"])
def test_own_pages_run_under_the_csp_without_violations(signed_in_admin_page: Any, live_server: Any, path: str) -> None:
    page = signed_in_admin_page
    violations: list[str] = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    page.goto(f"{live_server.url}{path}")
    if path == "/admin/live":
        page.locator("#stream-state[data-state='live']").wait_for()
    page.wait_for_load_state("load")
    assert violations == []
