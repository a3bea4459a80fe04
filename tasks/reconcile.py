"""The full reconciliation: page through Asgardeo's directory, repair the local table, retire the really-gone.

``reconcile.run`` is started nightly by beat and on demand by admins (``POST /admin/sync``, ``flask sync run``).
:func:`reconcile_all` does the work and needs no Celery:

1. Take the run lock without waiting (:func:`models.runs.hold_run_lock`); a second run is refused.
2. Stream the listing (``SCIM_LIST_CONCURRENCY`` page requests in flight, each inside the rate budget, pages
   taken in index order) through :mod:`tasks.page_pipeline`, which fetches ahead while earlier pages are written
   and re-analyzes ``users`` while a first sync grows it. The pages fetched by the time a writer is free (one under
   the rate limit) go into one short transaction: one :func:`models.users.upsert_users` statement, which keeps the
   app's own fields, skips stale rows and stamps every seen user with the run id, plus the run row's counters.
   Changes are published after each commit, one message per transaction.
3. Only if the listing completed: every local user (not deleted) the listing did not show is asked for with a single GET
   (index paging shifts when users are added or removed mid-run, so "not listed" does not yet mean "gone"). A user
   that answers is upserted; a 404 is really gone.
4. If the really-gone exceed ``RECONCILE_MAX_DEACTIVATE_SHARE`` of all (non-deleted) users, the run stops as
   ``guarded`` and retires nobody; else each becomes a ``deleted`` tombstone (sessions revoked, audited, published).
5. Unlisted users whose GET failed (neither present nor confirmed gone) are kept as they are, and the run ends
   ``partial``, naming them on the run row (``unconfirmed``): if they were deleted at the directory they still have
   access, which an operator must see (``flask sync run`` exits non-zero, the sync-health page shows it).

A listing that fails part-way marks the run ``failed`` and retires nobody. Re-running is always safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from celeryconfig import RECONCILE_HARD_LIMIT, RECONCILE_SOFT_LIMIT
from models import directory_roles
from models.clock import now_ms
from models.db import get_engine, unit_of_work
from models.guard_review import open_review
from models.runs import (
    INCREMENTAL_LOCK_KEY,
    Counters,
    RunInProgress,
    add_progress,
    finish_run,
    get_run,
    hold_run_lock,
    lock_holder_exists,
    mark_started,
    record_progress,
    start_full_run,
)
from models.settings import get_settings
from models.users import Change, retire_absent, retire_limit, unseen_by_run, upsert_users
from tasks.app import app
from tasks.arguments import positive_id
from tasks.config_warnings import DIRECTORY_UNUSABLE, LAST_ADMIN_KEPT, record_warning
from tasks.errors import DirectoryError, DirectoryUnavailable, UserGone
from tasks.live import publish_changes, publish_encoded
from tasks.page_pipeline import Transaction, write_listing
from tasks.scim import Listing, ScimClient, valid_id

log = logging.getLogger(__name__)

CONFIRM_BATCH = 500
# A partial run names at most this many unconfirmed users on its row (the count is in its error).
MAX_UNCONFIRMED_NAMED = 1000
RETIRE_BATCH = 200
SOURCE = "reconcile"
# A full run that finds an incremental sync holding the run lock waits this long for it (they take seconds to a few
# minutes), rather than being refused for the night.
INCREMENTAL_WAIT_SECONDS = 600.0

Progress = Callable[[str, Counters], None]


@dataclass(frozen=True)
class RunOutcome:
    run_id: int
    status: str
    counters: Counters
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "error": self.error, **self.counters.as_dict()}


def reconcile_all(
    run_id: int,
    *,
    client: ScimClient | None = None,
    task_id: str | None = None,
    progress: Progress | None = None,
    max_deactivate_share: float | None = None,
) -> RunOutcome:
    """Execute the ``running`` full run ``run_id`` (see the module docstring). Never raises a directory error:
    those end the run as ``failed``. Returns the outcome; the run row holds the same.
    """
    settings = get_settings()
    share = settings.reconcile_max_deactivate_share if max_deactivate_share is None else max_deactivate_share
    counters = Counters()
    report: Progress = progress or (lambda _phase, _c: None)
    with unit_of_work() as session:
        incremental_running = lock_holder_exists(session, INCREMENTAL_LOCK_KEY)
    wait = INCREMENTAL_WAIT_SECONDS if incremental_running else 0.0
    with hold_run_lock(get_engine(), wait_seconds=wait) as taken:
        if not taken:
            with unit_of_work() as session:
                finish_run(session, run_id, "failed", error="refused: another reconciliation holds the lock")
            return RunOutcome(run_id, "refused", counters, "another reconciliation holds the lock")
        with unit_of_work() as session:
            run = get_run(session, run_id)
            if run is None or run.kind != "full" or run.status != "running":
                return RunOutcome(run_id, "refused", counters, "no such running full run")
            mark_started(session, run_id, task_id)
        log.info("reconciliation started", extra={"run_id": run_id})
        try:
            scim = client or ScimClient()
            _list(scim, run_id, counters, report, role_map=settings.group_roles or None)
            retirement = _retire_missing(scim, run_id, counters, report, share)
        except DirectoryError as exc:
            if isinstance(exc, DirectoryUnavailable):
                record_warning(DIRECTORY_UNUSABLE, run_id=run_id)
            failure = f"listing incomplete, nobody deactivated: {exc}"
            log.warning("reconciliation failed", extra={"run_id": run_id, "error": str(exc)})
            with unit_of_work() as session:
                finish_run(session, run_id, "failed", error=failure, counters=counters)
            return RunOutcome(run_id, "failed", counters, failure)
        except SoftTimeLimitExceeded:
            with unit_of_work() as session:
                finish_run(session, run_id, "failed", error="time limit reached", counters=counters)
            raise
        except Exception as exc:
            with unit_of_work() as session:
                finish_run(session, run_id, "failed", error=f"unexpected {type(exc).__name__}", counters=counters)
            raise
        status, error = _finish(run_id, retirement, counters, share)
        report("done", counters)
        log.info("reconciliation finished", extra={"run_id": run_id, "status": status, "counters": counters.as_dict()})
        return RunOutcome(run_id, status, counters, error)


def _list(scim: ScimClient, run_id: int, counters: Counters, report: Progress, role_map: dict[str, str] | None) -> None:
    """Write the whole listing, page transactions running concurrently (see :func:`tasks.page_pipeline.write_listing`);
    progress is reported from this (the task's) thread, once per page."""
    write_listing(
        scim.iter_listing(),
        lambda listings, transaction: _write_pages(run_id, listings, role_map, transaction, scim),
        counters,
        lambda current: report("listing", current),
    )


def _write_pages(
    run_id: int,
    listings: list[Listing],
    role_map: dict[str, str] | None,
    transaction: Transaction,
    scim: ScimClient,
) -> list[Counters]:
    """Some pages in one short transaction: one upsert statement plus the run row's counters; publish after commit.

    Returns one delta per page (the statement's created/updated/unchanged counts go on the last). The resources are
    read here, not in the listing thread, so the next request goes out sooner.
    """
    pages = [listing.parse() for listing in listings]
    deltas = [Counters(pages_done=1, total_results=p.total_results, seen=len(p.users), failed=p.invalid) for p in pages]
    records = [user for page in pages for user in page.users]
    deltas[-1].budget_waits, deltas[-1].budget_wait_ms = scim.take_budget_waits()
    with transaction() as session:
        result = upsert_users(session, records, source=SOURCE, run_id=run_id, role_map=role_map)
        role_changes = _repair_roles(session, listings, run_id)
        # A user listed twice (paging shifted between two pages) is written once; the repeat counts as unchanged.
        unchanged = len(records) - result.created - result.updated
        deltas[-1].add(Counters(created=result.created, updated=result.updated, unchanged=unchanged))
        total = Counters()
        for delta in deltas:
            total.add(delta)
        add_progress(session, run_id, total)
    publish_encoded(result.encoded_changes, result.created + result.updated)
    publish_changes(role_changes)
    return deltas


def _repair_roles(session: Any, listings: list[Listing], run_id: int) -> list[Change]:
    """With ``ROLE_MAP`` set, the listed users' directory-granted roles follow their SCIM ``roles[]``
    (:func:`models.directory_roles.reconcile_roles`), in the page's transaction."""
    role_map = get_settings().asgardeo_roles
    if not role_map:
        return []
    changes: list[Change] = []
    for listing in listings:
        listed = {
            str(r["id"]): directory_roles.scim_roles(r)
            for r in listing.resources
            if isinstance(r, dict) and valid_id(r.get("id"))
        }
        outcome = directory_roles.reconcile_roles(
            session, listed, role_map, listed_ms=listing.fetched_ms, run_id=run_id
        )
        changes.extend(outcome.changes)
        for user_id in outcome.kept_last_admin:
            record_warning(LAST_ADMIN_KEPT, user_id=user_id)
    return changes


@dataclass(frozen=True)
class _Retirement:
    status: str
    population: int
    allowed: int
    confirmed_gone: int
    # Users whose confirmation failed: neither retired nor seen, so the run is ``partial``.
    unconfirmed: list[str]


def _retire_missing(scim: ScimClient, run_id: int, counters: Counters, report: Progress, share: float) -> _Retirement:
    """Confirm unseen users one by one; retire the really-gone unless the guard trips."""
    with unit_of_work() as session:
        limit = retire_limit(session, share)
    population, allowed = limit.population, limit.allowed
    gone, unconfirmed = _confirm_missing(scim, run_id, counters, report, allowed)
    if len(gone) > allowed:
        log.warning(
            "reconciliation guard tripped",
            extra={"run_id": run_id, "gone_so_far": len(gone), "allowed": allowed},
        )
        return _Retirement("guarded", population, allowed, len(gone), unconfirmed)
    _retire(gone, run_id, counters, report)
    return _Retirement("succeeded", population, allowed, len(gone), unconfirmed)


def _confirm_missing(
    scim: ScimClient, run_id: int, counters: Counters, report: Progress, allowed: int
) -> tuple[list[tuple[str, int]], list[str]]:
    """Ask for every user the run did not see with a single GET: one that answers is upserted, a 404 is gone, a
    failure leaves the user unconfirmed. Returns the gone (with the time they were asked for) and the unconfirmed;
    stops as soon as more than ``allowed`` are gone."""
    gone: list[tuple[str, int]] = []
    unconfirmed: list[str] = []
    after_id = 0
    while True:
        with unit_of_work() as session:
            batch = unseen_by_run(session, run_id, after_id=after_id, limit=CONFIRM_BATCH)
        if not batch:
            return gone, unconfirmed
        for user_id, asgardeo_id in batch:
            after_id = user_id
            asked_ms = now_ms()
            try:
                record = scim.get_user(asgardeo_id)
            except UserGone:
                gone.append((asgardeo_id, asked_ms))
                if len(gone) > allowed:
                    return gone, unconfirmed
                continue
            except (ValueError, DirectoryError) as exc:
                # Not confirmed gone, so kept; the next run asks again.
                counters.failed += 1
                unconfirmed.append(asgardeo_id)
                log.warning("could not confirm an unlisted user", extra={"run_id": run_id, "error": str(exc)})
                continue
            with unit_of_work() as session:
                result = upsert_users(session, [record], source=SOURCE, run_id=run_id)
                counters.seen += 1
                counters.add(Counters.of_upsert(result))
            publish_changes(result.changes)
        waits, waited_ms = scim.take_budget_waits()
        counters.budget_waits += waits
        counters.budget_wait_ms += waited_ms
        with unit_of_work() as session:
            record_progress(session, run_id, counters)
        report("confirming", counters)


def _retire(gone: list[tuple[str, int]], run_id: int, counters: Counters, report: Progress) -> None:
    """Make each confirmed-gone user a ``deleted`` tombstone, :data:`RETIRE_BATCH` to a transaction."""
    for start in range(0, len(gone), RETIRE_BATCH):
        changes: list[Change] = []
        with unit_of_work() as session:
            for asgardeo_id, asked_ms in gone[start : start + RETIRE_BATCH]:
                change = retire_absent(session, asgardeo_id, asked_ms=asked_ms, source=SOURCE, run_id=run_id)
                if change is not None:
                    changes.append(change)
                    counters.deactivated += 1
            record_progress(session, run_id, counters)
        publish_changes(changes)
        report("deactivating", counters)


def _finish(run_id: int, retirement: _Retirement, counters: Counters, share: float) -> tuple[str, str | None]:
    """Close the run with the retirement's outcome: ``guarded`` opens the admin's review of what it would retire,
    failed confirmations make it ``partial`` (naming the users); returns the status and the run's error."""
    status, error = retirement.status, None
    unconfirmed: list[str] | None = None
    with unit_of_work() as session:
        if status == "guarded":
            # The admin's review (approve or dismiss on the run's page) starts from these candidates.
            missed = open_review(
                session,
                run_id,
                population=retirement.population,
                allowed=retirement.allowed,
                share=share,
                confirmed_gone=retirement.confirmed_gone,
            )
            error = (
                f"guard: the listing missed {missed} of {retirement.population} users and at least"
                f" {retirement.confirmed_gone} are gone, more than RECONCILE_MAX_DEACTIVATE_SHARE allows"
                f" ({retirement.allowed}); none were deactivated. Review the run to approve or dismiss."
            )
        elif retirement.unconfirmed:
            unconfirmed = retirement.unconfirmed[:MAX_UNCONFIRMED_NAMED]
            error = (
                f"{len(retirement.unconfirmed)} unlisted user(s) could not be confirmed gone or present; kept as"
                " they were (listed in unconfirmed)"
            )
            status = "partial"
        finish_run(session, run_id, status, error=error, counters=counters, unconfirmed=unconfirmed)
    return status, error


@app.task(
    name="reconcile.run",
    bind=True,
    acks_late=True,
    ignore_result=False,
    soft_time_limit=RECONCILE_SOFT_LIMIT,
    time_limit=RECONCILE_HARD_LIMIT,
)
def run(self: Any, run_id: int | None = None, trigger: str = "beat") -> dict[str, Any]:
    """Run a full reconciliation. Beat sends no ``run_id`` (the row is created here); the admin API creates the row
    first and passes its id. A second run while one is running is refused, not queued. Not retried: the next
    trigger (or tomorrow night) runs again, and every step is idempotent.
    """
    if run_id is not None and positive_id(run_id) is None:
        log.warning("reconcile.run called with a bad run id; ignored")
        return {"status": "rejected", "error": "run_id must be a positive integer"}
    if run_id is None:
        try:
            with unit_of_work() as session:
                run_id = start_full_run(session, trigger=str(trigger)[:32] or "beat").id
        except RunInProgress as exc:
            log.info("reconciliation already running; this trigger is refused", extra={"run_id": exc.run_id})
            return {"status": "refused", "running_run_id": exc.run_id}

    def report(phase: str, counters: Counters) -> None:
        progress = {"run_id": run_id, "phase": phase, **counters.as_dict()}
        self.update_state(state="PROGRESS", meta=progress)
        # Flower follows task events, not the result backend: a custom event puts the counters on its task page.
        self.send_event("task-progress", **progress)

    return reconcile_all(run_id, task_id=self.request.id, progress=report).as_dict()
