"""Property-based fuzzing of the webhook intake: whatever arrives, the answer is a deliberate 2xx/4xx, never a 5xx,
never 410 (WebSub's "unsubscribe me"), and a refused delivery stores nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from models.db import unit_of_work
from models.tables import WebhookEvent
from tests.stack import WEBHOOK_SECRET

URL = "/webhooks/asgardeo"
EVENT_URI = "https://schemas.identity.wso2.org/events/user/event-type/"
REFUSALS = {400, 401, 413, 415}
SECURITY_URIS = [
    f"https://schemas.identity.wso2.org/events/{channel}/event-type/{name}"
    for channel, name in (
        ("session", "sessionRevoked"),
        ("session", "sessionEstablished"),
        ("credential", "credentialUpdated"),
        ("login", "loginFailed"),
        ("token", "accessTokenIssued"),
    )
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "jti": st.one_of(st.uuids().map(str), st.text(max_size=200), st.integers()),
        "iat": st.one_of(st.integers(min_value=-(2**63), max_value=2**63), st.text(max_size=20), st.none()),
        "iss": st.text(max_size=50),
        "events": st.one_of(
            st.dictionaries(
                st.sampled_from([EVENT_URI + n for n in ("userCreated", "userDeleted", "userFoo")] + SECURITY_URIS)
                | st.text(),
                json_values,
                max_size=3,
            ),
            json_values,
        ),
    },
)
signature_headers = st.sampled_from(["X-Hub-Signature", "x-wso2-event-signature", "X-Other"])


def _sign(body: bytes) -> str:
    return "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()


def _stored() -> int:
    with unit_of_work() as session:
        return int(session.scalar(select(func.count()).select_from(WebhookEvent)) or 0)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(
    body=st.binary(max_size=2048),
    header=signature_headers,
    value=st.text(st.characters(exclude_characters="\r\n\x00"), max_size=100),
)
def test_random_bytes_and_signatures_are_refused_without_storing(
    app: Flask, clean_redis: None, body: bytes, header: str, value: str
) -> None:
    before = _stored()
    response = app.test_client().post(URL, data=body, headers={header: value, "Content-Type": "application/json"})
    assert response.status_code in REFUSALS
    assert response.json is not None
    assert {"error", "detail"} <= set(response.json)
    assert _stored() == before


@FUZZ
@given(envelope=envelopes, header=signature_headers)
def test_correctly_signed_envelopes_of_any_shape_never_break_the_intake(
    app: Flask, clean_redis: None, envelope: dict[str, Any], header: str
) -> None:
    body = json.dumps(envelope).encode()
    before = _stored()
    response = app.test_client().post(URL, data=body, headers={header: _sign(body), "Content-Type": "application/json"})
    assert response.status_code < 500
    assert response.status_code != 410
    if response.status_code in REFUSALS:
        assert _stored() == before
    else:
        assert response.status_code in (200, 202)


@FUZZ
@given(params=st.dictionaries(st.sampled_from(["hub.mode", "hub.challenge", "hub.topic", "x"]), st.text(), max_size=4))
def test_handshake_answers_the_challenge_or_400(app: Flask, params: dict[str, str]) -> None:
    response = app.test_client().get(URL, query_string=params)
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        assert response.get_data(as_text=True) == params["hub.challenge"]
        assert response.mimetype == "text/plain"
