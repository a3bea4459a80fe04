"""Asgardeo's login and token channels: recorded, counted, attributed to a user, and otherwise without effect.

``loginSuccess`` / ``loginFailed`` and ``accessTokenIssued`` / ``accessTokenRevoked`` change nothing in the user
table. The inbox keeps them (status ``ignored``); the worker attributes each to the local user it names, so an admin
sees a user's failed sign-ins at Asgardeo (counted from the inbox, as far back as ``INBOX_RETENTION_DAYS`` keeps
them). A ``loginFailed`` often names no ``user.id`` (the person typed a name Asgardeo could not match, or the
password was wrong before the account was resolved): then the username or email claim finds the user, if anyone.

Functions take an open ``Session`` and never commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from models.attributes import email, username_from_directory
from models.tables import User, WebhookEvent

LOGIN_EVENTS = frozenset({"loginSuccess", "loginFailed"})
TOKEN_EVENTS = frozenset({"accessTokenIssued", "accessTokenRevoked"})
HANDLED = LOGIN_EVENTS | TOKEN_EVENTS
FAILED_LOGIN = "loginFailed"
_USERNAME = "http://wso2.org/claims/username"
_EMAIL = "http://wso2.org/claims/emailaddress"


def _claims(user: Mapping[str, Any]) -> dict[str, Any]:
    claims = user.get("claims")
    if not isinstance(claims, list):
        return {}
    return {str(c["uri"]): c.get("value") for c in claims if isinstance(c, dict) and isinstance(c.get("uri"), str)}


def named_user(session: Session, event: Mapping[str, Any], asgardeo_id: str | None) -> str | None:
    """The directory id of the local user the event names: by ``user.id``, else by its username, else its email
    claim (only when exactly one live user has it). ``None`` when the event names nobody known here."""
    if asgardeo_id is not None:
        found = session.scalar(select(User.asgardeo_id).where(User.asgardeo_id == asgardeo_id))
        if found is not None:
            return str(found)
    user = event.get("user")
    claims = _claims(user) if isinstance(user, dict) else {}
    username = username_from_directory(claims.get(_USERNAME))
    address = email(claims.get(_EMAIL))
    conditions = []
    if username:
        conditions.append(func.lower(User.username) == username.lower())
    if address:
        conditions.append(func.lower(User.email) == address.lower())
    if not conditions:
        return None
    rows = list(
        session.execute(select(User.asgardeo_id).where(or_(*conditions), User.status != "deleted").limit(2)).scalars()
    )
    return str(rows[0]) if len(rows) == 1 else None


def failed_logins(session: Session, asgardeo_id: str) -> int:
    """How many ``loginFailed`` events the inbox holds for this user."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(WebhookEvent)
            .where(WebhookEvent.asgardeo_id == asgardeo_id, WebhookEvent.event_type == FAILED_LOGIN)
        )
        or 0
    )
