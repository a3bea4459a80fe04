"""Admin view of the webhook inbox (list, show, replay). Admin role only."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, redirect, url_for
from werkzeug.wrappers import Response as BaseResponse

from models import inbox
from models.db import unit_of_work
from models.tables import EVENT_STATUSES
from web import console_inbox
from web.access import current_user, require_role
from web.errors import APIError, wants_page
from web.intake import current_intake
from web.serialize import event_json
from web.validate import choice_arg, int_arg, optional_int_arg, text_arg

bp = Blueprint("admin_inbox", __name__, url_prefix="/admin")
log = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
REPLAY_ALL_LIMIT = 1000


@bp.get("/events")
@require_role("admin")
def list_events() -> Response | str:
    """Newest first; filter by ``status``, ``type``, ``user_id``; page with ``before_id`` (``next_before_id``)."""
    status = choice_arg("status", EVENT_STATUSES)
    event_type = text_arg("type", max_length=64)
    user_id = text_arg("user_id", max_length=64)
    limit = int_arg("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    before_id = optional_int_arg("before_id")
    if wants_page():
        return console_inbox.events_page(status=status, event_type=event_type, before_id=before_id, limit=limit)
    with unit_of_work() as session:
        rows = inbox.list_events(
            session, status=status, event_type=event_type, asgardeo_id=user_id, before_id=before_id, limit=limit
        )
        items = [event_json(r) for r in rows]
    next_before = items[-1]["id"] if len(items) == limit else None
    return jsonify(events=items, next_before_id=next_before)


@bp.get("/events/<int:event_id>")
@require_role("admin")
def show_event(event_id: int) -> Response | str:
    """One event with the payload Asgardeo sent (it holds no secret; the signature header is never stored)."""
    if wants_page():
        return console_inbox.event_page(event_id)
    with unit_of_work() as session:
        row = inbox.get_event(session, event_id)
        if row is None:
            raise APIError(404, "not_found", f"No event {event_id}.")
        return jsonify(event={**event_json(row), "event_uri": row.event_uri, "payload": row.payload})


def _actor() -> str | None:
    user = current_user()
    return user.email if user is not None else None


@bp.post("/events/<int:event_id>/replay")
@require_role("admin")
def replay_event(event_id: int) -> tuple[Response, int] | BaseResponse:
    """Queue a failed (or stranded) event again; 409 for an event already applied or ignored."""
    with unit_of_work() as session:
        try:
            row = inbox.mark_for_replay(session, event_id)
        except ValueError as exc:
            raise APIError(409, "not_replayable", str(exc)) from None
        if row is None:
            raise APIError(404, "not_found", f"No event {event_id}.")
    unsent = current_intake().send_now([event_id])
    log.info("event replayed by an admin", extra={"event_id": event_id, "actor": _actor()})
    if wants_page():
        return redirect(url_for("admin_inbox.show_event", event_id=event_id, queued=1), code=303)
    return jsonify(status="queued", id=event_id, queued=not unsent), 202


@bp.post("/events/replay-failed")
@require_role("admin")
def replay_failed() -> tuple[Response, int] | BaseResponse:
    """Queue up to 1000 failed events again, oldest first; call again while ``remaining`` is above zero."""
    with unit_of_work() as session:
        ids = inbox.claim_failed_for_replay(session, limit=REPLAY_ALL_LIMIT)
    unsent = current_intake().send_now(ids)
    with unit_of_work() as session:
        remaining = inbox.count_with_status(session, "failed")
    log.info("failed events replayed by an admin", extra={"count": len(ids), "actor": _actor()})
    if wants_page():
        return redirect(url_for("admin_inbox.list_events", replayed=len(ids), remaining=remaining), code=303)
    return jsonify(replayed=len(ids), unsent=len(unsent), remaining=remaining), 202
