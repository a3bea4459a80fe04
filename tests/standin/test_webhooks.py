"""Webhook publisher: WebSub handshake gate, Asgardeo payloads, signatures, versions, retries and chaos."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from asgardeo_standin.client import StandinAdmin
from asgardeo_standin.directory import CHANNELS
from asgardeo_standin.server import StandinHandle, start_in_thread

from .conftest import WEBHOOK_SECRET, Subscriber, make_config, wait_until
from .test_oidc import start_login, submit_form


@pytest.fixture
def hooked(subscriber: Subscriber) -> Iterator[tuple[StandinHandle, StandinAdmin]]:
    with start_in_thread(make_config()) as handle:
        admin = StandinAdmin(handle.root_url)
        assert admin.set_webhook(subscriber.url, WEBHOOK_SECRET, wait_verified=5)["verified"]
        yield handle, admin


def user_of(body: dict[str, Any]) -> dict[str, Any]:
    return dict(next(iter(body["events"].values()))["user"])


def claims(user: dict[str, Any], key: str = "claims") -> dict[str, Any]:
    return {c["uri"].rsplit("/", 1)[-1]: c["value"] for c in user.get(key, [])}


def test_unverified_subscriber_gets_nothing(subscriber: Subscriber) -> None:
    subscriber.echo_challenge = False
    with start_in_thread(make_config()) as handle:
        admin = StandinAdmin(handle.root_url)
        admin.set_webhook(subscriber.url, WEBHOOK_SECRET)
        wait_until(lambda: len(subscriber.handshakes) == len(CHANNELS))
        admin.create_user("x@example.com", email="x@example.com")
        status = admin.wait_for_deliveries(5)
        assert status["verified"] is False
        assert status["unverified"] == 2
        assert status["delivered"] == 0
        assert subscriber.deliveries == []


def test_handshake_is_websub_per_channel(hooked: tuple[StandinHandle, StandinAdmin], subscriber: Subscriber) -> None:
    assert {h["hub.topic"].rsplit("/", 1)[-1] for h in subscriber.handshakes} == {
        "user",
        "registration",
        "session",
        "credential",
        "role",
    }
    for handshake in subscriber.handshakes:
        assert handshake["hub.mode"] == "subscribe"
        assert handshake["hub.challenge"]
        assert int(handshake["hub.lease_seconds"]) > 0


def test_lifecycle_emits_asgardeo_events(hooked: tuple[StandinHandle, StandinAdmin], subscriber: Subscriber) -> None:
    handle, admin = hooked
    user = admin.create_user(
        "sam@example.com",
        "Sam#pass1",
        email="sam@example.com",
        given_name="Sam",
        family_name="Lee",
        groups=["Engineering"],
    )
    admin.update_user(user["id"], family_name="Li", groups=["Engineering", "Sales"])
    admin.update_user(user["id"], family_name="Li")  # no change: no event
    for action in ("disable", "enable", "lock", "unlock", "delete"):
        getattr(admin, action)(user["id"])
    assert admin.wait_for_deliveries(5)["idle"]
    names = [name for name, _ in subscriber.events()]
    assert names == [
        "userCreated",
        "registrationSuccess",
        "userProfileUpdated",
        "userDisabled",
        "userEnabled",
        "userAccountLocked",
        "userAccountUnlocked",
        "userDeleted",
    ]
    assert all(d["signature_ok"] for d in subscriber.deliveries)
    bodies = [body for _, body in subscriber.events()]
    created = user_of(bodies[0])
    assert created["id"] == user["id"]
    assert created["ref"] == f"{handle.base_url}/scim2/Users/{user['id']}"
    assert claims(created) == {
        "username": "sam@example.com",
        "emailaddress": "sam@example.com",
        "givenname": "Sam",
        "lastname": "Lee",
        "groups": ["Engineering"],
    }
    updated = user_of(bodies[2])
    assert claims(updated, "updatedClaims") == {"lastname": "Li", "groups": ["Engineering", "Sales"]}
    assert "addedClaims" not in updated
    assert "removedClaims" not in updated
    assert bodies[0]["rci"] == bodies[1]["rci"]
    assert bodies[0]["iss"] == handle.base_url
    assert len({b["jti"] for b in bodies}) == len(bodies)
    event = next(iter(bodies[0]["events"].values()))
    assert event["action"] == "REGISTER"
    assert event["userStore"]["name"] == "DEFAULT"
    assert event["organization"]["name"] == "demo"
    iats = [b["iat"] for b in bodies[1:]]
    assert iats == sorted(iats), "iat must increase per user"
    assert len(set(iats)) == len(iats), "iat must strictly increase per user"


def test_event_iat_equals_last_modified(hooked: tuple[StandinHandle, StandinAdmin], subscriber: Subscriber) -> None:
    handle, admin = hooked
    user = admin.create_user("ivy@example.com", email="ivy@example.com")
    for i in range(5):  # several changes inside one millisecond still get distinct versions
        admin.update_user(user["id"], given_name=f"Ivy{i}")
    admin.wait_for_deliveries(5)
    last = subscriber.events()[-1][1]
    assert last["iat"] == handle.directory.get(user["id"]).last_modified_ms


def test_scim_writes_emit_events(hooked: tuple[StandinHandle, StandinAdmin], subscriber: Subscriber) -> None:
    handle, _ = hooked
    handle.directory.create_user("via-directory@example.com")
    wait_until(lambda: len(subscriber.deliveries) == 2)


def test_retries_on_5xx(hooked: tuple[StandinHandle, StandinAdmin], subscriber: Subscriber) -> None:
    _, admin = hooked
    subscriber.fail_next = 2
    admin.create_user("retry@example.com")
    status = admin.wait_for_deliveries(10)
    assert status["delivered"] == 2
    assert status["failed"] == 0
    assert status["retries"] == 2
    assert [n for n, _ in subscriber.events()] == ["userCreated", "registrationSuccess"]


def test_chaos_is_seeded_and_the_ledger_balances(
    hooked: tuple[StandinHandle, StandinAdmin], subscriber: Subscriber
) -> None:
    _, admin = hooked
    admin.set_chaos(seed=7, drop_rate=0.2, duplicate_rate=0.2, delay_ms_max=20, reorder_rate=0.2)
    admin.seed(40)
    status = admin.wait_for_deliveries(20)
    assert status["idle"]
    assert status["emitted"] == 80
    assert status["dropped"] > 0
    assert status["duplicated"] > 0
    assert status["delivered"] + status["failed"] == (
        status["emitted"] - status["unverified"] - status["dropped"] + status["duplicated"]
    )
    assert len(subscriber.deliveries) == status["delivered"]
    jtis = [body["jti"] for _, body in subscriber.events()]
    assert len(jtis) - len(set(jtis)) == status["duplicated"]


def event_of(body: dict[str, Any]) -> dict[str, Any]:
    return dict(next(iter(body["events"].values())))


def test_sign_in_and_ending_sessions_emit_the_session_channel_in_asgardeo_shape(
    hooked: tuple[StandinHandle, StandinAdmin], subscriber: Subscriber
) -> None:
    handle, admin = hooked
    user = admin.create_user("lee@example.com", "Lee#pass1", email="lee@example.com")
    _, url, _, _ = start_login(handle)
    assert submit_form(url, "lee@example.com", "Lee#pass1").status_code == 302
    assert admin.end_sessions(user["id"]) == 1
    assert admin.end_sessions(user["id"]) == 0  # nothing left to revoke: no event
    assert admin.wait_for_deliveries(5)["idle"]
    bodies = dict(subscriber.events())
    assert list(bodies) == ["userCreated", "registrationSuccess", "sessionEstablished", "sessionRevoked"]
    established, revoked = event_of(bodies["sessionEstablished"]), event_of(bodies["sessionRevoked"])
    assert set(established) == {"user", "tenant", "organization", "userStore", "application", "session"}
    assert set(revoked) == {"user", "tenant", "organization", "userStore", "sessions"}
    assert established["user"]["id"] == revoked["user"]["id"] == user["id"]
    session = established["session"]
    assert len(session["id"]) == 64
    assert int(session["id"], 16) >= 0
    assert session["applications"] == [established["application"]]
    assert established["application"]["name"] == handle.config.web_client_id
    assert revoked["sessions"] == [session]
    assert next(iter(bodies["sessionRevoked"]["events"])).endswith("/events/session/event-type/sessionRevoked")


def test_password_changes_and_resets_emit_credential_updated(
    hooked: tuple[StandinHandle, StandinAdmin], subscriber: Subscriber
) -> None:
    _, admin = hooked
    user = admin.create_user("pat@example.com", "Pat#pass1", email="pat@example.com")
    admin.update_user(user["id"], password="Pat#pass2")
    admin.reset_password(user["id"], "Pat#pass3")
    admin.reset_password(user["id"], "Pat#pass4", action="RESET")
    assert admin.wait_for_deliveries(5)["idle"]
    credential = [event_of(body) for name, body in subscriber.events() if name == "credentialUpdated"]
    assert [(e["credentialType"], e["action"], e["initiatorType"]) for e in credential] == [
        ("PASSWORD", "UPDATE", "ADMIN"),
        ("PASSWORD", "CREDENTIAL_RESET", "ADMIN"),
        ("PASSWORD", "RESET", "ADMIN"),
    ]
    assert all(e["user"]["id"] == user["id"] for e in credential)
    assert claims(credential[0]["user"]) == {"emailaddress": "pat@example.com"}
