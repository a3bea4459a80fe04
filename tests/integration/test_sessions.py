"""Application sessions in Postgres: lookup rules and every revocation path (logout, back-channel, deactivation)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.sessions import (
    create_session,
    find_active_session,
    revoke_session,
    revoke_sessions_by_sid,
    revoke_subject_sessions,
    revoke_user_sessions,
)
from models.tables import AppSession
from tests.factories import make_user


def test_token_is_stored_only_as_a_hash_and_finds_its_user(db_session: Session) -> None:
    user = make_user(db_session)
    issued = create_session(db_session, user, ttl_seconds=60, idp_sid="sid-1", id_token="a.b.c")
    row = db_session.execute(select(AppSession).where(AppSession.id == issued.session_id)).scalar_one()
    assert issued.token not in (row.token_hash, row.id_token)
    found = find_active_session(db_session, issued.token)
    assert found is not None
    assert found[1].id == user.id


def test_expired_revoked_unknown_and_oversized_tokens_find_nothing(db_session: Session) -> None:
    user = make_user(db_session)
    expired = create_session(db_session, user, ttl_seconds=60)
    db_session.execute(
        AppSession.__table__.update()
        .where(AppSession.id == expired.session_id)
        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    revoked = create_session(db_session, user, ttl_seconds=60)
    revoke_session(db_session, revoked.session_id, reason="logout")
    for token in (expired.token, revoked.token, "no-such-token", "", "x" * 5000):
        assert find_active_session(db_session, token) is None


def test_inactive_user_session_finds_nothing(db_session: Session) -> None:
    user = make_user(db_session, status="inactive")
    issued = create_session(db_session, user, ttl_seconds=60)
    assert find_active_session(db_session, issued.token) is None


def test_revoke_by_sid_with_a_subject_touches_only_that_users_sessions(db_session: Session) -> None:
    kim, lee = make_user(db_session), make_user(db_session)
    mine = create_session(db_session, kim, ttl_seconds=60, idp_sid="shared-sid")
    theirs = create_session(db_session, lee, ttl_seconds=60, idp_sid="shared-sid")
    assert revoke_sessions_by_sid(db_session, "shared-sid", reason="backchannel_logout", subject=kim.asgardeo_id) == 1
    assert find_active_session(db_session, mine.token) is None
    assert find_active_session(db_session, theirs.token) is not None
    assert revoke_sessions_by_sid(db_session, "shared-sid", reason="backchannel_logout") == 1
    assert revoke_sessions_by_sid(db_session, "shared-sid", reason="backchannel_logout") == 0


def test_revoke_subject_sessions_ends_every_session_of_that_user_only(db_session: Session) -> None:
    kim, lee = make_user(db_session), make_user(db_session)
    kims = [create_session(db_session, kim, ttl_seconds=60) for _ in range(3)]
    lees = create_session(db_session, lee, ttl_seconds=60)
    assert revoke_subject_sessions(db_session, kim.asgardeo_id, reason="backchannel_logout") == 3
    assert all(find_active_session(db_session, s.token) is None for s in kims)
    assert find_active_session(db_session, lees.token) is not None
    assert revoke_subject_sessions(db_session, kim.asgardeo_id, reason="backchannel_logout") == 0
    assert revoke_subject_sessions(db_session, "unknown-subject", reason="backchannel_logout") == 0


def test_revoke_user_sessions_is_idempotent(db_session: Session) -> None:
    user = make_user(db_session)
    create_session(db_session, user, ttl_seconds=60)
    assert revoke_user_sessions(db_session, [user.id], reason="user_deactivated") == 1
    assert revoke_user_sessions(db_session, [user.id], reason="user_deactivated") == 0
    assert revoke_user_sessions(db_session, [], reason="user_deactivated") == 0
