"""Follow-ups of a login, run on a worker so the callback never waits: the audit entry, linking and a refresh.

The ID token says little (and nothing about changes made since the last sync), so each login asks for a coalesced
SCIM refresh of that user; many logins of one person within the coalescing window cost one SCIM call. A row created
by a first login whose subject is not the directory id (see :mod:`models.identity`) is first linked: a SCIM filter
on the configured attribute finds the directory user, and the row takes that user's id and profile.

A follow-up never retires anyone: a subject that resolves to nobody (or a refresh answered 404) is a configuration
warning on the sync-health page, and the person stays signed in.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from models.audit import login_recorded
from models.db import unit_of_work
from models.identity import is_provisional, link_to_directory
from models.settings import get_settings
from models.tables import User
from models.users import record_change, upsert_users
from tasks.app import app
from tasks.arguments import positive_id
from tasks.coalesce import request_user_refresh
from tasks.config_warnings import DIRECTORY_UNUSABLE, LOGIN_SUBJECT_UNRESOLVED, record_warning
from tasks.errors import DirectoryUnavailable, TransientError
from tasks.live import publish_changes
from tasks.scim import ScimClient

log = logging.getLogger(__name__)

LOGIN_FOLLOWUP_TASK = "users.login_followup"
# The SCIM attribute a login's subject is looked up by, per OIDC_SUBJECT_ATTRIBUTE.
FILTER_ATTRIBUTES = {"username": "userName", "email": "emails"}


def record_login(session: Session, user_id: int, session_id: int) -> str | None:
    """Write one ``login`` audit row for the application session ``session_id``; returns the user's Asgardeo id.

    Safe to re-run: a second call for the same session writes nothing. Returns ``None`` for a user that no longer
    exists (nothing to do).
    """
    user = session.get(User, user_id)
    if user is None:
        return None
    if not login_recorded(session, user_id, session_id):
        record_change(session, user, "login", {"session_id": session_id}, source="login", actor=user.email)
    return user.asgardeo_id


def link_login_user(user_id: int, *, client: ScimClient | None = None) -> str | None:
    """Find the directory user of the login-created row ``user_id`` and link the row to them (see
    :func:`models.identity.link_to_directory`), then write their profile. Returns the directory id, or None when
    nothing (or more than one user) matched, which is recorded as a configuration warning. Safe to re-run.

    Raises :class:`~tasks.errors.TransientError` when the directory could not be asked (the task retries).
    """
    with unit_of_work() as session:
        user = session.get(User, user_id)
        subject = user.oidc_subject if user is not None and is_provisional(user.asgardeo_id) else None
    if subject is None:
        return None
    attribute = FILTER_ATTRIBUTES.get(get_settings().oidc_subject_attribute)
    try:
        found = (client or ScimClient()).find_users(attribute, subject) if attribute else []
    except DirectoryUnavailable:
        record_warning(DIRECTORY_UNUSABLE, user_id=user_id)
        return None
    if len(found) != 1:
        record_warning(LOGIN_SUBJECT_UNRESOLVED, user_id=user_id, matches=len(found))
        return None
    record = found[0]
    with unit_of_work() as session:
        kept = link_to_directory(session, user_id, record.asgardeo_id)
        result = upsert_users(
            session, [record], source="login", actor="login follow-up", role_map=get_settings().group_roles or None
        )
    publish_changes(result.changes)
    log.info("login linked to its directory user", extra={"user_id": kept, "asgardeo_id": record.asgardeo_id})
    return record.asgardeo_id


@app.task(
    name=LOGIN_FOLLOWUP_TASK,
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError, TransientError),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
)
def login_followup(user_id: int, session_id: int) -> None:
    """Audit the login, link a first login's row, ask for a coalesced SCIM refresh; retried with backoff while
    Postgres or the directory is unreachable (each step is safe to re-run)."""
    if positive_id(user_id) is None or positive_id(session_id) is None:
        log.warning("login follow-up with malformed ids; ignored", extra={"user_id": repr(user_id)[:40]})
        return
    with unit_of_work() as session:
        asgardeo_id = record_login(session, user_id, session_id)
    if asgardeo_id is None:
        log.info("login follow-up for a vanished user", extra={"user_id": user_id})
        return
    if is_provisional(asgardeo_id):
        link_login_user(user_id)
        return
    request_user_refresh(asgardeo_id, trigger="login")
