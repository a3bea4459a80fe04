"""The webhook inbox: every accepted delivery, keyed by ``jti``, and its way from ``received`` to ``applied``.

Statuses: ``queued`` (a message for it was sent, or is about to be), ``received`` (accepted but no message is in
the broker: the publish failed), ``applied``, ``ignored`` (nothing to do for this type) and ``failed`` (gave up; an
admin can replay it). The relay re-enqueues ``received`` events and ``queued`` ones whose message was lost.

Functions take an open ``Session`` and never commit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, or_, select, text, update
from sqlalchemy.orm import Session

from models.settings import INBOX_CLOCK_SKEW_SECONDS
from models.tables import EVENT_STATUSES, WebhookEvent

EVENT_URI_MARKER = "/event-type/"
DONE_STATUSES = ("applied", "ignored")
REPLAYABLE_STATUSES = ("failed", "received", "queued")


class InvalidEnvelope(ValueError):
    """The body is JSON but not an Asgardeo event envelope; the message says what is wrong."""


@dataclass(frozen=True)
class Envelope:
    """The parts of a delivery the inbox indexes; ``body`` is the whole parsed delivery."""

    jti: str
    iat: int
    event_uri: str
    event_type: str
    asgardeo_id: str | None
    body: dict[str, Any]

    @property
    def event(self) -> dict[str, Any]:
        value = self.body["events"][self.event_uri]
        return value if isinstance(value, dict) else {}


def parse_envelope(data: object) -> Envelope:
    """Check the envelope (``jti``, ``iat`` in epoch ms, exactly one ``events`` entry); other fields are optional."""
    if not isinstance(data, dict):
        raise InvalidEnvelope("the body must be a JSON object")
    jti = data.get("jti")
    if not isinstance(jti, str) or not jti.strip() or len(jti) > 128:
        raise InvalidEnvelope("jti must be a non-empty string of at most 128 characters")
    iat = data.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int) or iat <= 0 or iat >= 2**63:
        raise InvalidEnvelope("iat must be a positive integer (epoch milliseconds)")
    events = data.get("events")
    if not isinstance(events, dict) or len(events) != 1:
        raise InvalidEnvelope("events must be an object with exactly one entry")
    ((uri, event),) = events.items()
    if not uri or len(uri) > 300:
        raise InvalidEnvelope("the event URI must be a non-empty string of at most 300 characters")
    if event is not None and not isinstance(event, dict):
        raise InvalidEnvelope("the event entry must be an object")
    event_type = uri.rsplit("/", 1)[-1] if EVENT_URI_MARKER in uri else uri
    if not event_type or len(event_type) > 64:
        raise InvalidEnvelope("the event type must be a non-empty name of at most 64 characters")
    user = (event or {}).get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    if not isinstance(user_id, str) or not user_id or len(user_id) > 64:
        user_id = None
    return Envelope(jti=jti, iat=iat, event_uri=uri, event_type=event_type, asgardeo_id=user_id, body=data)


def stored_event(row: WebhookEvent) -> dict[str, Any]:
    """The event entry of a stored delivery. The intake parsed and checked the envelope before storing it, and the
    row's columns hold what it found (type, user id, ``iat``), so this is a lookup, not a second parse.

    Raises :class:`InvalidEnvelope` for a payload that lacks the entry its row names (a row not made by the intake).
    """
    events = row.payload.get("events") if isinstance(row.payload, dict) else None
    if not isinstance(events, dict) or row.event_uri not in events:
        raise InvalidEnvelope("the stored payload has no entry for its event URI")
    value = events[row.event_uri]
    return value if isinstance(value, dict) else {}


def check_age(
    iat_ms: int, *, now_ms: int, max_age_seconds: int, max_skew_seconds: int = INBOX_CLOCK_SKEW_SECONDS
) -> str | None:
    """Why an event's time is unacceptable (too old for the retention window, or in the future), or ``None``.

    A future ``iat`` is refused because it would become the user's ``source_version`` and make every real change
    until then look stale.
    """
    if iat_ms < now_ms - max_age_seconds * 1000:
        return "stale"
    if iat_ms > now_ms + max_skew_seconds * 1000:
        return "future"
    return None


# One statement for any number of rows (arrays, not a VALUES list), so psycopg prepares it once. ``ORDER BY ord``
# inserts in the caller's order: of two rows with one ``jti``, the first is stored.
_INSERT_SQL = text(
    """
INSERT INTO webhook_events (jti, event_type, event_uri, asgardeo_user_id, iat, payload, status, queued_at)
SELECT jti, event_type, event_uri, asgardeo_user_id, iat, CAST(payload AS jsonb), 'queued', now()
FROM unnest(
    CAST(:jti AS text[]), CAST(:event_type AS text[]), CAST(:event_uri AS text[]),
    CAST(:asgardeo_user_id AS text[]), CAST(:iat AS bigint[]), CAST(:payload AS text[])
) WITH ORDINALITY AS t(jti, event_type, event_uri, asgardeo_user_id, iat, payload, ord)
ORDER BY ord
ON CONFLICT (jti) DO NOTHING
RETURNING id, jti
"""
)


def insert_events(conn: Session | Connection, deliveries: Sequence[tuple[Envelope, str | None]]) -> list[int | None]:
    """Insert events as ``queued`` (the caller publishes right after commit): each one's id, ``None`` for a known
    ``jti`` (already stored, or earlier in ``deliveries``).

    Marking them ``queued`` up front saves the intake a second write; if the publish fails the caller flips them to
    ``received`` (:func:`mark_received`), and if the process dies in between the relay finds them stuck in
    ``queued``. A raw body (the delivery as received) is stored as is, saving a re-serialisation on the intake's
    hot path. Raises ``DataError`` for the whole statement when Postgres refuses any one row (a ``\\u0000`` in a
    JSON string).
    """
    params: dict[str, list[Any]] = {
        "jti": [],
        "event_type": [],
        "event_uri": [],
        "asgardeo_user_id": [],
        "iat": [],
        "payload": [],
    }
    for envelope, raw_body in deliveries:
        params["jti"].append(envelope.jti)
        params["event_type"].append(envelope.event_type)
        params["event_uri"].append(envelope.event_uri)
        params["asgardeo_user_id"].append(envelope.asgardeo_id)
        params["iat"].append(envelope.iat)
        params["payload"].append(raw_body if raw_body is not None else json.dumps(envelope.body))
    stored = {jti: event_id for event_id, jti in conn.execute(_INSERT_SQL, params)}
    return [stored.pop(envelope.jti, None) for envelope, _ in deliveries]


def insert_event(conn: Session | Connection, envelope: Envelope, raw_body: str | None = None) -> int | None:
    """:func:`insert_events` for one event."""
    return insert_events(conn, [(envelope, raw_body)])[0]


# Both payloads as Postgres's jsonb prints them, so key order and whitespace do not count as a difference.
_COMPARE_SQL = text(
    """
SELECT encode(sha256(convert_to(payload::text, 'UTF8')), 'hex') AS stored,
       encode(sha256(convert_to(CAST(:body AS jsonb)::text, 'UTF8')), 'hex') AS received
FROM webhook_events WHERE jti = :jti
"""
)


def body_conflict(conn: Session | Connection, jti: str, raw_body: str) -> tuple[str, str] | None:
    """``(stored, received)`` SHA-256 digests when the event stored under ``jti`` holds another body than
    ``raw_body``; ``None`` when they are the same JSON (a retry) or nothing is stored under ``jti``."""
    row = conn.execute(_COMPARE_SQL, {"jti": jti, "body": raw_body}).one_or_none()
    if row is None or row.stored == row.received:
        return None
    return str(row.stored), str(row.received)


def mark_received(session: Session | Connection, event_ids: Sequence[int]) -> None:
    """No message is in the broker for these events (the publish failed); the relay will send them."""
    if event_ids:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_(list(event_ids)), WebhookEvent.status == "queued")
            .values(status="received", queued_at=None, updated_at=func.now())
        )


def claim_for_apply(session: Session, event_ids: Iterable[int]) -> dict[int, WebhookEvent]:
    """Lock several events for applying, by id, leaving out the unknown and the done ones. Locked in id order, so two
    batches that share events (a relayed one and the original) wait for each other rather than deadlock."""
    rows = session.execute(
        select(WebhookEvent).where(WebhookEvent.id.in_(list(event_ids))).order_by(WebhookEvent.id).with_for_update()
    ).scalars()
    return {row.id: row for row in rows if row.status not in DONE_STATUSES}


# One statement for a whole batch's outcomes. Set through the ORM, each row was its own UPDATE, flushed by the
# next event's first statement: a fifth of the worker's CPU per event. clock_timestamp(), not now(): processed_at is
# when the event was done (the lag figures read it), not when its transaction began.
_FINISH_SQL = text(
    """
UPDATE webhook_events AS e
SET status = o.status, attempts = e.attempts + 1, last_error = o.note,
    processed_at = clock_timestamp(), updated_at = clock_timestamp()
FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS text[]), CAST(:notes AS text[])) AS o(id, status, note)
WHERE e.id = o.id
"""
)


def finish(session: Session, outcomes: Sequence[tuple[int, str, str | None]]) -> None:
    """Record the outcomes ``(event id, status, note)`` of an apply, in the same transaction as its user writes."""
    if not outcomes:
        return
    unknown = {status for _, status, _ in outcomes} - set(EVENT_STATUSES)
    if unknown:
        raise ValueError(f"unknown event status {sorted(unknown)!r}")
    ids, statuses, notes = zip(*outcomes, strict=True)
    session.execute(_FINISH_SQL, {"ids": list(ids), "statuses": list(statuses), "notes": list(notes)})


def record_attempt(session: Session, event_id: int, error: str) -> None:
    """Count a failed attempt that will be retried (in its own transaction: the attempt's own rolled back)."""
    session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status.not_in(DONE_STATUSES))
        .values(attempts=WebhookEvent.attempts + 1, last_error=error[:2000], updated_at=func.now())
    )


def mark_failed(session: Session, event_id: int, error: str) -> None:
    """Give up on an event: it stays ``failed`` with its error until an admin replays it."""
    session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status.not_in(DONE_STATUSES))
        .values(
            status="failed",
            attempts=WebhookEvent.attempts + 1,
            last_error=error[:2000],
            processed_at=func.now(),
            updated_at=func.now(),
        )
    )


def claim_for_relay(session: Session, *, requeue_after_seconds: int, limit: int) -> list[int]:
    """Events to send again, marked ``queued`` now: every ``received`` one and ``queued`` ones older than the limit.

    ``FOR UPDATE SKIP LOCKED`` lets two relays (or a relay and an admin replay) run at once without sending an
    event twice in one round.
    """
    cutoff = datetime.now(UTC) - timedelta(seconds=requeue_after_seconds)
    return _claim(
        session,
        or_(
            WebhookEvent.status == "received",
            (WebhookEvent.status == "queued") & (WebhookEvent.queued_at < cutoff),
        ),
        limit,
    )


def _claim(session: Session, condition: ColumnElement[bool], limit: int) -> list[int]:
    """Up to ``limit`` matching events, oldest first, locked (skipping rows another claimer holds) and marked
    ``queued``."""
    ids = list(
        session.execute(
            select(WebhookEvent.id)
            .where(condition)
            .order_by(WebhookEvent.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    _mark_queued(session, ids)
    return ids


def _mark_queued(session: Session, event_ids: Sequence[int]) -> None:
    if event_ids:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_(list(event_ids)))
            .values(status="queued", queued_at=func.now(), updated_at=func.now())
        )


def mark_for_replay(session: Session, event_id: int) -> WebhookEvent | None:
    """Queue one event again (an admin's replay); ``None`` when unknown. Raises ``ValueError`` when already done."""
    row = session.execute(
        select(WebhookEvent).where(WebhookEvent.id == event_id).with_for_update()
    ).scalar_one_or_none()
    if row is None:
        return None
    if row.status not in REPLAYABLE_STATUSES:
        raise ValueError(f"event {event_id} is {row.status}; only {', '.join(REPLAYABLE_STATUSES)} events replay")
    _mark_queued(session, [row.id])
    return row


def claim_failed_for_replay(session: Session, *, limit: int) -> list[int]:
    """Queue up to ``limit`` failed events again, oldest first."""
    return _claim(session, WebhookEvent.status == "failed", limit)


def list_events(
    session: Session,
    *,
    status: str | None = None,
    event_type: str | None = None,
    asgardeo_id: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[WebhookEvent]:
    """Newest first; page with ``before_id`` = the last id of the previous page."""
    query = select(WebhookEvent).order_by(WebhookEvent.id.desc()).limit(limit)
    if status is not None:
        query = query.where(WebhookEvent.status == status)
    if event_type is not None:
        query = query.where(WebhookEvent.event_type == event_type)
    if asgardeo_id is not None:
        query = query.where(WebhookEvent.asgardeo_id == asgardeo_id)
    if before_id is not None:
        query = query.where(WebhookEvent.id < before_id)
    return list(session.execute(query).scalars())


def get_event(session: Session, event_id: int) -> WebhookEvent | None:
    return session.get(WebhookEvent, event_id)


def count_by_status(session: Session) -> Mapping[str, int]:
    rows = session.execute(select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)).all()
    return {status: int(count) for status, count in rows}


def count_with_status(session: Session, status: str) -> int:
    return int(session.execute(select(func.count()).where(WebhookEvent.status == status)).scalar_one())


def last_received_before(session: Session, instant: datetime) -> datetime | None:
    """When the newest delivery accepted before ``instant`` was received (None when there is none)."""
    return session.scalar(select(func.max(WebhookEvent.received_at)).where(WebhookEvent.received_at < instant))


def event_types(session: Session) -> list[str]:
    """The event types the inbox holds, for the console's filter (a handful; the column is indexed)."""
    return list(session.execute(select(WebhookEvent.event_type).distinct().order_by(WebhookEvent.event_type)).scalars())
