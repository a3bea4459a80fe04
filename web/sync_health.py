"""The operators' sync-health page: is the user table in sync, what failed, and one click to replay it.

One query gathers everything (last reconciliation, inbox backlog, failed events, webhook traffic), served as a page
for people and as JSON for scripts. The page's replay buttons call the admin events API.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template
from sqlalchemy.orm import Session

from models.db import unit_of_work
from models.health_figures import sync_health
from models.settings import Settings
from models.tables import SyncRun
from tasks.config_warnings import warnings
from tasks.housekeeping import last_report
from tasks.jti_conflicts import recent_conflicts
from tasks.staleness import staleness
from tasks.subscriptions import subscriptions
from web.access import require_role
from web.serialize import event_json

bp = Blueprint("sync_health", __name__, url_prefix="/admin")


@bp.app_template_filter("when")
def when(iso: str | None) -> str:
    """An ISO timestamp as people read it on the page: ``2026-11-28 05:00 UTC`` (stored times are UTC)."""
    if not iso:
        return ""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _run(run: SyncRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "id": run.id,
        "kind": run.kind,
        "trigger": run.trigger,
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "counts": {
            name: getattr(run, name) for name in ("seen", "created", "updated", "unchanged", "deactivated", "failed")
        },
        "pages_done": run.pages_done,
        "error": run.error,
        "unconfirmed": run.unconfirmed or [],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def snapshot(session: Session) -> dict[str, Any]:
    """Everything the page shows, as plain data."""
    figures = sync_health(session)
    return {
        "last_run": _run(figures.last_run),
        "last_successful_run": _run(figures.last_successful_run),
        "inbox": figures.inbox,
        "oldest_pending_event_at": _iso(figures.oldest_pending_event_at),
        "last_webhook_received_at": _iso(figures.last_webhook_received_at),
        "failed_events": [event_json(e) for e in figures.failed_events],
        "users": figures.users,
        "jti_conflicts": [{**c, "at": _iso(datetime.fromtimestamp(c["at"], UTC))} for c in recent_conflicts()],
        "housekeeping": _housekeeping(),
        "subscriptions": {
            channel: _handshake(entry, figures.last_webhook_received_at)
            for channel, entry in sorted(subscriptions().items())
        },
        "staleness": staleness(session),
        "config_warnings": {
            code: {**entry, "last_at": _iso(datetime.fromtimestamp(entry["last_at"], UTC))}
            for code, entry in sorted(warnings().items())
        },
    }


def _handshake(entry: dict[str, Any], last_delivery: datetime | None) -> dict[str, Any]:
    """A channel's recorded handshakes with ISO times. Handshakes are unauthenticated: an unsubscribe followed by
    signed deliveries did not come from Asgardeo (``contradicted_by_deliveries``)."""
    times = {
        name: _iso(datetime.fromtimestamp(entry[name], UTC)) if entry.get(name) else None
        for name in ("at", "subscribed_at", "unsubscribed_at")
    }
    contradicted = (
        entry.get("mode") == "unsubscribe"
        and last_delivery is not None
        and last_delivery.timestamp() > float(entry.get("unsubscribed_at") or 0)
    )
    return {**entry, **times, "contradicted_by_deliveries": contradicted}


def _housekeeping() -> dict[str, Any] | None:
    """The last housekeeping run's report, with its finish time as ISO like the page's other times."""
    report = last_report()
    if report is None:
        return None
    return {**report, "finished_at": _iso(datetime.fromtimestamp(report["finished_at"], UTC))}


@bp.get("/health")
@require_role("admin")
def page() -> str:
    settings: Settings = current_app.config["SETTINGS"]
    with unit_of_work() as session:
        data = snapshot(session)
    return render_template("sync_health.html", data=data, flower_url=settings.flower_url)


@bp.get("/health/summary")
@require_role("admin")
def summary() -> Response:
    with unit_of_work() as session:
        return jsonify(snapshot(session))
