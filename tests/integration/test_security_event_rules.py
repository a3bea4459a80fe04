"""The session and credential rules against real Postgres (rolled back), for the branches the HTTP tests cannot
choose: the setting that turns the credential rule off, and a re-run."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.clock import now_ms
from models.security_events import apply_security_event
from models.tables import AppSession, UserChange
from tests.factories import login, make_user
from tests.webhook_payloads import sample


def credential_event(asgardeo_id: str) -> dict[str, object]:
    ((_, event),) = sample("credentialUpdated", user_id=asgardeo_id)["events"].items()
    return dict(event)


def test_with_credential_update_ends_sessions_off_a_password_reset_ends_nothing(db_session: Session) -> None:
    user = make_user(db_session)
    issued = login(db_session, user)
    result = apply_security_event(
        db_session,
        "credentialUpdated",
        credential_event(user.asgardeo_id),
        user.asgardeo_id,
        iat=now_ms(),
        event_jti="j-off",
        credential_ends_sessions=False,
    )
    assert (result.revoked, result.change) == (0, None)
    assert result.note == "password changed by an administrator in Asgardeo; CREDENTIAL_UPDATE_ENDS_SESSIONS is off"
    row = db_session.get(AppSession, issued.session_id)
    assert row is not None
    assert row.revoked_at is None


def test_applying_a_credential_event_twice_ends_and_audits_once(db_session: Session) -> None:
    user = make_user(db_session)
    login(db_session, user)
    login(db_session, user)
    event = credential_event(user.asgardeo_id)
    first = apply_security_event(db_session, "credentialUpdated", event, user.asgardeo_id, iat=now_ms(), event_jti="j1")
    again = apply_security_event(db_session, "credentialUpdated", event, user.asgardeo_id, iat=now_ms(), event_jti="j1")
    assert (first.revoked, again.revoked, again.change) == (2, 0, None)
    audits = db_session.execute(select(UserChange.action).where(UserChange.user_id == user.id)).scalars().all()
    assert list(audits) == ["sessions_revoked"]
