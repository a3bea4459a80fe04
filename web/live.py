"""The live stream: applied user changes as Server-Sent Events, for admins, and the live user table page over it.

Each message's ``id`` is the audit row's id. A client that reconnects sends ``Last-Event-ID`` (browsers do it by
themselves) and first receives every change after that id from the audit trail, then the live ones from Redis
pub/sub. A stream closes after ``LIVE_STREAM_MAX_SECONDS`` so it never holds a server thread for ever; the browser
reconnects on its own and misses nothing. Comment lines are sent as heartbeats so proxies keep the connection open.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis
from flask import Blueprint, Response, current_app, request
from sqlalchemy import select

from models.db import unit_of_work
from models.settings import Settings
from models.tables import UserChange
from tasks.live import channel
from tasks.redis_client import get_redis
from web import console_live
from web.access import require_role
from web.errors import APIError

# The stream keeps its public address, ``/events/users``; the page is ``/admin/live``.
bp = Blueprint("live", __name__)
log = logging.getLogger(__name__)

REPLAY_PAGE = 500
REPLAY_MAX_ROWS = 10_000
RECONNECT_MS = 2000
POLL_SECONDS = 1.0


def parse_last_event_id(value: str | None) -> int | None:
    """The resume point from ``Last-Event-ID`` (or ``?last_event_id=``); ``None`` when absent."""
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 18:
        raise APIError(400, "invalid_last_event_id", "Last-Event-ID must be a non-negative integer.")
    return int(value)


def format_event(message: dict[str, Any]) -> str:
    data = json.dumps(message, default=str, separators=(",", ":"))
    return f"id: {message['id']}\ndata: {data}\n\n"


def missed_changes(after_id: int) -> list[dict[str, Any]]:
    """Audit rows after ``after_id``, oldest first, in the live message's shape (bounded)."""
    rows: list[dict[str, Any]] = []
    cursor = after_id
    with unit_of_work() as session:
        while len(rows) < REPLAY_MAX_ROWS:
            page = session.execute(
                select(UserChange).where(UserChange.id > cursor).order_by(UserChange.id).limit(REPLAY_PAGE)
            ).scalars()
            batch: list[dict[str, Any]] = [
                {
                    "id": c.id,
                    "user_id": c.user_id,
                    "asgardeo_id": c.asgardeo_id,
                    "action": c.action,
                    "changes": c.changes,
                    "source": c.source,
                    "actor": c.actor,
                }
                for c in page
            ]
            rows.extend(batch)
            if len(batch) < REPLAY_PAGE:
                break
            cursor = batch[-1]["id"]
    return rows


class _StreamSlots:
    """Counts one app's open streams (one app per web process): each holds a web thread, and the webhook intake
    needs the others."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.open = 0

    def acquire(self, limit: int) -> bool:
        with self._lock:
            if self.open >= limit:
                return False
            self.open += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.open = max(0, self.open - 1)


def _published(data: Any) -> list[tuple[dict[str, Any], int]]:
    """The changes of one pub/sub message (a JSON array, see :mod:`tasks.live`) with their ids; malformed ones are
    dropped (the audit trail still has them)."""
    try:
        messages = json.loads(data)
    except (ValueError, TypeError):
        return []
    readable: list[tuple[dict[str, Any], int]] = []
    for message in messages if isinstance(messages, list) else []:
        try:
            readable.append((message, int(message["id"])))
        except (ValueError, KeyError, TypeError):
            continue
    return readable


def _stream(pubsub: Any, backlog: list[dict[str, Any]], last_id: int | None, settings: Settings) -> Iterator[str]:
    started = time.monotonic()
    deadline = started + settings.live_stream_max_seconds
    next_heartbeat = started + settings.live_stream_heartbeat_seconds
    try:
        yield f"retry: {RECONNECT_MS}\n: connected\n\n"
        for message in backlog:
            last_id = message["id"]
            yield format_event(message)
        while (now := time.monotonic()) < deadline:
            raw = pubsub.get_message(ignore_subscribe_messages=True, timeout=min(POLL_SECONDS, deadline - now))
            if raw is not None and raw.get("type") == "message":
                for message, change_id in _published(raw["data"]):
                    if last_id is not None and change_id <= last_id:
                        continue  # already sent from the audit trail
                    last_id = change_id
                    yield format_event(message)
            elif time.monotonic() >= next_heartbeat:
                next_heartbeat = time.monotonic() + settings.live_stream_heartbeat_seconds
                yield ": heartbeat\n\n"
    except redis.RedisError as exc:
        log.warning("live stream lost Redis; the client will reconnect", extra={"error": type(exc).__name__})
    finally:
        pubsub.close()


@bp.get("/events/users")
@require_role("admin")
def user_stream() -> Response:
    """``text/event-stream`` of user changes; resumes after ``Last-Event-ID``."""
    settings: Settings = current_app.config["SETTINGS"]
    last_id = parse_last_event_id(request.headers.get("Last-Event-ID") or request.args.get("last_event_id"))
    slots: _StreamSlots = current_app.extensions.setdefault("live_stream_slots", _StreamSlots())
    if not slots.acquire(settings.live_stream_max_per_process):
        raise APIError(
            503, "stream_busy", "Too many live streams on this server; retry shortly.", headers={"Retry-After": "5"}
        )
    try:
        # Subscribe before reading the backlog, so nothing committed in between falls into a gap.
        pubsub = get_redis().pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call, unused-ignore]
        pubsub.subscribe(channel())
    except redis.RedisError as exc:
        slots.release()
        log.warning("live stream unavailable", extra={"error": type(exc).__name__})
        raise APIError(503, "stream_unavailable", "The live stream is unavailable; retry later.") from None
    try:
        backlog = missed_changes(last_id) if last_id is not None else []
    except Exception:
        slots.release()
        pubsub.close()
        raise
    response = Response(_stream(pubsub, backlog, last_id, settings), mimetype="text/event-stream")
    # The server closes the response when the stream ends or the client goes away, started or not.
    response.call_on_close(slots.release)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


@bp.get("/admin/live")
@require_role("admin")
def live_users() -> str:
    """The user table, updated in place from ``/events/users`` (see :mod:`web.console_live`)."""
    return console_live.live_page()
