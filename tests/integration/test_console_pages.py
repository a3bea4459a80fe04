"""The console's pages through the test client: who gets a page, a redirect, a 403 page or JSON, and what each
page shows. The browser walks are in tests/e2e/test_console_*.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from models.db import unit_of_work
from models.tables import SyncRun, UserChange
from tests.factories import make_user

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
PAGES = [
    "/admin/users",
    "/admin/users/1",
    "/admin/sync",
    "/admin/sync/runs/1",
    "/admin/events",
    "/admin/live",
    "/admin/health",
    "/admin/events/1",
]


def _cookie(client: FlaskClient, token: str) -> None:
    from models.settings import get_settings

    client.set_cookie(get_settings().session_cookie_name, token, domain="localhost")


def _form_post(client: FlaskClient, path: str, token: str, data: dict[str, str], **kwargs: Any) -> Any:
    """A form post as the app's own page sends it: its origin and the session's CSRF token."""
    from models.settings import get_settings
    from web.csrf import token_for

    headers = {**BROWSER, "Origin": get_settings().public_base_url}
    return client.post(path, data={**data, "csrf_token": token_for(token)}, headers=headers, **kwargs)


@pytest.mark.parametrize("path", PAGES)
def test_signed_out_browser_is_sent_to_sign_in_and_back(client: FlaskClient, path: str) -> None:
    response = client.get(path + "?x=1", headers=BROWSER)
    assert response.status_code == 303
    assert response.headers["Location"] == "/auth/login?next=" + path.replace("/", "%2F") + "%3Fx%3D1"


@pytest.mark.parametrize("path", PAGES)
def test_employee_browser_gets_the_403_page(
    client: FlaskClient, make_signed_in_user: Callable[..., tuple[int, str]], path: str
) -> None:
    _, token = make_signed_in_user(role="employee", email="emp@example.com")
    _cookie(client, token)
    response = client.get(path, headers=BROWSER)
    assert response.status_code == 403
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "You cannot open this page" in page
    assert "emp@example.com" in page


@pytest.mark.parametrize("accept", [None, "application/json", "*/*"])
def test_api_clients_keep_getting_json(
    client: FlaskClient, make_signed_in_user: Callable[..., tuple[int, str]], accept: str | None
) -> None:
    _, token = make_signed_in_user(role="employee")
    headers = {"Accept": accept} if accept else {}
    assert client.get("/admin/users", headers=headers).json == {
        "error": "unauthenticated",
        "detail": "Sign in first: send the session cookie or a Bearer token.",
    }
    headers["Authorization"] = f"Bearer {token}"
    assert client.get("/admin/users", headers=headers).json["error"] == "forbidden"


def test_bearer_admin_gets_json_even_when_asking_for_html(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    response = client.get("/admin/users", headers={**admin_headers, **BROWSER})
    assert response.status_code == 200
    assert response.is_json


def test_every_console_page_renders_for_an_admin(
    client: FlaskClient, make_signed_in_user: Callable[..., tuple[int, str]]
) -> None:
    admin_id, token = make_signed_in_user(role="admin", email="boss@example.com")
    with unit_of_work() as session:
        run = SyncRun(kind="full", trigger="admin", status="guarded", error="guard")
        session.add(run)
        session.flush()
        run_id = run.id
    _cookie(client, token)
    for path in [
        "/admin/users",
        f"/admin/users/{admin_id}",
        "/admin/sync",
        "/admin/sync?kind=user",
        f"/admin/sync/runs/{run_id}",
        "/api-docs",
    ]:
        response = client.get(path, headers=BROWSER)
        assert response.status_code == 200, (path, response.get_data(as_text=True)[:2000])
        assert response.mimetype == "text/html"
        assert '<nav aria-label="Main">' in response.get_data(as_text=True)


def test_users_page_searches_and_counts(
    client: FlaskClient, make_signed_in_user: Callable[..., tuple[int, str]]
) -> None:
    _, token = make_signed_in_user(role="admin")
    with unit_of_work() as session:
        for n in range(120):
            make_user(session, first_name="Searchable" if n % 2 else "Other", last_name=f"N{n:03d}")
        target = make_user(session, first_name="Grace", last_name="Hopper", email="grace@navy.example")
        target_id = target.id
    _cookie(client, token)
    page = client.get("/admin/users?q=searchable&limit=50", headers=BROWSER).get_data(as_text=True)
    assert "Showing <strong>1\N{EN DASH}50</strong> of <strong>60</strong>" in page
    second = client.get(
        "/admin/users?q=searchable&limit=50&after_id=" + page.split("after_id=")[1].split("&")[0], headers=BROWSER
    ).get_data(as_text=True)
    assert "Showing <strong>51\N{EN DASH}60</strong> of <strong>60</strong>" in second
    assert "grace@navy.example" in client.get(f"/admin/users?q={target_id}", headers=BROWSER).get_data(as_text=True)
    assert "Grace Hopper" in client.get("/admin/users?q=grace hop", headers=BROWSER).get_data(as_text=True)


def test_editing_app_fields_by_form_is_audited_with_the_admin(
    client: FlaskClient, make_signed_in_user: Callable[..., tuple[int, str]]
) -> None:
    _, token = make_signed_in_user(role="admin", email="boss@example.com")
    with unit_of_work() as session:
        user_id = make_user(session).id
    _cookie(client, token)
    response = _form_post(
        client,
        f"/admin/users/{user_id}/fields",
        token,
        {"role": "hr", "employee_id": "E-42", "department": " Finance "},
        follow_redirects=True,
    )
    page = response.get_data(as_text=True)
    assert "Saved: role, employee id, department." in page
    assert "role employee → hr" in page
    assert "admin edit by boss@example.com" in page
    with unit_of_work() as session:
        change = session.query(UserChange).filter_by(user_id=user_id).one()
        assert change.actor == "boss@example.com"
        assert change.changes["department"] == [None, "Finance"]


def test_a_refused_form_edit_changes_nothing_and_says_why(
    client: FlaskClient, make_signed_in_user: Callable[..., tuple[int, str]]
) -> None:
    admin_id, token = make_signed_in_user(role="admin")
    _cookie(client, token)
    page = _form_post(
        client, f"/admin/users/{admin_id}/fields", token, {"role": "employee", "employee_id": "", "department": ""}
    )
    assert "Not saved: this is the last active admin" in page.get_data(as_text=True)
    assert page.status_code == 409
    bad = _form_post(client, f"/admin/users/{admin_id}/fields", token, {"role": "root"})
    assert bad.status_code == 400
    forged = client.post(
        f"/admin/users/{admin_id}/fields",
        data={"role": "hr", "employee_id": "", "department": ""},
        headers={**BROWSER, "Origin": "http://evil.example"},
    )
    assert forged.status_code == 403
    with unit_of_work() as session:
        assert session.query(UserChange).filter_by(user_id=admin_id).count() == 0


def test_api_reference_page_lists_every_operation_and_needs_no_network(client: FlaskClient) -> None:
    import re

    from web.openapi import document

    page = client.get("/api-docs", headers=BROWSER).get_data(as_text=True)
    for path, operations in document()["paths"].items():
        for method in operations:
            assert f'<span class="method method-{method}">{method.upper()}</span> <code>{path}</code>' in page
    # Nothing is loaded from elsewhere: every src and stylesheet is this app's own.
    assert not re.search(r'(src|href)="(https?:)?//', page)
