"""Webhook publisher: WebSub handshake gate, Asgardeo payloads, signatures, versions, retries and chaos."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from asgardeo_standin.client import StandinAdmin
from asgardeo_standin.server import StandinHandle, start_in_thread

from .conftest import WEBHOOK_SECRET, Subscriber, make_config, wait_until


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
        wait_until(lambda: len(subscriber.handshakes) == 2)
        admin.create_user("x@example.com", email="x@example.com")
        status = admin.wait_for_deliveries(5)
        assert status["verified"] is False
        assert status["unverified"] == 2
        assert status["delivered"] == 0
        assert subscriber.deliveries == []


def test_handshake_is_websub_per_channel(hooked: tuple[StandinHandle, StandinAdmin], subscriber: Subscriber) -> None:
    assert {h["hub.topic"].rsplit("/", 1)[-1] for h in subscriber.handshakes} == {"user", "registration"}
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
