"""The console's own forms post with their CSRF token and run their scripts under the CSP; the same forms posted by
another site (same host, another port: same-site, so the cookie goes along) are refused and change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from models.db import unit_of_work
from models.tables import SyncRun, User
from tests.e2e.console_support import sign_in_with_cookie
from tests.e2e.other_origin import other_origin
from tests.factories import make_user

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("clean_db", "clean_redis")]


@pytest.fixture
def forger(live_server: Any) -> Iterator[str]:
    """Serves ``/post?to=<path>``: a page that posts a console form to the live server on load."""

    def render(path: str) -> str:
        target = path.split("to=", 1)[-1]
        return (
            f'<!doctype html><form id="f" method="post" action="{live_server.url}{target}">'
            '<input name="role" value="admin"><input name="employee_id" value=""><input name="department" value="">'
            '<input name="csrf_token" value="guessed"></form><script>document.getElementById("f").submit();</script>'
        )

    with other_origin(render) as url:
        yield url


@pytest.fixture
def admin_page(browser_context: Any, live_server: Any, make_signed_in_user: Any) -> Any:
    _, token = make_signed_in_user(role="admin")
    return sign_in_with_cookie(browser_context, live_server.url, token)


def test_cross_site_posts_to_console_forms_are_refused_and_change_nothing(
    admin_page: Any, forger: str, live_server: Any
) -> None:
    with unit_of_work() as session:
        person_id = make_user(session).id
    paths = [
        f"/admin/users/{person_id}/fields",
        f"/admin/users/{person_id}/sync",
        "/admin/sync/full",
        "/admin/sync/runs/1/review/approve",
        "/admin/sync/runs/1/review/dismiss",
        "/admin/events/1/replay",
    ]
    for path in paths:
        with admin_page.expect_response(f"{live_server.url}{path}") as answer:
            admin_page.goto(f"{forger}/post?to={path}")
        assert answer.value.status == 403, path
        assert answer.value.request.all_headers().get("cookie"), "without the cookie the 403 would prove nothing"
    with unit_of_work() as session:
        assert session.get(User, person_id).role == "employee"  # type: ignore[union-attr]
        assert session.execute(select(func.count()).select_from(SyncRun)).scalar_one() == 0


@pytest.mark.parametrize("path", ["/admin/users", "/admin/users/{me}", "/admin/sync", "/admin/events", "/api-docs"])
def test_console_pages_run_under_the_csp_without_violations(
    browser_context: Any, live_server: Any, make_signed_in_user: Any, path: str
) -> None:
    me, token = make_signed_in_user(role="admin")
    page = sign_in_with_cookie(browser_context, live_server.url, token)
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    response = page.goto(live_server.url + path.format(me=me))
    assert response is not None
    assert response.status == 200
    page.wait_for_load_state("networkidle")
    assert violations == []
