"""Finding users for people and scripts: one filter (text, status, role) and keyset pages with a position.

Both the admin JSON API and the users page read through :func:`search_users`, so a search means the same thing
wherever it is typed. Functions take an open ``Session`` and never write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session

from models.tables import User


@dataclass(frozen=True)
class UserFilter:
    """``text`` matches name, email or username (substring), or an employee id, Asgardeo id or local id exactly."""

    text: str | None = None
    status: str | None = None
    role: str | None = None


@dataclass(frozen=True)
class UserPage:
    users: Sequence[User]
    total: int
    # 1-based position of the first user of this page among all matches (0 on an empty page).
    first_position: int
    next_after_id: int | None
    prev_before_id: int | None


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _conditions(found: UserFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if found.status:
        conditions.append(User.status == found.status)
    if found.role:
        conditions.append(User.role == found.role)
    if found.text:
        pattern = _like(found.text)
        full_name = func.coalesce(User.first_name, "") + " " + func.coalesce(User.last_name, "")
        either: list[ColumnElement[bool]] = [
            User.email.ilike(pattern, escape="\\"),
            User.username.ilike(pattern, escape="\\"),
            full_name.ilike(pattern, escape="\\"),
            User.employee_id == found.text,
            User.asgardeo_id == found.text,
        ]
        if found.text.isdigit() and int(found.text) < 2**63:
            either.append(User.id == int(found.text))
        conditions.append(or_(*either))
    return conditions


def _matching(found: UserFilter) -> Select[User]:
    return select(User).where(*_conditions(found))


def search_users(
    session: Session,
    found: UserFilter,
    *,
    limit: int,
    after_id: int | None = None,
    before_id: int | None = None,
    count: bool = True,
) -> UserPage:
    """One page of matches in id order: after ``after_id`` (next page) or, with ``before_id``, the page before it.

    With ``count`` the page also knows the total and its position (two counts over the same filter); the JSON API
    skips them to stay one query.
    """
    statement = _matching(found)
    if before_id is not None:
        rows = list(
            session.execute(statement.where(User.id < before_id).order_by(User.id.desc()).limit(limit + 1)).scalars()
        )
        has_prev = len(rows) > limit
        users = list(reversed(rows[:limit]))
        has_next = True
    else:
        if after_id is not None:
            statement = statement.where(User.id > after_id)
        rows = list(session.execute(statement.order_by(User.id).limit(limit + 1)).scalars())
        users = rows[:limit]
        has_next = len(rows) > limit
        has_prev = after_id is not None
    total = position = 0
    if count:
        conditions = _conditions(found)
        total = session.execute(select(func.count()).select_from(User).where(*conditions)).scalar_one()
        if users:
            position = session.execute(
                select(func.count()).select_from(User).where(*conditions, User.id <= users[0].id)
            ).scalar_one()
            has_prev = position > 1
    return UserPage(
        users=users,
        total=total,
        first_position=position,
        next_after_id=users[-1].id if users and has_next else None,
        prev_before_id=users[0].id if users and has_prev else None,
    )
