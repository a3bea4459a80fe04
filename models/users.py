"""The rules for writing a user: idempotent upserts keyed on ``asgardeo_id``, a stale guard, the audit trail.

Every writer (webhook events, single-user sync, nightly reconciliation, login) goes through this module, so the
rules hold whichever path a change takes:

- A change carries Asgardeo's time of that change (``source_version``, epoch ms). A change older than what the row
  already reflects is *stale* and changes nothing, so a late update can never resurrect a deleted user.
- Sync writes identity fields only. ``role`` (unless a group mapping is configured), ``employee_id`` and
  ``department`` belong to the application.
- A deleted user stays as a tombstone row (status ``deleted``) so late events stay stale.
- Every real change writes one ``user_changes`` row; callers publish the returned :class:`Change` list after commit.

Functions take an open ``Session`` and never commit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import orjson
from sqlalchemy import TextClause, func, select, text
from sqlalchemy.orm import Session

from models.sessions import revoke_user_sessions
from models.tables import ROLES, User, UserChange

IDENTITY_FIELDS = ("username", "email", "first_name", "last_name", "groups", "status")
# When several mapped groups apply, the most privileged role wins.
ROLE_PRIORITY = {role: rank for rank, role in enumerate(ROLES)}


@dataclass(frozen=True)
class UserRecord:
    """A complete view of one user as Asgardeo holds it (a SCIM resource or a login's ID token)."""

    asgardeo_id: str
    username: str | None
    email: str | None
    first_name: str | None
    last_name: str | None
    groups: tuple[str, ...]
    status: str
    source_version: int


@dataclass(frozen=True)
class Change:
    """One audit row as written, for the live stream and for callers' counters."""

    change_id: int
    user_id: int | None
    asgardeo_id: str
    action: str
    changes: dict[str, Any]
    # Which path the change came by (webhook, reconcile, sync, login, admin, ...) and who, when a person did it.
    source: str | None = None
    actor: str | None = None

    def as_message(self) -> dict[str, Any]:
        return {
            "id": self.change_id,
            "user_id": self.user_id,
            "asgardeo_id": self.asgardeo_id,
            "action": self.action,
            "changes": self.changes,
            "source": self.source,
            "actor": self.actor,
        }


@dataclass
class UpsertResult:
    """Counts of one upsert, and its audit rows as the live stream's JSON array, encoded by Postgres.

    A reconciliation page publishes ``encoded_changes`` as it is; :attr:`changes` decodes it for callers that look
    at single changes (decoding 100,000 creations in Python cost about a second of a first sync).
    """

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    encoded_changes: bytes = b"[]"

    @cached_property
    def changes(self) -> list[Change]:
        return [
            Change(m["id"], m["user_id"], m["asgardeo_id"], m["action"], m["changes"], m.get("source"), m.get("actor"))
            for m in orjson.loads(self.encoded_changes)
        ]


def mapped_role(groups: Iterable[str], role_map: Mapping[str, str]) -> str | None:
    """The role the configured group mapping grants, or ``None`` when no mapped group applies."""
    roles = [role_map[g] for g in groups if role_map.get(g) in ROLE_PRIORITY]
    return max(roles, key=ROLE_PRIORITY.__getitem__) if roles else None


# The audit action of a write, in one table for the upsert's SQL and for :func:`apply_user_patch`: the first rule
# whose conditions hold names the change, else ``updated``. A condition left ``None`` is not checked; a new row has
# no old status (so "old status is not X" holds for it).
@dataclass(frozen=True)
class _ActionRule:
    action: str
    inserted: bool | None = None
    new_status: str | None = None
    new_status_not: str | None = None
    old_status: str | None = None
    old_status_not: str | None = None

    def holds(self, inserted: bool, old_status: str | None, new_status: str) -> bool:
        return (
            (self.inserted is None or inserted == self.inserted)
            and (self.new_status is None or new_status == self.new_status)
            and (self.new_status_not is None or new_status != self.new_status_not)
            and (self.old_status is None or old_status == self.old_status)
            and (self.old_status_not is None or old_status != self.old_status_not)
        )

    def sql(self) -> str:
        checks = [
            *(["inserted"] if self.inserted else ["NOT inserted"] if self.inserted is False else []),
            *([f"new_status = '{self.new_status}'"] if self.new_status else []),
            *([f"new_status <> '{self.new_status_not}'"] if self.new_status_not else []),
            *([f"old_status = '{self.old_status}'"] if self.old_status else []),
            *([f"old_status IS DISTINCT FROM '{self.old_status_not}'"] if self.old_status_not else []),
        ]
        return f"WHEN {' AND '.join(checks)} THEN '{self.action}'"


ACTION_RULES = (
    _ActionRule("created", inserted=True, new_status_not="deleted"),
    _ActionRule("deleted", new_status="deleted", old_status_not="deleted"),
    _ActionRule("deactivated", new_status="inactive", old_status="active"),
    _ActionRule("reactivated", new_status="active", old_status_not="active"),
)
_ACTION_SQL = "CASE " + " ".join(rule.sql() for rule in ACTION_RULES) + " ELSE 'updated' END"


def audit_action(inserted: bool, old_status: str | None, new_status: str) -> str:
    """What a write did to a user, for the audit row: see :data:`ACTION_RULES`."""
    return next((r.action for r in ACTION_RULES if r.holds(inserted, old_status, new_status)), "updated")


# A stored row yields to an incoming one when the incoming one is newer, or when the row was retired only because
# the directory did not show it: presence always wins over absence, whatever the timestamps say.
_YIELDS = "(u.source_version <= EXCLUDED.source_version OR u.retired_by = 'absence')"


def _upsert_sql() -> TextClause:
    """The upsert, with every per-field clause written out from :data:`IDENTITY_FIELDS` (and ``role``)."""
    columns = ", ".join(IDENTITY_FIELDS)
    incoming = ", ".join(f"{name} {'jsonb' if name == 'groups' else 'text'}" for name in IDENTITY_FIELDS)
    synced = ",\n        ".join(
        f"{name} = CASE WHEN {_YIELDS} THEN EXCLUDED.{name} ELSE u.{name} END" for name in IDENTITY_FIELDS
    )
    compared = (*IDENTITY_FIELDS, "role")
    differs = ",\n             ".join(
        f"'{name}', CASE WHEN old.{name} IS DISTINCT FROM up.{name} THEN jsonb_build_array(old.{name}, up.{name}) END"
        for name in compared
    )
    # Only this module's constants go into the text; every value is a bound parameter.
    return text(
        f"""
WITH incoming AS (
    SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
        asgardeo_id text, {incoming}, source_version bigint, mapped_role text)
),
-- No FOR UPDATE here: the upsert below locks the rows, and a locking read of rows this same statement updates
-- would skip them. Under a concurrent write to the same user the audit's "from" value may lag; the row never does.
-- MATERIALIZED: computed once, then hash-joined in diff (inlined, it was re-joined with incoming for every row).
-- The ANY(:ids) condition repeats the join's for the planner: it guesses 100 rows for any jsonb_to_recordset, and
-- with statistics older than the table's growth (a busy day's new users, a first import) it then read all of users
-- for a single-user event (13 ms instead of 2 at 30,000 users); the array's length it knows.
old AS MATERIALIZED (
    SELECT u.id, u.asgardeo_id, {", ".join(f"u.{name}" for name in compared)},
           u.source_version, u.retired_by, i.source_version AS incoming_version
    FROM users u JOIN incoming i ON i.asgardeo_id = u.asgardeo_id
    WHERE u.asgardeo_id = ANY(CAST(:ids AS text[]))
),
up AS (
    INSERT INTO users AS u (asgardeo_id, {columns}, role, source_version, last_seen_run_id, last_synced_at)
    SELECT asgardeo_id, {columns}, COALESCE(mapped_role, 'employee'),
           source_version, CAST(:seen_run_id AS bigint), now()
    FROM incoming
    ON CONFLICT (asgardeo_id) DO UPDATE SET
        {synced},
        role = CASE WHEN {_YIELDS} AND EXCLUDED.asgardeo_id = ANY(CAST(:mapped_ids AS text[]))
                    THEN EXCLUDED.role ELSE u.role END,
        retired_by = CASE WHEN {_YIELDS} THEN NULL ELSE u.retired_by END,
        source_version = GREATEST(u.source_version, EXCLUDED.source_version),
        last_seen_run_id = COALESCE(EXCLUDED.last_seen_run_id, u.last_seen_run_id),
        last_synced_at = now(),
        updated_at = CASE WHEN {_YIELDS}
                               AND ({", ".join(f"u.{name}" for name in compared)})
                                   IS DISTINCT FROM ({", ".join(f"EXCLUDED.{name}" for name in compared)})
                          THEN now() ELSE u.updated_at END
    RETURNING u.id, u.asgardeo_id, {", ".join(f"u.{name}" for name in compared)}
),
diff AS (
    SELECT up.id, up.asgardeo_id, old.id IS NULL AS inserted, old.status AS old_status, up.status AS new_status,
           jsonb_strip_nulls(jsonb_build_object(
             {differs},
             'reason', CASE WHEN old.retired_by = 'absence'
                            THEN jsonb_build_array('absent from the directory', 'present in the directory') END
           )) AS changes,
           (old.id IS NOT NULL AND old.source_version > old.incoming_version
            AND old.retired_by IS DISTINCT FROM 'absence') AS stale
    FROM up LEFT JOIN old ON old.asgardeo_id = up.asgardeo_id
),
audit AS (
    INSERT INTO user_changes (user_id, asgardeo_id, action, changes, source, event_jti, run_id, actor)
    SELECT id, asgardeo_id, {_ACTION_SQL}, changes, :source, :event_jti, CAST(:run_id AS bigint), :actor
    FROM diff WHERE inserted OR changes <> '{{}}'::jsonb
    RETURNING id, user_id, asgardeo_id, action, changes
)
-- One row: the counts, who lost access, and the audit rows as live-stream messages (text, so nobody decodes it on
-- the way; the keys are those of Change.as_message).
SELECT (SELECT count(*) FROM audit WHERE action = 'created') AS created,
       (SELECT count(*) FROM audit WHERE action <> 'created') AS updated,
       (SELECT count(*) FROM diff WHERE stale) AS stale,
       (SELECT array_agg(user_id) FROM audit WHERE action IN ('deactivated', 'deleted')) AS lost_access,
       (SELECT CAST(COALESCE(json_agg(json_build_object('id', id, 'user_id', user_id, 'asgardeo_id', asgardeo_id,
                                                        'action', action, 'changes', changes,
                                                        'source', CAST(:source AS text),
                                                        'actor', CAST(:actor AS text)) ORDER BY id),
                             '[]') AS text)
        FROM audit) AS messages
"""  # noqa: S608
    )


_UPSERT_SQL = _upsert_sql()


# Writers of the same user take this transaction-level lock first. Without it, two events creating one user (Asgardeo
# sends ``userCreated`` and ``registrationSuccess`` together) applied by two workers at once both read "no such user"
# in their snapshots: the upsert records two creations, and a patch racing an insert fails on the unique key.
# The ids travel as one JSON text: adapting a Python list of hundreds of strings to a text[] costs more than the lock.
_LOCK_USERS_SQL = text(
    "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT hashtextextended(id, 0) AS k"
    " FROM jsonb_array_elements_text(CAST(:ids AS jsonb)) AS id ORDER BY k) AS ordered"
)


def lock_users(session: Session, asgardeo_ids: Iterable[str]) -> None:
    """Hold a per-user advisory lock until the transaction ends (taken in one order, so writers cannot deadlock)."""
    session.execute(_LOCK_USERS_SQL, {"ids": orjson.dumps(list(asgardeo_ids)).decode()})


def upsert_users(
    session: Session,
    records: Sequence[UserRecord],
    *,
    source: str,
    run_id: int | None = None,
    event_jti: str | None = None,
    actor: str | None = None,
    role_map: Mapping[str, str] | None = None,
    stamp_seen: bool = True,
    users_locked: bool = False,
) -> UpsertResult:
    """Insert or refresh many users in one statement, skipping fields of users whose stored version is newer.

    Safe to re-run with the same records (the second run changes nothing). Users who stop being active have their
    sessions revoked in the same transaction. ``run_id`` stamps every seen user, stale or not, so a reconciliation
    knows who the directory still lists; a single-user sync passes ``stamp_seen=False`` so it never overwrites the
    stamp of a full run in progress (which would then ask for that user again).
    """
    if not records:
        return UpsertResult()
    unique = {r.asgardeo_id: r for r in sorted(records, key=lambda r: r.source_version)}
    rows = [
        {
            "asgardeo_id": r.asgardeo_id,
            "username": r.username,
            "email": r.email,
            "first_name": r.first_name,
            "last_name": r.last_name,
            "groups": sorted(set(r.groups)),
            "status": r.status,
            "source_version": r.source_version,
            "mapped_role": mapped_role(r.groups, role_map) if role_map else None,
        }
        for r in sorted(unique.values(), key=lambda r: r.asgardeo_id)
    ]
    params = {
        "rows": orjson.dumps(rows).decode(),
        "ids": [row["asgardeo_id"] for row in rows],
        "mapped_ids": [row["asgardeo_id"] for row in rows if row["mapped_role"] is not None],
        "run_id": run_id,
        "seen_run_id": run_id if stamp_seen else None,
        "source": source,
        "event_jti": event_jti,
        "actor": actor,
    }
    if not users_locked:
        lock_users(session, unique)
    row = session.execute(_UPSERT_SQL, params).one()
    if row.lost_access:
        revoke_user_sessions(session, row.lost_access, reason="user_deactivated")
    return UpsertResult(
        created=row.created,
        updated=row.updated,
        unchanged=len(rows) - row.created - row.updated - row.stale,
        stale=row.stale,
        encoded_changes=row.messages.encode(),
    )


def apply_user_patch(
    session: Session,
    asgardeo_id: str,
    fields: Mapping[str, Any],
    *,
    source_version: int,
    source: str,
    event_jti: str | None = None,
    run_id: int | None = None,
    actor: str | None = None,
    retired_by: str = "event",
    users_locked: bool = False,
) -> Change | None:
    """Apply a partial change (a webhook delta, a status flip, a deletion) unless it is stale.

    An unknown user is created from what the patch carries, so an update that overtakes its create is not lost and a
    deletion leaves a tombstone that keeps older events out. Returns the audit change, or ``None`` when nothing
    changed (stale, or already in that state), which makes a re-run a no-op.

    A patch that leaves the user inactive or deleted records why (``retired_by``): ``event`` for a signed webhook
    event, ``absence`` for a listing and a confirming 404. A later presence undoes only the latter, so an absence
    never overrides a signed retirement. ``users_locked``: as for :func:`upsert_users`.
    """
    unknown = set(fields) - set(IDENTITY_FIELDS)
    if unknown:
        raise ValueError(f"not identity fields: {sorted(unknown)}")
    if not users_locked:
        lock_users(session, [asgardeo_id])
    user = session.execute(select(User).where(User.asgardeo_id == asgardeo_id).with_for_update()).scalar_one_or_none()
    inserted = user is None
    if user is None:
        user = User(asgardeo_id=asgardeo_id, status="active", role="employee", groups=[], source_version=0)
        session.add(user)
    elif user.source_version > source_version:
        return None
    old_status = None if inserted else user.status
    diff: dict[str, Any] = {}
    for name, value in fields.items():
        new = sorted(set(value)) if name == "groups" else value
        old = getattr(user, name)
        if old != new:
            diff[name] = [old, new]
            setattr(user, name, new)
    if "status" in fields:
        user.retired_by = _retired_by(user.status, user.retired_by, retired_by)
    user.source_version = max(user.source_version, source_version)
    user.last_synced_at = datetime.now(UTC)
    if not diff and not inserted:
        return None
    user.updated_at = datetime.now(UTC)
    session.flush()
    action = audit_action(inserted, old_status, user.status)
    change = record_change(session, user, action, diff, source=source, actor=actor, event_jti=event_jti, run_id=run_id)
    if action in ("deactivated", "deleted"):
        revoke_user_sessions(session, [user.id], reason="user_deactivated")
    return change


def retire_absent(
    session: Session, asgardeo_id: str, *, asked_ms: int, source: str, run_id: int | None, actor: str | None = None
) -> Change | None:
    """Make a user the directory answered 404 for a ``deleted`` tombstone retired by absence, stamped with the time
    of asking (so a later presence, which always wins over absence, brings them back). See :func:`apply_user_patch`."""
    return apply_user_patch(
        session,
        asgardeo_id,
        {"status": "deleted"},
        source_version=asked_ms,
        source=source,
        run_id=run_id,
        actor=actor,
        retired_by="absence",
    )


def _retired_by(status: str, current: str | None, proposed: str) -> str | None:
    if status == "active":
        return None
    return "event" if "event" in (current, proposed) else proposed


def record_change(
    session: Session,
    user: User,
    action: str,
    changes: Mapping[str, Any],
    *,
    source: str,
    actor: str | None = None,
    event_jti: str | None = None,
    run_id: int | None = None,
) -> Change:
    """Write an audit row for a change made outside the sync rules (a login, an admin editing the app's fields)."""
    audit = UserChange(
        user_id=user.id,
        asgardeo_id=user.asgardeo_id,
        action=action,
        changes=dict(changes),
        source=source,
        actor=actor,
        event_jti=event_jti,
        run_id=run_id,
    )
    session.add(audit)
    session.flush()
    return Change(audit.id, user.id, user.asgardeo_id, action, dict(changes), source, actor)


def get_by_asgardeo_id(session: Session, asgardeo_id: str) -> User | None:
    return session.execute(select(User).where(User.asgardeo_id == asgardeo_id)).scalar_one_or_none()


def has_active_admin(session: Session) -> bool:
    """Whether any active user holds the ``admin`` role (the bootstrap-admin rule applies only while none does)."""
    return session.scalar(select(User.id).where(User.role == "admin", User.status == "active").limit(1)) is not None


@dataclass(frozen=True)
class RetireLimit:
    """How many users one run may retire: ``share`` of the ``population`` not deleted (inactive ones too)."""

    population: int
    allowed: int


def retire_limit(session: Session, share: float) -> RetireLimit:
    """The guard's limit for a run that retires users (the reconciliation, the drift check): ``share`` (the
    RECONCILE_MAX_DEACTIVATE_SHARE setting) of the users not deleted, rounded down. Counts the table: take it only
    once a user is missing."""
    population = session.execute(select(func.count()).where(User.status != "deleted")).scalar_one()
    return RetireLimit(population, math.floor(share * population))


def unseen_by_run(session: Session, run_id: int, *, after_id: int, limit: int) -> list[tuple[int, str]]:
    """``(id, asgardeo_id)`` of up to ``limit`` users the run ``run_id`` did not stamp as seen, in id order after
    ``after_id``: whom a full run must ask for one by one before it can call them gone."""
    rows = session.execute(
        select(User.id, User.asgardeo_id)
        .where(
            # Inactive users too: one deleted at the directory (its event lost) must become a tombstone.
            User.status != "deleted",
            User.last_seen_run_id.is_distinct_from(run_id),
            User.id > after_id,
            # Only a login ever described this row (see models.identity): no directory vouched for it.
            User.source_version > 0,
        )
        .order_by(User.id)
        .limit(limit)
    ).all()
    return [(user_id, asgardeo_id) for user_id, asgardeo_id in rows]


def least_recently_confirmed(session: Session, limit: int) -> list[tuple[str, str]]:
    """``(asgardeo_id, username)`` of up to ``limit`` users a directory described and that are not deleted, those
    confirmed longest ago (or never) first: repeated calls walk the whole table as confirmations move them back.

    Runs without parallel workers, for the rest of the caller's transaction: the drift check asks every minute, and
    the plan reads the whole table (an index on ``last_synced_at`` would cost every upsert its HOT update). At
    100,000 users Postgres ran it on two processes, 26 ms on both cores of the 2-core machine, which showed as an
    intake stall once a minute; alone it takes 14-18 ms of one core.
    """
    session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
    rows = session.execute(
        select(User.asgardeo_id, User.username)
        .where(User.status != "deleted", User.source_version > 0)
        .order_by(User.last_synced_at.asc().nulls_first(), User.id)
        .limit(limit)
    ).all()
    return [(str(asgardeo_id), str(username)) for asgardeo_id, username in rows]
