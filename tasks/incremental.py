"""Incremental syncs: the users changed at the directory since a point, and the catch-up after the web tier was down.

Webhooks are lost whenever the web tier cannot take them for longer than Asgardeo's retries last (about 20 s), and
now and then on their own. Two paths repair that without waiting for the nightly run:

- the **sweep** (beat, every ``INCREMENTAL_SWEEP_SECONDS``): the users changed since the previous sweep began;
- the **catch-up**: when the web tier starts, the users changed since the last delivery it accepted before that start
  (the deliveries after it may have failed while it was down).

Both list ``/Users`` with ``filter=meta.lastModified ge "<point minus INCREMENTAL_MARGIN_SECONDS>"`` (paged with
``startIndex``/``count``) and upsert what they get, like a full run's pages but without stamping anyone seen.
Whether the directory honours that filter is found out at run time: a 400/501 answer (refused) or a listed user
changed before the point (ignored) marks it unsupported in Redis for :data:`FILTER_MEMORY_SECONDS` (then it is tried
again, as an organisation may gain support), and the sync becomes a full reconciliation. Deletions are invisible to a
filter: the drift check (:mod:`tasks.drift`) finds users the directory no longer has.

An incremental sync holds the reconciliation's run lock (single flight: never beside a full run or another
incremental) and uses the shared SCIM rate budget through :class:`~tasks.scim.ScimClient`. Re-running is safe: the
upsert's stale guard keeps newer rows. The last outcome of each trigger is kept in Redis for the sync-health page.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from celeryconfig import RECONCILE_HARD_LIMIT, RECONCILE_SOFT_LIMIT
from models.clock import iso_ms, now_ms
from models.db import get_engine, unit_of_work
from models.inbox import last_received_before
from models.runs import (
    INCREMENTAL_LOCK_KEY,
    Counters,
    RunInProgress,
    hold_run_lock,
    last_successful_full_run_start,
    start_full_run,
)
from models.settings import get_settings
from models.users import upsert_users
from tasks.app import app
from tasks.errors import DirectoryError, FilterRefused
from tasks.live import publish_encoded
from tasks.page_pipeline import prefetched
from tasks.reconcile import reconcile_all
from tasks.redis_client import get_redis, key
from tasks.scim import ScimClient

log = logging.getLogger(__name__)

SOURCE = "incremental"
# How long "this directory does not support meta.lastModified filters" is believed before it is tried again.
FILTER_MEMORY_SECONDS = 24 * 3600
FILTER_MEMORY_KEY = "sync:lastmodified-filter"
SWEEP_CHECKPOINT_KEY = "sync:sweep-checkpoint"
OUTCOME_KEY = "sync:incremental:{trigger}"
OUTCOME_TTL_SECONDS = 30 * 24 * 3600
TRIGGERS = ("sweep", "catch_up")
# A catch-up that finds another sync running waits this long between tries (the other one may cover less).
CATCH_UP_RETRY_SECONDS = 30
CATCH_UP_MAX_RETRIES = 40


class FilterIgnored(FilterRefused):
    """The directory answered the filtered listing with users changed before the point: it ignored the filter."""


# --- what is remembered ------------------------------------------------------------------------------------------
def filter_unsupported() -> str | None:
    """Why the directory was last found not to support the filter (``refused`` / ``ignored``), or None."""
    raw = get_redis().get(key(FILTER_MEMORY_KEY))
    if not raw:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def remember_unsupported(reason: str) -> None:
    get_redis().set(key(FILTER_MEMORY_KEY), reason, ex=FILTER_MEMORY_SECONDS)


def record_outcome(trigger: str, outcome: dict[str, Any]) -> None:
    get_redis().set(key(OUTCOME_KEY.format(trigger=trigger)), orjson.dumps(outcome), ex=OUTCOME_TTL_SECONDS)


def last_outcomes() -> dict[str, dict[str, Any]]:
    """The last outcome of each trigger (``sweep``, ``catch_up``), as recorded; for the sync-health page."""
    found: dict[str, dict[str, Any]] = {}
    for trigger in TRIGGERS:
        raw = get_redis().get(key(OUTCOME_KEY.format(trigger=trigger)))
        if raw:
            found[trigger] = orjson.loads(raw)
    return found


# --- the sync ------------------------------------------------------------------------------------------------------
def _apply_changed(scim: ScimClient, since_ms: int) -> Counters:
    """List and upsert the users changed since ``since_ms``; raises :class:`FilterRefused` (or
    :class:`FilterIgnored`) when the directory does not honour the filter. Pages are written as they come."""
    counters = Counters()
    filter_text = f'meta.lastModified ge "{iso_ms(since_ms)}"'
    role_map = get_settings().group_roles or None
    for listings in prefetched(scim.iter_listing(filter_text=filter_text)):
        for listing in listings:
            page = listing.parse()
            # Asgardeo keeps the millisecond the filter compares; one older user means the filter was not applied.
            if any(user.source_version < since_ms for user in page.users):
                raise FilterIgnored("SCIM ignored the meta.lastModified filter (listed users changed before it)")
            with unit_of_work() as session:
                result = upsert_users(session, page.users, source=SOURCE, role_map=role_map, stamp_seen=False)
            publish_encoded(result.encoded_changes, result.created + result.updated)
            counters.pages_done += 1
            counters.seen += len(page.users)
            counters.add(Counters.of_upsert(result))
    return counters


def _filter_counts(counters: Counters) -> dict[str, int]:
    """A filtered sync's counts under the outcome's public names: the sync-health page and its JSON read them, and
    outcomes recorded by an earlier release stay in Redis for weeks, so ``pages`` keeps its name."""
    return {
        "pages": counters.pages_done,
        "seen": counters.seen,
        "created": counters.created,
        "updated": counters.updated,
        "unchanged": counters.unchanged,
    }


def _full_run(trigger: str, reason: str, scim: ScimClient) -> dict[str, Any]:
    """The fallback where the directory cannot list by change time: one full reconciliation (or the one running)."""
    try:
        with unit_of_work() as session:
            run_id = start_full_run(session, trigger=trigger).id
    except RunInProgress as exc:
        return {"status": "covered", "mode": "full", "run_id": exc.run_id, "reason": reason}
    outcome = reconcile_all(run_id, client=scim)
    return {"mode": "full", "reason": reason, **outcome.as_dict()}


def sync_changed_since(since_ms: int, *, trigger: str, client: ScimClient | None = None) -> dict[str, Any]:
    """Bring the table up to date with every user changed at the directory since ``since_ms`` (see the module
    docstring). Never raises a directory error: it ends as ``failed``. Returns the outcome (also kept in Redis).

    ``status`` is ``succeeded``, ``busy`` (another sync holds the run lock; nothing was done), ``covered`` (the
    fallback found a full run running, which covers this) or a full run's status when it fell back.
    """
    started_ms = now_ms()
    base: dict[str, Any] = {"trigger": trigger, "since": iso_ms(since_ms), "started_at": iso_ms(started_ms)}
    scim = client or ScimClient()
    unsupported = filter_unsupported()
    outcome: dict[str, Any] | None = None
    if unsupported is None:
        engine = get_engine()
        with hold_run_lock(engine, INCREMENTAL_LOCK_KEY) as marked, hold_run_lock(engine) as taken:
            if not (marked and taken):
                return {**base, "status": "busy"}
            try:
                counts = _filter_counts(_apply_changed(scim, since_ms))
                outcome = {"status": "succeeded", "mode": "filter", **counts}
            except FilterRefused as exc:
                unsupported = "ignored" if isinstance(exc, FilterIgnored) else "refused"
                remember_unsupported(unsupported)
                log.warning(
                    "the directory does not support meta.lastModified filters; full run instead",
                    extra={"trigger": trigger, "reason": unsupported},
                )
            except DirectoryError as exc:
                outcome = {"status": "failed", "mode": "filter", "error": str(exc)}
    if outcome is None:
        outcome = _full_run(trigger, f"filter {unsupported}", scim)
    outcome = {**base, **outcome, "finished_at": iso_ms(now_ms())}
    record_outcome(trigger, outcome)
    # Not the outcome itself as extra: its "created" would overwrite the log record's own attribute.
    extra = {"trigger": trigger, "status": outcome["status"], "mode": outcome.get("mode"), "since": base["since"]}
    extra["repaired"] = int(outcome.get("created") or 0) + int(outcome.get("updated") or 0)
    log.info("incremental sync finished", extra={**extra, "run_id": outcome.get("run_id")})
    return outcome


# --- the two triggers ------------------------------------------------------------------------------------------
def sweep(*, client: ScimClient | None = None) -> dict[str, Any]:
    """One sweep: since the previous successful sweep began (or one period ago), minus the margin."""
    settings = get_settings()
    margin_ms = settings.incremental_margin_seconds * 1000
    started_ms = now_ms()
    raw = get_redis().get(key(SWEEP_CHECKPOINT_KEY))
    point = int(raw) if raw else started_ms - settings.incremental_sweep_seconds * 1000
    outcome = sync_changed_since(point - margin_ms, trigger="sweep", client=client)
    if outcome["status"] in ("succeeded", "covered", "partial"):
        get_redis().set(key(SWEEP_CHECKPOINT_KEY), str(started_ms))
    return outcome


def catch_up_point(web_started_ms: int) -> tuple[str, int] | None:
    """Where a catch-up after a web start begins: the last delivery accepted before that start, else the last
    successful full run's start; None when the service has never been in sync (the first full run does it all)."""
    started = datetime.fromtimestamp(web_started_ms / 1000, UTC)
    with unit_of_work() as session:
        delivered = last_received_before(session, started)
        if delivered is not None:
            return "last_delivery", int(delivered.timestamp() * 1000)
        synced = last_successful_full_run_start(session)
    return ("last_full_run", int(synced.timestamp() * 1000)) if synced is not None else None


def catch_up(web_started_ms: int, *, client: ScimClient | None = None) -> dict[str, Any]:
    """The catch-up after the web tier started at ``web_started_ms`` (see the module docstring)."""
    point = catch_up_point(web_started_ms)
    context = {"web_started_at": iso_ms(web_started_ms)}
    if point is None:
        outcome = {**context, "trigger": "catch_up", "status": "skipped", "reason": "never in sync yet"}
        record_outcome("catch_up", outcome)
        return outcome
    basis, point_ms = point
    margin_ms = get_settings().incremental_margin_seconds * 1000
    outcome = sync_changed_since(point_ms - margin_ms, trigger="catch_up", client=client)
    outcome = {**outcome, **context, "basis": basis, "point": iso_ms(point_ms)}
    if outcome["status"] != "busy":
        record_outcome("catch_up", outcome)
    return outcome


def request_catch_up(web_started_ms: int) -> None:
    """Ask a worker for the catch-up (called once per start of the web tier). Opens its own broker connection, so a
    process that forks afterwards shares none; a broker that is away is logged, not raised (the sweep covers it)."""
    try:
        with app.connection_for_write() as connection:
            app.send_task("reconcile.catch_up", args=[web_started_ms], connection=connection)
    except Exception as exc:  # the web tier must start even when the broker is away
        log.warning("catch-up not requested", extra={"error": type(exc).__name__})


@app.task(name="reconcile.sweep", acks_late=True, soft_time_limit=RECONCILE_SOFT_LIMIT, time_limit=RECONCILE_HARD_LIMIT)
def sweep_task() -> dict[str, Any]:
    """The periodic incremental sweep. Not retried: the next period covers what this one missed."""
    return sweep()


@app.task(
    name="reconcile.catch_up",
    bind=True,
    acks_late=True,
    max_retries=CATCH_UP_MAX_RETRIES,
    soft_time_limit=RECONCILE_SOFT_LIMIT,
    time_limit=RECONCILE_HARD_LIMIT,
)
def catch_up_task(self: Any, web_started_ms: int) -> dict[str, Any]:
    """The catch-up after a web start; while another sync holds the run lock it tries again every
    :data:`CATCH_UP_RETRY_SECONDS` (a sweep running then may start after the point this one needs)."""
    if not isinstance(web_started_ms, int) or web_started_ms <= 0:
        log.warning("reconcile.catch_up called with a bad start time; ignored")
        return {"status": "rejected"}
    outcome = catch_up(web_started_ms)
    if outcome["status"] == "busy":
        raise self.retry(countdown=CATCH_UP_RETRY_SECONDS)
    return outcome
