"""A reused ``jti`` with a different body: still 200 and nothing applied, but counted, logged as a warning with both
digests (never the body) and listed on the sync-health page. A plain retry is none of that."""

from __future__ import annotations

import json
import logging
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from models.db import unit_of_work
from models.tables import WebhookEvent
from tasks import metrics
from tests.recording_publisher import RecordingPublisher, install_recorder
from tests.webhook_payloads import encode, sample, signed_headers

pytestmark = pytest.mark.usefixtures("clean_redis")
URL = "/webhooks/asgardeo"


@pytest.fixture
def recorder(app: Flask) -> RecordingPublisher:
    return install_recorder(app)


def _send(client: FlaskClient, raw: bytes) -> int:
    return client.post(URL, data=raw, headers=signed_headers(raw)).status_code


def _conflicts_metric(client: FlaskClient) -> float:
    metrics.flush()
    text = client.get("/metrics").get_data(as_text=True)
    match = re.search(r"^asgardeo_sync_webhooks_jti_conflicts_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _stored_payloads() -> list[dict[str, object]]:
    with unit_of_work() as session:
        return [row.payload for row in session.query(WebhookEvent).all()]


def test_a_reused_jti_with_another_body_is_counted_logged_and_listed_but_not_applied(
    client: FlaskClient,
    recorder: RecordingPublisher,
    admin_headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = sample("userCreated")
    forged = json.loads(json.dumps(first))
    event = next(iter(forged["events"].values()))
    event["user"]["claims"].append({"uri": "http://wso2.org/claims/emailaddress", "value": "intruder@evil.example"})
    assert _send(client, encode(first)) == 202
    with caplog.at_level(logging.INFO, logger="web.webhooks"):
        answer = client.post(URL, data=encode(forged), headers=signed_headers(encode(forged)))
    assert answer.status_code == 200
    assert answer.get_json()["status"] == "duplicate"
    assert _stored_payloads() == [first]
    assert len(recorder.sent) == 1

    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.jti == first["jti"]  # type: ignore[attr-defined]
    assert re.fullmatch(r"[0-9a-f]{64}", warning.stored_sha256)  # type: ignore[attr-defined]
    assert re.fullmatch(r"[0-9a-f]{64}", warning.received_sha256)  # type: ignore[attr-defined]
    assert warning.stored_sha256 != warning.received_sha256  # type: ignore[attr-defined]
    assert all("intruder" not in str(value) for value in vars(warning).values())

    assert _conflicts_metric(client) == 1.0
    [listed] = client.get("/admin/health/summary", headers=admin_headers).json["jti_conflicts"]
    assert listed["jti"] == first["jti"]
    assert listed["received"] == warning.received_sha256  # type: ignore[attr-defined]
    page = client.get("/admin/health", headers=admin_headers).get_data(as_text=True)
    assert first["jti"] in page
    assert "intruder" not in page


def test_a_retry_of_the_same_event_is_a_plain_duplicate(
    client: FlaskClient, recorder: RecordingPublisher, admin_headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    body = sample("userDisabled")
    assert _send(client, encode(body)) == 202
    # The same JSON with other spacing and key order is the same event.
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
    with caplog.at_level(logging.INFO, logger="web.webhooks"):
        assert _send(client, reordered) == 200
        assert _send(client, encode(body)) == 200
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert _conflicts_metric(client) == 0.0
    assert client.get("/admin/health/summary", headers=admin_headers).json["jti_conflicts"] == []
