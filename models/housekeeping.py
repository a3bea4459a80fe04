"""Retention: what the service stops keeping, and the run that removes it, in small batches, one run at a time.

The rules (all ages from settings, see :class:`Retention`):

- **sessions**: expired or revoked sessions, once they ended ``SESSION_RETENTION_HOURS`` ago. A live session
  (not revoked, not expired) is never touched.
- **inbox**: ``applied`` and ``ignored`` events processed more than ``INBOX_RETENTION_DAYS`` ago. ``failed`` events
  wait for an admin and ``received``/``queued`` ones are not applied yet: neither is ever removed. ("duplicate" is
  not a status: a copy of a known ``jti`` is answered 200 and never stored.)
- **runs**: finished runs (not ``running``) older than ``RUN_RETENTION_DAYS``, unless an audit row still names
  them: removing the run would erase "caused by run N" from the audit trail.
- **audit**: ``user_changes`` rows older than ``AUDIT_RETENTION_DAYS``, only when an operator set it.

Each batch is one short ``DELETE`` of at most ``batch_size`` rows in its own transaction, over rows chosen through an
index in time order and locked with ``SKIP LOCKED`` (a row a worker holds is left for the next run); rows are
deleted, so no table lock is ever taken. A cursor on the indexed time column makes each batch start where the last
ended, rather than walking again over the index entries of rows it just deleted. Between batches the run rests a
multiple of the time the batch took (``rest_ratio``, HOUSEKEEPING_REST_RATIO), so it takes at most a known share of
one Postgres backend from intake and apply. Resting only as long as each batch (half a backend) went with a
400,000-row backlog's intake p99 at 7x its usual value in one CI run on a busy 2-core machine (not reproduced on a
quiet one, where both paces were within noise).

The batches commit asynchronously (``synchronous_commit = off``): a batch does not wait for its WAL to reach the
disk, and Postgres's WAL writer flushes many batches' WAL at once. Committing each batch synchronously, a
200,000-row run flushed the WAL once per batch (405 times) beside the intake's own flushes, and an intake commit that
comes during a flush waits for it before making its own. A crash can forget the deletes of the last fraction of a
second and nothing else (a row is never half-deleted): those rows are still old, and the next run removes them.

One run at a time: :func:`housekeep` takes a session-level advisory lock without waiting (as the reconciliation
does) and a second caller gets a ``refused`` report. Re-running is always safe; a run that reaches its time budget
stops between batches and reports ``partial``, and the next one goes on.

Planner statistics live here too: :func:`refresh_statistics` after a retention run, and :func:`planned_rows` with
:func:`analyze_table` for a run that grows a table faster than anything else refreshes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg.errors import LockNotAvailable, QueryCanceled
from sqlalchemy import Connection, Engine, TextClause, text
from sqlalchemy.exc import DBAPIError

from models.advisory_locks import hold_advisory_lock
from models.settings import Settings

HOUSEKEEPING_LOCK_KEY = 0x4153_4744_484B_5001  # "ASGDHKP" + 1; see models.runs for the reconciliation's keys
# Per statement: a batch that waits for a lock this long gives up (and the run stops) rather than queue behind it.
LOCK_TIMEOUT = "2s"
STATEMENT_TIMEOUT = "60s"
# The tables whose statistics the hot statements' plans depend on. Where autovacuum is off (it was on the machines
# this service is tested on), nothing else refreshes them: Postgres then keeps planning users as the few rows it held
# when first planned, and a connection's cached plan read all of users for every event (52,000 full scans in a
# 10-minute soak). A run analyses each of them that changed as much as autovacuum's own default threshold asks.
ANALYZED_TABLES = ("users", "webhook_events", "user_changes", "sessions", "sync_runs")
# The statistics target of those refreshes. What the plans need is each table's size and coarse distributions (a
# status, a time range); ANALYZE samples 300 rows per unit of target. At Postgres's default (100) it read 30,000
# inbox rows with their JSON payloads: 110-195 ms of one core for a 75,000-row inbox, an intake stall on the 2-core
# soak machine each time housekeeping ran. At 10 it takes 10-16 ms.
REFRESH_STATISTICS_TARGET = 10
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Rule:
    """One delete rule: rows of ``table`` whose ``ts`` column is older than the kept age, and that meet ``where``.

    ``ts`` must lead an index of ``table`` so each batch is an index range scan in time order.
    """

    kind: str
    table: str
    ts: str
    where: str = "TRUE"

    def statement(self) -> TextClause:
        return text(
            f"""
WITH doomed AS (
    SELECT id, {self.ts} AS ts FROM {self.table}
    WHERE {self.ts} >= :after AND {self.ts} < now() - make_interval(secs => :keep_seconds) AND ({self.where})
    ORDER BY {self.ts}
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {self.table} AS t USING doomed WHERE t.id = doomed.id
RETURNING doomed.ts
"""  # noqa: S608 - every piece comes from the constant rules below, never from input
        )


SESSION_RULES = (
    Rule("sessions", "sessions", "expires_at"),
    Rule("sessions", "sessions", "revoked_at"),
)
# One rule per status: the index (status, received_at) yields one status's rows in time order, two would need a sort.
INBOX_RULES = (
    Rule(
        "inbox",
        "webhook_events",
        "received_at",
        "status = 'applied' AND processed_at < now() - make_interval(secs => :keep_seconds)",
    ),
    Rule(
        "inbox",
        "webhook_events",
        "received_at",
        "status = 'ignored' AND processed_at < now() - make_interval(secs => :keep_seconds)",
    ),
)
RUN_RULES = (
    Rule(
        "runs",
        "sync_runs",
        "started_at",
        "status <> 'running' AND finished_at < now() - make_interval(secs => :keep_seconds)"
        " AND NOT EXISTS (SELECT 1 FROM user_changes c WHERE c.run_id = sync_runs.id)",
    ),
)
AUDIT_RULES = (Rule("audit", "user_changes", "created_at"),)
KINDS = ("sessions", "inbox", "runs", "audit")


@dataclass(frozen=True)
class Retention:
    """How long each kind of row is kept, in seconds; ``audit`` ``None`` keeps the audit trail forever."""

    sessions: float
    inbox: float
    runs: float
    audit: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        days = 86400
        return cls(
            sessions=settings.session_retention_hours * 3600,
            inbox=settings.inbox_retention_days * days,
            runs=settings.run_retention_days * days,
            audit=settings.audit_retention_days * days if settings.audit_retention_days else None,
        )

    def plan(self) -> list[tuple[Rule, float]]:
        """Every rule with its kept age, audit first: removing audit rows is what lets their runs go."""
        plan: list[tuple[Rule, float]] = []
        if self.audit is not None:
            plan += [(rule, self.audit) for rule in AUDIT_RULES]
        plan += [(rule, self.runs) for rule in RUN_RULES]
        plan += [(rule, self.inbox) for rule in INBOX_RULES]
        plan += [(rule, self.sessions) for rule in SESSION_RULES]
        return plan


@dataclass
class Report:
    """What one run did. ``status``: ``done`` (nothing left), ``partial`` (stopped at its time budget or on a lock
    timeout; the next run goes on) or ``refused`` (another run held the lock; this one removed nothing)."""

    status: str = "done"
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    batches: int = 0
    seconds: float = 0.0
    error: str | None = None
    # Tables whose statistics the task refreshed after the run (see refresh_statistics).
    analyzed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "removed": dict(self.removed),
            "batches": self.batches,
            "analyzed": list(self.analyzed),
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


def housekeep(
    engine: Engine,
    retention: Retention,
    *,
    batch_size: int,
    max_seconds: float,
    rest_ratio: float,
) -> Report:
    """Apply every retention rule in batches on one dedicated connection (autocommit: each batch commits alone).

    Takes the housekeeping lock without waiting; returns a ``refused`` report when another run holds it. Stops
    between batches once ``max_seconds`` have passed. After each batch it rests ``rest_ratio`` times as long as the
    batch took (0: no rest, for a caller that wants the backlog gone as fast as possible, knowing it costs intake
    latency). Safe to re-run at any time.
    """
    started = time.monotonic()
    report = Report()
    with hold_advisory_lock(engine, HOUSEKEEPING_LOCK_KEY) as conn:
        if conn is None:
            report.status = "refused"
            return report
        try:
            conn.execute(text(f"SET lock_timeout = '{LOCK_TIMEOUT}'"))
            conn.execute(text(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'"))
            conn.execute(text("SET synchronous_commit = off"))
            deadline = started + max_seconds
            for rule, keep_seconds in retention.plan():
                if not _drain(conn, rule, keep_seconds, batch_size, deadline, rest_ratio, report):
                    report.status = "partial"
                    break
        finally:
            conn.execute(text("RESET lock_timeout"))
            conn.execute(text("RESET statement_timeout"))
            conn.execute(text("RESET synchronous_commit"))
    report.seconds = time.monotonic() - started
    return report


def refresh_statistics(engine: Engine) -> list[str]:
    """``ANALYZE`` each of :data:`ANALYZED_TABLES` that changed by more than 50 rows plus a tenth of its size since
    its statistics were last taken (autovacuum's default rule), so it costs nothing where autovacuum keeps up. An
    ``ANALYZE`` reads a sample (:data:`REFRESH_STATISTICS_TARGET`), not the table, and takes no lock that blocks
    reads or writes; it also makes every connection re-plan its cached statements on that table. The housekeeping
    task runs it after the retention run, not between its batches. Returns the tables analysed."""
    with engine.begin() as conn:
        conn.execute(text(f"SET LOCAL default_statistics_target = {REFRESH_STATISTICS_TARGET}"))
        stale = conn.execute(
            text(
                "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema()"
                " AND relname = ANY(:names) AND n_mod_since_analyze > 50 + 0.1 * n_live_tup ORDER BY relname"
            ),
            {"names": list(ANALYZED_TABLES)},
        ).scalars()
        analyzed = [name for name in stale if name in ANALYZED_TABLES]
        for name in analyzed:
            conn.execute(text(f'ANALYZE "{name}"'))  # a name from ANALYZED_TABLES, never from input
    return analyzed


def planned_rows(engine: Engine, table: str) -> int:
    """How many rows the planner last counted in ``table`` (``pg_class.reltuples``; 0 before its first count)."""
    with engine.connect() as conn:
        counted = conn.execute(
            text("SELECT reltuples FROM pg_class WHERE oid = CAST(:table AS regclass)"), {"table": table}
        ).scalar()
    return max(int(counted or 0), 0)


def analyze_table(engine: Engine, table: str) -> None:
    """``ANALYZE`` one of :data:`ANALYZED_TABLES` now, in a transaction of its own, whatever changed (for a caller
    that knows the table grew, see :func:`refresh_statistics` for what it costs). Raises what the database raises."""
    if table not in ANALYZED_TABLES:
        raise ValueError(f"{table!r} is not one of ANALYZED_TABLES")
    with engine.begin() as conn:
        conn.execute(text(f'ANALYZE "{table}"'))  # a name from ANALYZED_TABLES, never from input


def _drain(
    conn: Connection,
    rule: Rule,
    keep_seconds: float,
    batch_size: int,
    deadline: float,
    rest_ratio: float,
    report: Report,
) -> bool:
    """Delete ``rule``'s rows batch by batch until none is left (``True``) or time or a lock ran out (``False``)."""
    statement = rule.statement()
    after = _EPOCH
    while True:
        if time.monotonic() >= deadline:
            return False
        began = time.monotonic()
        try:
            stamps = list(
                conn.execute(statement, {"after": after, "keep_seconds": keep_seconds, "batch": batch_size}).scalars()
            )
        except DBAPIError as exc:
            # lock_timeout or statement_timeout: someone holds what this batch needs; leave it for the next run.
            if not isinstance(exc.orig, LockNotAvailable | QueryCanceled):
                raise
            report.error = f"{rule.kind}: {type(exc.orig).__name__}"
            return False
        report.batches += 1
        report.removed[rule.kind] += len(stamps)
        if len(stamps) < batch_size:
            return True
        after = max(stamps)
        if rest_ratio:
            time.sleep(rest_ratio * (time.monotonic() - began))
