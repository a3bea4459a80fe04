"""Asgardeo's session and credential events end application sessions: the stand-in emits them, the real intake
stores them, the real worker applies them, and the application refuses the session over real HTTP."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from sqlalchemy import select, text

from models.clock import now_ms
from models.db import SessionFactory, unit_of_work
from models.sessions import create_session
from models.tables import AppSession, User, UserChange, WebhookEvent
from tests.integration.auth_support import HttpLogin, new_standin_user
from tests.integration.subscription_support import local_user
from tests.polling import wait_for
from tests.stack import LiveServer
from tests.webhook_payloads import encode, sample, signed_headers

pytestmark = pytest.mark.usefixtures("celery_worker", "clean_db")

REFUSED_WITHIN_SECONDS = 1.0


def synced_person(standin_admin: Any) -> dict[str, Any]:
    person = new_standin_user(standin_admin)
    wait_for(lambda: local_user(person["id"]), what="the userCreated webhook applied")
    return person


def app_session(asgardeo_id: str, *, age_seconds: int = 0) -> tuple[int, str]:
    """A live application session of the user, signed in ``age_seconds`` ago (another device, earlier)."""
    with unit_of_work() as session:
        user = session.execute(select(User).where(User.asgardeo_id == asgardeo_id)).scalar_one()
        issued = create_session(session, user, ttl_seconds=3600)
        if age_seconds:
            session.execute(
                text("UPDATE sessions SET created_at = now() - make_interval(secs => :age) WHERE id = :id"),
                {"age": age_seconds, "id": issued.session_id},
            )
        return issued.session_id, issued.token


def me(live_server: LiveServer, token: str) -> int:
    return requests.get(
        f"{live_server.url}/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).status_code


def refused_after(live_server: LiveServer, token: str, started: float, timeout: float = 10.0) -> float:
    """Seconds from ``started`` until the application refuses ``token`` (401)."""
    deadline = started + timeout
    while time.monotonic() < deadline:
        if me(live_server, token) == 401:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError("the application session was never refused")


def revoked_reason(session_id: int) -> str | None:
    with SessionFactory() as session:
        row = session.get(AppSession, session_id)
        assert row is not None
        return row.revoked_reason


def audit_reasons(asgardeo_id: str) -> list[str]:
    with SessionFactory() as session:
        rows = session.execute(
            select(UserChange.changes).where(
                UserChange.asgardeo_id == asgardeo_id, UserChange.action == "sessions_revoked"
            )
        ).scalars()
        return [str(changes["reason"]) for changes in rows]


def inbox_has(event_type: str, asgardeo_id: str) -> bool:
    with SessionFactory() as session:
        found = session.execute(
            select(WebhookEvent.id).where(
                WebhookEvent.event_type == event_type, WebhookEvent.asgardeo_id == asgardeo_id
            )
        ).first()
        return found is not None


def test_an_admin_ending_a_users_sessions_at_the_standin_refuses_the_app_session_within_a_second(
    subscribed: Any, live_server: LiveServer
) -> None:
    person = synced_person(subscribed)
    other_device_id, other_device = app_session(person["id"], age_seconds=120)
    token = HttpLogin(live_server.url).login(person["_username"]).json()["session_token"]
    wait_for(lambda: inbox_has("sessionEstablished", person["id"]), what="sessionEstablished recorded")
    # As if the application had no back-channel logout registered: only the webhook can end this session.
    with unit_of_work() as session:
        session.execute(text("UPDATE sessions SET idp_sid = NULL WHERE id <> :other"), {"other": other_device_id})
    assert me(live_server, token) == 200

    started = time.monotonic()
    assert subscribed.end_sessions(person["id"]) == 1
    assert refused_after(live_server, token, started) < REFUSED_WITHIN_SECONDS

    with SessionFactory() as session:
        revoked = session.execute(select(AppSession).where(AppSession.revoked_at.is_not(None))).scalars().all()
    assert [row.revoked_reason for row in revoked] == ["identity_session_revoked"]
    # The device that signed in before that Asgardeo session began is not one it could have produced.
    assert me(live_server, other_device) == 200
    assert audit_reasons(person["id"]) == ["Asgardeo session revoked: sessions signed in since it began ended"]


def test_a_revoked_session_whose_beginning_is_unknown_ends_every_session_of_the_user(
    subscribed: Any, live_server: LiveServer
) -> None:
    person = synced_person(subscribed)
    old_id, old = app_session(person["id"], age_seconds=3600)
    new_id, new = app_session(person["id"])
    # A revocation whose sessionEstablished never arrived (lost, or older than the inbox keeps).
    body = sample("sessionRevoked", user_id=person["id"])
    raw = encode(body)
    started = time.monotonic()
    answer = requests.post(live_server.url + "/webhooks/asgardeo", data=raw, headers=signed_headers(raw), timeout=10)
    assert answer.status_code == 202, answer.text
    refused_after(live_server, old, started)
    assert me(live_server, new) == 401
    assert revoked_reason(old_id) == revoked_reason(new_id) == "identity_session_revoked"
    assert audit_reasons(person["id"]) == ["Asgardeo session revoked: which sessions it began is unknown, so all ended"]


@pytest.mark.parametrize(
    ("action", "words"),
    [("CREDENTIAL_RESET", "password reset by an administrator"), ("RESET", "password reset by an administrator")],
)
def test_a_password_reset_at_the_standin_refuses_sessions_signed_in_before_it_within_a_second(
    subscribed: Any, live_server: LiveServer, action: str, words: str
) -> None:
    person = synced_person(subscribed)
    first_id, first = app_session(person["id"], age_seconds=60)
    second_id, second = app_session(person["id"])
    assert me(live_server, first) == me(live_server, second) == 200

    started = time.monotonic()
    subscribed.reset_password(person["id"], "New-pass#2026", action=action)
    assert refused_after(live_server, second, started) < REFUSED_WITHIN_SECONDS
    assert me(live_server, first) == 401
    assert revoked_reason(first_id) == revoked_reason(second_id) == "credential_updated"
    assert audit_reasons(person["id"]) == [f"{words} in Asgardeo: sessions signed in before it ended"]
    # Signing in with the new password afterwards works.
    _, later = app_session(person["id"])
    assert me(live_server, later) == 200


def test_a_password_change_through_the_standin_profile_api_ends_sessions_with_the_documented_action(
    subscribed: Any, live_server: LiveServer
) -> None:
    person = synced_person(subscribed)
    _, token = app_session(person["id"])
    started = time.monotonic()
    subscribed.update_user(person["id"], password="Changed#2026")
    assert refused_after(live_server, token, started) < REFUSED_WITHIN_SECONDS
    assert audit_reasons(person["id"]) == [
        "password changed by an administrator in Asgardeo: sessions signed in before it ended"
    ]


def test_a_credential_event_for_a_session_signed_in_after_it_leaves_that_session(
    subscribed: Any, live_server: LiveServer
) -> None:
    person = synced_person(subscribed)
    _, token = app_session(person["id"])
    # An event Asgardeo created a minute ago, delivered late: the session is newer than the reset.
    body = sample("credentialUpdated", user_id=person["id"], iat=now_ms() - 60_000)
    raw = encode(body)
    answer = requests.post(live_server.url + "/webhooks/asgardeo", data=raw, headers=signed_headers(raw), timeout=10)
    assert answer.status_code == 202, answer.text

    def done() -> str | None:
        with SessionFactory() as session:
            return session.execute(select(WebhookEvent.status).where(WebhookEvent.jti == body["jti"])).scalar()

    assert wait_for(lambda: done() in ("applied", "ignored", "failed") and done(), what="event handled") == "ignored"
    assert me(live_server, token) == 200
    assert audit_reasons(person["id"]) == []


def deliver(live_server: LiveServer, body: dict[str, Any], **headers: str) -> requests.Response:
    raw = encode(body)
    return requests.post(
        live_server.url + "/webhooks/asgardeo", data=raw, headers={**signed_headers(raw), **headers}, timeout=10
    )


def event_row(jti: str) -> WebhookEvent | None:
    with SessionFactory() as session:
        row = session.execute(select(WebhookEvent).where(WebhookEvent.jti == jti)).scalar_one_or_none()
        return row if row is not None and row.status in ("applied", "ignored", "failed") else None


@pytest.mark.parametrize("name", ["sessionRevoked", "sessionEstablished", "credentialUpdated", "loginFailed"])
def test_a_badly_signed_session_or_credential_event_is_refused_and_stores_nothing(
    subscribed: Any, live_server: LiveServer, name: str
) -> None:
    person = synced_person(subscribed)
    _, token = app_session(person["id"])
    body = sample(name, **({} if name == "loginFailed" else {"user_id": person["id"]}))
    answer = deliver(live_server, body, **{"X-Hub-Signature": "sha256=" + "0" * 64})
    assert answer.status_code == 401
    assert event_row(body["jti"]) is None
    assert me(live_server, token) == 200


def revocation(user_id: str, sessions: object) -> dict[str, Any]:
    body = sample("sessionRevoked", user_id=user_id)
    ((_, event),) = body["events"].items()
    event["sessions"] = sessions
    return body


@pytest.mark.parametrize(
    ("sessions", "error"),
    [
        ("all", "sessions must be a list"),
        ([{"id": 7}], "id must be a string"),
        ([{"id": str(n)} for n in range(1001)], "at most 1000"),
        ([{"id": f"{n:064x}"} for n in range(1001)], "at most 1000"),
    ],
)
def test_a_malformed_or_oversized_revocation_fails_and_ends_no_session(
    subscribed: Any, live_server: LiveServer, sessions: object, error: str
) -> None:
    person = synced_person(subscribed)
    _, token = app_session(person["id"])
    body = revocation(person["id"], sessions)
    answer = deliver(live_server, body)
    assert answer.status_code == 202, answer.text
    row = wait_for(lambda: event_row(body["jti"]), what="revocation handled")
    assert row.status == "failed"
    assert error in (row.last_error or "")
    assert person["id"] not in (row.last_error or "")
    assert me(live_server, token) == 200


def test_a_malformed_credential_event_fails_and_ends_no_session(subscribed: Any, live_server: LiveServer) -> None:
    person = synced_person(subscribed)
    _, token = app_session(person["id"])
    body = sample("credentialUpdated", user_id=person["id"])
    ((_, event),) = body["events"].items()
    event["action"] = {"flow": "CREDENTIAL_RESET"}
    assert deliver(live_server, body).status_code == 202
    row = wait_for(lambda: event_row(body["jti"]), what="credential event handled")
    assert (row.status, row.last_error) == (
        "failed",
        "MalformedSecurityEvent: action must be a string of at most 64 characters",
    )
    assert me(live_server, token) == 200


@pytest.mark.parametrize("name", ["sessionRevoked", "credentialUpdated"])
def test_an_event_for_a_user_the_application_does_not_know_is_recorded_and_ignored(
    live_server: LiveServer, name: str
) -> None:
    body = sample(name)
    assert deliver(live_server, body).status_code == 202
    row = wait_for(lambda: event_row(body["jti"]), what="event handled")
    assert (row.status, row.last_error) == ("ignored", "unknown user")


def test_login_and_token_events_are_recorded_counted_per_user_and_change_nothing(live_server: LiveServer) -> None:
    from tests.factories import make_user

    with unit_of_work() as session:
        person = make_user(session, username="johndoe@example.com", email="johndoe@example.com")
        person_id, asgardeo_id = person.id, person.asgardeo_id
        admin = make_user(session, role="admin")
        admin_token = create_session(session, admin, ttl_seconds=3600).token
    _, token = app_session(asgardeo_id)
    by_claims = sample("loginFailed")  # names no user.id: found by its username claim
    by_id = sample("loginFailed")
    ((_, event),) = by_id["events"].items()
    event["user"]["id"] = asgardeo_id
    others = [sample("loginSuccess"), sample("accessTokenIssued"), sample("accessTokenRevoked")]
    unknown = sample("loginSuccess")
    unknown["events"] = {"https://schemas.identity.wso2.org/events/login/event-type/loginSomethingNew": {}}
    bodies = [by_claims, by_id, *others, unknown]
    for body in bodies:
        assert deliver(live_server, body).status_code == 202
    rows = [wait_for(lambda b=body: event_row(b["jti"]), what="event recorded") for body in bodies]
    assert {row.status for row in rows} == {"ignored"}
    assert [row.asgardeo_id for row in rows[:2]] == [asgardeo_id, asgardeo_id]
    page = requests.get(
        f"{live_server.url}/admin/users/{person_id}",
        headers={"Cookie": f"hrms_session={admin_token}", "Accept": "text/html"},
        timeout=10,
    )
    assert page.status_code == 200
    assert "Failed sign-ins at Asgardeo: <strong>2</strong>" in page.text
    assert me(live_server, token) == 200
    assert local_user(asgardeo_id).role == "employee"  # type: ignore[union-attr]
