"""Every state-changing route that the session cookie authenticates refuses a forged request and changes nothing.

A forged request is one from another site, from a same-site page on another port (which SameSite=Lax does not
stop), or from anywhere without the session's CSRF token. The same request with this application's origin and the
token works; a Bearer client needs neither.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from models.db import unit_of_work
from models.settings import get_settings
from models.tables import AppSession, SyncRun, User, WebhookEvent
from tests.factories import failed_event
from web.csrf import origin_of, token_for

pytestmark = pytest.mark.usefixtures("clean_redis")

OWN_ORIGIN = origin_of(get_settings().public_base_url)
assert OWN_ORIGIN is not None
_port = int(OWN_ORIGIN.rsplit(":", 1)[1])
FORGED_ORIGINS = {
    "cross_site": "https://evil.example",
    "same_site_other_port": f"http://127.0.0.1:{_port + 1}",
    "opaque": "null",
}


@dataclass(frozen=True)
class Route:
    """One state-changing route: how to call it, and a snapshot of what it would change."""

    method: str
    path: Callable[[dict[str, int]], str]
    json: Any
    state: Callable[[dict[str, int]], Any]
    ok_status: int


def _failed_event() -> int:
    with unit_of_work() as session:
        return failed_event(session, last_error="boom").id


def _event_status(ids: dict[str, int]) -> str:
    with unit_of_work() as session:
        return session.execute(select(WebhookEvent.status).where(WebhookEvent.id == ids["event"])).scalar_one()


def _runs(_ids: dict[str, int]) -> int:
    with unit_of_work() as session:
        return session.execute(select(func.count()).select_from(SyncRun)).scalar_one()


def _department(ids: dict[str, int]) -> str | None:
    with unit_of_work() as session:
        return session.execute(select(User.department).where(User.id == ids["user"])).scalar_one()


def _revoked(ids: dict[str, int]) -> bool:
    with unit_of_work() as session:
        revoked_at = session.execute(
            select(AppSession.revoked_at).where(AppSession.user_id == ids["admin"])
        ).scalar_one()
        return revoked_at is not None


ROUTES = {
    "start_sync": Route("POST", lambda ids: "/admin/sync", None, _runs, 202),
    "replay_one": Route("POST", lambda ids: f"/admin/events/{ids['event']}/replay", None, _event_status, 202),
    "replay_failed": Route("POST", lambda ids: "/admin/events/replay-failed", None, _event_status, 202),
    "edit_user": Route("PATCH", lambda ids: f"/admin/users/{ids['user']}", {"department": "Forged"}, _department, 200),
    "logout": Route("POST", lambda ids: "/auth/logout", None, _revoked, 200),
}


@pytest.fixture
def admin_cookie(
    client: FlaskClient, make_signed_in_user: Callable[..., tuple[int, str]]
) -> tuple[dict[str, int], str]:
    """An admin signed in through the cookie, a failed event and another user to act on."""
    admin_id, token = make_signed_in_user(role="admin")
    user_id, _ = make_signed_in_user()
    client.set_cookie(get_settings().session_cookie_name, token)
    return {"admin": admin_id, "user": user_id, "event": _failed_event()}, token


def _call(client: FlaskClient, route: Route, ids: dict[str, int], headers: dict[str, str], **extra: Any) -> Any:
    return client.open(
        route.path(ids),
        method=route.method,
        json=route.json,
        headers={"Accept": "application/json", **headers},
        **extra,
    )


@pytest.mark.parametrize("name", sorted(ROUTES))
@pytest.mark.parametrize("origin", sorted(FORGED_ORIGINS))
def test_forged_origin_with_the_cookie_is_refused_and_changes_nothing(
    client: FlaskClient, admin_cookie: tuple[dict[str, int], str], name: str, origin: str
) -> None:
    ids, token = admin_cookie
    route = ROUTES[name]
    before = route.state(ids)
    # Even a stolen token does not help a page on another origin.
    answer = _call(client, route, ids, {"Origin": FORGED_ORIGINS[origin], "X-CSRF-Token": token_for(token)})
    assert answer.status_code == 403, answer.get_data(as_text=True)
    assert answer.get_json()["error"] == "cross_origin"
    assert route.state(ids) == before


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_own_origin_without_the_token_is_refused_and_changes_nothing(
    client: FlaskClient, admin_cookie: tuple[dict[str, int], str], name: str
) -> None:
    ids, _token = admin_cookie
    route = ROUTES[name]
    before = route.state(ids)
    for headers in ({"Origin": OWN_ORIGIN}, {"Origin": OWN_ORIGIN, "X-CSRF-Token": "0" * 64}):
        answer = _call(client, route, ids, headers)
        assert answer.status_code == 403
        assert answer.get_json()["error"] == "csrf_token_invalid"
    assert route.state(ids) == before


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_own_origin_with_the_token_works(
    client: FlaskClient, admin_cookie: tuple[dict[str, int], str], name: str
) -> None:
    ids, token = admin_cookie
    route = ROUTES[name]
    before = route.state(ids)
    answer = _call(client, route, ids, {"Origin": OWN_ORIGIN, "X-CSRF-Token": token_for(token)})
    assert answer.status_code == route.ok_status, answer.get_data(as_text=True)
    assert route.state(ids) != before


def test_a_missing_origin_falls_back_to_the_referer(
    client: FlaskClient, admin_cookie: tuple[dict[str, int], str]
) -> None:
    ids, token = admin_cookie
    route = ROUTES["edit_user"]
    forged = _call(client, route, ids, {"Referer": "http://127.0.0.1:1/admin", "X-CSRF-Token": token_for(token)})
    assert forged.status_code == 403
    bare = _call(client, route, ids, {"X-CSRF-Token": token_for(token)})
    assert bare.status_code == 403
    assert _department(ids) is None
    own = _call(client, route, ids, {"Referer": f"{OWN_ORIGIN}/admin/health", "X-CSRF-Token": token_for(token)})
    assert own.status_code == 200
    assert _department(ids) == "Forged"


def test_a_browser_form_post_is_refused_with_a_page(
    client: FlaskClient, admin_cookie: tuple[dict[str, int], str]
) -> None:
    ids, _token = admin_cookie
    answer = client.post("/auth/logout", data={}, headers={"Origin": FORGED_ORIGINS["same_site_other_port"]})
    assert answer.status_code == 403
    assert answer.mimetype == "text/html"
    assert not _revoked(ids)


def test_the_logout_form_carries_the_token_and_signs_out(
    client: FlaskClient, admin_cookie: tuple[dict[str, int], str]
) -> None:
    ids, token = admin_cookie
    page = client.get("/auth/logout").get_data(as_text=True)
    field = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page)
    meta = re.search(r'<meta name="csrf-token" content="([0-9a-f]{64})">', page)
    assert field is not None
    assert meta is not None
    assert field.group(1) == meta.group(1) == token_for(token)
    answer = client.post("/auth/logout", data={"csrf_token": field.group(1)}, headers={"Origin": OWN_ORIGIN})
    assert answer.status_code == 303
    assert _revoked(ids)


def test_each_session_has_its_own_token(make_signed_in_user: Callable[..., tuple[int, str]], app: Flask) -> None:
    _, first = make_signed_in_user(role="admin")
    _, second = make_signed_in_user(role="admin")
    assert token_for(first) != token_for(second)
    other = app.test_client()
    other.set_cookie(get_settings().session_cookie_name, second)
    answer = other.patch(
        "/admin/users/1",
        json={"department": "x"},
        headers={"Origin": OWN_ORIGIN, "X-CSRF-Token": token_for(first), "Accept": "application/json"},
    )
    assert answer.status_code == 403


def test_bearer_clients_need_neither_origin_nor_token(app: Flask, admin_cookie: tuple[dict[str, int], str]) -> None:
    ids, token = admin_cookie
    bearer = app.test_client()  # no cookie jar shared with the browser-like client
    answer = bearer.patch(
        f"/admin/users/{ids['user']}",
        json={"department": "Via API"},
        headers={"Authorization": f"Bearer {token}", "Origin": FORGED_ORIGINS["cross_site"]},
    )
    assert answer.status_code == 200
    assert _department(ids) == "Via API"


def test_the_exempt_endpoints_exist(app: Flask) -> None:
    """A renamed view would silently lose its exemption and break Asgardeo's deliveries or back-channel logouts."""
    from web.csrf import EXEMPT_ENDPOINTS

    assert set(app.view_functions) >= EXEMPT_ENDPOINTS
