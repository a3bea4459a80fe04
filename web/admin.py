"""Admin API for the user table: list, search, read, and edit the application's own fields.

Identity fields (name, email, status, groups) belong to Asgardeo and are read-only here; ``role``, ``employee_id``
and ``department`` belong to the application. Every edit writes an audit row naming the admin. A browser asking
for a page at the same address gets the users console (:mod:`web.console_users`).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import select

from models.db import unit_of_work
from models.tables import ROLES, USER_STATUSES, User, UserChange
from models.user_edits import APP_FIELDS, EditRefused, NoSuchUser, clean_app_fields, edit_app_fields
from models.user_search import UserFilter, search_users
from tasks.live import publish_changes
from web import console_users
from web.access import current_user, require_role
from web.errors import APIError, wants_page
from web.serialize import change_json, user_json
from web.validate import choice_arg, int_arg, json_object, optional_int_arg, text_arg

bp = Blueprint("admin", __name__, url_prefix="/admin")


def user_filter() -> UserFilter:
    """The query string's filter, validated (a bad value is a 400 naming it)."""
    return UserFilter(text=text_arg("q"), status=choice_arg("status", USER_STATUSES), role=choice_arg("role", ROLES))


@bp.get("/users")
@require_role("admin")
def list_users() -> Response | str:
    """Keyset paging by id: ``?after_id=`` from the previous page's ``next_after_id``; ``q`` searches names/emails."""
    if wants_page():
        return console_users.users_page(user_filter())
    limit = int_arg("limit", 50, minimum=1, maximum=200)
    after_id = optional_int_arg("after_id")
    with unit_of_work() as session:
        page = search_users(session, user_filter(), limit=limit, after_id=after_id, count=False)
        items = [user_json(u) for u in page.users]
    return jsonify(users=items, next_after_id=page.next_after_id)


@bp.get("/users/<int:user_id>")
@require_role("admin")
def get_user(user_id: int) -> Response | str:
    if wants_page():
        return console_users.user_page(user_id)
    with unit_of_work() as session:
        user = session.get(User, user_id)
        if user is None:
            raise APIError(404, "not_found", f"no user with id {user_id}")
        changes = session.execute(
            select(UserChange).where(UserChange.user_id == user_id).order_by(UserChange.id.desc()).limit(20)
        ).scalars()
        return jsonify(user=user_json(user), recent_changes=[change_json(c) for c in changes])


def actor_name() -> str | None:
    """How the audit trail names the signed-in admin."""
    admin = current_user()
    return admin.email or admin.username if admin is not None else None


@bp.patch("/users/<int:user_id>")
@require_role("admin")
def edit_user(user_id: int) -> Response:
    """Change the application's own fields. Refuses to demote the last active admin (nobody could undo it)."""
    body = json_object(allowed=set(APP_FIELDS))
    try:
        edit = clean_app_fields(body)
        with unit_of_work() as session:
            outcome = edit_app_fields(session, user_id, edit, actor=actor_name())
            result = user_json(outcome.user)
    except NoSuchUser:
        raise APIError(404, "not_found", f"no user with id {user_id}") from None
    except EditRefused as exc:
        raise APIError(409 if exc.code == "last_admin" else 400, exc.code, str(exc)) from None
    if outcome.change is not None:
        publish_changes([outcome.change])
    return jsonify(user=result, changed=outcome.changed)
