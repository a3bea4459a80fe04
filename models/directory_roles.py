"""Application roles granted by Asgardeo roles (``ROLE_MAP``), and the precedence over roles an admin set by hand.

``ROLE_MAP`` maps an Asgardeo role, by name and audience, to an application role. A ``roleUsersUpdated`` event
carries only the change (``addedUsers`` / ``removedUsers``); each applied change is kept per user in
``users.directory_roles`` as ``{"id", "role", "member", "iat"}``:

- ``role`` is the application role the Asgardeo role mapped to when the membership was applied, so a later rename
  of the Asgardeo role (``roleMetaUpdated``) keeps the grant: the mapping follows the role's id.
- ``iat`` is Asgardeo's time of that fact. An event older than the stored fact for the same role and user changes
  nothing, and a removal is kept as ``member: false`` rather than dropped, so a duplicate or a late, out-of-order
  "added" cannot undo a newer "removed".

Precedence (``users.role_source``, ``users.base_role``): the user's role is the more privileged of what the
directory grants and what an admin set by hand (or the role from before ROLE_MAP). A directory grant above it sets
``role_source = directory`` and keeps the hand-set role in ``base_role``; when the grant goes, that role comes back.
So the directory never takes away what an admin granted: it takes away only its own grant.
Taking ``admin`` from the last active admin is refused as it is for an admin's edit: the role stays and the
caller reports a warning. Every role change writes an audit row (``role_changed``) whose ``granted_by`` names the
Asgardeo role.

Functions take an open ``Session`` and never commit; re-running an applied event changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.tables import ROLES, User
from models.users import ROLE_PRIORITY, Change, record_change

ROLE_USERS_UPDATED = "roleUsersUpdated"
DEFAULT_ROLE = "employee"
# Asgardeo cuts a member list at 1,000; a longer list is not Asgardeo's.
MAX_LISTED_USERS = 1000
MAX_ID_CHARS = 64


class MalformedRoleEvent(ValueError):
    """A field has the wrong type; the message names it and carries none of its value."""


@dataclass(frozen=True)
class RoleRef:
    """An Asgardeo role as an event names it."""

    id: str
    name: str | None
    audience_type: str | None
    audience_value: str | None
    audience_display: str | None

    def label(self) -> str:
        audience = self.audience_display or self.audience_value or self.audience_type
        return f"{self.name or self.id} ({audience})" if audience else (self.name or self.id)


@dataclass(frozen=True)
class MemberChange:
    """``roleUsersUpdated`` read: the role, who was added and removed, and whether Asgardeo cut the lists."""

    role: RoleRef
    added: tuple[str, ...]
    removed: tuple[str, ...]
    truncated: bool


@dataclass
class RoleOutcome:
    changes: list[Change] = field(default_factory=list)
    # Users whose admin role the directory would have taken although they are the last active admin.
    kept_last_admin: list[int] = field(default_factory=list)
    note: str | None = None


def parse_role_map(entries: Iterable[str]) -> dict[tuple[str, str | None, str | None], str]:
    """``NAME=role``, ``NAME@TYPE=role`` or ``NAME@TYPE:AUDIENCE=role`` (TYPE ``organization`` or ``application``,
    AUDIENCE the audience's id or display name) → ``{(name, type, audience): role}``. Raises ``ValueError``."""
    mapping: dict[tuple[str, str | None, str | None], str] = {}
    for entry in entries:
        left, sep, role = entry.rpartition("=")
        role = role.strip()
        if not sep or not left.strip() or role not in ROLES:
            raise ValueError(f"ROLE_MAP entries are NAME[@TYPE[:AUDIENCE]]=ROLE with ROLE one of {', '.join(ROLES)}")
        name, _, audience = left.partition("@")
        kind, _, value = audience.partition(":")
        if kind and kind not in ("organization", "application"):
            raise ValueError("ROLE_MAP audience type must be organization or application")
        mapping[(name.strip(), kind.strip() or None, value.strip() or None)] = role
    return mapping


def mapped_app_role(role: RoleRef, role_map: Mapping[tuple[str, str | None, str | None], str]) -> str | None:
    """The application role ``ROLE_MAP`` gives this Asgardeo role (the most specific entry wins), or ``None``."""
    if role.name is None:
        return None
    for audience in (role.audience_value, role.audience_display):
        if audience and (found := role_map.get((role.name, role.audience_type, audience))):
            return found
    return role_map.get((role.name, role.audience_type, None)) or role_map.get((role.name, None, None))


def _text(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 300:
        raise MalformedRoleEvent(f"{name} must be a string of at most 300 characters")
    return value


def _user_ids(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_LISTED_USERS:
        raise MalformedRoleEvent(f"{name} must be a list of at most {MAX_LISTED_USERS} users")
    ids = []
    for entry in value:
        user_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_ID_CHARS:
            raise MalformedRoleEvent(f"each of {name} must be an object with a string id")
        ids.append(user_id)
    return tuple(ids)


def parse_role(event: Mapping[str, Any]) -> RoleRef:
    role = event.get("role")
    if not isinstance(role, dict):
        raise MalformedRoleEvent("role must be an object")
    role_id = _text(role.get("id"), "role.id")
    if role_id is None or len(role_id) > MAX_ID_CHARS:
        raise MalformedRoleEvent("role.id must be a string of at most 64 characters")
    audience = role.get("audience")
    if audience is not None and not isinstance(audience, dict):
        raise MalformedRoleEvent("role.audience must be an object")
    audience = audience or {}
    return RoleRef(
        id=role_id,
        name=_text(role.get("name"), "role.name"),
        audience_type=_text(audience.get("type"), "role.audience.type"),
        audience_value=_text(audience.get("value"), "role.audience.value"),
        audience_display=_text(audience.get("display"), "role.audience.display"),
    )


def parse_member_change(event: Mapping[str, Any]) -> MemberChange:
    """Read ``roleUsersUpdated``; a list Asgardeo cut (a ``truncated`` flag, or a total above the listed count)
    is marked ``truncated``. Raises :class:`MalformedRoleEvent`."""
    ref = parse_role(event)
    role = event["role"]
    added = _user_ids(role.get("addedUsers"), "addedUsers")
    removed = _user_ids(role.get("removedUsers"), "removedUsers")
    flags = [role.get(k) for k in ("truncated", "addedUsersTruncated", "removedUsersTruncated")]
    totals = [role.get(k) for k in ("addedUsersCount", "removedUsersCount", "totalAddedUsers", "totalRemovedUsers")]
    truncated = any(f is True for f in flags) or any(
        isinstance(t, int) and not isinstance(t, bool) and t > MAX_LISTED_USERS for t in totals
    )
    return MemberChange(ref, added, removed, truncated)


def best_role(roles: Iterable[str]) -> str | None:
    known = [r for r in roles if r in ROLE_PRIORITY]
    return max(known, key=ROLE_PRIORITY.__getitem__) if known else None


def _active_admins(session: Session) -> int:
    return int(
        session.scalar(select(func.count()).select_from(User).where(User.role == "admin", User.status == "active")) or 0
    )


def _set_membership(user: User, role: RoleRef, app_role: str, member: bool, iat: int) -> bool:
    """Record one membership fact; ``False`` when a newer (or the same) fact is already stored."""
    entries = [dict(e) for e in user.directory_roles or []]
    current = next((e for e in entries if e.get("id") == role.id), None)
    if current is not None and int(current.get("iat", 0)) >= iat:
        return False
    fact = {"id": role.id, "role": app_role, "member": member, "iat": iat}
    entries = [e for e in entries if e.get("id") != role.id] + [fact]
    user.directory_roles = entries
    return True


def recompute_role(
    session: Session,
    user: User,
    *,
    reason: str,
    event_jti: str | None,
    outcome: RoleOutcome,
    source: str,
    run_id: int | None = None,
) -> None:
    """Set ``user.role`` from its memberships under the precedence rule; audits a change, refuses the last admin.

    ``base`` is the role without the directory: what an admin set (or the role from before), kept in
    ``users.base_role`` while a directory grant sits above it, so taking the grant away gives it back.
    """
    granted = best_role(e["role"] for e in user.directory_roles or [] if e.get("member"))
    current = user.role
    base = (user.base_role or DEFAULT_ROLE) if user.role_source == "directory" else current
    if granted is not None and ROLE_PRIORITY[granted] > ROLE_PRIORITY.get(base, 0):
        new_role, new_source, new_base = granted, "directory", base
    elif user.role_source == "directory":
        new_role, new_source, new_base = base, None, None
    else:
        return
    if new_role != current and current == "admin" and user.status == "active" and _active_admins(session) <= 1:
        outcome.kept_last_admin.append(user.id)
        return
    user.role_source, user.base_role = new_source, new_base
    if new_role == current:
        return
    user.role = new_role
    user.updated_at = datetime.now(UTC)
    changes = {"role": [current, new_role], "granted_by": reason}
    outcome.changes.append(
        record_change(session, user, "role_changed", changes, source=source, event_jti=event_jti, run_id=run_id)
    )


def apply_member_change(
    session: Session,
    change: MemberChange,
    app_role: str,
    *,
    iat: int,
    event_jti: str | None,
    source: str = "webhook",
) -> RoleOutcome:
    """Apply one role's added and removed users (known users only, each row locked in id order)."""
    outcome = RoleOutcome()
    facts = dict.fromkeys(change.added, True)
    facts.update(dict.fromkeys(change.removed, False))
    if not facts:
        return outcome
    users = session.execute(
        select(User).where(User.asgardeo_id.in_(list(facts))).order_by(User.id).with_for_update()
    ).scalars()
    for user in users:
        if _set_membership(user, change.role, app_role, facts[user.asgardeo_id], iat):
            verb = "member of" if facts[user.asgardeo_id] else "removed from"
            reason = f"Asgardeo role {change.role.label()}: {verb}"
            recompute_role(session, user, reason=reason, event_jti=event_jti, outcome=outcome, source=source)
    session.flush()
    return outcome


def members_of(session: Session, role_id: str) -> Sequence[str]:
    """Directory ids of the users the stored facts make members of Asgardeo role ``role_id``."""
    rows = session.execute(
        select(User.asgardeo_id).where(User.directory_roles.contains([{"id": role_id, "member": True}]))
    ).scalars()
    return list(rows)


def known_app_role(session: Session, role_id: str) -> str | None:
    """The application role an Asgardeo role mapped to when a membership of it was applied: the grant follows the
    role's id, so a renamed role (no longer matching its ``ROLE_MAP`` name) keeps granting it."""
    entries = session.execute(
        select(User.directory_roles).where(User.directory_roles.contains([{"id": role_id}])).limit(1)
    ).scalar_one_or_none()
    return next((str(e["role"]) for e in entries or [] if e.get("id") == role_id), None)


def full_membership_change(session: Session, role: RoleRef, members: Iterable[str]) -> MemberChange:
    """The change that makes the stored facts equal a complete member list (from the Roles API)."""
    listed = tuple(dict.fromkeys(members))
    gone = tuple(sorted(set(members_of(session, role.id)) - set(listed)))
    return MemberChange(role, listed, gone, truncated=False)


def role_deleted_change(session: Session, role: RoleRef) -> MemberChange:
    """A deleted role grants nothing: every stored member is removed."""
    return MemberChange(role, (), tuple(sorted(members_of(session, role.id))), truncated=False)


def scim_roles(resource: Mapping[str, Any]) -> list[RoleRef]:
    """A SCIM user's ``roles[]`` as role references: today's entries (``value`` = the role's id, ``display``,
    ``audienceType``, ``audienceValue``, ``audienceDisplay``) and the older ``{type, value}`` one (``value`` = the
    name). Unreadable entries are skipped: a listing never fails on them."""
    entries = resource.get("roles")
    if not isinstance(entries, list):
        return []
    refs = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        values = {k: entry.get(k) for k in ("value", "display", "audienceType", "audienceValue", "audienceDisplay")}
        if not all(v is None or isinstance(v, str) for v in values.values()) or not values["value"]:
            continue
        role_id = str(values["value"])
        if len(role_id) > MAX_ID_CHARS:
            continue
        refs.append(
            RoleRef(
                id=role_id,
                name=values["display"] or role_id,
                audience_type=values["audienceType"],
                audience_value=values["audienceValue"],
                audience_display=values["audienceDisplay"],
            )
        )
    return refs


def reconcile_roles(
    session: Session,
    listed: Mapping[str, Sequence[RoleRef]],
    role_map: Mapping[tuple[str, str | None, str | None], str],
    *,
    listed_ms: int,
    run_id: int | None,
) -> RoleOutcome:
    """Make the listed users' membership facts equal what SCIM lists (``{user id: roles}``), so role events that
    were lost (or never sent: sub-organisations, SCIM bulk operations) are repaired, then recompute their roles.

    A fact newer than ``listed_ms`` (an event applied after the page was read) is kept. Rows are locked in id order.
    """
    outcome = RoleOutcome()
    if not listed:
        return outcome
    users = session.execute(
        select(User).where(User.asgardeo_id.in_(list(listed))).order_by(User.id).with_for_update()
    ).scalars()
    for user in users:
        held: dict[str, tuple[RoleRef, str]] = {}
        for ref in listed[user.asgardeo_id]:
            app_role = mapped_app_role(ref, role_map) or _stored_app_role(user, ref.id)
            if app_role is not None:
                held[ref.id] = (ref, app_role)
        stored = {e["id"]: e for e in user.directory_roles or []}
        changed = False
        for role_id, (ref, app_role) in held.items():
            if not stored.get(role_id, {}).get("member"):
                changed |= _set_membership(user, ref, app_role, True, listed_ms)
        for role_id, entry in stored.items():
            if entry.get("member") and role_id not in held:
                ref = RoleRef(role_id, None, None, None, None)
                changed |= _set_membership(user, ref, str(entry["role"]), False, listed_ms)
        if changed:
            recompute_role(
                session,
                user,
                reason="Asgardeo roles as the directory lists them (nightly run)",
                event_jti=None,
                outcome=outcome,
                source="reconcile",
                run_id=run_id,
            )
    session.flush()
    return outcome


def _stored_app_role(user: User, role_id: str) -> str | None:
    return next((str(e["role"]) for e in user.directory_roles or [] if e.get("id") == role_id), None)
