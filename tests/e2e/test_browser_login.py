"""A real headless Chromium signs in at the stand-in's login form, sees the profile page and signs out."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.integration.auth_support import PASSWORD, new_standin_user

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("clean_db")]


@pytest.fixture
def page(browser_context: Any) -> Any:
    return browser_context.new_page()


def test_person_signs_in_sees_profile_and_signs_out(
    page: Any, live_server: Any, standin: Any, standin_admin: Any
) -> None:
    from playwright.sync_api import expect

    from models.db import unit_of_work
    from models.tables import AppSession

    person = new_standin_user(standin_admin, given_name="Mira", family_name="Okafor")
    page.goto(live_server.url + "/")
    page.get_by_role("link", name="Sign in with Asgardeo").click()

    page.wait_for_url(f"{standin.base_url}/oauth2/authorize*")
    page.fill('input[name="username"]', person["_username"])
    page.fill('input[name="password"]', PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    page.wait_for_url(live_server.url + "/profile")
    expect(page.locator('[data-field="name"]')).to_have_text("Mira Okafor")
    expect(page.locator('[data-field="email"]')).to_have_text(person["_username"])
    expect(page.locator('[data-field="role"]')).to_have_text("employee")
    expect(page.locator('[data-field="last_login"]')).to_contain_text("UTC")
    cookie = next(c for c in page.context.cookies() if c["name"] == "hrms_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"

    page.get_by_role("button", name="Sign out").click()
    # The provider returns to PUBLIC_BASE_URL/ with the logout ``state`` in the query.
    page.wait_for_url(re.compile(re.escape(live_server.url) + r"/(\?.*)?$"))
    expect(page.get_by_role("link", name="Sign in with Asgardeo")).to_be_visible()
    assert all(c["name"] != "hrms_session" for c in page.context.cookies())
    with unit_of_work() as session:
        [row] = session.query(AppSession).all()
        assert row.revoked_reason == "logout"

    # Signed out at the provider too: the next sign-in asks for the password again.
    page.goto(live_server.url + "/profile")
    page.wait_for_url(f"{standin.base_url}/oauth2/authorize*")
    expect(page.locator('input[name="password"]')).to_be_visible()
