"""How true the users table is right now, gathered for the sync-health page and the metrics endpoint.

Read-only: the drift check's last figures, when users were last confirmed against the directory, and the last
incremental syncs (sweep, catch-up after a web start) with what is known of the directory's filter support.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from models.health_figures import confirmations
from tasks.drift import last_check
from tasks.incremental import filter_unsupported, last_outcomes

# A user not confirmed for this long is counted apart on the page (the drift check should reach everyone sooner).
UNCONFIRMED_AFTER = timedelta(hours=24)


def staleness(session: Session) -> dict[str, Any]:
    """``{"drift", "oldest_confirmed_at", "unconfirmed_24h", "incremental", "lastmodified_filter"}``; times in ISO."""
    confirmed = confirmations(session, since=datetime.now(UTC) - UNCONFIRMED_AFTER)
    oldest = confirmed.oldest_confirmed_at
    drift = last_check()
    if drift is not None:
        drift = {**drift, "at": datetime.fromtimestamp(drift["at"], UTC).isoformat()}
    unsupported = filter_unsupported()
    return {
        "drift": drift,
        "oldest_confirmed_at": oldest.isoformat() if oldest is not None else None,
        "never_confirmed": confirmed.never_confirmed,
        "unconfirmed_24h": confirmed.unconfirmed_since,
        "incremental": last_outcomes(),
        "lastmodified_filter": f"not supported ({unsupported})" if unsupported else "used",
    }
