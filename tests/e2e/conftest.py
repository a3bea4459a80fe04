"""Browser fixtures: Debian's Chromium driven by Playwright (never ``playwright install``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--disable-gpu",
]


@pytest.fixture
def browser_context() -> Iterator[Any]:
    """A fresh browser context (no cookies) with a 15 s default timeout; fails under CI if Chromium is missing."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing; install Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.set_default_timeout(15_000)
            yield context
        finally:
            browser.close()


@pytest.fixture
def signed_in_admin_page(browser_context: Any, live_server: Any, make_signed_in_user: Any) -> Any:
    """A page whose browser carries an admin's session cookie for the live server."""
    from models.settings import get_settings

    _, token = make_signed_in_user(role="admin")
    browser_context.add_cookies(
        [{"name": get_settings().session_cookie_name, "value": token, "url": live_server.url, "httpOnly": True}]
    )
    return browser_context.new_page()
