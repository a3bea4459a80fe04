from __future__ import annotations

from flask.testing import FlaskClient

from models.db import unit_of_work
from models.tables import SyncRun, WebhookEvent


def test_summary_reports_runs_backlog_and_failures(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    with unit_of_work() as session:
        session.add(SyncRun(kind="full", trigger="schedule", status="succeeded", seen=10, created=2))
        for n, status in enumerate(("failed", "applied", "received")):
            session.add(
                WebhookEvent(
                    jti=f"h-{n}",
                    event_type="userCreated",
                    event_uri="u",
                    iat=1,
                    payload={},
                    status=status,
                    last_error="boom" if status == "failed" else None,
                )
            )
    body = client.get("/admin/health/summary", headers=admin_headers).json
    assert body["last_successful_run"]["counts"]["created"] == 2
    assert body["inbox"] == {"received": 1, "queued": 0, "applied": 1, "ignored": 0, "failed": 1}
    assert [e["last_error"] for e in body["failed_events"]] == ["boom"]
    assert body["oldest_pending_event_at"] is not None


def test_summary_with_nothing_yet(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    body = client.get("/admin/health/summary", headers=admin_headers).json
    assert body["last_run"] is None
    assert body["failed_events"] == []


def test_page_renders_for_admins(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    response = client.get("/admin/health", headers=admin_headers)
    assert response.status_code == 200
    assert "No reconciliation has succeeded yet." in response.get_data(as_text=True)


def test_webhook_handshakes_show_as_subscription_status(
    client: FlaskClient, admin_headers: dict[str, str], clean_redis: None
) -> None:
    topic = "https://schemas.identity.wso2.org/events/user"
    answer = client.get(
        "/webhooks/asgardeo",
        query_string={
            "hub.mode": "subscribe",
            "hub.topic": topic,
            "hub.challenge": "c1",
            "hub.lease_seconds": "864000",
        },
    )
    assert answer.get_data(as_text=True) == "c1"
    subscriptions = client.get("/admin/health/summary", headers=admin_headers).json["subscriptions"]
    assert subscriptions["user"]["topic"] == topic
    assert subscriptions["user"]["mode"] == "subscribe"
    assert subscriptions["user"]["lease_seconds"] == "864000"
    page = client.get("/admin/health", headers=admin_headers).get_data(as_text=True)
    assert topic in page


def test_refused_handshakes_are_not_recorded(
    client: FlaskClient, admin_headers: dict[str, str], clean_redis: None
) -> None:
    client.get("/webhooks/asgardeo", query_string={"hub.mode": "hijack", "hub.topic": "t", "hub.challenge": "c"})
    assert client.get("/admin/health/summary", headers=admin_headers).json["subscriptions"] == {}


def test_a_configuration_warning_shows_on_the_page_and_in_the_summary(
    client: FlaskClient, admin_headers: dict[str, str], clean_redis: None
) -> None:
    from tasks.config_warnings import LOGIN_SUBJECT_UNRESOLVED, record_warning

    assert client.get("/admin/health/summary", headers=admin_headers).json["config_warnings"] == {}
    record_warning(LOGIN_SUBJECT_UNRESOLVED, user_id=1)
    record_warning(LOGIN_SUBJECT_UNRESOLVED, user_id=2)
    shown = client.get("/admin/health/summary", headers=admin_headers).json["config_warnings"]
    assert shown[LOGIN_SUBJECT_UNRESOLVED]["count"] == 2
    assert "OIDC_SUBJECT_ATTRIBUTE" in shown[LOGIN_SUBJECT_UNRESOLVED]["message"]
    page = client.get("/admin/health", headers=admin_headers).get_data(as_text=True)
    assert f'data-code="{LOGIN_SUBJECT_UNRESOLVED}"' in page
    assert "Check OIDC_SUBJECT_ATTRIBUTE" in page
