"""Reading the audit trail: a user's history, for each field the change that last set it, and whether a login was
recorded.

Functions take an open ``Session`` and never write.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.tables import SyncRun, UserChange

# How far back a field's provenance is looked for; older fields show only the user's last sync time.
PROVENANCE_DEPTH = 500


def user_history(session: Session, user_id: int, *, limit: int) -> Sequence[UserChange]:
    """The user's audit rows, newest first."""
    return (
        session.execute(
            select(UserChange).where(UserChange.user_id == user_id).order_by(UserChange.id.desc()).limit(limit)
        )
        .scalars()
        .all()
    )


def field_provenance(session: Session, user_id: int, fields: Sequence[str]) -> dict[str, UserChange]:
    """For each of ``fields``, the newest audit row that set it (absent when none in the last
    :data:`PROVENANCE_DEPTH` rows)."""
    found: dict[str, UserChange] = {}
    for change in user_history(session, user_id, limit=PROVENANCE_DEPTH):
        for name in change.changes or {}:
            if name in fields and name not in found:
                found[name] = change
        if len(found) == len(fields):
            break
    return found


def user_runs(session: Session, asgardeo_id: str, *, limit: int) -> Sequence[SyncRun]:
    """Single-user syncs of this user, newest first."""
    return (
        session.execute(
            select(SyncRun)
            .where(SyncRun.kind == "user", SyncRun.asgardeo_id == asgardeo_id)
            .order_by(SyncRun.id.desc())
            .limit(limit)
        )
        .scalars()
        .all()
    )


def login_recorded(session: Session, user_id: int, session_id: int) -> bool:
    """Whether the user's ``login`` audit row for the application session ``session_id`` exists."""
    found = session.execute(
        select(UserChange.id).where(
            UserChange.user_id == user_id,
            UserChange.action == "login",
            UserChange.changes["session_id"].astext == str(session_id),
        )
    ).first()
    return found is not None
