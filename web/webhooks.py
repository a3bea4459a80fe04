"""Asgardeo's webhooks: the WebSub handshake and signed deliveries into the durable inbox.

A delivery is verified (HMAC-SHA256 over the raw body), parsed once, checked, and stored: the app's writer thread
(:class:`web.intake_writer.InboxWriter`) commits it together with other requests' deliveries, and the answer
waits for that commit. Only then is it announced to the workers, by the app's background thread
(:class:`web.intake_publisher.BackgroundPublisher`) so the answer does not wait for the broker; the relay covers a
message that dies with its process. Answers: 202 accepted (even when the broker is down: the relay sends it later),
200 for a ``jti`` already held (a different body under it is counted, logged and listed, never applied), 401 bad or
missing signature, 400 malformed or too old/new, 413 too large, 503 when Postgres is unreachable (or the commit does
not come in time) so Asgardeo retries. Never 410, which WebSub reads as "unsubscribe me".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import exc as sa_exc

from models import inbox
from models.clock import now_ms
from models.db import unit_of_work
from models.settings import Settings
from tasks import metrics
from tasks.jti_conflicts import record_conflict
from tasks.subscriptions import record_handshake, topic_channel
from web.errors import APIError
from web.intake import current_intake

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
log = logging.getLogger(__name__)

SIGNATURE_HEADERS = ("X-Hub-Signature", "x-wso2-event-signature")
SIGNATURE_PREFIX = "sha256="
HUB_MODES = ("subscribe", "unsubscribe")
MAX_CHALLENGE_LENGTH = 512
# TimeoutError: the inbox writer did not commit the delivery in time.
DB_UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, TimeoutError)


def _settings() -> Settings:
    settings: Settings = current_app.config["SETTINGS"]
    return settings


@bp.get("/asgardeo")
def handshake() -> Response:
    """WebSub verification: echo ``hub.challenge`` as text/plain for a subscribe or unsubscribe request.

    With ``WEBHOOK_ORG`` set, a topic of any other organisation is a 404 and nothing is recorded. What an answered
    handshake may record is limited (see :mod:`tasks.subscriptions`): it is an unauthenticated GET."""
    mode = request.args.get("hub.mode", "")
    challenge = request.args.get("hub.challenge", "")
    if mode not in HUB_MODES:
        raise APIError(400, "invalid_hub_mode", "hub.mode must be subscribe or unsubscribe.")
    if not challenge or len(challenge) > MAX_CHALLENGE_LENGTH or not challenge.isprintable():
        raise APIError(400, "invalid_hub_challenge", "hub.challenge must be 1-512 printable characters.")
    topic = request.args.get("hub.topic", "")[:300]
    org = _settings().webhook_org
    if org and topic_channel(topic, org) is None:
        # WebSub reads a 404 as "not this subscriber": another organisation's hub gets no challenge echoed.
        raise APIError(404, "unknown_topic", "This endpoint takes handshakes only for its own organisation's topics.")
    log.info("websub handshake answered", extra={"mode": mode, "topic": topic})
    record_handshake(topic, mode, request.args.get("hub.lease_seconds", "")[:20] or None, org=org)
    return Response(challenge, status=200, mimetype="text/plain")


def read_limited_body(limit: int) -> bytes:
    """The raw body, refusing anything over ``limit`` bytes by its declared length or by what actually arrives."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise APIError(413, "payload_too_large", f"Deliveries are limited to {limit} bytes.")
    body: bytes = request.stream.read(limit + 1)
    if len(body) > limit:
        raise APIError(413, "payload_too_large", f"Deliveries are limited to {limit} bytes.")
    return body


def signature_valid(body: bytes, header_value: str, secrets: list[str]) -> bool:
    """Constant-time check of ``sha256=<hex>`` against the HMAC of ``body`` under each configured secret."""
    if not header_value.lower().startswith(SIGNATURE_PREFIX):
        return False
    provided = header_value[len(SIGNATURE_PREFIX) :].strip().lower().encode("utf-8", "surrogateescape")
    valid = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
        # No early exit: the time taken does not reveal which secret matched.
        valid |= hmac.compare_digest(expected, provided)
    return valid


def verify_signature(body: bytes, settings: Settings) -> None:
    header_value = next((v for name in SIGNATURE_HEADERS if (v := request.headers.get(name))), None)
    if header_value is None:
        raise APIError(401, "missing_signature", "Sign the body: X-Hub-Signature: sha256=<hex HMAC-SHA256>.")
    if not settings.webhook_secrets:
        log.error("webhook delivery refused: WEBHOOK_SECRETS is not set")
        raise APIError(401, "invalid_signature", "The signature does not match.")
    if not signature_valid(body, header_value, settings.webhook_secrets):
        raise APIError(401, "invalid_signature", "The signature does not match.")


def parse_delivery(body: bytes, settings: Settings, received_ms: int) -> inbox.Envelope:
    try:
        data: Any = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise APIError(400, "malformed_json", "The body is not valid UTF-8 JSON.") from None
    try:
        envelope = inbox.parse_envelope(data)
    except inbox.InvalidEnvelope as exc:
        raise APIError(400, "invalid_envelope", str(exc)) from None
    problem = inbox.check_age(envelope.iat, now_ms=received_ms, max_age_seconds=settings.webhook_max_age_seconds)
    # 400, not 410 (WebSub's "unsubscribe"), and not 5xx: a retry of the same body can never succeed.
    if problem == "stale":
        raise APIError(400, "stale_event", "The event is older than the retention window.")
    if problem == "future":
        raise APIError(400, "iat_in_future", "The event's iat is in the future.")
    return envelope


@bp.post("/asgardeo")
def receive() -> tuple[Response, int]:
    """Verify, store, commit, enqueue; see the module docstring for every answer."""
    started = time.perf_counter()
    settings = _settings()
    try:
        body = read_limited_body(settings.webhook_max_body_bytes)
        verify_signature(body, settings)
        envelope = parse_delivery(body, settings, now_ms())
    except APIError as exc:
        metrics.inc("webhooks_rejected", reason=exc.error)
        raise
    extra = {"jti": envelope.jti, "event_type": envelope.event_type, "user_id": envelope.asgardeo_id}
    try:
        event_id = current_intake().store(envelope, body.decode())
    except sa_exc.DataError:
        # Valid JSON that Postgres's jsonb refuses (a \u0000 in a string).
        metrics.inc("webhooks_rejected", reason="invalid_envelope")
        raise APIError(400, "invalid_envelope", "The body holds characters that cannot be stored.") from None
    except DB_UNAVAILABLE as exc:
        metrics.inc("webhooks_rejected", reason="inbox_unavailable")
        log.warning("inbox unavailable; asking the sender to retry", extra={**extra, "error": type(exc).__name__})
        raise APIError(
            503, "inbox_unavailable", "The event store is unavailable; retry later.", headers={"Retry-After": "5"}
        ) from None
    if event_id is None:
        metrics.inc("webhooks_duplicate")
        _check_duplicate(envelope, body.decode(), extra)
        return jsonify(status="duplicate", jti=envelope.jti), 200
    metrics.inc("webhooks_received")
    # The answer does not wait for the broker: the row is committed, the app's thread sends the message.
    queued = current_intake().announce(event_id)
    metrics.observe("webhook_intake_seconds", time.perf_counter() - started)
    return jsonify(status="accepted", id=event_id, queued=queued), 202


def _check_duplicate(envelope: inbox.Envelope, raw_body: str, extra: dict[str, Any]) -> None:
    """A retry carries the body already stored; another body under the same ``jti`` is counted, logged with both
    digests (never the body) and listed for the operators. Either way nothing is applied: the first body stands."""
    try:
        with unit_of_work() as session:
            conflict = inbox.body_conflict(session, envelope.jti, raw_body)
    except DB_UNAVAILABLE as exc:
        log.warning("duplicate delivery not compared", extra={**extra, "error": type(exc).__name__})
        return
    if conflict is None:
        log.info("duplicate delivery", extra=extra)
        return
    stored, received = conflict
    metrics.inc("webhooks_jti_conflicts")
    log.warning(
        "jti reused with a different body; not applied",
        extra={**extra, "stored_sha256": stored, "received_sha256": received},
    )
    record_conflict(envelope.jti, envelope.event_type, stored, received)
