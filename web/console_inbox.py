"""The inbox pages: webhook events by status and type, one event's details, and replay (one, or all failed).

Served at the admin API's own addresses when a browser asks for HTML (:mod:`web.admin_inbox` hands them over); the
replay buttons are forms posting to the API's replay routes, which answer a browser with a redirect back here.
"""

from __future__ import annotations

import json

from flask import render_template, request

from models import inbox
from models.db import unit_of_work
from models.tables import EVENT_STATUSES, WebhookEvent
from models.users import get_by_asgardeo_id
from web.errors import APIError

PAGE_SIZE = 50


def events_page(*, status: str | None, event_type: str | None, before_id: int | None, limit: int) -> str:
    with unit_of_work() as session:
        events = inbox.list_events(session, status=status, event_type=event_type, before_id=before_id, limit=limit + 1)
        counts = dict.fromkeys(EVENT_STATUSES, 0) | dict(inbox.count_by_status(session))
        types = inbox.event_types(session)
    query = {k: v for k, v in (("status", status), ("type", event_type)) if v}
    return render_template(
        "console/events.html",
        events=events[:limit],
        next_before_id=events[limit - 1].id if len(events) > limit else None,
        counts=counts,
        types=types,
        statuses=EVENT_STATUSES,
        status=status,
        event_type=event_type,
        query=query,
        notice=request.args.get("replayed"),
        remaining=request.args.get("remaining"),
    )


def event_page(event_id: int) -> str:
    with unit_of_work() as session:
        row: WebhookEvent | None = inbox.get_event(session, event_id)
        if row is None:
            raise APIError(404, "not_found", f"No event {event_id}.")
        payload = json.dumps(row.payload, indent=2, sort_keys=True)
        user_id = None
        if row.asgardeo_id:
            found = get_by_asgardeo_id(session, row.asgardeo_id)
            user_id = found.id if found is not None else None
    return render_template(
        "console/event.html",
        event=row,
        payload=payload,
        local_user_id=user_id,
        queued=request.args.get("queued"),
    )
