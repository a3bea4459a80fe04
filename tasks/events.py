"""The Celery tasks over inbox events, and the lean publisher that sends ``events.apply_batch``.

``events.apply_batch`` takes a list of inbox row ids (the intake's publisher sends up to 20 per message) and applies
them in one transaction through :func:`models.events.apply_events`; if any of them fails it takes them again, each
through :func:`models.events.apply_event` in a transaction of its own (the rules and the row's status live there;
a partial event, a profile delta or a status flip, queues a coalesced SCIM refresh of its user before its commit).
After the commits it publishes the batch's changes to the live stream. An event that meets a transient error is
handed to ``events.apply``, which retries one event with backoff; an event that can never apply is recorded as
``failed``; an event whose refresh the broker refused stays ``queued``, with the rest of its batch, for the relay.

``events.relay`` (beat, every 30 s) re-sends events that have no message in the broker: ``received`` ones (the
intake's publish failed) and ``queued`` ones older than ``EVENT_REQUEUE_AFTER_SECONDS`` (the message was lost).
Both it and the web tier's intake (:mod:`web.intake`) send ``events.apply_batch`` through :class:`ApplyPublisher`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import amqp.exceptions
import kombu.exceptions
import redis
from celery import Task
from sqlalchemy import exc as sa_exc

from models import inbox, logs
from models.db import postgres_unreachable, unit_of_work
from models.events import AppliedEvent, ApplyServices, apply_event, apply_events, short_error
from models.settings import get_settings
from models.users import Change
from tasks import metrics
from tasks.app import app
from tasks.arguments import positive_id
from tasks.coalesce import request_user_refresh
from tasks.config_warnings import LAST_ADMIN_KEPT, record_warning
from tasks.errors import TransientError
from tasks.live import publish_changes
from tasks.scim import ScimClient

log = logging.getLogger(__name__)

APPLY_TASK = "events.apply"
APPLY_BATCH_TASK = "events.apply_batch"
# Events per ``events.apply_batch`` message: enough to spread Celery's cost per message thin, few enough that a
# burst still spreads over every worker process and that the last event of a batch waits little for the first.
APPLY_BATCH_SIZE = 20
# What a batch message may carry at most (a hand-sent or corrupt message beyond it is refused, not worked through).
APPLY_BATCH_MAX = 1000
EVENTS_QUEUE = "events"
RELAY_BATCH = 500
RELAY_MAX_BATCHES = 20

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    # Two events creating one new user at once: the loser's retry finds the row.
    sa_exc.IntegrityError,
    # Postgres ended the session of a transaction left idle too long (models.events.APPLY_IDLE_TIMEOUT): a worker
    # cut off mid-apply; nothing of it was committed.
    sa_exc.InternalError,
    # The Roles API read of a truncated role event: Asgardeo busy or unreachable.
    TransientError,
)


# What a publish to the broker raises when it cannot be done (kombu wraps most; a socket error may come through).
PUBLISH_ERRORS: tuple[type[BaseException], ...] = (kombu.exceptions.KombuError, redis.RedisError, OSError)

# An event that can never apply: PermanentEventError, InvalidEnvelope, a field the user rules refuse (ValueErrors),
# or a value Postgres refuses. Retrying cannot help.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (ValueError, sa_exc.DataError)

# What makes a batch fall back to one transaction per event: an event's permanent error, a transient one, or a
# refresh the broker refused.
ONE_BY_ONE_ERRORS: tuple[type[BaseException], ...] = (*PERMANENT_ERRORS, *TRANSIENT_ERRORS, *PUBLISH_ERRORS)


def _read_role_members(role_id: str) -> list[str] | None:
    return ScimClient().get_role_members(role_id)


def _request_refresh(asgardeo_id: str) -> None:
    request_user_refresh(asgardeo_id, trigger="event")


SERVICES = ApplyServices(
    read_role_members=_read_role_members,
    request_refresh=_request_refresh,
)


def report(outcome: AppliedEvent) -> None:
    """Count a committed event's outcome and report what it did beyond the database."""
    metrics.inc("events_applied", outcome=outcome.status)
    if outcome.sign_in_event is not None:
        metrics.inc("identity_events", event_type=outcome.sign_in_event)
    for user_id in outcome.kept_last_admin:
        record_warning(LAST_ADMIN_KEPT, user_id=user_id)


def _record(event_id: int, error: BaseException, *, final: bool) -> None:
    message = short_error(error)
    try:
        with unit_of_work() as session:
            if final:
                inbox.mark_failed(session, event_id, message)
            else:
                inbox.record_attempt(session, event_id, message)
    except sa_exc.SQLAlchemyError:
        # Postgres is the reason we are here; the relay or a later retry will see the event again.
        log.warning("could not record the event's error", extra={"event_id": event_id})


class EventTask(Task):  # type: ignore[misc]
    """Records each retried attempt on the inbox row, and the final error once retries are exhausted: the event is
    ``failed``, unless Postgres was unreachable at the last try (then it stays ``queued`` for the relay)."""

    def on_retry(self, exc: BaseException, task_id: str, args: Sequence[Any], kwargs: Any, einfo: Any) -> None:
        if args:
            _record(int(args[0]), exc, final=False)

    def on_failure(self, exc: BaseException, task_id: str, args: Sequence[Any], kwargs: Any, einfo: Any) -> None:
        if not args:
            return
        event_id = int(args[0])
        if postgres_unreachable(exc):
            # Retries spent while Postgres was away (it may be back by now, so this can be written): never the
            # event's fault. Left queued, the relay sends it again; failed, it would wait for an admin's replay.
            log.warning(
                "event left for the relay: Postgres was unreachable at its last retry",
                extra={"event_id": event_id, "error": short_error(exc)},
            )
            _record(event_id, exc, final=False)
        else:
            _record(event_id, exc, final=True)


_settings = get_settings()


@app.task(
    name=APPLY_TASK,
    base=EventTask,
    bind=True,
    acks_late=True,
    ignore_result=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    retry_backoff_max=_settings.event_retry_backoff_max_seconds,
    retry_jitter=True,
    max_retries=_settings.event_max_retries,
)
def apply(self: Task, event_id: int) -> str:
    """Apply inbox event ``event_id``; transient database errors retry with backoff, then the event is ``failed``
    (or left to the relay, if Postgres itself was unreachable at the last try).

    Since the intake sends batches (:func:`apply_batch`), this carries the events a batch could not apply at once
    (they get this task's retries and backoff) and the messages an earlier release sent.
    """
    if positive_id(event_id) is None:
        log.warning("events.apply called with a malformed event id; ignored", extra={"event_id": repr(event_id)[:40]})
        return "rejected"
    try:
        outcome = apply_recorded(event_id)
    except PUBLISH_ERRORS as exc:
        # Its refresh could not be queued, so nothing of it was committed; a retry would need the same broker.
        log.warning("event left for the relay", extra={"event_id": event_id, "error": short_error(exc)})
        return "left for the relay"
    publish_changes(outcome.changes)
    return outcome.status


def apply_recorded(event_id: int) -> AppliedEvent:
    """Apply one event and count it; the caller publishes the outcome's changes to the live stream.

    A permanent error marks the event ``failed`` (that is the outcome); a transient one propagates, for the caller
    to retry, and so does a refresh the broker refused (:data:`PUBLISH_ERRORS`), for the caller to leave the event
    to the relay.
    """
    with logs.bind(event_id=event_id):
        try:
            applied = apply_event(event_id, services=SERVICES)
        except PERMANENT_ERRORS as exc:
            _record(event_id, exc, final=True)
            log.warning("event failed permanently", extra={"error": short_error(exc)})
            applied = AppliedEvent(status="failed")
        report(applied)
        return applied


@app.task(name=APPLY_BATCH_TASK, acks_late=True, ignore_result=True)
def apply_batch(event_ids: list[int]) -> int:
    """Apply several inbox events in order, in one transaction; returns how many were handled here.

    Celery's own cost per message (the broker's round trips, the prefork pool's hand-off, the monitoring events) was
    larger than an event's whole apply, so the publisher sends up to :data:`APPLY_BATCH_SIZE` ids per message; the
    batch's changes go to the live stream in one message at its end. When any event of the batch fails, nothing of
    the batch is committed and :func:`_apply_one_by_one` takes the events again, one transaction each. Safe to
    re-run: a done event is skipped.
    """
    ids = event_ids if isinstance(event_ids, list) else []
    if not ids or len(ids) > APPLY_BATCH_MAX or any(positive_id(event_id) is None for event_id in ids):
        log.warning("events.apply_batch called with malformed event ids; ignored", extra={"ids": repr(event_ids)[:80]})
        return 0
    changes: list[Change] = []
    try:
        try:
            outcomes = apply_events(ids, services=SERVICES)
        except ONE_BY_ONE_ERRORS as exc:
            log.info("batch rolled back; applying its events one by one", extra={"error": short_error(exc)})
            return _apply_one_by_one(ids, changes)
        for outcome in outcomes:
            report(outcome)
            changes.extend(outcome.changes)
        return len(ids)
    finally:
        publish_changes(changes)


def _apply_one_by_one(ids: list[int], changes: list[Change]) -> int:
    """Apply the events one transaction each, adding to ``changes``; returns how many were handled here.

    A permanent error fails only its event. At the first transient error the event and every one after it go to
    :func:`apply`, one message each, with that task's retries and backoff: a database that is away is not tried once
    per event here. If even that send fails the task fails, its events stay ``queued``, and the relay re-sends them;
    so do the event whose refresh the broker refused and the rest.
    """
    for done, event_id in enumerate(ids):
        try:
            changes.extend(apply_recorded(event_id).changes)
        except TRANSIENT_ERRORS as exc:
            rest = ids[done:]
            log.warning("events left for one-by-one retries", extra={"count": len(rest), "error": short_error(exc)})
            for later in rest:
                apply.apply_async((later,))
            return done
        except PUBLISH_ERRORS as exc:
            # The broker refused a refresh, so it would refuse the retries' messages too: this event (nothing of
            # it committed) and the rest stay queued, and the relay re-sends them.
            log.warning("events left for the relay", extra={"count": len(ids) - done, "error": short_error(exc)})
            return done
    return len(ids)


@app.task(name="events.relay", acks_late=True, ignore_result=True)
def relay() -> int:
    """Re-send stranded events (see the module docstring). Returns how many were sent; safe to run concurrently."""
    settings = get_settings()
    sent = 0
    for _ in range(RELAY_MAX_BATCHES):
        with unit_of_work() as session:
            ids = inbox.claim_for_relay(
                session, requeue_after_seconds=settings.event_requeue_after_seconds, limit=RELAY_BATCH
            )
        if not ids:
            break
        unsent = get_publisher().publish(ids)
        sent += len(ids) - len(unsent)
        if unsent:
            with unit_of_work() as session:
                inbox.mark_received(session, unsent)
            break
        if len(ids) < RELAY_BATCH:
            break
    if sent:
        log.info("relay re-sent events", extra={"count": sent})
    return sent


# --- the lean publisher ---------------------------------------------------------------------------------------------

# Fail fast when the broker is away: one quick reconnect, short socket timeouts. The event is already durable in
# Postgres, so a slow publish would only hold a web thread for nothing.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.05, "interval_max": 0.05}
PUBLISH_TRANSPORT_OPTIONS = {"socket_connect_timeout": 0.5, "socket_timeout": 1.0}
# An AMQP connection is a handshake of several round trips, which a busy RabbitMQ can take seconds to finish; the
# publisher runs off the request threads, so waiting costs no answer, and giving up only delays the event to the relay.
PUBLISH_CONNECT_TIMEOUT = 5.0
# What a publish raises when the broker is away or refuses a message, on Redis and on RabbitMQ (where a nack under
# publisher confirms is ``MessageNacked``: the message was not stored, so the relay must send it).
BROKER_ERRORS = (
    kombu.exceptions.KombuError,
    redis.RedisError,
    amqp.exceptions.AMQPError,
    amqp.exceptions.MessageNacked,
    OSError,
)


class ApplyPublisher:
    """Sends ``events.apply_batch`` messages with one kombu producer per thread.

    ``apply_async`` costs far more per call (signals, a ``task-sent`` event publish, result bookkeeping); the
    worker cannot tell the difference, since the message is built by Celery's own ``as_task_v2``. A call's messages
    go out in one pipelined round trip (kombu's ``Producer.batch``): sent one by one, each paid a round trip and a
    new Redis client, most of the web process's time under load.
    """

    def __init__(self, broker_url: str | None = None, transport_options: Mapping[str, Any] | None = None) -> None:
        self.broker_url = broker_url
        self.transport_options = {**PUBLISH_TRANSPORT_OPTIONS, **(transport_options or {})}
        self._local = threading.local()

    def _producer(self) -> Any:
        producer = getattr(self._local, "producer", None)
        if producer is None:
            connection = app.connection_for_write(
                self.broker_url, transport_options=self.transport_options, connect_timeout=PUBLISH_CONNECT_TIMEOUT
            )
            producer = connection.Producer(serializer="json")
            self._local.producer = producer
            self._local.declared = False
        return producer

    def _drop(self) -> None:
        producer = getattr(self._local, "producer", None)
        self._local.producer = None
        if producer is not None:
            try:
                producer.connection.release()
            except Exception:  # closing a broken connection may fail in any way; it is gone anyway
                log.debug("closing a broken broker connection failed")

    def publish(self, event_ids: Iterable[int]) -> list[int]:
        """Send ``events.apply_batch`` messages of up to :data:`APPLY_BATCH_SIZE` events each, all in one round trip;
        returns the ids not known to be sent.

        A failed round trip returns every id although some messages may have arrived: a second message for an
        event is harmless (a done event is skipped), a missing one is not.
        """
        ids = list(event_ids)
        if not ids:
            return []
        try:
            producer = self._producer()
            chunks = [ids[i : i + APPLY_BATCH_SIZE] for i in range(0, len(ids), APPLY_BATCH_SIZE)]
            with producer.batch(len(chunks)):
                for chunk in chunks:
                    self._publish_one(producer, chunk)
        except BROKER_ERRORS as exc:
            self._drop()
            log.warning("broker unreachable; the relay will send the events", extra={"error": type(exc).__name__})
            return ids
        return []

    def _publish_one(self, producer: Any, event_ids: list[int]) -> None:
        task_id = str(uuid.uuid4())
        message = app.amqp.as_task_v2(task_id, APPLY_BATCH_TASK, args=[event_ids], kwargs={}, ignore_result=True)
        declare = None if self._local.declared else [app.amqp.queues[EVENTS_QUEUE]]
        producer.publish(
            message.body,
            exchange="",
            routing_key=EVENTS_QUEUE,
            headers=message.headers,
            declare=declare,
            retry=True,
            retry_policy=PUBLISH_RETRY_POLICY,
            delivery_mode=2,
            **message.properties,
        )
        self._local.declared = True


_publisher = ApplyPublisher()


def get_publisher() -> ApplyPublisher:
    """This worker's publisher, for the relay (each web app makes its own, see :mod:`web.intake`)."""
    return _publisher
