"""The admin's live user table in headless Chromium, fed by the stand-in's signed deliveries through the real worker,
and the SSE stream's lifetime rules (heartbeats, the max-duration close, resume after it) over real HTTP."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from localrun.embedded import free_port
from models.db import unit_of_work
from models.users import apply_user_patch
from tasks.live import publish_changes
from tests.polling import wait_for
from tests.stack import WEBHOOK_SECRET, LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("clean_db", "clean_redis")]


@pytest.fixture
def subscribed(standin_admin: Any, live_server: LiveServer, celery_worker: Any) -> Iterator[Any]:
    """The stand-in delivers its webhooks to the live server; the real worker applies them."""
    status = standin_admin.set_webhook(live_server.url + "/webhooks/asgardeo", WEBHOOK_SECRET, wait_verified=10)
    assert status["verified"], status
    yield standin_admin
    standin_admin.wait_for_deliveries(timeout=10)
    standin_admin.set_webhook(None)


@pytest.fixture
def short_stream_server() -> Iterator[str]:
    """A second web server whose streams close after 2.5 s and send a heartbeat every 0.5 s of quiet.

    Its own app on a copy of the settings (``create_app`` reads ``SETTINGS`` per request), so the shared live server
    keeps production-like values. Cookies are per host, not per port: the admin's cookie works here too.
    """
    from models.settings import get_settings
    from web import create_app

    settings = get_settings().model_copy(update={"live_stream_max_seconds": 2.5, "live_stream_heartbeat_seconds": 0.5})
    server = make_server("127.0.0.1", free_port(), create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="short-stream-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def cell(page: Any, asgardeo_id: str, field: str) -> Any:
    return page.locator(f'tr[data-asgardeo-id="{asgardeo_id}"] td[data-field="{field}"]')


def open_live_page(page: Any, base_url: str) -> None:
    page.goto(f"{base_url}/admin/live")
    page.locator('#stream-state[data-state="live"]').wait_for()
    # Survives only as long as the document does: a reload or navigation would drop it.
    page.evaluate("window.__sameDocument = 'yes'")


def test_standin_changes_appear_on_the_live_page_without_a_reload(
    signed_in_admin_page: Any, live_server: LiveServer, subscribed: Any
) -> None:
    page = signed_in_admin_page
    open_live_page(page, live_server.url)
    name = f"live-{uuid.uuid4().hex[:8]}@example.com"

    created = subscribed.create_user(name, "Passw0rd!", email=name, given_name="Ada", family_name="King")
    uid = created["id"]
    wait_for(lambda: cell(page, uid, "email").text_content() == name, what="created row")
    assert cell(page, uid, "first_name").text_content() == "Ada"
    assert cell(page, uid, "status").text_content() == "active"

    subscribed.update_user(uid, given_name="Augusta")
    wait_for(lambda: cell(page, uid, "first_name").text_content() == "Augusta", what="profile update")

    subscribed.disable(uid)
    wait_for(lambda: cell(page, uid, "status").text_content() == "inactive", what="disable")

    assert page.evaluate("window.__sameDocument") == "yes"
    assert page.locator(f'tr[data-asgardeo-id="{uid}"]').count() == 1
    assert int(page.locator("#last-change").get_attribute("data-change-id")) > 0


def test_live_page_shows_existing_users_and_escapes_their_fields(
    signed_in_admin_page: Any, live_server: LiveServer
) -> None:
    uid = str(uuid.uuid4())
    hostile = "<img src=x onerror=\"window.__owned='yes'\">"
    with unit_of_work() as session:
        apply_user_patch(session, uid, {"first_name": hostile}, source_version=1, source="test")
    page = signed_in_admin_page
    open_live_page(page, live_server.url)
    assert cell(page, uid, "first_name").text_content() == hostile
    live_uid = str(uuid.uuid4())
    with unit_of_work() as session:
        change = apply_user_patch(session, live_uid, {"last_name": hostile}, source_version=1, source="test")
    assert change is not None
    publish_changes([change])
    wait_for(lambda: cell(page, live_uid, "last_name").text_content() == hostile, what="live hostile change")
    assert page.evaluate("window.__owned") is None


def test_live_page_needs_an_admin(
    browser_context: Any, live_server: LiveServer, make_signed_in_user: Callable[..., tuple[int, str]]
) -> None:
    from models.settings import get_settings

    page = browser_context.new_page()
    response = page.request.get(f"{live_server.url}/admin/live", headers={"Accept": "text/html"}, max_redirects=0)
    assert response.status == 303
    assert response.headers["location"] == "/auth/login?next=%2Fadmin%2Flive"
    _, token = make_signed_in_user(role="employee")
    browser_context.add_cookies(
        [{"name": get_settings().session_cookie_name, "value": token, "url": live_server.url, "httpOnly": True}]
    )
    response = page.goto(f"{live_server.url}/admin/live")
    assert response is not None
    assert response.status == 403


def read_stream(url: str, headers: dict[str, str], limit_seconds: float) -> tuple[list[str], float]:
    """Every line of one stream until the server closes it; fails if it is still open after ``limit_seconds``."""
    lines: list[str] = []
    started = time.monotonic()
    with requests.get(url, headers=headers, stream=True, timeout=limit_seconds) as response:
        assert response.status_code == 200
        for line in response.iter_lines(decode_unicode=True):
            lines.append(line)
            assert time.monotonic() - started < limit_seconds, "the stream outlived its maximum duration"
    return lines, time.monotonic() - started


def test_stream_sends_heartbeats_then_closes_at_its_maximum_duration(
    short_stream_server: str, admin_headers: dict[str, str]
) -> None:
    lines, elapsed = read_stream(short_stream_server + "/events/users", admin_headers, limit_seconds=8)
    assert lines[0] == "retry: 2000"  # the browser waits 2 s, then reconnects with Last-Event-ID
    # A quiet stream: nothing but comments. 2.5 s with a heartbeat due every 0.5 s (polled at most each second).
    assert lines.count(": heartbeat") >= 2
    assert not [line for line in lines if line.startswith("data:")]
    assert 2.4 <= elapsed < 6


def test_browser_reconnects_after_the_maximum_duration_and_misses_nothing(
    signed_in_admin_page: Any, short_stream_server: str
) -> None:
    page = signed_in_admin_page
    open_live_page(page, short_stream_server)
    # The server ends the stream after 2.5 s; the browser waits 2 s (``retry``) before it reconnects.
    page.locator('#stream-state[data-state="reconnecting"]').wait_for(timeout=10_000)
    uid = str(uuid.uuid4())
    with unit_of_work() as session:
        change = apply_user_patch(session, uid, {"first_name": "Missed"}, source_version=1, source="test")
    assert change is not None
    publish_changes([change])  # nobody is subscribed now: only the audit trail can bring it back
    wait_for(lambda: cell(page, uid, "first_name").text_content() == "Missed", what="change made while away")
    assert page.locator('#stream-state[data-state="live"]').count() == 1
    assert page.evaluate("window.__sameDocument") == "yes"


def test_a_change_beyond_the_first_500_rows_shows_live_and_in_words(
    signed_in_admin_page: Any, live_server: LiveServer, subscribed: Any
) -> None:
    from playwright.sync_api import expect

    from tests.e2e.console_support import many_users

    many_users(700, prefix="live-bulk")
    name = f"far-{uuid.uuid4().hex[:8]}@example.com"
    uid = subscribed.create_user(name, "Passw0rd!", email=name, given_name="Ada", family_name="King")["id"]
    page = signed_in_admin_page
    page.goto(f"{live_server.url}/admin/live")
    expect(page.locator("#result-count")).to_contain_text("of 70")  # 700 and more: the total, not the first rows
    wait_for(lambda: _row_count(page, live_server, name) == 1, what="the webhook's user in the table")
    page.get_by_label("Name, email, username or id").fill(name)
    page.get_by_label("Name, email, username or id").press("Enter")
    page.locator('#stream-state[data-state="live"]').wait_for()
    page.evaluate("window.__sameDocument = 'yes'")
    expect(page.locator("#result-count")).to_contain_text("1\N{EN DASH}1 of 1 users")

    subscribed.update_user(uid, given_name="Augusta")
    wait_for(lambda: cell(page, uid, "first_name").text_content() == "Augusta", what="profile update on the row")
    latest = page.locator("#changes li").first
    expect(latest).to_contain_text(name)
    expect(latest).to_contain_text("first name Ada → Augusta")
    expect(latest).to_contain_text("webhook from Asgardeo")
    assert page.evaluate("window.__sameDocument") == "yes"


def _row_count(page: Any, live_server: LiveServer, email: str) -> int:
    """How many local users have this email (the webhook's creation may still be on its way)."""
    from sqlalchemy import func, select

    from models.tables import User

    with unit_of_work() as session:
        return session.execute(select(func.count()).select_from(User).where(User.email == email)).scalar_one()
