"""Changes and runs in words, for the pages: who, what changed, and which path it came by.

Pages and the live page's script say the same thing: the script words new rows with the same tables, which
:func:`words_for_script` hands it as JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# Which path a change came by, as a person would say it.
SOURCES = {
    "webhook": "webhook from Asgardeo",
    "reconcile": "full reconciliation",
    "sync": "single-user sync",
    "login": "sign-in",
    "admin": "admin edit",
    "cli": "command line",
    "bootstrap": "bootstrap admin setting",
    "guard_review": "guarded-run review approved",
}

FIELDS = {
    "username": "username",
    "email": "email",
    "first_name": "first name",
    "last_name": "last name",
    "groups": "groups",
    "status": "status",
    "role": "role",
    "employee_id": "employee id",
    "department": "department",
    "session_id": "session",
    "reason": "why",
    "revoked": "sessions ended",
    "granted_by": "granted by",
}

ACTIONS = {
    "created": "created",
    "updated": "updated",
    "deleted": "deleted in Asgardeo",
    "deactivated": "deactivated",
    "reactivated": "reactivated",
    "login": "signed in",
    "role_changed": "role changed",
    "session_revoked": "session revoked",
    "sessions_revoked": "signed out by Asgardeo",
}


def _value(value: Any) -> str:
    if value is None or value in ("", []):
        return "(empty)"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def describe_change(action: str, changes: dict[str, Any] | None) -> str:
    """``status active → deleted; email a@x → b@x`` after the action's words, e.g. ``updated: email …``."""
    parts = []
    for name, pair in (changes or {}).items():
        label = FIELDS.get(name, name)
        if isinstance(pair, list) and len(pair) == 2:
            if action == "created":
                parts.append(f"{label} {_value(pair[1])}")
            else:
                parts.append(f"{label} {_value(pair[0])} → {_value(pair[1])}")
        else:
            parts.append(f"{label} {_value(pair)}")
    head = ACTIONS.get(action, action)
    return f"{head}: {'; '.join(parts)}" if parts else head


def describe_source(source: str, actor: str | None = None) -> str:
    words = SOURCES.get(source, source)
    return f"{words} by {actor}" if actor and source in ("admin", "cli", "guard_review") else words


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""


def when_iso(value: str | None) -> str:
    return when(datetime.fromisoformat(value)) if value else ""


def duration(started: datetime | None, finished: datetime | None) -> str:
    """``1 h 02 min``, ``3 min 05 s``, ``12 s``; empty while unknown."""
    if started is None or finished is None:
        return ""
    seconds = max(int((finished - started).total_seconds()), 0)
    if seconds == 0:
        return "under a second"
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def words_for_script() -> dict[str, dict[str, str]]:
    """The same tables for the live page's script, so a new row reads like a server-rendered one."""
    return {"sources": SOURCES, "fields": FIELDS, "actions": ACTIONS}
