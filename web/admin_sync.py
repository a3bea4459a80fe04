"""Admin API and command line for directory syncs: start a full reconciliation or a single-user sync, see history.

- ``POST /admin/sync`` without a body starts a full run: 202 with its id, or 409 naming the run already running.
- ``POST /admin/sync`` with ``{"user_id": "..."}`` syncs one user: 202 with the run id.
- ``GET /admin/sync/runs?limit=&before_id=&kind=`` lists runs newest first; ``GET /admin/sync/runs/<id>`` shows one.
- ``flask sync run [--user ID]`` runs the same work in the foreground with a progress bar.

All routes need the ``admin`` role. The work itself runs in Celery (``reconcile.run``, ``users.sync``); the row is
created and committed first, then the task is sent, so the task always finds its row.
"""

from __future__ import annotations

import logging
from typing import Any

import click
from flask import Blueprint, Response, jsonify, request, url_for

from models.db import unit_of_work
from models.runs import (
    Counters,
    RunInProgress,
    finish_run,
    get_run,
    list_runs,
    run_as_dict,
    start_full_run,
    start_user_run,
)
from models.tables import RUN_KINDS
from tasks.reconcile import reconcile_all
from tasks.scim import valid_id
from tasks.users import SyncPending, sync_user
from web import console_sync
from web.access import current_user, require_role
from web.enqueue import RECONCILE_TASK, SYNC_USER_TASK, enqueue_run
from web.errors import APIError, wants_page
from web.validate import choice_arg, int_arg, optional_int_arg

bp = Blueprint("admin_sync", __name__, url_prefix="/admin/sync", cli_group="sync")
bp.cli.help = "Sync users from Asgardeo: a full reconciliation now, or one user (flask sync run --user ID)."
log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4096
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def _read_body() -> dict[str, Any] | None:
    """``None`` for an empty body; a JSON object otherwise, or a 4xx."""
    if request.content_length and request.content_length > MAX_BODY_BYTES:
        raise APIError(413, "body_too_large", f"The body must be at most {MAX_BODY_BYTES} bytes.")
    raw = request.get_data(cache=True)
    if len(raw) > MAX_BODY_BYTES:
        raise APIError(413, "body_too_large", f"The body must be at most {MAX_BODY_BYTES} bytes.")
    if not raw.strip():
        return None
    if not request.is_json:
        raise APIError(415, "unsupported_media_type", "Send the body as application/json.")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise APIError(400, "invalid_body", 'The body must be a JSON object such as {"user_id": "..."}.')
    return body


def _accepted(run_id: int, kind: str) -> tuple[Response, int, dict[str, str]]:
    location = url_for("admin_sync.one_run", run_id=run_id)
    body = jsonify(run_id=run_id, kind=kind, status="running", url=location)
    return body, 202, {"Location": location}


@bp.post("")
@require_role("admin")
def start_sync() -> tuple[Response, int] | tuple[Response, int, dict[str, str]]:
    body = _read_body()
    user = current_user()
    actor = user.email or user.username if user is not None else None
    if body is None:
        try:
            with unit_of_work() as session:
                run_id = start_full_run(session, trigger="admin", requested_by=actor).id
        except RunInProgress as exc:
            response = jsonify(
                error="sync_running",
                detail=f"A full sync (run {exc.run_id}) is already running.",
                run_id=exc.run_id,
                url=url_for("admin_sync.one_run", run_id=exc.run_id),
            )
            return response, 409
        enqueue_run(RECONCILE_TASK, run_id, trigger="admin")
        log.info("full sync requested", extra={"run_id": run_id})
        return _accepted(run_id, "full")
    unknown = sorted(set(body) - {"user_id"})
    if unknown:
        raise APIError(400, "invalid_body", f"Unknown field(s): {', '.join(unknown)}. Send only user_id, or no body.")
    user_id = body.get("user_id")
    if not isinstance(user_id, str) or not valid_id(user_id):
        raise APIError(
            400, "invalid_user_id", "user_id must be an Asgardeo user id (letters, digits and -._:@, at most 64)."
        )
    with unit_of_work() as session:
        run_id = start_user_run(session, user_id, trigger="admin", requested_by=actor).id
    enqueue_run(SYNC_USER_TASK, run_id, asgardeo_id=user_id, trigger="admin", requested_by=actor)
    log.info("user sync requested", extra={"run_id": run_id, "user_id": user_id})
    return _accepted(run_id, "user")


@bp.get("/runs")
@require_role("admin")
def runs() -> Response:
    limit = int_arg("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    before = optional_int_arg("before_id")
    kind = choice_arg("kind", RUN_KINDS)
    with unit_of_work() as session:
        rows = list_runs(session, limit=limit + 1, before_id=before, kind=kind)
    page = [run_as_dict(r) for r in rows[:limit]]
    next_before = page[-1]["id"] if len(rows) > limit else None
    return jsonify(runs=page, next_before_id=next_before)


@bp.get("/runs/<int:run_id>")
@require_role("admin")
def one_run(run_id: int) -> Response | str:
    """The run as JSON; a browser asking for a page gets the run's console page (:mod:`web.console_sync`)."""
    if run_id > 2**63 - 1:
        raise APIError(404, "not_found", f"No sync run {run_id}.")
    with unit_of_work() as session:
        run = get_run(session, run_id)
        if run is None:
            raise APIError(404, "not_found", f"No sync run {run_id}.")
        if wants_page():
            return console_sync.run_page(run)
        return jsonify(run_as_dict(run))


# --- command line ------------------------------------------------------------------------------------------
def _bar(phase: str, counters: Counters, width: int = 30) -> str:
    total = counters.total_results or 0
    done = min(counters.seen, total) if total else 0
    filled = int(width * done / total) if total else 0
    percent = f"{100 * done / total:5.1f}%" if total else "  ?  "
    return (
        f"\r[{'#' * filled}{'-' * (width - filled)}] {percent} {phase:<12} pages {counters.pages_done}"
        f" seen {counters.seen} created {counters.created} updated {counters.updated}"
        f" deactivated {counters.deactivated} failed {counters.failed}"
    )


@bp.cli.command("run")
@click.option("--user", "user_id", default=None, help="Sync only this Asgardeo user id.")
def run_command(user_id: str | None) -> None:
    """Run a full reconciliation (or one user's sync) now, in this process, printing progress."""
    if user_id is not None:
        if not valid_id(user_id):
            raise click.BadParameter("not an Asgardeo user id", param_hint="--user")
        try:
            result = sync_user(user_id, trigger="cli", requested_by="cli")
        except SyncPending as pending:
            with unit_of_work() as session:
                finish_run(session, pending.run_id, "failed", error=str(pending.cause))
            raise click.ClickException(f"run {pending.run_id} failed: {pending.cause}") from None
        click.echo(f"run {result.run_id}: {result.status} ({result.action or result.error})")
        if result.status != "succeeded":
            raise SystemExit(1)
        return
    try:
        with unit_of_work() as session:
            run_id = start_full_run(session, trigger="cli", requested_by="cli").id
    except RunInProgress as exc:
        raise click.ClickException(f"run {exc.run_id} is already running") from None
    click.echo(f"run {run_id} started")
    outcome = reconcile_all(run_id, progress=lambda phase, c: click.echo(_bar(phase, c), nl=False))
    click.echo("")
    click.echo(f"run {run_id}: {outcome.status}" + (f" ({outcome.error})" if outcome.error else ""))
    if outcome.status != "succeeded":
        raise SystemExit(1)
