"""Approving a guarded run: re-confirm each candidate with the directory, retire only the really gone.

``reconcile.review(run_id, actor)`` is sent by the console after an admin approves (the review is marked
``approving`` and committed first). :func:`approve_review` does the work without Celery: each candidate is asked for
with a single SCIM GET inside the shared rate budget; a 404 retires the user (a ``deleted`` tombstone, sessions
revoked, audited with the approving admin); a user the directory still has is upserted and kept; a user that could
not be asked is kept and counted as failed. Candidates are decided one by one and the outcome is stored, so a re-run
after a crash continues where it stopped and never asks twice.
"""

from __future__ import annotations

import logging
from typing import Any

from models.clock import now_ms
from models.db import unit_of_work
from models.guard_review import decide, finish_approval, get_review, outcome_counts, undecided
from models.settings import get_settings
from models.users import retire_absent, upsert_users
from tasks.app import app
from tasks.arguments import positive_id
from tasks.errors import DirectoryError, UserGone
from tasks.live import publish_changes
from tasks.scim import ScimClient

log = logging.getLogger(__name__)

SOURCE = "guard_review"
BATCH = 200


def approve_review(run_id: int, actor: str | None, *, client: ScimClient | None = None) -> dict[str, int]:
    """Decide every undecided candidate of an ``approving`` review, then mark it ``approved``. Returns the counts
    of outcomes. A review in any other state is left alone (returns its counts)."""
    with unit_of_work() as session:
        review = get_review(session, run_id)
        if review is None or review.status != "approving":
            return outcome_counts(session, run_id) if review is not None else {}
    scim = client or ScimClient()
    role_map = get_settings().group_roles or None
    while True:
        with unit_of_work() as session:
            batch = undecided(session, run_id, limit=BATCH)
        if not batch:
            break
        for user_id, asgardeo_id in batch:
            asked_ms = now_ms()
            try:
                record = scim.get_user(asgardeo_id)
            except UserGone:
                with unit_of_work() as session:
                    change = retire_absent(
                        session, asgardeo_id, asked_ms=asked_ms, source=SOURCE, run_id=run_id, actor=actor
                    )
                    decide(session, run_id, user_id, "retired" if change is not None else "unchanged")
                if change is not None:
                    publish_changes([change])
                continue
            except (ValueError, DirectoryError) as exc:
                log.warning(
                    "guarded run review: could not confirm a candidate", extra={"run_id": run_id, "error": str(exc)}
                )
                with unit_of_work() as session:
                    decide(session, run_id, user_id, "failed")
                continue
            with unit_of_work() as session:
                result = upsert_users(session, [record], source=SOURCE, run_id=run_id, actor=actor, role_map=role_map)
                decide(session, run_id, user_id, "kept")
            publish_changes(result.changes)
    with unit_of_work() as session:
        finish_approval(session, run_id)
        counts = outcome_counts(session, run_id)
    log.info("guarded run review approved", extra={"run_id": run_id, "counts": counts})
    return counts


@app.task(name="reconcile.review", acks_late=True, ignore_result=True)
def review(run_id: int, actor: str | None = None) -> dict[str, Any]:
    """Carry out an admin's approval of a guarded run (see the module docstring). Safe to run twice."""
    if positive_id(run_id) is None or not (actor is None or isinstance(actor, str)):
        log.warning("reconcile.review called with bad arguments; ignored")
        return {"status": "rejected"}
    return approve_review(run_id, actor)
