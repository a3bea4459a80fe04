"""Follow-ups of a login, run on a worker so the callback never waits: the audit entry and a profile refresh.

The ID token says little (and nothing about changes made since the last sync), so each login asks for a coalesced
SCIM refresh of that user; many logins of one person within the coalescing window cost one SCIM call.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from models.db import unit_of_work
from models.tables import User, UserChange
from models.users import record_change
from tasks.app import app
from tasks.arguments import positive_id
from tasks.coalesce import request_user_refresh

log = logging.getLogger(__name__)

LOGIN_FOLLOWUP_TASK = "users.login_followup"


def record_login(session: Session, user_id: int, session_id: int) -> str | None:
    """Write one ``login`` audit row for the application session ``session_id``; returns the user's Asgardeo id.

    Safe to re-run: a second call for the same session writes nothing. Returns ``None`` for a user that no longer
    exists (nothing to do).
    """
    user = session.get(User, user_id)
    if user is None:
        return None
    already = session.execute(
        select(UserChange.id).where(
            UserChange.user_id == user_id,
            UserChange.action == "login",
            UserChange.changes["session_id"].astext == str(session_id),
        )
    ).first()
    if already is None:
        record_change(session, user, "login", {"session_id": session_id}, source="login", actor=user.email)
    return user.asgardeo_id


@app.task(
    name=LOGIN_FOLLOWUP_TASK,
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
)
def login_followup(user_id: int, session_id: int) -> None:
    """Audit the login and ask for a coalesced SCIM refresh; retried with backoff while Postgres is unreachable."""
    if positive_id(user_id) is None or positive_id(session_id) is None:
        log.warning("login follow-up with malformed ids; ignored", extra={"user_id": repr(user_id)[:40]})
        return
    with unit_of_work() as session:
        asgardeo_id = record_login(session, user_id, session_id)
    if asgardeo_id is None:
        log.info("login follow-up for a vanished user", extra={"user_id": user_id})
        return
    request_user_refresh(asgardeo_id, trigger="login")
