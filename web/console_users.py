"""The users console: find a user among thousands, read their directory fields and where each came from, edit the
application's own fields, end their sessions, and sync them from Asgardeo now.

The pages are served at the admin API's own addresses when a browser asks for HTML (:mod:`web.admin` hands them
over); the forms post here and answer with a redirect back to the page (post/redirect/get), carrying the outcome as a
query-string notice the page words (not the cookie session: nothing else needs it).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse

from models import audit, sign_in_events
from models.db import unit_of_work
from models.runs import get_run, start_user_run
from models.tables import ROLES, USER_STATUSES, SyncRun, User, UserChange
from models.user_edits import APP_FIELDS, EditRefused, NoSuchUser, clean_app_fields, edit_app_fields, open_sessions
from models.user_edits import revoke_user_session as revoke_one
from models.user_search import UserFilter, search_users
from models.users import IDENTITY_FIELDS
from tasks.live import publish_changes
from web.access import current_user, require_role
from web.console import form_text
from web.enqueue import SYNC_USER_TASK, enqueue_run
from web.errors import APIError
from web.validate import int_arg, optional_int_arg

bp = Blueprint("console_users", __name__, url_prefix="/admin/users")
log = logging.getLogger(__name__)

PAGE_SIZE = 50
HISTORY_SHOWN = 50
RUNS_SHOWN = 5


def _actor() -> str | None:
    admin = current_user()
    return admin.email or admin.username if admin is not None else None


def users_page(found: UserFilter) -> str:
    """The search form and one keyset page of matches, with "first to last of total"."""
    limit = int_arg("limit", PAGE_SIZE, minimum=1, maximum=200)
    after_id = optional_int_arg("after_id")
    before_id = optional_int_arg("before_id")
    with unit_of_work() as session:
        page = search_users(session, found, limit=limit, after_id=after_id, before_id=before_id)
    query = {k: v for k, v in (("q", found.text), ("status", found.status), ("role", found.role)) if v}
    if limit != PAGE_SIZE:
        query["limit"] = str(limit)
    return render_template(
        "console/users.html",
        page=page,
        found=found,
        query=query,
        statuses=USER_STATUSES,
        roles=ROLES,
    )


def _requested_run(session: Session) -> SyncRun | None:
    """The run named by ``?run=`` (the single-user sync this admin just started), whatever it is."""
    run_id = optional_int_arg("run")
    return None if run_id is None else get_run(session, run_id)


def user_page(user_id: int, *, refused: str | None = None) -> str:
    """The user's page; ``refused`` is why a just-posted edit was not saved (shown beside the form)."""
    with unit_of_work() as session:
        # The run before the user and its audit rows: a sync commits them together, so a run read as finished has
        # its changes in what is read after it. Read the other way round, a sync committing in between showed
        # "succeeded, nothing changed" for a sync that had changed the user (seen once in CI).
        requested = _requested_run(session)
        user = session.get(User, user_id)
        if user is None:
            raise APIError(404, "not_found", f"No user with id {user_id}.")
        shown_run = (
            requested if requested and requested.kind == "user" and requested.asgardeo_id == user.asgardeo_id else None
        )
        provenance = audit.field_provenance(session, user_id, IDENTITY_FIELDS)
        history = audit.user_history(session, user_id, limit=HISTORY_SHOWN)
        sessions = open_sessions(session, user_id)
        runs = audit.user_runs(session, user.asgardeo_id, limit=RUNS_SHOWN)
        failed_logins = sign_in_events.failed_logins(session, user.asgardeo_id)
        run_changes: dict[int, list[UserChange]] = {}
        for change in history:
            if change.run_id is not None:
                run_changes.setdefault(change.run_id, []).append(change)
    return render_template(
        "console/user.html",
        person=user,
        provenance=provenance,
        identity_fields=IDENTITY_FIELDS,
        history=history,
        sessions=sessions,
        runs=runs,
        shown_run=shown_run,
        run_changes=run_changes,
        roles=ROLES,
        failed_logins=failed_logins,
        refused=refused,
        saved=request.args.get("saved"),
        revoked=optional_int_arg("revoked"),
        not_open=request.args.get("not_open") == "1",
    )


def _back(user_id: int, **args: Any) -> BaseResponse:
    return redirect(url_for("admin.get_user", user_id=user_id, **args), code=303)


@bp.post("/<int:user_id>/fields")
@require_role("admin")
def save_fields(user_id: int) -> BaseResponse:
    """The app-owned fields form. Nothing changed is said so; a refused edit changes nothing and says why."""
    raw = {name: form_text(name) for name in APP_FIELDS}
    try:
        edit = clean_app_fields(raw)
        with unit_of_work() as session:
            outcome = edit_app_fields(session, user_id, edit, actor=_actor())
    except NoSuchUser:
        raise APIError(404, "not_found", f"No user with id {user_id}.") from None
    except EditRefused as exc:
        return Response(user_page(user_id, refused=str(exc)), 409 if exc.code == "last_admin" else 400)
    if outcome.change is not None:
        publish_changes([outcome.change])
    return _back(user_id, saved=",".join(name for name in APP_FIELDS if name in outcome.changed))


@bp.post("/<int:user_id>/sessions/<int:session_id>/revoke")
@require_role("admin")
def revoke_session(user_id: int, session_id: int) -> BaseResponse:
    try:
        with unit_of_work() as session:
            revoked = revoke_one(session, user_id, session_id, actor=_actor())
    except NoSuchUser:
        raise APIError(404, "not_found", f"No user with id {user_id}.") from None
    if revoked:
        log.info("session revoked by an admin", extra={"user_id": user_id, "session_id": session_id})
        return _back(user_id, revoked=session_id)
    return _back(user_id, revoked=session_id, not_open=1)


@bp.post("/<int:user_id>/sync")
@require_role("admin")
def sync_now(user_id: int) -> BaseResponse:
    """Start a single-user sync from Asgardeo; the page follows the run until it has a result."""
    actor = _actor()
    with unit_of_work() as session:
        user = session.get(User, user_id)
        if user is None:
            raise APIError(404, "not_found", f"No user with id {user_id}.")
        asgardeo_id = user.asgardeo_id
        run_id = start_user_run(session, asgardeo_id, trigger="admin", requested_by=actor).id
    enqueue_run(SYNC_USER_TASK, run_id, asgardeo_id=asgardeo_id, trigger="admin", requested_by=actor)
    log.info("user sync requested from the console", extra={"run_id": run_id, "user_id": user_id})
    return redirect(url_for("admin.get_user", user_id=user_id, run=run_id) + "#sync", code=303)
