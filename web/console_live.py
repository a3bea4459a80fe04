"""The live page: the user table, any page of it, updated in place from the live stream, and the latest changes in
words (who, what changed, from which path).

Served at ``/admin/live`` (:mod:`web.admin_inbox` hands the request over). Paging and search are those of the users
page (:mod:`models.user_search`); the stream resumes from the newest audit row at render time, so nothing between
the render and the stream's start is lost.
"""

from __future__ import annotations

from flask import render_template
from sqlalchemy import func, select

from models.db import unit_of_work
from models.tables import ROLES, USER_STATUSES, User, UserChange
from models.user_search import UserFilter, search_users
from web.validate import choice_arg, int_arg, optional_int_arg, text_arg
from web.wording import words_for_script

PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
RECENT_CHANGES = 8


def live_page() -> str:
    found = UserFilter(text=text_arg("q"), status=choice_arg("status", USER_STATUSES), role=choice_arg("role", ROLES))
    limit = int_arg("limit", PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE)
    after_id = optional_int_arg("after_id")
    before_id = optional_int_arg("before_id")
    with unit_of_work() as session:
        page = search_users(session, found, limit=limit, after_id=after_id, before_id=before_id)
        last_change = session.execute(select(func.coalesce(func.max(UserChange.id), 0))).scalar_one()
        recent = session.execute(
            select(UserChange, User)
            .outerjoin(User, User.id == UserChange.user_id)
            .order_by(UserChange.id.desc())
            .limit(RECENT_CHANGES)
        ).all()
    query = {k: v for k, v in (("q", found.text), ("status", found.status), ("role", found.role)) if v}
    if limit != PAGE_SIZE:
        query["limit"] = str(limit)
    # Users the stream announces that are not on this page are added only to the unfiltered first page.
    insert_new = not query.get("q") and not found.status and not found.role and page.prev_before_id is None
    return render_template(
        "live_users.html",
        page=page,
        found=found,
        query=query,
        statuses=USER_STATUSES,
        roles=ROLES,
        last_change=last_change,
        recent=recent,
        insert_new=insert_new,
        words=words_for_script(),
    )
