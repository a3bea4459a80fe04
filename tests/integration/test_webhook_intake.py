"""The intake over the Flask app on the real database and broker: every answer, and what it stores."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from models import db
from models.clock import now_ms
from models.db import SessionFactory, get_engine, make_engine
from models.tables import User, WebhookEvent
from tasks.events import ApplyPublisher
from tests.polling import wait_for
from tests.recording_publisher import RecordingPublisher, install_publisher, install_recorder
from tests.stack import LiveServer
from tests.webhook_payloads import encode, event, sample, signature, signed_headers

URL = "/webhooks/asgardeo"


@pytest.fixture
def recorder(app: Flask) -> RecordingPublisher:
    return install_recorder(app)


def rows() -> list[WebhookEvent]:
    get_engine()
    with SessionFactory() as session:
        return list(session.execute(select(WebhookEvent).order_by(WebhookEvent.id)).scalars())


def user_count() -> int:
    with SessionFactory() as session:
        return int(session.execute(select(func.count()).select_from(User)).scalar_one())


def post(client: FlaskClient, body: dict[str, Any], **kwargs: Any) -> Any:
    raw = encode(body)
    return client.post(URL, data=raw, headers=signed_headers(raw, **kwargs))


# --- handshake -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["subscribe", "unsubscribe"])
def test_handshake_echoes_the_challenge_as_plain_text(client: FlaskClient, mode: str) -> None:
    response = client.get(URL, query_string={"hub.mode": mode, "hub.challenge": "abc-123", "hub.topic": "t"})
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == "abc-123"


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"hub.mode": "denied", "hub.challenge": "x"},
        {"hub.mode": "subscribe"},
        {"hub.mode": "subscribe", "hub.challenge": "x" * 513},
        {"hub.mode": "subscribe", "hub.challenge": "line\nbreak"},
    ],
)
def test_handshake_refuses_anything_else_with_400(client: FlaskClient, query: dict[str, str]) -> None:
    response = client.get(URL, query_string=query)
    assert response.status_code == 400
    assert set(response.get_json()) == {"error", "detail"}


# --- accepted deliveries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-Hub-Signature", "x-wso2-event-signature"])
def test_signed_delivery_is_stored_queued_and_published_once(
    client: FlaskClient, recorder: RecordingPublisher, header: str
) -> None:
    body = sample("userCreated")
    response = post(client, body, header=header)
    assert response.status_code == 202
    stored = rows()
    assert [(r.jti, r.event_type, r.status, r.iat) for r in stored] == [
        (body["jti"], "userCreated", "queued", body["iat"])
    ]
    assert stored[0].asgardeo_id == "3987d74e-8432-4f4d-b1a8-cad463af843d"
    assert stored[0].payload == body
    assert recorder.sent == [stored[0].id]
    assert response.get_json() == {"status": "accepted", "id": stored[0].id, "queued": True}


def test_duplicate_jti_answers_200_and_enqueues_nothing(client: FlaskClient, recorder: RecordingPublisher) -> None:
    body = sample("userDisabled")
    assert post(client, body).status_code == 202
    again = post(client, body)
    assert again.status_code == 200
    assert again.get_json()["status"] == "duplicate"
    assert len(rows()) == 1
    assert len(recorder.sent) == 1


def test_unknown_event_type_is_accepted_and_recorded(client: FlaskClient, recorder: RecordingPublisher) -> None:
    response = post(client, event("userLoggedIn", channel="login"))
    assert response.status_code == 202
    assert [r.event_type for r in rows()] == ["userLoggedIn"]


def test_rotated_secrets_are_all_accepted(app: Flask, client: FlaskClient, recorder: RecordingPublisher) -> None:
    settings = app.config["SETTINGS"].model_copy(update={"webhook_secrets": ["old-secret", "new-secret"]})
    app.config["SETTINGS"] = settings
    assert post(client, sample("userDeleted"), secret="old-secret").status_code == 202
    assert post(client, sample("userDeleted"), secret="new-secret").status_code == 202
    assert post(client, sample("userDeleted"), secret="webhook-secret-for-tests").status_code == 401
    assert len(rows()) == 2


# --- refused deliveries: clear 4xx JSON, nothing stored ----------------------------------------------------------


def assert_refused(response: Any, status: int, error: str, recorder: RecordingPublisher) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json()["error"] == error
    assert response.get_json()["detail"]
    assert rows() == []
    assert recorder.sent == []
    assert user_count() == 0


def test_missing_signature_is_401(client: FlaskClient, recorder: RecordingPublisher) -> None:
    raw = encode(sample("userCreated"))
    response = client.post(URL, data=raw, headers={"Content-Type": "application/json"})
    assert_refused(response, 401, "missing_signature", recorder)


@pytest.mark.parametrize(
    "make_header",
    [
        lambda raw: signature(raw, "wrong-secret"),
        lambda raw: signature(raw + b"x"),
        lambda raw: signature(raw)[:-2],
        lambda raw: signature(raw).replace("sha256=", "sha1="),
        lambda raw: "garbage",
        lambda raw: "sha256=" + "0" * 64,
    ],
)
def test_bad_signature_is_401(client: FlaskClient, recorder: RecordingPublisher, make_header: Any) -> None:
    raw = encode(sample("userCreated"))
    response = client.post(
        URL, data=raw, headers={"Content-Type": "application/json", "X-Hub-Signature": make_header(raw)}
    )
    assert_refused(response, 401, "invalid_signature", recorder)


def test_signature_over_a_tampered_body_is_401(client: FlaskClient, recorder: RecordingPublisher) -> None:
    body = sample("userCreated")
    headers = signed_headers(encode(body))
    body["iat"] += 1
    response = client.post(URL, data=encode(body), headers=headers)
    assert_refused(response, 401, "invalid_signature", recorder)


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe\x00", b"", b"[" * 100_00 + b"]" * 100_00])
def test_malformed_json_is_400(client: FlaskClient, recorder: RecordingPublisher, raw: bytes) -> None:
    response = client.post(URL, data=raw, headers=signed_headers(raw))
    assert_refused(response, 400, "malformed_json", recorder)


@pytest.mark.parametrize(
    "body",
    [
        {"iat": 1, "events": {}},
        [1, 2],
        {"jti": "j", "iat": "now", "events": {"u": {}}},
        {"jti": "j", "iat": 1_800_000_000_000, "events": {"a": {}, "b": {}}},
    ],
)
def test_bad_envelope_is_400(client: FlaskClient, recorder: RecordingPublisher, body: Any) -> None:
    raw = encode(body)
    response = client.post(URL, data=raw, headers=signed_headers(raw))
    assert_refused(response, 400, "invalid_envelope", recorder)


def test_json_that_postgres_cannot_store_is_400(client: FlaskClient, recorder: RecordingPublisher) -> None:
    body = event("userProfileUpdated", addedClaims=[{"uri": "x", "value": "nul\u0000byte"}])
    assert_refused(post(client, body), 400, "invalid_envelope", recorder)


def test_utf16_json_is_refused_as_malformed(client: FlaskClient, recorder: RecordingPublisher) -> None:
    raw = json.dumps(sample("userDeleted")).encode("utf-16")
    assert_refused(client.post(URL, data=raw, headers=signed_headers(raw)), 400, "malformed_json", recorder)


def test_event_older_than_the_retention_window_is_400_not_410(
    client: FlaskClient, recorder: RecordingPublisher
) -> None:
    body = sample("userDeleted", iat=now_ms() - 8 * 24 * 3600 * 1000)
    assert_refused(post(client, body), 400, "stale_event", recorder)


def test_shared_samples_with_their_original_dates_are_stale(client: FlaskClient, recorder: RecordingPublisher) -> None:
    body = sample("userCreated", iat=1755618921154)
    assert_refused(post(client, body), 400, "stale_event", recorder)


def test_event_from_the_future_is_400(client: FlaskClient, recorder: RecordingPublisher) -> None:
    body = sample("userDeleted", iat=now_ms() + 3600 * 1000)
    assert_refused(post(client, body), 400, "iat_in_future", recorder)


def test_oversized_body_is_413_by_declared_length(client: FlaskClient, recorder: RecordingPublisher) -> None:
    body = event("userProfileUpdated", addedClaims=[{"uri": "x", "value": "a" * 600_000}])
    assert_refused(post(client, body), 413, "payload_too_large", recorder)


def test_oversized_chunked_body_is_413_by_what_arrives(live_server: LiveServer, clean_db: None) -> None:
    raw = encode(event("userProfileUpdated", addedClaims=[{"uri": "x", "value": "a" * 600_000}]))

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(raw), 8192):
            yield raw[start : start + 8192]

    response = requests.post(live_server.url + URL, data=chunks(), headers=signed_headers(raw), timeout=10)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert rows() == []


def test_oversized_body_is_413_even_when_unsigned(client: FlaskClient, recorder: RecordingPublisher) -> None:
    response = client.post(URL, data=b"x" * 600_000, headers={"Content-Type": "application/json"})
    assert_refused(response, 413, "payload_too_large", recorder)


# --- failures of the parts behind the intake ----------------------------------------------------------------------


def test_broker_down_answers_202_quickly_and_leaves_the_event_received_for_the_relay(
    app: Flask, client: FlaskClient
) -> None:
    install_publisher(app, ApplyPublisher("redis://127.0.0.1:1/0"))
    started = time.monotonic()
    response = post(client, sample("userDisabled"))
    elapsed = time.monotonic() - started
    assert response.status_code == 202
    assert elapsed < 2.0
    wait_for(lambda: [r.status for r in rows()] == ["received"], what="the event left received for the relay")


@pytest.fixture
def postgres_down() -> Iterator[None]:
    """Point the process's engine at a port where nothing listens, then restore it."""
    real = db.get_engine()
    dead = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    db._engine = dead
    db.SessionFactory.configure(bind=dead)
    try:
        yield
    finally:
        db._engine = real
        db.SessionFactory.configure(bind=real)
        dead.dispose()


def test_postgres_down_is_503_with_retry_after(
    client: FlaskClient, recorder: RecordingPublisher, postgres_down: None
) -> None:
    response = post(client, sample("userCreated"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json()["error"] == "inbox_unavailable"
    assert recorder.sent == []
