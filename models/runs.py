"""Run bookkeeping for reconciliations and single-user syncs, and the advisory lock that keeps runs single.

A full run is guarded twice:

- **Creating** a run row happens under a transaction-level advisory lock (:data:`CREATE_LOCK_KEY`), so two triggers
  at the same instant cannot both see "nothing running" and both insert.
- **Executing** a run holds a session-level advisory lock (:data:`RUN_LOCK_KEY`) on a dedicated connection for the
  run's whole length (:func:`hold_run_lock`). Postgres releases it when that connection ends, so a killed worker
  never leaves the lock behind.

A ``running`` row whose lock nobody holds and whose heartbeat is older than ``stale_after`` was abandoned (its worker
died and its message was lost); the next trigger marks it failed instead of refusing forever.

Functions take an open ``Session`` and never commit, except :func:`hold_run_lock`, which owns its connection.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session

from models.advisory_locks import hold_advisory_lock
from models.settings import get_settings
from models.tables import SyncRun

if TYPE_CHECKING:  # models.users imports the settings, which import models.users: no import at run time
    from models.users import UpsertResult

# Fixed 63-bit keys: stable across deployments, unlikely to meet anyone else's advisory lock in this database.
RUN_LOCK_KEY = 0x4153_4744_5243_4E01  # "ASGDRCN" + 1
CREATE_LOCK_KEY = 0x4153_4744_5243_4E02
# Held (besides RUN_LOCK_KEY) by an incremental sync: a full run that finds the run lock taken by one waits for it
# (incremental syncs are short) instead of being refused.
INCREMENTAL_LOCK_KEY = 0x4153_4744_5243_4E03


class RunInProgress(Exception):
    """A full run is already running; ``run_id`` names it."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"reconciliation run {run_id} is already running")
        self.run_id = run_id


@dataclass
class Counters:
    """Progress of a run, as stored on its row and reported in the Celery task state."""

    pages_done: int = 0
    seen: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deactivated: int = 0
    failed: int = 0
    total_results: int | None = None
    # Requests that waited for the shared SCIM rate budget, and how long in all.
    budget_waits: int = 0
    budget_wait_ms: int = 0

    def as_dict(self) -> dict[str, int | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def of_upsert(cls, result: UpsertResult) -> Counters:
        """An upsert's share of a run's counts: a stale copy (older than the row) left its row unchanged."""
        return cls(created=result.created, updated=result.updated, unchanged=result.unchanged + result.stale)

    def add(self, delta: Counters) -> None:
        """Add ``delta``'s counts to these; its ``total_results``, when known, replaces this one (it is a size, not
        a count)."""
        for f in fields(self):
            value = getattr(delta, f.name)
            if f.name == "total_results":
                self.total_results = value if value is not None else self.total_results
            else:
                setattr(self, f.name, getattr(self, f.name) + (value or 0))


def lock_holder_exists(session: Session, key: int = RUN_LOCK_KEY) -> bool:
    """Whether any session of this database holds the advisory lock ``key`` (without taking it)."""
    classid, objid = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    found = session.execute(
        text(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
            " AND classid = CAST(:classid AS bigint)::oid AND objid = CAST(:objid AS bigint)::oid"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"classid": classid, "objid": objid},
    ).first()
    return found is not None


def running_full_run(session: Session) -> SyncRun | None:
    return session.execute(
        select(SyncRun).where(SyncRun.kind == "full", SyncRun.status == "running").order_by(SyncRun.id.desc()).limit(1)
    ).scalar_one_or_none()


def running_user_run(session: Session, asgardeo_id: str, task_id: str) -> SyncRun | None:
    """The ``running`` user run that task ``task_id`` started for this user, if any.

    A Celery retry keeps its task id but not what the failed attempt learned, so this is how a retry finds the row
    its first attempt created. The user's id narrows the search through ``ix_sync_runs_target_user_id`` to that
    user's runs, so ``task_id`` needs no index of its own.
    """
    return session.execute(
        select(SyncRun)
        .where(
            SyncRun.kind == "user",
            SyncRun.asgardeo_id == asgardeo_id,
            SyncRun.task_id == task_id,
            SyncRun.status == "running",
        )
        .order_by(SyncRun.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def start_full_run(
    session: Session,
    *,
    trigger: str,
    requested_by: str | None = None,
    stale_after: timedelta | None = None,
) -> SyncRun:
    """Insert a ``running`` full run, or raise :class:`RunInProgress` naming the one already running.

    Serialised with other callers by a transaction-level lock held until the caller commits.
    """
    session.execute(select(func.pg_advisory_xact_lock(CREATE_LOCK_KEY)))
    current = running_full_run(session)
    if current is not None:
        if stale_after is None:
            stale_after = timedelta(seconds=get_settings().reconcile_stale_after_seconds)
        abandoned = not lock_holder_exists(session) and current.heartbeat_at < datetime.now(UTC) - stale_after
        if not abandoned:
            raise RunInProgress(current.id)
        finish_run(session, current.id, "failed", error="abandoned: no worker held its lock")
    run = SyncRun(kind="full", trigger=trigger[:32], requested_by=_clip(requested_by), status="running")
    session.add(run)
    session.flush()
    return run


def start_user_run(
    session: Session, asgardeo_id: str, *, trigger: str, requested_by: str | None = None, task_id: str | None = None
) -> SyncRun:
    run = SyncRun(
        kind="user",
        trigger=trigger[:32],
        asgardeo_id=asgardeo_id[:64],
        requested_by=_clip(requested_by),
        task_id=task_id,
        status="running",
    )
    session.add(run)
    session.flush()
    return run


def _clip(value: str | None) -> str | None:
    return value[:320] if value else value


def mark_started(session: Session, run_id: int, task_id: str | None) -> None:
    """Stamp the task executing the run and reset progress (a redelivered run starts its listing again)."""
    zero = {name: 0 for name in Counters().as_dict() if name != "total_results"}
    session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id)
        .values(task_id=task_id, heartbeat_at=func.now(), error=None, total_results=None, **zero)
    )


def record_progress(session: Session, run_id: int, counters: Counters) -> None:
    session.execute(update(SyncRun).where(SyncRun.id == run_id).values(heartbeat_at=func.now(), **counters.as_dict()))


_ADD_PROGRESS_SQL = text(
    "UPDATE sync_runs SET heartbeat_at = now(), total_results = COALESCE(:total_results, total_results),"
    " pages_done = pages_done + :pages_done, seen = seen + :seen, created = created + :created,"
    " updated = updated + :updated, unchanged = unchanged + :unchanged, deactivated = deactivated + :deactivated,"
    " failed = failed + :failed, budget_waits = budget_waits + :budget_waits,"
    " budget_wait_ms = budget_wait_ms + :budget_wait_ms WHERE id = :run_id"
)


def add_progress(session: Session, run_id: int, delta: Counters) -> None:
    """Add one page's counts to the run row; safe for concurrent page writers (the row lock orders them).

    One constant statement (no ORM update to compile and synchronise): it runs once per page of a listing.
    """
    session.execute(_ADD_PROGRESS_SQL, {"run_id": run_id, **delta.as_dict()})


def note_error(session: Session, run_id: int, error: str) -> None:
    """Record a failure that will be retried; the run stays ``running``."""
    session.execute(update(SyncRun).where(SyncRun.id == run_id).values(error=error[:2000], heartbeat_at=func.now()))


def finish_run(
    session: Session,
    run_id: int,
    status: str,
    *,
    error: str | None = None,
    counters: Counters | None = None,
    unconfirmed: list[str] | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "finished_at": func.now(), "heartbeat_at": func.now()}
    if unconfirmed is not None:
        values["unconfirmed"] = unconfirmed
    if error is not None:
        values["error"] = error[:2000]
    if counters is not None:
        values.update(counters.as_dict())
    session.execute(update(SyncRun).where(SyncRun.id == run_id).values(**values))


def get_run(session: Session, run_id: int) -> SyncRun | None:
    return session.get(SyncRun, run_id)


def last_successful_full_run_start(session: Session) -> datetime | None:
    """When the newest full run that succeeded started (None before the first)."""
    return session.scalar(
        select(func.max(SyncRun.started_at)).where(SyncRun.kind == "full", SyncRun.status == "succeeded")
    )


def list_runs(
    session: Session, *, limit: int, before_id: int | None = None, kind: str | None = None
) -> Sequence[SyncRun]:
    """Newest first, keyset-paged by id."""
    query = select(SyncRun).order_by(SyncRun.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(SyncRun.id < before_id)
    if kind is not None:
        query = query.where(SyncRun.kind == kind)
    return session.execute(query).scalars().all()


def run_as_dict(run: SyncRun) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": run.id,
        "kind": run.kind,
        "trigger": run.trigger,
        "status": run.status,
        "target_user_id": run.asgardeo_id,
        "requested_by": run.requested_by,
        "task_id": run.task_id,
        "total_results": run.total_results,
        "pages_done": run.pages_done,
        "seen": run.seen,
        "created": run.created,
        "updated": run.updated,
        "unchanged": run.unchanged,
        "deactivated": run.deactivated,
        "failed": run.failed,
        "budget_waits": run.budget_waits,
        "budget_wait_ms": run.budget_wait_ms,
        "error": run.error,
        "unconfirmed": run.unconfirmed or [],
        "started_at": iso(run.started_at),
        "heartbeat_at": iso(run.heartbeat_at),
        "finished_at": iso(run.finished_at),
    }


@contextmanager
def hold_run_lock(engine: Engine, key: int = RUN_LOCK_KEY, *, wait_seconds: float = 0.0) -> Iterator[bool]:
    """Try the run lock for up to ``wait_seconds`` (default: without waiting); yields whether it was taken, and
    holds it until the block ends (see :mod:`models.advisory_locks`)."""
    with hold_advisory_lock(engine, key, wait_seconds=wait_seconds) as conn:
        yield conn is not None
