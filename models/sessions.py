"""The application's own sessions: opaque random tokens, stored only as SHA-256 hashes, with expiry and revocation.

A token is 32 random bytes, so a fast hash is enough (there is nothing to brute-force); storing only the hash means a
database leak hands out no usable session.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from models.tables import AppSession, User


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedSession:
    """A new session: ``token`` is shown to the client once and never stored."""

    token: str
    expires_at: datetime
    session_id: int


def create_session(
    session: Session,
    user: User,
    *,
    ttl_seconds: int,
    idp_sid: str | None = None,
    id_token: str | None = None,
) -> IssuedSession:
    """Issue a session for ``user``; the caller commits."""
    token = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl_seconds)
    row = AppSession(
        token_hash=hash_token(token),
        user_id=user.id,
        idp_sid=idp_sid,
        id_token=id_token,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return IssuedSession(token=token, expires_at=expires_at, session_id=row.id)


def find_active_session(session: Session, token: str) -> tuple[AppSession, User] | None:
    """The live session and its user for ``token``: not revoked, not expired, and the user still active."""
    if not token or len(token) > 200:
        return None
    now = datetime.now(UTC)
    row = session.execute(
        select(AppSession, User)
        .join(User, User.id == AppSession.user_id)
        .where(
            AppSession.token_hash == hash_token(token),
            AppSession.revoked_at.is_(None),
            AppSession.expires_at > now,
            User.status == "active",
        )
    ).one_or_none()
    if row is None:
        return None
    return row[0], row[1]


def revoke_session(session: Session, session_id: int, *, reason: str) -> None:
    session.execute(
        update(AppSession)
        .where(AppSession.id == session_id, AppSession.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC), revoked_reason=reason)
    )


def revoke_user_sessions(session: Session, user_ids: Sequence[int], *, reason: str) -> int:
    """End every live session of these users at once (a deactivated user must be locked out now). Idempotent."""
    if not user_ids:
        return 0
    result = session.execute(
        update(AppSession)
        .where(AppSession.user_id.in_(list(user_ids)), AppSession.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC), revoked_reason=reason)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _users_of_subject(subject: str) -> ColumnElement[bool]:
    """Sessions of the user a logout token's ``sub`` names: the row linked to that subject, or (rows from before the
    link was recorded, and the default rule) the row whose directory id it is."""
    return AppSession.user_id.in_(select(User.id).where(or_(User.oidc_subject == subject, User.asgardeo_id == subject)))


def revoke_sessions_by_sid(session: Session, idp_sid: str, *, reason: str, subject: str | None = None) -> int:
    """End the sessions opened under one IdP session (back-channel logout); with ``subject`` (the token's ``sub``),
    only that user's sessions under the ``sid``. Idempotent."""
    statement = update(AppSession).where(AppSession.idp_sid == idp_sid, AppSession.revoked_at.is_(None))
    if subject is not None:
        statement = statement.where(_users_of_subject(subject))
    result = session.execute(statement.values(revoked_at=datetime.now(UTC), revoked_reason=reason))
    return int(getattr(result, "rowcount", 0) or 0)


def revoke_subject_sessions(session: Session, subject: str, *, reason: str) -> int:
    """End every live session of the user who signs in with ``sub`` = ``subject``. Idempotent."""
    result = session.execute(
        update(AppSession)
        .where(_users_of_subject(subject), AppSession.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC), revoked_reason=reason)
    )
    return int(getattr(result, "rowcount", 0) or 0)
