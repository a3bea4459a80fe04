"""The sync console: start a full reconciliation, watch a run's counters move, read the history of runs.

``GET /admin/sync`` is the page; the run page is served at the run's JSON address (``/admin/sync/runs/<id>``) when a
browser asks for HTML, and its script polls that same address for JSON, so the page shows exactly what the API says.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from models.db import unit_of_work
from models.runs import RunInProgress, list_runs, running_full_run, start_full_run
from models.settings import Settings
from models.tables import RUN_KINDS, SyncRun
from web.access import current_user, require_role
from web.enqueue import RECONCILE_TASK, enqueue_run
from web.validate import choice_arg, optional_int_arg

bp = Blueprint("console_sync", __name__, url_prefix="/admin/sync")
log = logging.getLogger(__name__)

HISTORY_SHOWN = 25


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
    settings: Settings = current_app.config["SETTINGS"]
    return render_template(
        "console/run.html",
        run=run,
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
