"""The pure parts of the webhook path: envelope checks, age window, signatures, claim mapping, event plans."""

from __future__ import annotations

import json
from typing import Any

import pytest

from models.events import PermanentEventError, claims_to_fields, plan_event
from models.inbox import InvalidEnvelope, check_age, parse_envelope
from tests.webhook_payloads import FIXTURES, claims, event, sample, signature
from web.webhooks import signature_valid

SAMPLES = ("userCreated", "registrationSuccess", "userProfileUpdated", "userDisabled", "userDeleted")
NOW = 1_800_000_000_000


@pytest.mark.parametrize("name", SAMPLES)
def test_every_shared_sample_parses_with_its_type_and_user(name: str) -> None:
    body = json.loads((FIXTURES / f"{name}.json").read_text())
    envelope = parse_envelope(body)
    assert envelope.event_type == name
    assert envelope.jti == body["jti"]
    assert envelope.iat == body["iat"]
    ((_, evt),) = body["events"].items()
    assert envelope.asgardeo_id == evt["user"]["id"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.pop("jti"), "jti"),
        (lambda b: b.update(jti=""), "jti"),
        (lambda b: b.update(jti="x" * 129), "jti"),
        (lambda b: b.update(jti=42), "jti"),
        (lambda b: b.pop("iat"), "iat"),
        (lambda b: b.update(iat="1751709420327"), "iat"),
        (lambda b: b.update(iat=True), "iat"),
        (lambda b: b.update(iat=-5), "iat"),
        (lambda b: b.update(iat=1.5), "iat"),
        (lambda b: b.pop("events"), "events"),
        (lambda b: b.update(events={}), "events"),
        (lambda b: b.update(events=[]), "events"),
        (lambda b: b["events"].update({"https://schemas.identity.wso2.org/events/user/event-type/x": {}}), "events"),
        (lambda b: b.update(events={"https://e/event-type/userDeleted": "nope"}), "event entry"),
    ],
)
def test_envelope_without_its_required_parts_is_refused(mutate: Any, message: str) -> None:
    body = event("userDeleted", "u-1")
    mutate(body)
    with pytest.raises(InvalidEnvelope, match=message):
        parse_envelope(body)


@pytest.mark.parametrize("data", [[], "text", 5, None])
def test_envelope_that_is_not_an_object_is_refused(data: object) -> None:
    with pytest.raises(InvalidEnvelope):
        parse_envelope(data)


def test_envelope_tolerates_missing_optional_fields_and_extra_ones() -> None:
    body = {"jti": "j-1", "iat": NOW, "events": {"https://x/events/user/event-type/userEnabled": {}}, "new": 1}
    envelope = parse_envelope(body)
    assert envelope.event_type == "userEnabled"
    assert envelope.asgardeo_id is None


def test_age_window_refuses_old_and_future_events_only() -> None:
    assert check_age(NOW, now_ms=NOW, max_age_seconds=60) is None
    assert check_age(NOW - 59_000, now_ms=NOW, max_age_seconds=60) is None
    assert check_age(NOW - 61_000, now_ms=NOW, max_age_seconds=60) == "stale"
    assert check_age(NOW + 299_000, now_ms=NOW, max_age_seconds=60) is None
    assert check_age(NOW + 301_000, now_ms=NOW, max_age_seconds=60) == "future"


def test_signature_accepts_any_configured_secret_and_nothing_else() -> None:
    raw = b'{"jti":"a"}'
    assert signature_valid(raw, signature(raw, "new"), ["old", "new"])
    assert signature_valid(raw, signature(raw, "old").upper().replace("SHA256=", "sha256="), ["old"])
    assert not signature_valid(raw, signature(raw, "other"), ["old", "new"])
    assert not signature_valid(raw + b" ", signature(raw, "old"), ["old"])
    assert not signature_valid(raw, signature(raw, "old")[len("sha256=") :], ["old"])
    assert not signature_valid(raw, "sha1=" + "0" * 40, ["old"])
    assert not signature_valid(raw, "sha256=ü\udcff", ["old"])
    assert not signature_valid(raw, signature(raw, "old"), [])


def test_claims_map_to_fields_with_store_prefix_and_list_values() -> None:
    fields = claims_to_fields(
        [
            *claims(username="DEFAULT/kim@example.com", first_name="Kim", groups=["b", "a", "a"]),
            {"uri": "http://wso2.org/claims/emailAddresses", "value": ["k2@example.com", "k3@example.com"]},
            {"uri": "http://wso2.org/claims/organization", "value": "myorg"},
        ]
    )
    assert fields == {
        "username": "kim@example.com",
        "first_name": "Kim",
        "groups": ["a", "b"],
        "email": "k2@example.com",
    }


def test_primary_email_claim_wins_over_email_addresses_in_either_order() -> None:
    primary = claims(email="p@example.com")[0]
    secondary = {"uri": "http://wso2.org/claims/emailAddresses", "value": "s@example.com,t@example.com"}
    assert claims_to_fields([secondary, primary]) == {"email": "p@example.com"}
    assert claims_to_fields([primary, secondary]) == {"email": "p@example.com"}


def test_removed_claims_clear_their_fields() -> None:
    assert claims_to_fields(claims(last_name="Old", groups=["g"]), removed=True) == {"last_name": None, "groups": []}


@pytest.mark.parametrize("bad", ["not a list", [1], [{"uri": "http://wso2.org/claims/givenname", "value": {"a": 1}}]])
def test_hostile_claims_are_a_permanent_error(bad: object) -> None:
    with pytest.raises(PermanentEventError):
        claims_to_fields(bad)


def test_created_event_plans_a_full_active_record_at_its_iat() -> None:
    body = sample("userCreated", iat=NOW)
    envelope = parse_envelope(body)
    plan = plan_event(envelope.event_type, envelope.event, envelope.asgardeo_id, envelope.iat)
    assert plan.record is not None
    assert (plan.record.username, plan.record.email, plan.record.first_name, plan.record.last_name) == (
        "johndoe@aol.com",
        "johndoe@aol.com",
        "John",
        "Doe",
    )
    assert plan.record.status == "active"
    assert plan.record.source_version == NOW
    assert not plan.refresh


@pytest.mark.parametrize(
    ("name", "status", "refresh"),
    [
        ("userDisabled", "inactive", True),
        ("userAccountLocked", "inactive", True),
        ("userEnabled", "active", True),
        ("userAccountUnlocked", "active", True),
        ("userDeleted", "deleted", False),
    ],
)
def test_status_events_plan_a_status_patch(name: str, status: str, refresh: bool) -> None:
    plan = plan_event(name, {"user": {"id": "u"}}, "u", NOW)
    assert plan.patch == {"status": status}
    assert plan.refresh is refresh


def test_profile_update_plans_the_delta_and_a_refresh() -> None:
    envelope = parse_envelope(sample("userProfileUpdated"))
    plan = plan_event(envelope.event_type, envelope.event, envelope.asgardeo_id, envelope.iat)
    assert plan.patch == {"email": "peter@aol.com"}
    assert plan.refresh


def test_profile_update_applies_removed_then_added_then_updated() -> None:
    evt = event(
        "userProfileUpdated",
        "u",
        removedClaims=claims(last_name="x", first_name="y"),
        updatedClaims=claims(first_name="Yan"),
    )
    envelope = parse_envelope(evt)
    plan = plan_event(envelope.event_type, envelope.event, "u", NOW)
    assert plan.patch == {"last_name": None, "first_name": "Yan"}


@pytest.mark.parametrize("name", ["userLoggedIn", "registrationFailed", "userCredentialUpdated", "sessionRevoked"])
def test_other_event_types_are_ignored_with_a_reason(name: str) -> None:
    plan = plan_event(name, {"user": {"id": "u"}}, "u", NOW)
    assert plan.ignore is not None
    assert plan.record is None
    assert not plan.patch


def test_user_event_without_a_user_id_is_ignored() -> None:
    assert plan_event("userDeleted", {}, None, NOW).ignore == "the event carries no user id"
