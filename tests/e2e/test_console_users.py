"""An admin works the users console in a real browser over the real web server, worker and stand-in: finds one
person among thousands, edits the app's own fields and sees the audit history, ends a session, and syncs the person
from Asgardeo with the result on the page."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from models.db import unit_of_work
from models.tables import AppSession, User
from tests.e2e.console_support import many_users, sign_in_with_cookie
from tests.factories import login, make_user

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("clean_db", "clean_redis")]


@pytest.fixture
def admin_page(browser_context: Any, live_server: Any, make_signed_in_user: Any) -> Any:
    _, token = make_signed_in_user(role="admin", email="console-admin@example.com")
    return sign_in_with_cookie(browser_context, live_server.url, token)


def test_search_finds_one_user_among_thousands_and_pages_with_a_count(admin_page: Any, live_server: Any) -> None:
    from playwright.sync_api import expect

    many_users(4000)
    with unit_of_work() as session:
        target = make_user(session, first_name="Ingrid", last_name="Solberg", email="ingrid.solberg@example.com")
        target_id = target.id
    page = admin_page
    page.goto(live_server.url + "/admin/users")
    expect(page.locator("#result-count")).to_contain_text("of 4,002 users")
    page.get_by_label("Name, email, username or id").fill("ingrid sol")
    page.get_by_label("Name, email, username or id").press("Enter")
    expect(page.locator("#result-count")).to_contain_text("1\N{EN DASH}1 of 1 users")
    page.get_by_role("link", name="Ingrid Solberg").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Ingrid Solberg")
    assert page.url == f"{live_server.url}/admin/users/{target_id}"

    page.goto(live_server.url + "/admin/users?status=active&q=bulk")
    expect(page.locator("#result-count")).to_contain_text("1\N{EN DASH}50 of 4,000 users")
    page.get_by_role("link", name="Next →").click()
    expect(page.locator("#result-count")).to_contain_text("51\N{EN DASH}100 of 4,000 users")
    page.get_by_role("link", name="← Previous").click()
    expect(page.locator("#result-count")).to_contain_text("1\N{EN DASH}50 of 4,000 users")


def test_editing_app_fields_shows_in_the_audit_history_and_a_session_can_be_revoked(
    admin_page: Any, live_server: Any
) -> None:
    from playwright.sync_api import expect

    with unit_of_work() as session:
        person = make_user(session, first_name="Tomas", last_name="Berg")
        person_id = person.id
        session_id = login(session, person).session_id
    page = admin_page
    page.goto(f"{live_server.url}/admin/users/{person_id}")
    page.get_by_label("Department").fill("Payroll")
    page.get_by_label("Role").select_option("manager")
    page.get_by_role("button", name="Save application fields").click()
    expect(page.locator("#notice")).to_have_text("Saved: role, department.")
    history = page.locator("#history tbody tr").first
    expect(history).to_contain_text("role employee → manager; department (empty) → Payroll")
    expect(history).to_contain_text("admin edit by console-admin@example.com")

    page.get_by_role("button", name=f"Revoke session {session_id}").click()
    expect(page.locator("#notice")).to_contain_text(f"Session {session_id} revoked")
    expect(page.locator("#no-sessions")).to_be_visible()
    with unit_of_work() as session:
        assert session.get(AppSession, session_id).revoked_reason == "admin_revoked"  # type: ignore[union-attr]


def test_sync_this_user_now_shows_the_result_on_the_page(
    admin_page: Any, live_server: Any, standin_admin: Any, celery_worker: Any
) -> None:
    from playwright.sync_api import expect

    from tests.integration.auth_support import new_standin_user

    # The case this button is for: the directory changed and no webhook told us (none is subscribed here).
    standin_admin.set_webhook(None)
    resource = new_standin_user(standin_admin, given_name="Aiko", family_name="Tanaka")
    with unit_of_work() as session:
        person = make_user(session, asgardeo_id=resource["id"], first_name="Old", last_name="Name", source_version=1)
        person_id = person.id
    page = admin_page
    page.goto(f"{live_server.url}/admin/users/{person_id}")
    page.get_by_role("button", name="Sync this user from Asgardeo now").click()
    result = page.locator("#sync-result")
    expect(result).to_contain_text("succeeded", timeout=30_000)
    expect(result).to_contain_text("first name Old → Aiko")
    expect(page.locator('#directory-fields tr[data-field="last_name"] td.value')).to_have_text("Tanaka")
    expect(page.locator('#directory-fields tr[data-field="first_name"]')).to_contain_text("single-user sync")
    with unit_of_work() as session:
        assert session.execute(select(User.first_name).where(User.id == person_id)).scalar_one() == "Aiko"
