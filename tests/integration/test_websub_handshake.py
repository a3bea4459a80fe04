"""The WebSub handshake is an unauthenticated GET: it is answered only for this organisation's topics, and what it
records (one slot per known channel, subscribe and unsubscribe side by side) cannot be evicted or erased by junk."""

from __future__ import annotations

import random
import string
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from models.settings import get_settings
from tests import webhook_payloads as payloads
from web import create_app

pytestmark = pytest.mark.usefixtures("clean_db", "clean_redis")

ORG = "acme"
USER_TOPIC = f"{ORG}.6f1b2c3d-0000-4000-8000-000000000001.schema.wso2.v1.event.user"
OTHER_ORG_TOPIC = "rival.6f1b2c3d-0000-4000-8000-000000000002.schema.wso2.v1.event.user"


@pytest.fixture
def org_app() -> Flask:
    app = create_app(get_settings().model_copy(update={"webhook_org": ORG}))
    app.config["TESTING"] = True
    return app


def _handshake(client: FlaskClient, topic: str, mode: str = "subscribe", challenge: str = "c-1") -> Any:
    query = {"hub.mode": mode, "hub.topic": topic, "hub.challenge": challenge, "hub.lease_seconds": "864000"}
    return client.get("/webhooks/asgardeo", query_string=query)


def _recorded(client: FlaskClient, headers: dict[str, str]) -> dict[str, Any]:
    subscriptions: dict[str, Any] = client.get("/admin/health/summary", headers=headers).json["subscriptions"]
    return subscriptions


def _junk_topic(rng: random.Random) -> str:
    word = "".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(1, 30)))
    return rng.choice(
        (
            word,
            f"{word}.{word}.schema.wso2.v1.event.user",  # another organisation's real-looking topic
            f"{ORG}.{word}.schema.wso2.v1.event.{word}",  # our organisation, a channel nobody has
            f"https://schemas.identity.wso2.org/events/{word}",
            "https://schemas.identity.wso2.org/events/user",  # names no organisation
            "",
        )
    )


def test_another_organisations_topic_is_404_and_not_recorded(org_app: Flask, admin_headers: dict[str, str]) -> None:
    client = org_app.test_client()
    answer = _handshake(client, OTHER_ORG_TOPIC)
    assert answer.status_code == 404
    assert "c-1" not in answer.get_data(as_text=True)
    assert _recorded(client, admin_headers) == {}
    own = _handshake(client, USER_TOPIC, challenge="own")
    assert own.status_code == 200
    assert own.get_data(as_text=True) == "own"
    assert _recorded(client, admin_headers)["user"]["topic"] == USER_TOPIC


def test_a_thousand_junk_handshakes_leave_the_record_unchanged(org_app: Flask, admin_headers: dict[str, str]) -> None:
    client = org_app.test_client()
    assert _handshake(client, USER_TOPIC).status_code == 200
    before = _recorded(client, admin_headers)
    rng = random.Random(13)
    statuses: dict[int, int] = {}
    for n in range(1000):
        answer = _handshake(client, _junk_topic(rng), mode=rng.choice(("subscribe", "unsubscribe")), challenge=f"j{n}")
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
    assert _recorded(client, admin_headers) == before
    assert statuses.get(404, 0) > 500, statuses  # most junk names another organisation or none
    # The real channel's next handshake is still recorded: nothing was evicted or filled up.
    assert _handshake(client, USER_TOPIC.replace(".user", ".registration")).status_code == 200
    assert set(_recorded(client, admin_headers)) == {"user", "registration"}


def test_a_forged_unsubscribe_keeps_the_subscription_on_record_and_is_flagged_by_later_deliveries(
    org_app: Flask, admin_headers: dict[str, str]
) -> None:
    client = org_app.test_client()
    assert _handshake(client, USER_TOPIC).status_code == 200
    subscribed_at = _recorded(client, admin_headers)["user"]["subscribed_at"]
    assert _handshake(client, USER_TOPIC, mode="unsubscribe").status_code == 200  # WebSub must be able to unsubscribe
    entry = _recorded(client, admin_headers)["user"]
    assert entry["mode"] == "unsubscribe"
    assert entry["subscribed_at"] == subscribed_at
    assert entry["lease_seconds"] == "864000"
    assert entry["contradicted_by_deliveries"] is False
    raw = payloads.encode(payloads.event("userCreated"))
    assert client.post("/webhooks/asgardeo", data=raw, headers=payloads.signed_headers(raw)).status_code == 202
    assert _recorded(client, admin_headers)["user"]["contradicted_by_deliveries"] is True
    page = client.get("/admin/health", headers=admin_headers).get_data(as_text=True)
    assert "not from Asgardeo" in page


def test_without_an_organisation_junk_cannot_evict_the_standin_channels(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    topic = "https://schemas.identity.wso2.org/events/user"
    assert _handshake(client, topic).status_code == 200
    before = _recorded(client, admin_headers)
    rng = random.Random(7)
    for n in range(200):
        _handshake(client, "".join(rng.choices(string.ascii_letters, k=20)), challenge=f"j{n}")
    assert _recorded(client, admin_headers) == before
