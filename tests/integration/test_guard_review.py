"""The guarded run's review: the guard records what it would have retired; approval re-confirms each candidate and
retires only the really gone; a review is decided once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from tests.integration.sync_support import client_for, private_standin, start_run


@pytest.fixture
def directory(clean_db: None, clean_redis: None) -> Iterator[Any]:
    with private_standin() as handle:
        yield handle


def _guarded_run(handle: Any) -> tuple[int, list[str]]:
    """40 users synced, then 5 deleted in the directory: the default 5% guard (2 of 40) stops the next run."""
    from tasks.reconcile import reconcile_all

    handle.directory.seed(40, prefix="review")
    doomed = [u.id for u in handle.directory.all_users()][:5]
    assert reconcile_all(start_run(), client=client_for(handle)).status == "succeeded"
    for asgardeo_id in doomed:
        handle.directory.delete_user(asgardeo_id)
    outcome = reconcile_all(start_run(), client=client_for(handle))
    assert outcome.status == "guarded"
    return outcome.run_id, doomed


def test_guard_records_the_missed_users_and_the_numbers_it_weighed(directory: Any) -> None:
    from models.db import unit_of_work
    from models.guard_review import get_review, list_candidates, review_as_dict
    from models.runs import get_run

    run_id, doomed = _guarded_run(directory)
    with unit_of_work() as session:
        review = get_review(session, run_id)
        assert review is not None
        numbers = review_as_dict(session, review)
        candidates = {row.user.asgardeo_id for row in list_candidates(session, run_id, limit=100)}
        error = get_run(session, run_id).error  # type: ignore[union-attr]
    assert candidates == set(doomed)
    assert (numbers["status"], numbers["population"], numbers["allowed"], numbers["candidates"]) == (
        "pending",
        40,
        2,
        5,
    )
    assert numbers["confirmed_gone"] == 3  # the guard stops at the first one past the allowed 2
    assert "missed 5 of 40 users" in (error or "")


def test_approval_retires_only_the_really_gone_and_names_the_admin(directory: Any) -> None:
    from models.db import unit_of_work
    from models.guard_review import begin_approval, outcome_counts
    from models.tables import User, UserChange
    from tasks.guard_review import approve_review

    run_id, doomed = _guarded_run(directory)
    returned = doomed[0]
    directory.directory.create_user(username="returned@example.com", user_id=returned)
    with unit_of_work() as session:
        begin_approval(session, run_id, actor="boss@example.com")
    counts = approve_review(run_id, "boss@example.com", client=client_for(directory))
    assert (counts["retired"], counts["kept"], counts["undecided"]) == (4, 1, 0)
    with unit_of_work() as session:
        statuses = dict(
            session.execute(select(User.asgardeo_id, User.status).where(User.asgardeo_id.in_(doomed))).all()
        )
        actors = set(session.execute(select(UserChange.actor).where(UserChange.source == "guard_review")).scalars())
        assert outcome_counts(session, run_id)["retired"] == 4
    assert statuses == {aid: ("active" if aid == returned else "deleted") for aid in doomed}
    assert actors == {"boss@example.com"}
    # A second approval run (a redelivered task) asks nobody again and changes nothing.
    assert approve_review(run_id, "boss@example.com", client=client_for(directory)) == counts


def test_a_review_is_decided_once_and_dismissal_retires_nobody(directory: Any) -> None:
    from models.db import unit_of_work
    from models.guard_review import ReviewClosed, begin_approval, dismiss, get_review
    from models.tables import User

    run_id, doomed = _guarded_run(directory)
    with unit_of_work() as session:
        dismiss(session, run_id, actor="boss@example.com")
    with pytest.raises(ReviewClosed), unit_of_work() as session:
        begin_approval(session, run_id, actor="other@example.com")
    with unit_of_work() as session:
        review = get_review(session, run_id)
        assert review is not None
        assert (review.status, review.reviewed_by) == ("dismissed", "boss@example.com")
        active = session.execute(select(User.status).where(User.asgardeo_id.in_(doomed))).scalars().all()
    assert set(active) == {"active"}
