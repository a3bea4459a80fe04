"""Single-user sync from SCIM: webhook deltas, logins and admins ask for one user to be refreshed.

``users.sync(asgardeo_id, trigger=...)`` is sent by :func:`tasks.coalesce.request_user_refresh` and by the admin
API (which also passes the ``run_id`` of the row it created). It fetches the user and upserts it. A 404 retires the
user (a ``deleted`` tombstone retired by absence, sessions revoked) only when someone asked for this user explicitly
(an admin, the CLI): a background refresh (:data:`BACKGROUND_TRIGGERS`: after a login or a partial event) never
retires on its own, because a 404 there may only mean the login's subject is not a directory id, or a passing fault;
the nightly run confirms absence properly. Each call is one ``sync_runs`` row of kind ``user``; retries of a
call keep that row. Transient failures retry through Celery's autoretry, with exponential backoff and jitter, up to
:data:`MAX_RETRIES`; the row stays ``running`` meanwhile, and a retry finds it by the task id Celery keeps across
retries (the retry's arguments are the first attempt's, without the row's id). After the last retry
:class:`SyncTask` records the run as ``failed`` (``gave up: ...``). Permanent failures (credentials refused, bad
answer, bad id) are recorded as ``failed`` and not retried.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Task

from models.clock import now_ms
from models.db import unit_of_work
from models.runs import Counters, finish_run, get_run, mark_started, note_error, running_user_run, start_user_run
from models.settings import get_settings
from models.users import Change, retire_absent, upsert_users
from tasks.app import app
from tasks.config_warnings import DIRECTORY_UNUSABLE, LOGIN_SUBJECT_UNRESOLVED, record_warning
from tasks.errors import DirectoryUnavailable, TransientError, UserGone
from tasks.live import publish_changes
from tasks.scim import ScimClient, valid_id

log = logging.getLogger(__name__)

SOURCE = "sync"
# Refreshes nobody asked for by name: a 404 there retires nobody.
BACKGROUND_TRIGGERS = frozenset({"login", "event", "webhook"})
MAX_RETRIES = 5
BACKOFF_CAP_SECONDS = 300


class SyncPending(Exception):
    """A transient failure of the sync of ``asgardeo_id`` recorded on ``run_id``; the task retries it with the same
    row."""

    def __init__(self, run_id: int, asgardeo_id: str, cause: TransientError) -> None:
        super().__init__(str(cause))
        self.run_id = run_id
        self.asgardeo_id = asgardeo_id
        self.cause = cause

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery hands on_failure the task's exception only if it survives pickling; otherwise it passes a wrapper
        # that has lost run_id, and the give-up could not be recorded.
        return (SyncPending, (self.run_id, self.asgardeo_id, self.cause))


@dataclass(frozen=True)
class SyncResult:
    run_id: int | None
    status: str
    action: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "action": self.action, "error": self.error}


def sync_user(
    asgardeo_id: str,
    *,
    trigger: str,
    run_id: int | None = None,
    requested_by: str | None = None,
    task_id: str | None = None,
    client: ScimClient | None = None,
) -> SyncResult:
    """Refresh one user from SCIM and record it on a ``user`` run: ``run_id``, else the running row an earlier
    attempt of task ``task_id`` started for this user, else a new row.

    Raises :class:`SyncPending` on a transient failure (the row stays ``running`` with the error noted).
    """
    if not valid_id(asgardeo_id):
        log.warning("users.sync called with an id that is not a SCIM id; ignored")
        return SyncResult(None, "rejected", error="not a SCIM user id")
    with unit_of_work() as session:
        if run_id is None and task_id is not None:
            earlier = running_user_run(session, asgardeo_id, task_id)
            run_id = earlier.id if earlier is not None else None
        if run_id is None:
            run_id = start_user_run(
                session, asgardeo_id, trigger=trigger, requested_by=requested_by, task_id=task_id
            ).id
        else:
            row = get_run(session, run_id)
            if row is None or row.kind != "user" or row.status != "running" or row.asgardeo_id != asgardeo_id:
                return SyncResult(run_id, "rejected", error="no such running user sync")
            mark_started(session, run_id, task_id)
    asked_ms = now_ms()
    counters = Counters(seen=1)
    changes: list[Change] = []
    try:
        record = (client or ScimClient()).get_user(asgardeo_id)
    except UserGone:
        if trigger in BACKGROUND_TRIGGERS:
            return _not_found_in_background(asgardeo_id, trigger=trigger, run_id=run_id)
        with unit_of_work() as session:
            change = retire_absent(
                session, asgardeo_id, asked_ms=asked_ms, source=SOURCE, run_id=run_id, actor=requested_by
            )
            if change is not None:
                changes.append(change)
                counters.deactivated = 1
            else:
                counters.unchanged = 1
            finish_run(session, run_id, "succeeded", counters=counters)
        publish_changes(changes)
        return SyncResult(run_id, "succeeded", change.action if change else "unchanged")
    except TransientError as exc:
        with unit_of_work() as session:
            note_error(session, run_id, f"retrying: {exc}")
        raise SyncPending(run_id, asgardeo_id, exc) from exc
    except DirectoryUnavailable as exc:
        with unit_of_work() as session:
            finish_run(session, run_id, "failed", error=str(exc), counters=Counters(failed=1))
        record_warning(DIRECTORY_UNUSABLE, run_id=run_id)
        log.warning("user sync failed", extra={"run_id": run_id, "user_id": asgardeo_id, "error": str(exc)})
        return SyncResult(run_id, "failed", error=str(exc))
    with unit_of_work() as session:
        result = upsert_users(
            session,
            [record],
            source=SOURCE,
            run_id=run_id,
            actor=requested_by,
            role_map=get_settings().group_roles or None,
            stamp_seen=False,
        )
        counters.add(Counters.of_upsert(result))
        finish_run(session, run_id, "succeeded", counters=counters)
    publish_changes(result.changes)
    action = result.changes[0].action if result.changes else "unchanged"
    log.info("user synced", extra={"run_id": run_id, "user_id": asgardeo_id, "action": action})
    return SyncResult(run_id, "succeeded", action)


def _not_found_in_background(asgardeo_id: str, *, trigger: str, run_id: int) -> SyncResult:
    """A background refresh answered 404: record it on the run, warn when a login's subject did not resolve, and
    change nobody."""
    note = "not found in the directory; a background refresh retires nobody"
    with unit_of_work() as session:
        finish_run(session, run_id, "succeeded", error=note, counters=Counters(seen=1, unchanged=1))
    if trigger == "login":
        record_warning(LOGIN_SUBJECT_UNRESOLVED, run_id=run_id)
    else:
        log.info("user refresh found no user; left as it is", extra={"run_id": run_id, "user_id": asgardeo_id})
    return SyncResult(run_id, "succeeded", "not_found")


class SyncTask(Task):  # type: ignore[misc]
    """Records the give-up: when the last retry meets a transient failure too, the task fails with it."""

    def on_failure(self, exc: BaseException, task_id: str, args: Sequence[Any], kwargs: Any, einfo: Any) -> None:
        if not isinstance(exc, SyncPending):
            return
        with unit_of_work() as session:
            finish_run(session, exc.run_id, "failed", error=f"gave up: {exc.cause}", counters=Counters(failed=1))
        log.warning("user sync gave up", extra={"run_id": exc.run_id, "user_id": exc.asgardeo_id})


@app.task(
    name="users.sync",
    base=SyncTask,
    bind=True,
    acks_late=True,
    autoretry_for=(SyncPending,),
    # Factor 2: retry n waits a random whole number of seconds up to 2**n (never more than the cap). Whole
    # seconds, so RabbitMQ's delayed delivery takes them as they are (see tasks.app.broker_countdown).
    retry_backoff=2,
    retry_backoff_max=BACKOFF_CAP_SECONDS,
    retry_jitter=True,
    max_retries=MAX_RETRIES,
)
def sync(
    self: Task,
    asgardeo_id: str,
    trigger: str = "webhook",
    run_id: int | None = None,
    requested_by: str | None = None,
) -> dict[str, Any]:
    """Refresh one user from SCIM (see the module docstring). Safe to run twice."""
    if not isinstance(asgardeo_id, str) or not isinstance(trigger, str):
        return SyncResult(None, "rejected", error="asgardeo_id and trigger must be strings").as_dict()
    return sync_user(
        asgardeo_id, trigger=trigger, run_id=run_id, requested_by=requested_by, task_id=self.request.id
    ).as_dict()
