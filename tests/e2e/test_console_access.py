"""Who may open the console, in a real browser: signed out is sent to sign in and comes back; an employee gets the
403 page; the navigation says where an admin is."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.console_support import sign_in_with_cookie
from tests.integration.auth_support import PASSWORD, new_standin_user

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("clean_db")]


def test_signed_out_visitor_signs_in_comes_back_and_an_employee_gets_the_403_page(
    browser_context: Any, live_server: Any, standin: Any, standin_admin: Any
) -> None:
    from playwright.sync_api import expect

    person = new_standin_user(standin_admin, given_name="Noor", family_name="Haddad")
    page = browser_context.new_page()
    page.goto(live_server.url + "/admin/users?q=noor")

    page.wait_for_url(f"{standin.base_url}/oauth2/authorize*")
    page.fill('input[name="username"]', person["_username"])
    page.fill('input[name="password"]', PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    page.wait_for_url(live_server.url + "/admin/users?q=noor")
    expect(page.get_by_role("heading", level=1)).to_have_text("You cannot open this page")
    expect(page.locator("main")).to_contain_text(person["_username"])
    expect(page.locator("main")).to_contain_text("employee")
    # An employee's navigation offers no console sections.
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Users")).to_have_count(0)


def test_admin_navigation_marks_the_current_section_and_is_keyboard_reachable(
    browser_context: Any, live_server: Any, make_signed_in_user: Any
) -> None:
    from playwright.sync_api import expect

    _, token = make_signed_in_user(role="admin")
    page = sign_in_with_cookie(browser_context, live_server.url, token)
    page.goto(live_server.url + "/admin/sync")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Sync", exact=True)).to_have_attribute("aria-current", "page")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    # The first control after the skip link is inside the main landmark.
    assert page.evaluate("document.activeElement.closest('main') !== null")
    sections = (("Users", "Users"), ("Inbox", "Inbox"), ("Live", "Users, live"), ("Sync health", "Sync health"))
    for name, heading in sections:
        nav.get_by_role("link", name=name, exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
