"""What an admin may change on a user: the application's own fields and the user's open sessions, audited.

Identity fields belong to Asgardeo and are never edited here. Functions take an open ``Session`` and never commit;
callers publish the returned change after commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.sessions import revoke_session
from models.tables import ROLES, AppSession, User
from models.users import Change, record_change

APP_FIELDS = ("role", "employee_id", "department")
FIELD_LIMITS = {"employee_id": 64, "department": 200}


class EditRefused(Exception):
    """The edit breaks a rule; ``code`` is the API's error code, the message says what to do instead."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class NoSuchUser(Exception):
    pass


@dataclass(frozen=True)
class EditOutcome:
    user: User
    changed: list[str]
    change: Change | None


def clean_app_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate an edit of the app's own fields: role one of :data:`ROLES`; texts trimmed, bounded, printable,
    empty meaning none. Raises :class:`EditRefused` (``invalid_body``) naming the field."""
    edit: dict[str, Any] = {}
    for name, given in raw.items():
        value = given
        if name not in APP_FIELDS:
            raise EditRefused("invalid_body", f"unknown field(s): {name}")
        if name == "role":
            if value not in ROLES:
                raise EditRefused("invalid_body", f"role must be one of {', '.join(ROLES)}")
        elif value is not None:
            if not isinstance(value, str):
                raise EditRefused("invalid_body", f"{name} must be a string or null")
            value = value.strip() or None
            if value is not None and len(value) > FIELD_LIMITS[name]:
                raise EditRefused("invalid_body", f"{name} is longer than {FIELD_LIMITS[name]} characters")
            if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise EditRefused("invalid_body", f"{name} must not contain control characters")
        edit[name] = value
    if not edit:
        raise EditRefused("invalid_body", f"send at least one of {', '.join(sorted(APP_FIELDS))}")
    return edit


def edit_app_fields(session: Session, user_id: int, edit: Mapping[str, Any], *, actor: str | None) -> EditOutcome:
    """Apply a cleaned edit under a row lock and audit it. Refuses to demote the last active admin (nobody could
    undo it). Saving the same values again changes and audits nothing."""
    user = session.execute(select(User).where(User.id == user_id).with_for_update()).scalar_one_or_none()
    if user is None:
        raise NoSuchUser(user_id)
    if user.role == "admin" and edit.get("role", "admin") != "admin":
        admins = session.scalar(
            select(func.count()).select_from(User).where(User.role == "admin", User.status == "active")
        )
        if (admins or 0) <= 1:
            raise EditRefused("last_admin", "this is the last active admin; grant the role to someone else first")
    diff = {name: [getattr(user, name), value] for name, value in edit.items() if getattr(user, name) != value}
    change = None
    if diff:
        for name, (_, value) in diff.items():
            setattr(user, name, value)
        if "role" in diff:
            # Set by hand: the directory's role events never take it away (models/directory_roles.py).
            user.role_source, user.base_role = "admin", None
        user.updated_at = datetime.now(UTC)
        change = record_change(session, user, "updated", diff, source="admin", actor=actor)
    session.flush()
    session.refresh(user)
    return EditOutcome(user, sorted(diff), change)


def open_sessions(session: Session, user_id: int) -> Sequence[AppSession]:
    """The user's sessions that still grant access, newest first."""
    return (
        session.execute(
            select(AppSession)
            .where(AppSession.user_id == user_id, AppSession.revoked_at.is_(None), AppSession.expires_at > func.now())
            .order_by(AppSession.id.desc())
        )
        .scalars()
        .all()
    )


def revoke_user_session(session: Session, user_id: int, session_id: int, *, actor: str | None) -> bool:
    """End one of the user's open sessions and audit who did it; ``False`` if it was not open (a re-run is a
    no-op)."""
    user = session.get(User, user_id)
    if user is None:
        raise NoSuchUser(user_id)
    target = session.execute(
        select(AppSession).where(
            AppSession.id == session_id, AppSession.user_id == user_id, AppSession.revoked_at.is_(None)
        )
    ).scalar_one_or_none()
    if target is None:
        return False
    revoke_session(session, session_id, reason="admin_revoked")
    record_change(session, user, "session_revoked", {"session_id": [session_id, None]}, source="admin", actor=actor)
    return True
