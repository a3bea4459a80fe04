from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from models.db import unit_of_work
from models.tables import WebhookEvent
from tasks import metrics


def _value(body: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", body, re.MULTILINE)
    assert match is not None, f"{series} not in /metrics"
    return float(match.group(1))


Scrape = Callable[[], str]


@pytest.fixture
def scrape(client: FlaskClient, clean_redis: None) -> Scrape:
    def _scrape() -> str:
        metrics.flush()
        response = client.get("/metrics")
        assert response.status_code == 200
        return response.get_data(as_text=True)

    return _scrape


def test_counters_recorded_anywhere_show_up_in_the_scrape(scrape: Scrape) -> None:
    before = scrape()
    assert "asgardeo_sync_webhooks_rejected_total" in before
    metrics.inc("webhooks_rejected", reason="bad_signature")
    metrics.inc("webhooks_rejected", reason="bad_signature")
    metrics.observe("webhook_intake_seconds", 0.003)
    after = scrape()

    def added(series: str) -> float:
        # Differences, not totals: earlier tests' intakes may have left their own counts in this run's Redis.
        return _value(after, series) - (_value(before, series) if series in before else 0.0)

    assert added('asgardeo_sync_webhooks_rejected_total{reason="bad_signature"}') == 2.0
    assert added('asgardeo_sync_webhook_intake_seconds_bucket{le="0.005"}') == 1.0
    assert added("asgardeo_sync_webhook_intake_seconds_count") == 1.0


def test_database_gauges_follow_the_inbox(scrape: Scrape) -> None:
    with unit_of_work() as session:
        for n, status in enumerate(("failed", "failed", "received")):
            session.add(
                WebhookEvent(
                    jti=f"metrics-{n}", event_type="userCreated", event_uri="u", iat=1, payload={}, status=status
                )
            )
    body = scrape()
    assert _value(body, "asgardeo_sync_failed_events") == 2.0
    assert _value(body, 'asgardeo_sync_inbox_events{status="received"}') == 1.0
    assert _value(body, "asgardeo_sync_inbox_oldest_pending_seconds") >= 0.0


def test_metrics_token_is_enforced_when_set(app: Flask) -> None:
    from pydantic import SecretStr

    settings = app.config["SETTINGS"].model_copy(update={"metrics_token": SecretStr("scrape-me")})
    app.config["SETTINGS"] = settings
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 200


def _maybe(body: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", body, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_move_when_webhooks_flow(client: FlaskClient, scrape: Scrape) -> None:
    from tests import webhook_payloads as payloads

    series = (
        "asgardeo_sync_webhooks_received_total",
        "asgardeo_sync_webhooks_duplicate_total",
        'asgardeo_sync_webhooks_rejected_total{reason="invalid_signature"}',
        "asgardeo_sync_webhook_intake_seconds_count",
    )
    before = scrape()
    body = payloads.encode(payloads.sample("userCreated"))
    signed = {**payloads.signed_headers(body), "Content-Type": "application/json"}
    assert client.post("/webhooks/asgardeo", data=body, headers=signed).status_code == 202
    assert client.post("/webhooks/asgardeo", data=body, headers=signed).status_code == 200
    forged = {"X-Hub-Signature": "sha256=" + "0" * 64, "Content-Type": "application/json"}
    assert client.post("/webhooks/asgardeo", data=body, headers=forged).status_code == 401
    after = scrape()
    assert [_maybe(after, s) - _maybe(before, s) for s in series] == [1.0, 1.0, 1.0, 1.0]


def test_scim_calls_are_counted(scrape: Scrape, standin: object) -> None:
    from tasks.scim import ScimClient

    series = 'asgardeo_sync_scim_requests_total{status="200"}'
    before = _maybe(scrape(), series)
    ScimClient().list_page(1, 1)
    assert _maybe(scrape(), series) - before >= 1.0


def test_production_app_refuses_to_start_without_a_metrics_token(app: Flask) -> None:
    from pydantic import SecretStr

    from models.settings import SettingsError
    from web import create_app

    production = app.config["SETTINGS"].model_copy(
        update={"app_env": "production", "flower_basic_auth": SecretStr("ops:pw"), "metrics_token": None}
    )
    with pytest.raises(SettingsError, match="METRICS_TOKEN"):
        create_app(production)
    public = create_app(production.model_copy(update={"metrics_public": True})).test_client()
    assert public.get("/metrics").status_code == 200
