"""The sync console: start a full reconciliation, watch a run's counters move, read the history of runs.

``GET /admin/sync`` is the page; the run page is served at the run's JSON address (``/admin/sync/runs/<id>``) when a
browser asks for HTML, and its script polls that same address for JSON, so the page shows exactly what the API says.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, redirect, render_template, request, url_for
from flask import Response as FlaskResponse
from werkzeug.wrappers import Response

from models import guard_review
from models.db import unit_of_work
from models.runs import RunInProgress, list_runs, running_full_run, start_full_run
from models.settings import Settings
from models.tables import RUN_KINDS, SyncRun
from web.access import current_user, require_role
from web.enqueue import RECONCILE_TASK, enqueue_review, enqueue_run
from web.errors import APIError, wants_json
from web.validate import choice_arg, optional_int_arg

bp = Blueprint("console_sync", __name__, url_prefix="/admin/sync")
log = logging.getLogger(__name__)

HISTORY_SHOWN = 25
CANDIDATES_SHOWN = 200


def flower_task_url(run: SyncRun) -> str | None:
    """The run's task in Flower (operators follow workers and retries there)."""
    settings: Settings = current_app.config["SETTINGS"]
    if not run.task_id:
        return None
    return f"{settings.flower_url.rstrip('/')}/task/{run.task_id}"


@bp.get("")
@require_role("admin")
def page() -> str:
    kind = choice_arg("kind", RUN_KINDS) or "full"
    before_id = optional_int_arg("before_id")
    with unit_of_work() as session:
        running = running_full_run(session)
        runs = list(list_runs(session, limit=HISTORY_SHOWN + 1, before_id=before_id, kind=kind))
    settings: Settings = current_app.config["SETTINGS"]
    return render_template(
        "console/sync.html",
        running=running,
        runs=runs[:HISTORY_SHOWN],
        next_before_id=runs[HISTORY_SHOWN - 1].id if len(runs) > HISTORY_SHOWN else None,
        kind=kind,
        kinds=RUN_KINDS,
        flower_url=settings.flower_url,
        flower_task_url=flower_task_url,
    )


def run_page(run: SyncRun) -> str:
    """The run with its counters; for a guarded run, its review (numbers, candidates, approve or dismiss)."""
    settings: Settings = current_app.config["SETTINGS"]
    review = candidates = None
    with unit_of_work() as session:
        found = guard_review.get_review(session, run.id)
        if found is not None:
            review = guard_review.review_as_dict(session, found)
            candidates = guard_review.list_candidates(session, run.id, limit=CANDIDATES_SHOWN)
    return render_template(
        "console/run.html",
        run=run,
        review=review,
        candidates=candidates,
        flower_url=settings.flower_url,
        flower_task_url=flower_task_url,
        already_running=request.args.get("already") == "1",
    )


@bp.post("/full")
@require_role("admin")
def start_full() -> Response:
    """The "Run a full reconciliation now" button: start one and open its page, or open the one already running."""
    admin = current_user()
    actor = admin.email or admin.username if admin is not None else None
    try:
        with unit_of_work() as session:
            run_id = start_full_run(session, trigger="admin", requested_by=actor).id
    except RunInProgress as exc:
        return redirect(url_for("admin_sync.one_run", run_id=exc.run_id, already=1), code=303)
    enqueue_run(RECONCILE_TASK, run_id, trigger="admin")
    log.info("full sync requested from the console", extra={"run_id": run_id})
    return redirect(url_for("admin_sync.one_run", run_id=run_id), code=303)


def _actor() -> str | None:
    admin = current_user()
    return admin.email or admin.username if admin is not None else None


def _review_or_404(run_id: int) -> None:
    with unit_of_work() as session:
        if guard_review.get_review(session, run_id) is None:
            raise APIError(404, "not_found", f"Run {run_id} was not stopped by the guard; there is nothing to review.")


@bp.get("/runs/<int:run_id>/review")
@require_role("admin")
def review_json(run_id: int) -> FlaskResponse:
    """A guarded run's review: the guard's numbers, the candidates' outcomes so far, who decided."""
    with unit_of_work() as session:
        found = guard_review.get_review(session, run_id)
        if found is None:
            raise APIError(404, "not_found", f"Run {run_id} was not stopped by the guard; there is nothing to review.")
        return jsonify(guard_review.review_as_dict(session, found))


def _decided(run_id: int, status: int) -> Response:
    if wants_json():
        with unit_of_work() as session:
            found = guard_review.get_review(session, run_id)
            assert found is not None
            body = jsonify(guard_review.review_as_dict(session, found))
        body.status_code = status
        return body
    return redirect(url_for("admin_sync.one_run", run_id=run_id) + "#review", code=303)


@bp.post("/runs/<int:run_id>/review/approve")
@require_role("admin")
def approve(run_id: int) -> Response:
    """Approve: a worker re-confirms each candidate with the directory and retires only the really gone.
    409 when the review is no longer pending (someone decided already)."""
    _review_or_404(run_id)
    actor = _actor()
    try:
        with unit_of_work() as session:
            guard_review.begin_approval(session, run_id, actor=actor)
    except guard_review.ReviewClosed as exc:
        raise APIError(409, "review_closed", f"This review is already {exc.status}.") from None
    enqueue_review(run_id, actor)
    log.info("guarded run approved", extra={"run_id": run_id})
    return _decided(run_id, 202)


@bp.post("/runs/<int:run_id>/review/dismiss")
@require_role("admin")
def dismiss(run_id: int) -> Response:
    """Dismiss: nobody is retired; the next full run looks again. 409 when the review is no longer pending."""
    _review_or_404(run_id)
    try:
        with unit_of_work() as session:
            guard_review.dismiss(session, run_id, actor=_actor())
    except guard_review.ReviewClosed as exc:
        raise APIError(409, "review_closed", f"This review is already {exc.status}.") from None
    log.info("guarded run dismissed", extra={"run_id": run_id})
    return _decided(run_id, 200)
