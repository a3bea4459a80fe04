"""Admin API for the user table: list, search, read, and edit the application's own fields.

Identity fields (name, email, status, groups) belong to Asgardeo and are read-only here; ``role``, ``employee_id``
and ``department`` belong to the application. Every edit writes an audit row naming the admin.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy import func, or_, select

from models.db import unit_of_work
from models.tables import ROLES, USER_STATUSES, User, UserChange
from models.users import record_change
from tasks.live import publish_changes
from web.access import current_user, require_role
from web.errors import APIError
from web.serialize import change_json, user_json
from web.validate import choice_arg, int_arg, json_object, optional_int_arg, printable, text_arg

bp = Blueprint("admin", __name__, url_prefix="/admin")

EDITABLE = {"role", "employee_id", "department"}
FIELD_LIMITS = {"employee_id": 64, "department": 200}


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@bp.get("/users")
@require_role("admin")
def list_users() -> Response:
    """Keyset paging by id: ``?after_id=`` from the previous page's ``next_after_id``; ``q`` searches names/emails."""
    limit = int_arg("limit", 50, minimum=1, maximum=200)
    after_id = optional_int_arg("after_id")
    query = text_arg("q")
    status = choice_arg("status", USER_STATUSES)
    role = choice_arg("role", ROLES)
    statement = select(User).order_by(User.id).limit(limit + 1)
    if after_id is not None:
        statement = statement.where(User.id > after_id)
    if status:
        statement = statement.where(User.status == status)
    if role:
        statement = statement.where(User.role == role)
    if query:
        pattern = _like(query)
        statement = statement.where(
            or_(
                User.email.ilike(pattern, escape="\\"),
                User.username.ilike(pattern, escape="\\"),
                (func.coalesce(User.first_name, "") + " " + func.coalesce(User.last_name, "")).ilike(
                    pattern, escape="\\"
                ),
                User.employee_id == query,
                User.asgardeo_id == query,
            )
        )
    with unit_of_work() as session:
        users = list(session.execute(statement).scalars())
        items = [user_json(u) for u in users[:limit]]
    next_after = items[-1]["id"] if len(users) > limit else None
    return jsonify(users=items, next_after_id=next_after)


@bp.get("/users/<int:user_id>")
@require_role("admin")
def get_user(user_id: int) -> Response:
    with unit_of_work() as session:
        user = session.get(User, user_id)
        if user is None:
            raise APIError(404, "not_found", f"no user with id {user_id}")
        changes = session.execute(
            select(UserChange).where(UserChange.user_id == user_id).order_by(UserChange.id.desc()).limit(20)
        ).scalars()
        return jsonify(user=user_json(user), recent_changes=[change_json(c) for c in changes])


def _validated_edit(body: dict[str, Any]) -> dict[str, Any]:
    edit: dict[str, Any] = {}
    for name, raw in body.items():
        value = raw
        if name == "role":
            if value not in ROLES:
                raise APIError(400, "invalid_body", f"role must be one of {', '.join(ROLES)}")
        elif value is not None:
            if not isinstance(value, str):
                raise APIError(400, "invalid_body", f"{name} must be a string or null")
            value = value.strip() or None
            if value is not None and len(value) > FIELD_LIMITS[name]:
                raise APIError(400, "invalid_body", f"{name} is longer than {FIELD_LIMITS[name]} characters")
            if value is not None and not printable(value):
                raise APIError(400, "invalid_body", f"{name} must not contain control characters")
        edit[name] = value
    if not edit:
        raise APIError(400, "invalid_body", f"send at least one of {', '.join(sorted(EDITABLE))}")
    return edit


@bp.patch("/users/<int:user_id>")
@require_role("admin")
def edit_user(user_id: int) -> Response:
    """Change the application's own fields. Refuses to demote the last active admin (nobody could undo it)."""
    edit = _validated_edit(json_object(allowed=EDITABLE))
    admin = current_user()
    actor = admin.email or admin.username if admin is not None else None
    with unit_of_work() as session:
        user = session.execute(select(User).where(User.id == user_id).with_for_update()).scalar_one_or_none()
        if user is None:
            raise APIError(404, "not_found", f"no user with id {user_id}")
        if user.role == "admin" and edit.get("role", "admin") != "admin":
            admins = session.scalar(
                select(func.count()).select_from(User).where(User.role == "admin", User.status == "active")
            )
            if (admins or 0) <= 1:
                raise APIError(409, "last_admin", "this is the last active admin; grant the role to someone else first")
        diff = {name: [getattr(user, name), value] for name, value in edit.items() if getattr(user, name) != value}
        change = None
        if diff:
            for name, (_, value) in diff.items():
                setattr(user, name, value)
            user.updated_at = datetime.now(UTC)
            change = record_change(session, user, "updated", diff, source="admin", actor=actor)
        session.flush()
        session.refresh(user)
        result = user_json(user)
    if change is not None:
        publish_changes([change])
    return jsonify(user=result, changed=sorted(diff))
