"""What a webhook event does to the user table: the event-to-fields rules and the apply transaction.

:func:`apply_events` takes inbox row ids. In one transaction it locks the rows and their users, maps each event to the
user rules of :mod:`models.users` (stale guard, tombstones, audit, session revocation all live there) and marks the
rows done, so a worker killed mid-batch leaves nothing half-applied and the redelivered message applies it once. Its
caller falls back to one transaction per event (:func:`apply_event`, the same for one id) when any of them fails. A
partial event's SCIM refresh is requested inside the transaction, before the commit, so the event is never applied
without it. What follows the commit (the live stream) is the caller's: :class:`AppliedEvent` says what changed.

The mapping (:func:`plan_event`, :func:`claims_to_fields`) is pure, so every event type is unit-tested.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from models import directory_roles, inbox, logs, security_events, sign_in_events
from models.attributes import user_fields
from models.db import unit_of_work
from models.settings import get_settings
from models.tables import WebhookEvent
from models.users import Change, UserRecord, apply_user_patch, lock_users, upsert_users

log = logging.getLogger(__name__)

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

# How long Postgres lets an apply transaction sit idle before it ends the session. A worker cut off from the network
# mid-transaction keeps its row and user locks until the server notices, and Postgres does not notice a silent peer
# for hours; meanwhile every other worker's batch naming one of those users waits, until no pool process is left to
# answer (the multi-host chaos test's restarted worker did not answer a ping in 60 s). An apply sends its statements
# back to back; only a role event's Roles API read (rate-limited) waits between them, and this is well above it.
APPLY_IDLE_TIMEOUT = "15s"
_BOUND_IDLE = text(f"SET LOCAL idle_in_transaction_session_timeout = '{APPLY_IDLE_TIMEOUT}'")


@dataclass(frozen=True)
class ApplyServices:
    """What applying needs beyond the database, passed in by tasks/ (models/ talks to neither Asgardeo nor Redis)."""

    # The member ids of an Asgardeo role from the SCIM2 Roles API (``None``: the role is gone); may raise to retry.
    read_role_members: Callable[[str], list[str] | None]
    # Asked for a SCIM refresh of a user whose event was partial, before the event's commit; raises when the request
    # cannot be queued, and the event stays unapplied. Queued after the commit, the refresh was lost when the broker
    # refused it or the worker died in between, and a user first seen through an update kept no username.
    request_refresh: Callable[[str], None]


@dataclass
class AppliedEvent:
    """What applying one event did, for the caller to finish after the commit."""

    status: str
    changes: list[Change] = field(default_factory=list)
    jti: str | None = None
    # Why an event changed nothing, or what to know about it; kept on its inbox row.
    note: str | None = None
    # For the caller to report once committed (a batch rolled back and taken again one by one would otherwise report
    # them twice): the type of a login or token event, which is counted; the local ids of users who kept admin
    # because a role event would have left no active admin.
    sign_in_event: str | None = None
    kept_last_admin: list[int] = field(default_factory=list)


def apply_event(event_id: int, *, services: ApplyServices) -> AppliedEvent:
    """Apply one inbox event and mark it done, in one transaction (:func:`apply_events` for one id). Safe to re-run: a
    done event is skipped.

    Raises :class:`PermanentEventError` (or another ``ValueError``) for an event that can never apply, and database
    errors (or the role reader's, or the refresh request's) for the caller to retry.
    """
    return apply_events([event_id], services=services)[0]


def apply_events(event_ids: Sequence[int], *, services: ApplyServices) -> list[AppliedEvent]:
    """Apply several inbox events in order, in one transaction; one outcome per id (``skipped``: unknown or done).

    A transaction per event cost the worker a session, a claim and a commit each, about a quarter of its CPU per
    event; here the batch shares them, and its outcomes are recorded in one statement at the end. Every user the
    batch names is locked first, at once, in the one order all writers use, so batches that share users cannot
    deadlock (a role event's members are locked later, and a deadlock there is one of the errors below). Any error
    raises with nothing committed, and the caller applies the events one transaction each (:func:`apply_event`),
    where each event's own failure rules hold. A refresh a rolled-back batch requested is requested again then, and
    is harmless.
    """
    with unit_of_work() as session:
        session.execute(_BOUND_IDLE)
        rows = inbox.claim_for_apply(session, event_ids)
        lock_users(session, {row.asgardeo_id for row in rows.values() if row.asgardeo_id is not None})
        applied: list[AppliedEvent] = []
        finished: list[tuple[int, str, str | None]] = []
        for event_id in event_ids:
            row = rows.pop(event_id, None)  # popped: an id listed twice is done the second time
            if row is None:
                applied.append(AppliedEvent(status="skipped"))
                continue
            with logs.bind(event_id=event_id, jti=row.jti, user_id=row.asgardeo_id, event_type=row.event_type):
                outcome = _apply_row(session, row, services)
            applied.append(outcome)
            finished.append((event_id, outcome.status, outcome.note))
        inbox.finish(session, finished)
        return applied


def _apply_row(session: Session, row: WebhookEvent, services: ApplyServices) -> AppliedEvent:
    event = inbox.stored_event(row)
    if row.event_type in security_events.HANDLED:
        return _apply_security_event(session, row, event)
    if row.event_type in ROLE_EVENTS:
        return _apply_role_event(session, row, event, services)
    if row.event_type in sign_in_events.HANDLED:
        return _record_sign_in_event(session, row, event, services)
    plan = plan_event(row.event_type, event, row.asgardeo_id, row.iat)
    if plan.ignore is not None:
        log.info("event ignored", extra={"reason": plan.ignore})
        return AppliedEvent(status="ignored", jti=row.jti, note=plan.ignore)
    assert row.asgardeo_id is not None
    changes: list[Change] = []
    if plan.record is not None:
        result = upsert_users(
            session,
            [plan.record],
            source="webhook",
            event_jti=row.jti,
            role_map=get_settings().group_roles or None,
            users_locked=True,
        )
        changes = result.changes
    elif plan.patch:
        change = apply_user_patch(
            session,
            row.asgardeo_id,
            plan.patch,
            source_version=row.iat,
            source="webhook",
            event_jti=row.jti,
            users_locked=True,
        )
        changes = [change] if change is not None else []
    if plan.refresh:
        # A partial event cannot say everything about the user (one first seen through it has no username yet).
        services.request_refresh(row.asgardeo_id)
    log.info("event applied", extra={"changes": len(changes)})
    return AppliedEvent(status="applied", changes=changes, jti=row.jti)


def _apply_security_event(session: Session, row: WebhookEvent, event: Mapping[str, Any]) -> AppliedEvent:
    """A session or credential event: it ends application sessions (``applied``) or changes nothing (``ignored``)."""
    result = security_events.apply_security_event(
        session,
        row.event_type,
        event,
        row.asgardeo_id,
        iat=row.iat,
        event_jti=row.jti,
        credential_ends_sessions=get_settings().credential_update_ends_sessions,
    )
    status = "applied" if result.change is not None else "ignored"
    log.info("security event handled", extra={"revoked": result.revoked, "outcome": status})
    return AppliedEvent(
        status=status,
        changes=[result.change] if result.change else [],
        jti=row.jti,
        note=None if status == "applied" else result.note,
    )


def _record_sign_in_event(
    session: Session, row: WebhookEvent, event: Mapping[str, Any], services: ApplyServices
) -> AppliedEvent:
    """A login or token event: counted and attributed to the user it names, nothing else."""
    row.asgardeo_id = sign_in_events.named_user(session, event, row.asgardeo_id) or row.asgardeo_id
    return AppliedEvent(
        status="ignored",
        jti=row.jti,
        note="recorded; login and token events change no user",
        sign_in_event=row.event_type,
    )


ROLE_EVENTS = frozenset({directory_roles.ROLE_USERS_UPDATED, "roleDeleted", "roleMetaUpdated"})


def _apply_role_event(
    session: Session, row: WebhookEvent, event: Mapping[str, Any], services: ApplyServices
) -> AppliedEvent:
    """A role event: grants and takes away mapped application roles (models/directory_roles.py).

    A member list Asgardeo cut (over 1,000) is replaced by the role's complete list from the SCIM2 Roles API, one
    request inside the shared SCIM budget, read while this event is held; a failed read retries the event.
    """
    if row.event_type == "roleMetaUpdated":
        directory_roles.parse_role(event)
        return AppliedEvent(
            status="ignored", jti=row.jti, note="a renamed role keeps its grants: they follow the role's id"
        )
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
        return AppliedEvent(status="ignored", jti=row.jti, note="the role is not in ROLE_MAP")
    if change.truncated:
        members = services.read_role_members(role.id)
        change = (
            directory_roles.role_deleted_change(session, role)
            if members is None
            else directory_roles.full_membership_change(session, role, members)
        )
        log.info("role members read from the Roles API", extra={"role_id": role.id, "members": len(change.added)})
    result = directory_roles.apply_member_change(session, change, app_role, iat=row.iat, event_jti=row.jti)
    log.info("role event applied", extra={"role_id": role.id, "changes": len(result.changes)})
    return AppliedEvent(
        status="applied",
        changes=result.changes,
        jti=row.jti,
        note="the last active admin kept admin" if result.kept_last_admin else None,
        kept_last_admin=result.kept_last_admin,
    )


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
