"""``python -m localrun.screenshots``: the admin guide's pictures, taken by Chromium from the running local run.

Start the local run first (``python3 scripts/run.py``), then run ``python3 scripts/screenshots.py``. It reads the
run's address from ``.local/run.env``, signs in at the stand-in as the demo admin like a person would, adds a few
demo users to the stand-in (``screens`` prefix; re-running adds nothing new), runs a full reconciliation from the
sync page, changes one user at the stand-in while the live page is open, and saves one PNG per page in
``docs/screenshots/``. Re-run it after changing a page; it never touches anything but the local run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from asgardeo_standin.client import StandinAdmin
from asgardeo_standin.server import DEMO_USERS
from localrun.procfile import ROOT

DATA = Path(os.environ.get("LOCALRUN_DATA_DIR", ROOT / ".local"))
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def run_settings() -> dict[str, str]:
    """The running local run's settings, as it wrote them."""
    path = DATA / "run.env"
    if not path.exists():
        sys.exit("localrun.screenshots: no .local/run.env; start the local run first (python3 scripts/run.py).")
    settings = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition("=")
        settings[name] = shlex.split(value)[0] if value else ""
    return settings


def sign_in(page: Any, web: str, username: str, password: str, then: str) -> None:
    page.goto(f"{web}{then}")
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{web}{then}*")


def shoot(page: Any, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=False)
    print(f"  docs/screenshots/{name}.png", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrun.screenshots", description=__doc__)
    parser.parse_args(argv)
    settings = run_settings()
    web = settings["PUBLIC_BASE_URL"]
    standin = StandinAdmin(f"http://127.0.0.1:{settings['STANDIN_PORT']}")
    standin.seed(40, prefix="screens")
    admin, employee = DEMO_USERS
    from playwright.sync_api import ViewportSize, expect, sync_playwright  # noqa: PLC0415 - a test extra, only here

    viewport: ViewportSize = {"width": 1280, "height": 860}

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_context(viewport=viewport).new_page()
            page.set_default_timeout(60_000)
            sign_in(page, web, str(admin["username"]), str(admin["password"]), "/admin/sync")
            page.get_by_role("button", name="Run a full reconciliation now").click()
            expect(page.locator("#run-status")).not_to_have_text("running", timeout=120_000)
            shoot(page, "sync-run")
            page.goto(f"{web}/admin/sync")
            shoot(page, "sync")
            page.goto(f"{web}/admin/users")
            shoot(page, "users")
            page.get_by_label("Name, email, username or id").fill("screens000007")
            page.get_by_label("Name, email, username or id").press("Enter")
            page.locator("#user-list tbody a").first.click()
            shoot(page, "user")
            page.goto(f"{web}/admin/live")
            page.locator('#stream-state[data-state="live"]').wait_for()
            target = next(u for u in standin.dump()["users"] if u["userName"].endswith("screens000003@example.com"))
            given = "Augusta" if target["name"].get("givenName") != "Augusta" else "Ada"
            standin.update_user(target["id"], given_name=given)
            page.locator("#changes li", has_text=given).first.wait_for()
            shoot(page, "live")
            page.goto(f"{web}/admin/events")
            shoot(page, "inbox")
            page.goto(f"{web}/admin/health")
            shoot(page, "sync-health")
            page.goto(f"{web}/api-docs")
            shoot(page, "api-docs")
            other = browser.new_context(viewport=viewport).new_page()
            sign_in(other, web, str(employee["username"]), str(employee["password"]), "/admin/users")
            shoot(other, "forbidden")
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
