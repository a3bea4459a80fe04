"""How true the users table is right now, gathered for the sync-health page and the metrics endpoint.

Read-only: the drift check's last figures, when users were last confirmed against the directory, and the last
incremental syncs (sweep, catch-up after a web start) with what is known of the directory's filter support.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from models.tables import User
from tasks.drift import last_check
from tasks.incremental import filter_unsupported, last_outcomes

# A user not confirmed for this long is counted apart on the page (the drift check should reach everyone sooner).
UNCONFIRMED_AFTER = timedelta(hours=24)


def staleness(session: Session) -> dict[str, Any]:
    """``{"drift", "oldest_confirmed_at", "unconfirmed_24h", "incremental", "lastmodified_filter"}``; times in ISO."""
    live = (User.status != "deleted", User.source_version > 0)
    oldest = session.scalar(select(func.min(User.last_synced_at)).where(*live))
    never = session.scalar(select(func.count()).where(*live, User.last_synced_at.is_(None))) or 0
    cutoff = datetime.now(UTC) - UNCONFIRMED_AFTER
    stale = session.scalar(
        select(func.count()).where(*live, or_(User.last_synced_at.is_(None), User.last_synced_at < cutoff))
    )
    drift = last_check()
    if drift is not None:
        drift = {**drift, "at": datetime.fromtimestamp(drift["at"], UTC).isoformat()}
    unsupported = filter_unsupported()
    return {
        "drift": drift,
        "oldest_confirmed_at": oldest.isoformat() if oldest is not None else None,
        "never_confirmed": int(never),
        "unconfirmed_24h": int(stale or 0),
        "incremental": last_outcomes(),
        "lastmodified_filter": f"not supported ({unsupported})" if unsupported else "used",
    }
