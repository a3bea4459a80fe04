"""JSON shapes of the records the API returns, in one place so every endpoint shows a user the same way."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.tables import User, UserChange, WebhookEvent


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "asgardeo_id": user.asgardeo_id,
        "username": user.username,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "groups": list(user.groups or []),
        "status": user.status,
        "role": user.role,
        "employee_id": user.employee_id,
        "department": user.department,
        "source_version": user.source_version,
        "last_synced_at": _iso(user.last_synced_at),
        "last_login_at": _iso(user.last_login_at),
        "created_at": _iso(user.created_at),
        "updated_at": _iso(user.updated_at),
    }


OWN_PROFILE_FIELDS = (
    "id",
    "asgardeo_id",
    "username",
    "email",
    "first_name",
    "last_name",
    "role",
    "status",
    "last_login_at",
)


def own_profile_json(user: User) -> dict[str, Any]:
    """What a person sees of themselves (``/auth/me``, the login answer): no sync internals."""
    full = user_json(user)
    return {name: full[name] for name in OWN_PROFILE_FIELDS}


def event_json(row: WebhookEvent) -> dict[str, Any]:
    """An inbox event without its payload (admins ask for the payload of one event at a time)."""
    return {
        "id": row.id,
        "jti": row.jti,
        "event_type": row.event_type,
        "user_id": row.asgardeo_id,
        "iat": row.iat,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "received_at": _iso(row.received_at),
        "queued_at": _iso(row.queued_at),
        "processed_at": _iso(row.processed_at),
    }


def change_json(change: UserChange) -> dict[str, Any]:
    return {
        "id": change.id,
        "user_id": change.user_id,
        "asgardeo_id": change.asgardeo_id,
        "action": change.action,
        "changes": change.changes,
        "source": change.source,
        "event_jti": change.event_jti,
        "run_id": change.run_id,
        "actor": change.actor,
        "created_at": _iso(change.created_at),
    }
