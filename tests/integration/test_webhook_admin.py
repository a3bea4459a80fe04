"""The admin inbox API: list with filters, show, replay one, replay every failed event; admin role only."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from models.clock import now_ms
from models.db import unit_of_work
from models.tables import WebhookEvent
from tests.recording_publisher import RecordingPublisher, install_recorder
from tests.webhook_payloads import event


@pytest.fixture(autouse=True)
def recorder(app: Flask) -> RecordingPublisher:
    return install_recorder(app)


def add_event(status: str, event_type: str = "userDeleted", user_id: str | None = None) -> int:
    uid = user_id or str(uuid.uuid4())
    with unit_of_work() as session:
        row = WebhookEvent(
            jti=str(uuid.uuid4()),
            event_type=event_type,
            event_uri=f"https://schemas.identity.wso2.org/events/user/event-type/{event_type}",
            asgardeo_id=uid,
            iat=now_ms(),
            payload=event(event_type, uid),
            status=status,
            last_error="boom" if status == "failed" else None,
        )
        session.add(row)
        session.flush()
        return row.id


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/admin/events"),
        ("get", "/admin/events/1"),
        ("post", "/admin/events/1/replay"),
        ("post", "/admin/events/replay-failed"),
        ("get", "/admin/live"),
    ],
)
def test_admin_routes_need_the_admin_role(
    client: FlaskClient, make_signed_in_user: Any, method: str, path: str
) -> None:
    assert getattr(client, method)(path).status_code == 401
    _, token = make_signed_in_user(role="hr")
    response = getattr(client, method)(path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403


def test_list_filters_and_pages(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    uid = str(uuid.uuid4())
    failed = add_event("failed", user_id=uid)
    add_event("applied", "userCreated", user_id=uid)
    add_event("applied", "userDisabled")
    body = client.get("/admin/events?status=failed", headers=admin_headers).get_json()
    assert [e["id"] for e in body["events"]] == [failed]
    assert body["events"][0]["last_error"] == "boom"
    by_user = client.get(f"/admin/events?user_id={uid}", headers=admin_headers).get_json()["events"]
    assert {e["event_type"] for e in by_user} == {"userDeleted", "userCreated"}
    by_type = client.get("/admin/events?type=userDisabled", headers=admin_headers).get_json()["events"]
    assert [e["event_type"] for e in by_type] == ["userDisabled"]
    page = client.get("/admin/events?limit=2", headers=admin_headers).get_json()
    assert len(page["events"]) == 2
    rest = client.get(f"/admin/events?limit=2&before_id={page['next_before_id']}", headers=admin_headers).get_json()
    assert [e["id"] for e in rest["events"]] == [failed]


@pytest.mark.parametrize(
    "query",
    ["status=done", "limit=0", "limit=201", "limit=x", "before_id=-1", "type=" + "x" * 65, "type=%00", "user_id=a%00"],
)
def test_list_refuses_bad_filters(client: FlaskClient, admin_headers: dict[str, str], query: str) -> None:
    response = client.get(f"/admin/events?{query}", headers=admin_headers)
    assert response.status_code == 400
    assert set(response.get_json()) == {"error", "detail"}


def test_show_has_the_payload_and_404s_unknown(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    event_id = add_event("applied")
    shown = client.get(f"/admin/events/{event_id}", headers=admin_headers).get_json()["event"]
    assert shown["payload"]["events"]
    assert "signature" not in str(shown).lower()
    assert client.get("/admin/events/999999", headers=admin_headers).status_code == 404


def test_replay_queues_a_failed_event_and_refuses_an_applied_one(
    client: FlaskClient, admin_headers: dict[str, str], recorder: RecordingPublisher
) -> None:
    failed = add_event("failed")
    applied = add_event("applied")
    assert client.post(f"/admin/events/{failed}/replay", headers=admin_headers).status_code == 202
    shown = client.get(f"/admin/events/{failed}", headers=admin_headers).get_json()["event"]
    assert shown["status"] == "queued"
    assert recorder.sent == [failed]
    conflict = client.post(f"/admin/events/{applied}/replay", headers=admin_headers)
    assert conflict.status_code == 409
    assert client.post("/admin/events/999999/replay", headers=admin_headers).status_code == 404


def test_replay_failed_queues_every_failed_event(
    client: FlaskClient, admin_headers: dict[str, str], recorder: RecordingPublisher
) -> None:
    failed = [add_event("failed") for _ in range(3)]
    add_event("applied")
    body = client.post("/admin/events/replay-failed", headers=admin_headers).get_json()
    assert body == {"replayed": 3, "unsent": 0, "remaining": 0}
    assert sorted(recorder.sent) == failed
