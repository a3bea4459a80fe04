"""The session and credential events' fields, read the one way the rules read them."""

from __future__ import annotations

import pytest

from models.security_events import MalformedSecurityEvent, credential_reason, revoked_session_ids
from tests.webhook_payloads import sample


def event_of(name: str) -> dict[str, object]:
    ((_, event),) = sample(name)["events"].items()
    return dict(event)


@pytest.mark.parametrize(
    ("action", "initiator", "words"),
    [
        ("UPDATE", "ADMIN", "password changed by an administrator in Asgardeo"),
        ("CREDENTIAL_UPDATE", "USER", "password changed by the user in Asgardeo"),
        ("RESET", "ADMIN", "password reset by an administrator in Asgardeo"),
        ("CREDENTIAL_RESET", "APPLICATION", "password reset by an application in Asgardeo"),
        ("INVITE", None, "password set by invitation in Asgardeo"),
        ("SOMETHING_NEW", None, "password updated in Asgardeo"),
        (None, None, "password updated in Asgardeo"),
    ],
)
def test_both_spellings_of_a_credential_action_are_understood(
    action: str | None, initiator: str | None, words: str
) -> None:
    event = event_of("credentialUpdated")
    event.pop("initiatorType")
    event.pop("action")
    if action:
        event["action"] = action
    if initiator:
        event["initiatorType"] = initiator
    assert credential_reason(event) == words


def test_the_sample_revocation_names_its_asgardeo_session() -> None:
    assert revoked_session_ids(event_of("sessionRevoked")) == [
        "68d1f2861461c69d8e821d91839bbf8e23ef04fb96c1ac655f452d94d1fd6e4d"
    ]


@pytest.mark.parametrize("sessions", [None, [], [{"loginTime": 1}]])
def test_a_revocation_that_names_no_session_is_read_as_naming_none(sessions: object) -> None:
    assert revoked_session_ids({"sessions": sessions}) is None


@pytest.mark.parametrize(
    "event",
    [
        {"sessions": "all"},
        {"sessions": ["68d1"]},
        {"sessions": [{"id": 7}]},
        {"sessions": [{"id": "x" * 129}]},
        {"sessions": [{"id": "a"}] * 1001},
    ],
)
def test_a_malformed_session_list_is_refused(event: dict[str, object]) -> None:
    with pytest.raises(MalformedSecurityEvent):
        revoked_session_ids(event)


@pytest.mark.parametrize("event", [{"action": 3}, {"credentialType": ["PASSWORD"]}, {"initiatorType": "A" * 65}])
def test_a_malformed_credential_event_is_refused(event: dict[str, object]) -> None:
    with pytest.raises(MalformedSecurityEvent):
        credential_reason(event)
