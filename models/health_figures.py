"""The figures the operators read: the sync-health page's (:func:`sync_health`, :func:`confirmations`) and the
Prometheus scrape's (:func:`service_gauges`). Read-only queries; the caller owns the session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from models.tables import EVENT_STATUSES, SyncRun, User, WebhookEvent

FAILED_SHOWN = 20
USER_STATUSES = ("active", "inactive", "deleted")


@dataclass(frozen=True)
class SyncHealth:
    last_run: SyncRun | None
    last_successful_run: SyncRun | None
    inbox: dict[str, int]
    failed_events: list[WebhookEvent]
    last_webhook_received_at: datetime | None
    oldest_pending_event_at: datetime | None
    users: dict[str, int]


def sync_health(session: Session) -> SyncHealth:
    """The last reconciliations, the inbox by status with its newest failures, webhook traffic and users by status."""
    full_runs = select(SyncRun).where(SyncRun.kind == "full").order_by(SyncRun.id.desc())
    backlog = dict.fromkeys(EVENT_STATUSES, 0)
    for status, count in session.execute(select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)).all():
        backlog[status] = count
    failed = session.execute(
        select(WebhookEvent).where(WebhookEvent.status == "failed").order_by(WebhookEvent.id.desc()).limit(FAILED_SHOWN)
    ).scalars()
    users = dict(session.execute(select(User.status, func.count()).group_by(User.status)).all())
    return SyncHealth(
        last_run=session.execute(full_runs.limit(1)).scalar_one_or_none(),
        last_successful_run=session.execute(
            full_runs.where(SyncRun.status == "succeeded").limit(1)
        ).scalar_one_or_none(),
        inbox=backlog,
        failed_events=list(failed),
        last_webhook_received_at=session.scalar(select(func.max(WebhookEvent.received_at))),
        oldest_pending_event_at=session.scalar(
            select(func.min(WebhookEvent.received_at)).where(WebhookEvent.status.in_(("received", "queued")))
        ),
        users={status: users.get(status, 0) for status in USER_STATUSES},
    )


@dataclass(frozen=True)
class Confirmations:
    """When the users a directory described (not deleted) were last confirmed against it."""

    oldest_confirmed_at: datetime | None
    never_confirmed: int
    # Never confirmed, or not since the ``since`` asked for.
    unconfirmed_since: int


def confirmations(session: Session, since: datetime) -> Confirmations:
    """The oldest confirmation (``users.last_synced_at``) of a live user, how many were never confirmed, and how
    many were not confirmed since ``since``."""
    live = (User.status != "deleted", User.source_version > 0)
    oldest = session.scalar(select(func.min(User.last_synced_at)).where(*live))
    never = session.scalar(select(func.count()).where(*live, User.last_synced_at.is_(None))) or 0
    stale = session.scalar(
        select(func.count()).where(*live, or_(User.last_synced_at.is_(None), User.last_synced_at < since))
    )
    return Confirmations(oldest, int(never), int(stale or 0))


# One round trip per scrape: the scrape interval is short and every web process may be scraped.
_GAUGES_SQL = text(
    """
SELECT
  (SELECT json_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM webhook_events GROUP BY status) s)
      AS backlog,
  (SELECT extract(epoch FROM now() - min(received_at)) FROM webhook_events WHERE status IN ('received', 'queued'))
      AS oldest_pending_seconds,
  (SELECT extract(epoch FROM avg(processed_at - received_at)) FROM webhook_events
     WHERE processed_at > now() - interval '5 minutes') AS apply_lag_seconds,
  (SELECT count(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > now()) AS active_sessions,
  (SELECT row_to_json(r) FROM (
     SELECT extract(epoch FROM finished_at) AS finished, extract(epoch FROM finished_at - started_at) AS duration,
            seen, created, updated, unchanged, deactivated, failed
     FROM sync_runs WHERE kind = 'full' AND status = 'succeeded' ORDER BY finished_at DESC LIMIT 1) r)
      AS last_reconcile
"""
)


def service_gauges(session: Session) -> dict[str, Any]:
    """Inbox backlog by status, the oldest pending event's age, the recent apply lag, live sessions, and the last
    successful full reconciliation's figures, as one row."""
    return dict(session.execute(_GAUGES_SQL).mappings().one())
