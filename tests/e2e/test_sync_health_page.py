"""An operator opens the sync-health page in a real browser, sees a failed event and replays it with one click."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from models.db import unit_of_work
from models.tables import SyncRun, WebhookEvent
from tests.factories import failed_event

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("clean_db", "clean_redis")]


def _failed_event() -> int:
    """A well-formed event that failed earlier, so a replay can really apply it (a worker may be running)."""
    with unit_of_work() as session:
        event = failed_event(session)
        session.add(SyncRun(kind="full", trigger="schedule", status="guarded", error="would deactivate 40%"))
        session.flush()
        return event.id


def test_failed_event_is_listed_and_replayed_with_one_click(signed_in_admin_page: Any, live_server: Any) -> None:
    event_id = _failed_event()
    page = signed_in_admin_page
    page.goto(f"{live_server.url}/admin/health")
    row = page.locator(f"tr[data-event-id='{event_id}']")
    assert "SCIM answered 503" in row.inner_text()
    assert page.locator("#latest-run-status").inner_text() == "guarded"
    row.get_by_role("button", name="Replay").click()
    page.get_by_text("Replay queued.").wait_for()
    assert row.count() == 0
    with unit_of_work() as session:
        status = session.execute(select(WebhookEvent.status).where(WebhookEvent.id == event_id)).scalar_one()
    assert status in ("queued", "applied"), _last_error(event_id)


def test_health_page_needs_an_admin(browser_context: Any, live_server: Any) -> None:
    page = browser_context.new_page()
    response = page.goto(f"{live_server.url}/admin/health")
    assert response is not None
    assert response.status == 401


def _last_error(event_id: int) -> str | None:
    with unit_of_work() as session:
        return session.execute(select(WebhookEvent.last_error).where(WebhookEvent.id == event_id)).scalar_one()
