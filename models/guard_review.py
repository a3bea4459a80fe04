"""The review of a run stopped by the deactivation guard: what it would have retired, and the admin's decision.

When the guard trips, :func:`open_review` records every active user the run's listing missed (the candidates) with
the numbers the guard weighed. An admin then either dismisses the review (nothing changes) or approves it; approval
re-confirms each candidate with the directory one by one (``tasks.guard_review``), because "not listed" is not yet
"gone", and records each candidate's outcome here.

Functions take an open ``Session`` and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from models.tables import CANDIDATE_OUTCOMES, GuardCandidate, GuardReview, User


class ReviewClosed(Exception):
    """The review is not pending (already approved, being approved, or dismissed); ``status`` says which."""

    def __init__(self, run_id: int, status: str) -> None:
        super().__init__(f"the review of run {run_id} is {status}")
        self.status = status


_RECORD_CANDIDATES = text(
    "INSERT INTO guard_candidates (run_id, user_id, asgardeo_id)"
    " SELECT :run_id, id, asgardeo_id FROM users"
    " WHERE status = 'active' AND last_seen_run_id IS DISTINCT FROM :run_id"
    " ON CONFLICT DO NOTHING"
)


def open_review(
    session: Session, run_id: int, *, population: int, allowed: int, share: float, confirmed_gone: int
) -> int:
    """Record the guarded run's review and its candidates in one statement; returns the number of candidates.
    Safe to call twice for a run (the second call changes nothing)."""
    existing = session.get(GuardReview, run_id)
    if existing is None:
        session.add(
            GuardReview(
                run_id=run_id, population=population, allowed=allowed, share=share, confirmed_gone=confirmed_gone
            )
        )
        session.flush()
        session.execute(_RECORD_CANDIDATES, {"run_id": run_id})
    return candidate_count(session, run_id)


def get_review(session: Session, run_id: int) -> GuardReview | None:
    return session.get(GuardReview, run_id)


def candidate_count(session: Session, run_id: int) -> int:
    return session.execute(
        select(func.count()).select_from(GuardCandidate).where(GuardCandidate.run_id == run_id)
    ).scalar_one()


@dataclass(frozen=True)
class CandidateRow:
    user: User
    outcome: str | None


def list_candidates(session: Session, run_id: int, *, limit: int) -> Sequence[CandidateRow]:
    """The first ``limit`` candidates with their users, in user id order."""
    rows = session.execute(
        select(User, GuardCandidate.outcome)
        .join(GuardCandidate, GuardCandidate.user_id == User.id)
        .where(GuardCandidate.run_id == run_id)
        .order_by(User.id)
        .limit(limit)
    ).all()
    return [CandidateRow(user, outcome) for user, outcome in rows]


def outcome_counts(session: Session, run_id: int) -> dict[str, int]:
    """How many candidates ended each way so far, plus ``undecided``."""
    counts = dict.fromkeys((*CANDIDATE_OUTCOMES, "undecided"), 0)
    for outcome, count in session.execute(
        select(GuardCandidate.outcome, func.count())
        .where(GuardCandidate.run_id == run_id)
        .group_by(GuardCandidate.outcome)
    ).all():
        counts[outcome or "undecided"] = count
    return counts


def _close(session: Session, run_id: int, status: str, actor: str | None) -> GuardReview:
    review = session.execute(
        select(GuardReview).where(GuardReview.run_id == run_id).with_for_update()
    ).scalar_one_or_none()
    if review is None:
        raise LookupError(run_id)
    if review.status != "pending":
        raise ReviewClosed(run_id, review.status)
    review.status = status
    review.reviewed_by = actor[:320] if actor else None
    review.reviewed_at = func.now()
    if status == "dismissed":
        review.finished_at = func.now()
    session.flush()
    return review


def begin_approval(session: Session, run_id: int, *, actor: str | None) -> None:
    """Mark a pending review as being approved by ``actor``; raises :class:`ReviewClosed` if it is not pending (so
    two admins clicking at once start one approval), ``LookupError`` if the run has no review."""
    _close(session, run_id, "approving", actor)


def dismiss(session: Session, run_id: int, *, actor: str | None) -> None:
    """Close a pending review without retiring anyone."""
    _close(session, run_id, "dismissed", actor)


def undecided(session: Session, run_id: int, *, limit: int) -> Sequence[tuple[int, str]]:
    """``(user_id, asgardeo_id)`` of candidates not yet re-confirmed, in user id order."""
    rows = session.execute(
        select(GuardCandidate.user_id, GuardCandidate.asgardeo_id)
        .where(GuardCandidate.run_id == run_id, GuardCandidate.outcome.is_(None))
        .order_by(GuardCandidate.user_id)
        .limit(limit)
    ).all()
    return [(user_id, asgardeo_id) for user_id, asgardeo_id in rows]


def decide(session: Session, run_id: int, user_id: int, outcome: str) -> None:
    if outcome not in CANDIDATE_OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(CANDIDATE_OUTCOMES)}")
    session.execute(
        update(GuardCandidate)
        .where(GuardCandidate.run_id == run_id, GuardCandidate.user_id == user_id)
        .values(outcome=outcome, decided_at=func.now())
    )


def finish_approval(session: Session, run_id: int) -> None:
    session.execute(
        update(GuardReview)
        .where(GuardReview.run_id == run_id, GuardReview.status == "approving")
        .values(status="approved", finished_at=func.now())
    )


def reopen(session: Session, run_id: int) -> None:
    """Put an approval that never reached a worker (the broker was away) back to ``pending``."""
    session.execute(
        update(GuardReview)
        .where(GuardReview.run_id == run_id, GuardReview.status == "approving")
        .values(status="pending", reviewed_by=None, reviewed_at=None)
    )


def review_as_dict(session: Session, review: GuardReview) -> dict[str, object]:
    """The review as the API and the page's script read it."""

    def iso(value: object) -> str | None:
        return value.isoformat() if value is not None else None  # type: ignore[attr-defined]

    return {
        "run_id": review.run_id,
        "status": review.status,
        "population": review.population,
        "allowed": review.allowed,
        "share": review.share,
        "confirmed_gone": review.confirmed_gone,
        "candidates": candidate_count(session, review.run_id),
        "outcomes": outcome_counts(session, review.run_id),
        "reviewed_by": review.reviewed_by,
        "reviewed_at": iso(review.reviewed_at),
        "finished_at": iso(review.finished_at),
    }
