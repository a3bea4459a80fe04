"""An operator reads the inbox in a real browser: events by status and type, one event's details, and replays one
or all failed events from the page."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from models.db import unit_of_work
from models.tables import WebhookEvent
from tests.e2e.console_support import sign_in_with_cookie
from tests.factories import make_event

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("clean_db", "clean_redis")]


def _event(kind: str, status: str, error: str | None = None) -> int:
    with unit_of_work() as session:
        return make_event(session, kind, status=status, attempts=5 if status == "failed" else 1, last_error=error).id


def _status(event_id: int) -> str:
    with unit_of_work() as session:
        return session.execute(select(WebhookEvent.status).where(WebhookEvent.id == event_id)).scalar_one()


def test_inbox_filters_shows_an_event_and_replays_failed_ones(
    browser_context: Any, live_server: Any, make_signed_in_user: Any
) -> None:
    from playwright.sync_api import expect

    applied = _event("userCreated", "applied")
    first = _event("userProfileUpdated", "failed", "DirectoryUnavailable: SCIM answered 503")
    second = _event("userCreated", "failed", "DirectoryUnavailable: SCIM answered 503")
    _, token = make_signed_in_user(role="admin")
    page = sign_in_with_cookie(browser_context, live_server.url, token)

    page.goto(live_server.url + "/admin/events")
    expect(page.locator("#events tbody tr")).to_have_count(3)
    page.get_by_label("Status", exact=True).select_option("failed")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#events tbody tr")).to_have_count(2)
    assert page.locator(f'tr[data-event-id="{applied}"]').count() == 0
    first_type = page.locator(f'tr[data-event-id="{first}"] td').first.inner_text()
    page.get_by_label("Type", exact=True).select_option(label=first_type)
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#events tbody tr")).to_have_count(1)

    page.get_by_role("link", name=f"#{first}").click()
    expect(page.locator("#last-error")).to_have_text("DirectoryUnavailable: SCIM answered 503")
    expect(page.locator("pre")).to_contain_text('"jti"')
    page.get_by_role("button", name="Replay this event").click()
    expect(page.locator("#notice")).to_contain_text(f"Event #{first} queued again")
    assert _status(first) in ("queued", "applied")

    page.get_by_role("link", name="Inbox", exact=True).first.click()
    page.get_by_role("button", name="Replay all 1 failed").click()
    expect(page.locator("#notice")).to_contain_text("1 failed event(s) queued again")
    assert _status(second) in ("queued", "applied")
