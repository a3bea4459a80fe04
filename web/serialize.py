"""JSON shapes of the records the API returns, in one place so every endpoint shows a user the same way."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.tables import User, UserChange


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


def own_profile_json(user: User) -> dict[str, Any]:
    """What a person sees of themselves (``/auth/me``, the login answer): no sync internals."""
    return {
        "id": user.id,
        "asgardeo_id": user.asgardeo_id,
        "username": user.username,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "role": user.role,
        "status": user.status,
        "last_login_at": _iso(user.last_login_at),
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
