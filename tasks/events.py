"""Applying inbox events on a worker, re-sending stranded ones, and the lean publisher the intake uses.

``events.apply`` takes an inbox row id. In one transaction it locks the row, maps the event to the user rules of
:mod:`models.users` (stale guard, tombstones, audit, session revocation all live there) and marks the row done, so a
worker killed mid-task leaves nothing half-applied and the redelivered message applies it once. Changes are
published to the live stream after the commit; partial events (a profile delta, a status flip) also ask for a
coalesced SCIM refresh of the user.

``events.relay`` (beat, every 30 s) re-sends events that have no message in the broker: ``received`` ones (the
intake's publish failed) and ``queued`` ones older than ``EVENT_REQUEUE_AFTER_SECONDS`` (the message was lost).
Both it and the web tier's intake (:mod:`web.intake`) send ``events.apply`` through :class:`ApplyPublisher`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import amqp.exceptions
import kombu.exceptions
import redis
from celery import Task
from sqlalchemy import exc as sa_exc

from models import directory_roles, inbox, logs, security_events, sign_in_events
from models.attributes import user_fields
from models.db import unit_of_work
from models.settings import get_settings
from models.tables import WebhookEvent
from models.users import Change, UserRecord, apply_user_patch, upsert_users
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
EVENTS_QUEUE = "events"
RELAY_BATCH = 500
RELAY_MAX_BATCHES = 20

# One table maps WSO2 claim URIs to user fields. ``emailAddresses`` (multi-valued) only fills ``email`` when the
# primary ``emailaddress`` claim is absent from the same event.
CLAIM_FIELDS: Mapping[str, str] = {
    "http://wso2.org/claims/username": "username",
    "http://wso2.org/claims/emailaddress": "email",
    "http://wso2.org/claims/emailAddresses": "email",
    "http://wso2.org/claims/givenname": "first_name",
    "http://wso2.org/claims/lastname": "last_name",
    "http://wso2.org/claims/groups": "groups",
}
SECONDARY_CLAIMS = frozenset({"http://wso2.org/claims/emailAddresses"})

CREATE_EVENTS = frozenset({"userCreated", "registrationSuccess"})
STATUS_EVENTS: Mapping[str, str] = {
    "userDisabled": "inactive",
    "userAccountLocked": "inactive",
    "userEnabled": "active",
    "userAccountUnlocked": "active",
    "userDeleted": "deleted",
}
PROFILE_EVENT = "userProfileUpdated"
# A flip alone cannot say whether the user is still locked or disabled for the other reason: SCIM knows.
PARTIAL_EVENTS = frozenset({PROFILE_EVENT, "userDisabled", "userAccountLocked", "userEnabled", "userAccountUnlocked"})

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    # Two events creating one new user at once: the loser's retry finds the row.
    sa_exc.IntegrityError,
    # The Roles API read of a truncated role event: Asgardeo busy or unreachable.
    TransientError,
)


class PermanentEventError(ValueError):
    """The event cannot be applied however often it is tried; it is recorded as ``failed``."""


# --- mapping (pure) ------------------------------------------------------------------------------------------------


def _one(value: Any, name: str, *, multi_valued: bool) -> str | None:
    """The claim's value as text: the first of a JSON array, and of a comma-separated string only for a multi-valued
    claim (a single-valued one keeps its commas, as SCIM does: "Smith, Jr.")."""
    if isinstance(value, list):
        value = value[0] if value else None
    elif multi_valued and isinstance(value, str) and "," in value:
        value = value.split(",", 1)[0]
    if value is None or value == "":
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise PermanentEventError(f"claim for {name} is not a string")
    return str(value)


def _names(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    if not all(isinstance(item, str) for item in items):
        raise PermanentEventError("claim for groups is not a list of names")
    return items


def claims_to_fields(claims: object, *, removed: bool = False) -> dict[str, Any]:
    """User fields from a list of ``{"uri", "value"}`` claims; unknown URIs are skipped. The values get the rules
    SCIM resources get (:func:`models.attributes.user_fields`), so both paths write the same row.

    ``removed=True`` maps removed claims to empty values (``None``, or ``[]`` for groups).
    """
    if claims is None:
        return {}
    if not isinstance(claims, list):
        raise PermanentEventError("claims must be a list")
    raw: dict[str, Any] = {}
    primary: set[str] = set()
    for claim in claims:
        if not isinstance(claim, dict):
            raise PermanentEventError("each claim must be an object")
        uri = claim.get("uri")
        name = CLAIM_FIELDS.get(uri) if isinstance(uri, str) else None
        if name is None:
            continue
        if uri in SECONDARY_CLAIMS and name in primary:
            continue
        if uri not in SECONDARY_CLAIMS:
            primary.add(name)
        value = claim.get("value")
        if removed:
            raw[name] = [] if name == "groups" else None
        elif name == "groups":
            raw[name] = _names(value)
        else:
            raw[name] = _one(value, name, multi_valued=uri in SECONDARY_CLAIMS)
    if removed:
        return raw
    fields = user_fields(raw)
    if "groups" in fields:
        fields["groups"] = list(fields["groups"])
    return fields


@dataclass(frozen=True)
class Plan:
    """What one event asks of the user table: a full ``record``, a ``patch``, or nothing (``ignore`` says why)."""

    record: UserRecord | None = None
    patch: dict[str, Any] = field(default_factory=dict)
    refresh: bool = False
    ignore: str | None = None


def plan_event(event_type: str, event: Mapping[str, Any], asgardeo_id: str | None, iat: int) -> Plan:
    """Map one event to a user write. Pure: no I/O, so every event type is unit-tested."""
    if event_type not in CREATE_EVENTS and event_type not in STATUS_EVENTS and event_type != PROFILE_EVENT:
        return Plan(ignore=f"event type {event_type} is not applied to users")
    if asgardeo_id is None:
        return Plan(ignore="the event carries no user id")
    user = event.get("user")
    user = user if isinstance(user, dict) else {}
    if event_type in CREATE_EVENTS:
        fields = claims_to_fields(user.get("claims"))
        record = UserRecord(
            asgardeo_id=asgardeo_id,
            username=fields.get("username"),
            email=fields.get("email"),
            first_name=fields.get("first_name"),
            last_name=fields.get("last_name"),
            groups=tuple(fields.get("groups") or ()),
            status="active",
            source_version=iat,
        )
        return Plan(record=record)
    if event_type in STATUS_EVENTS:
        return Plan(patch={"status": STATUS_EVENTS[event_type]}, refresh=event_type in PARTIAL_EVENTS)
    patch = claims_to_fields(user.get("removedClaims"), removed=True)
    patch.update(claims_to_fields(user.get("addedClaims")))
    patch.update(claims_to_fields(user.get("updatedClaims")))
    return Plan(patch=patch, refresh=True)


# --- applying (one unit of work) -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: str
    changes: list[Change] = field(default_factory=list)
    refresh_user: str | None = None
    jti: str | None = None


def apply_event(event_id: int) -> Outcome:
    """Apply one inbox event and mark it done, in one transaction. Safe to re-run: a done event is skipped.

    Raises :class:`PermanentEventError` for an event that can never apply, and database errors for the caller to
    retry.
    """
    with unit_of_work() as session:
        row = inbox.claim_for_apply(session, event_id)
        if row is None:
            return Outcome(status="skipped")
        with logs.bind(jti=row.jti, user_id=row.asgardeo_user_id, event_type=row.event_type):
            return _apply_row(session, row)


def _apply_row(session: Any, row: WebhookEvent) -> Outcome:
    envelope = inbox.parse_envelope(row.payload)
    if row.event_type in security_events.HANDLED:
        return _apply_security_event(session, row, envelope.event)
    if row.event_type in ROLE_EVENTS:
        return _apply_role_event(session, row, envelope.event)
    if row.event_type in sign_in_events.HANDLED:
        return _record_sign_in_event(session, row, envelope.event)
    plan = plan_event(row.event_type, envelope.event, row.asgardeo_user_id, row.iat)
    if plan.ignore is not None:
        inbox.finish(session, row, "ignored", note=plan.ignore)
        log.info("event ignored", extra={"reason": plan.ignore})
        return Outcome(status="ignored", jti=row.jti)
    assert row.asgardeo_user_id is not None
    changes: list[Change] = []
    if plan.record is not None:
        result = upsert_users(
            session, [plan.record], source="webhook", event_jti=row.jti, role_map=get_settings().group_roles or None
        )
        changes = result.changes
    elif plan.patch:
        change = apply_user_patch(
            session, row.asgardeo_user_id, plan.patch, source_version=row.iat, source="webhook", event_jti=row.jti
        )
        changes = [change] if change is not None else []
    inbox.finish(session, row, "applied")
    log.info("event applied", extra={"changes": len(changes)})
    return Outcome(
        status="applied", changes=changes, refresh_user=row.asgardeo_user_id if plan.refresh else None, jti=row.jti
    )


def _apply_security_event(session: Any, row: WebhookEvent, event: Mapping[str, Any]) -> Outcome:
    """A session or credential event: it ends application sessions (``applied``) or changes nothing (``ignored``)."""
    result = security_events.apply_security_event(
        session,
        row.event_type,
        event,
        row.asgardeo_user_id,
        iat=row.iat,
        event_jti=row.jti,
        credential_ends_sessions=get_settings().credential_update_ends_sessions,
    )
    status = "applied" if result.change is not None else "ignored"
    inbox.finish(session, row, status, note=None if status == "applied" else result.note)
    log.info("security event handled", extra={"revoked": result.revoked, "outcome": status})
    return Outcome(status=status, changes=[result.change] if result.change else [], jti=row.jti)


def _record_sign_in_event(session: Any, row: WebhookEvent, event: Mapping[str, Any]) -> Outcome:
    """A login or token event: counted (``identity_events``) and attributed to the user it names, nothing else."""
    row.asgardeo_user_id = sign_in_events.named_user(session, event, row.asgardeo_user_id) or row.asgardeo_user_id
    metrics.inc("identity_events", event_type=row.event_type)
    inbox.finish(session, row, "ignored", note="recorded; login and token events change no user")
    return Outcome(status="ignored", jti=row.jti)


ROLE_EVENTS = frozenset({directory_roles.ROLE_USERS_UPDATED, "roleDeleted", "roleMetaUpdated"})


def _apply_role_event(session: Any, row: WebhookEvent, event: Mapping[str, Any]) -> Outcome:
    """A role event: grants and takes away mapped application roles (models/directory_roles.py).

    A member list Asgardeo cut (over 1,000) is replaced by the role's complete list from the SCIM2 Roles API, one
    request inside the shared SCIM budget, read while this event is held; a failed read retries the event.
    """
    if row.event_type == "roleMetaUpdated":
        directory_roles.parse_role(event)
        inbox.finish(session, row, "ignored", note="a renamed role keeps its grants: they follow the role's id")
        return Outcome(status="ignored", jti=row.jti)
    if row.event_type == "roleDeleted":
        role = directory_roles.parse_role(event)
        change = directory_roles.role_deleted_change(session, role)
        app_role = directory_roles.known_app_role(session, role.id)
    else:
        change = directory_roles.parse_member_change(event)
        role = change.role
        app_role = directory_roles.mapped_app_role(role, get_settings().asgardeo_roles) or (
            directory_roles.known_app_role(session, role.id)
        )
    if app_role is None:
        inbox.finish(session, row, "ignored", note="the role is not in ROLE_MAP")
        return Outcome(status="ignored", jti=row.jti)
    if change.truncated:
        members = ScimClient().get_role_members(role.id)
        change = (
            directory_roles.role_deleted_change(session, role)
            if members is None
            else directory_roles.full_membership_change(session, role, members)
        )
        log.info("role members read from the Roles API", extra={"role_id": role.id, "members": len(change.added)})
    result = directory_roles.apply_member_change(session, change, app_role, iat=row.iat, event_jti=row.jti)
    for user_id in result.kept_last_admin:
        record_warning(LAST_ADMIN_KEPT, user_id=user_id)
    inbox.finish(session, row, "applied", note="the last active admin kept admin" if result.kept_last_admin else None)
    log.info("role event applied", extra={"role_id": role.id, "changes": len(result.changes)})
    return Outcome(status="applied", changes=result.changes, jti=row.jti)


# Our own refusals say what is wrong with the event's shape and carry none of its values; anything else may (a database
# error quotes its statement), so only its kind is kept.
_DESCRIBED_ERRORS: tuple[type[BaseException], ...] = (
    PermanentEventError,
    inbox.InvalidEnvelope,
    security_events.MalformedSecurityEvent,
    directory_roles.MalformedRoleEvent,
)
SHORT_ERROR_CHARS = 200


def short_error(error: BaseException) -> str:
    """What an inbox row, the sync-health page and a log line may say about a failure: short, no personal data."""
    if isinstance(error, _DESCRIBED_ERRORS):
        return f"{type(error).__name__}: {error}"[:SHORT_ERROR_CHARS]
    sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
    return type(error).__name__ + (f" (SQLSTATE {sqlstate})" if isinstance(sqlstate, str) else "")


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
    """Records each retried attempt on the inbox row, and the final error once retries are exhausted."""

    def on_retry(self, exc: BaseException, task_id: str, args: Sequence[Any], kwargs: Any, einfo: Any) -> None:
        if args:
            _record(int(args[0]), exc, final=False)

    def on_failure(self, exc: BaseException, task_id: str, args: Sequence[Any], kwargs: Any, einfo: Any) -> None:
        if args:
            _record(int(args[0]), exc, final=True)


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
    """Apply inbox event ``event_id``; transient database errors retry with backoff, then the event is ``failed``."""
    if positive_id(event_id) is None:
        log.warning("events.apply called with a malformed event id; ignored", extra={"event_id": repr(event_id)[:40]})
        return "rejected"
    with logs.bind(event_id=event_id):
        try:
            outcome = apply_event(event_id)
        except (ValueError, sa_exc.DataError) as exc:
            # PermanentEventError, InvalidEnvelope, a field the user rules refuse, or a value Postgres refuses:
            # retrying cannot help.
            _record(event_id, exc, final=True)
            log.warning("event failed permanently", extra={"error": short_error(exc)})
            metrics.inc("events_applied", outcome="failed")
            return "failed"
        metrics.inc("events_applied", outcome=outcome.status)
        publish_changes(outcome.changes)
        if outcome.refresh_user is not None:
            try:
                request_user_refresh(outcome.refresh_user, trigger="event")
            except (kombu.exceptions.KombuError, redis.RedisError, OSError):
                # The event is applied; the nightly reconciliation covers a refresh that could not be queued.
                log.warning("user refresh could not be queued", extra={"user_id": outcome.refresh_user})
        return outcome.status


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
    """Sends ``events.apply`` messages with one kombu producer per thread.

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
        """Send one message per event, all in one Redis round trip; returns the ids not known to be sent.

        A failed round trip returns every id although some messages may have arrived: a second message for an
        event is harmless (``events.apply`` skips a done event), a missing one is not.
        """
        ids = list(event_ids)
        if not ids:
            return []
        try:
            producer = self._producer()
            with producer.batch(len(ids)):
                for event_id in ids:
                    self._publish_one(producer, event_id)
        except BROKER_ERRORS as exc:
            self._drop()
            log.warning("broker unreachable; the relay will send the events", extra={"error": type(exc).__name__})
            return ids
        return []

    def _publish_one(self, producer: Any, event_id: int) -> None:
        task_id = str(uuid.uuid4())
        message = app.amqp.as_task_v2(task_id, APPLY_TASK, args=[event_id], kwargs={}, ignore_result=True)
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
