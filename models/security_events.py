"""Asgardeo's session and credential events, applied to the application's own sessions.

Two rules, both erring towards ending a session (a revoked identity must not keep using the application):

- **Session revoked** (``sessionRevoked``). The event names Asgardeo login sessions (``sessions[].id``, 64 hex
  characters), which nothing links to the OIDC ``sid`` our sessions carry; the key is the user (``user.id``). The
  only thing that tells the user's devices apart is time: an application session created *before* an Asgardeo
  session was established cannot have come from it. So when every revoked Asgardeo session's ``sessionEstablished``
  is in the inbox, the application sessions created from the earliest of those establishments on (less
  :data:`CLOCK_MARGIN_MS`) end, and older ones, from the user's other devices, survive. When any revoked session's
  establishment is unknown (its event was lost, or is older than the inbox keeps, or the list is missing), every
  live session of the user ends.
- **Credential updated** (``credentialUpdated``: a password change, reset or invitation, in the documented spelling
  ``UPDATE``/``RESET``/``INVITE`` or the flow names the code emits, ``CREDENTIAL_RESET`` and the like): every
  application session created before the event (plus :data:`CLOCK_MARGIN_MS`) ends, unless
  ``CREDENTIAL_UPDATE_ENDS_SESSIONS`` is off. A sign-in after the change survives.

``sessionEstablished`` and ``sessionPresented`` change nothing: the inbox keeps them, and the first rule reads them.

Each revocation writes one audit row (action ``sessions_revoked``) whose ``reason`` says which event and why.
Functions take an open ``Session`` and never commit; a re-run finds the sessions already ended and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.orm import Session

from models.tables import AppSession, User
from models.users import Change, get_by_asgardeo_id, record_change

SESSION_REVOKED = "sessionRevoked"
SESSION_RECORDED = frozenset({"sessionEstablished", "sessionPresented"})
CREDENTIAL_UPDATED = "credentialUpdated"
HANDLED = frozenset({SESSION_REVOKED, CREDENTIAL_UPDATED, *SESSION_RECORDED})

# Asgardeo's clock and ours differ a little; a session this close to the cut is treated as on the revoked side.
CLOCK_MARGIN_MS = 2000
# Asgardeo's session ids are 64 hex characters; a longer one is not an id, and a huge list is not a revocation.
MAX_SESSION_ID_CHARS = 128
MAX_SESSIONS = 1000
AUDIT_ACTION = "sessions_revoked"

# Both spellings of a credential action: the documentation's and the flow names the code emits.
CREDENTIAL_ACTIONS: Mapping[str, str] = {
    "UPDATE": "changed",
    "CREDENTIAL_UPDATE": "changed",
    "PASSWORD_UPDATE": "changed",
    "RESET": "reset",
    "CREDENTIAL_RESET": "reset",
    "PASSWORD_RESET": "reset",
    "ADMIN_FORCED_PASSWORD_RESET": "reset",
    "INVITE": "set by invitation",
    "CREDENTIAL_INVITE": "set by invitation",
    "INVITE_USER": "set by invitation",
}
INITIATORS: Mapping[str, str] = {"USER": "the user", "ADMIN": "an administrator", "APPLICATION": "an application"}


class MalformedSecurityEvent(ValueError):
    """A field has the wrong type; the message names it and carries none of its value."""


@dataclass(frozen=True)
class Revocation:
    """What a handled event did: the audit row when sessions ended, and how many."""

    revoked: int
    change: Change | None
    note: str


def _text(event: Mapping[str, Any], name: str, max_chars: int = 64) -> str | None:
    value = event.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise MalformedSecurityEvent(f"{name} must be a string of at most {max_chars} characters")
    return value


def revoked_session_ids(event: Mapping[str, Any]) -> list[str] | None:
    """The Asgardeo session ids a ``sessionRevoked`` names; ``None`` when it names none (the rule then ends all)."""
    sessions = event.get("sessions")
    if sessions is None:
        return None
    if not isinstance(sessions, list) or len(sessions) > MAX_SESSIONS:
        raise MalformedSecurityEvent(f"sessions must be a list of at most {MAX_SESSIONS} objects")
    ids = []
    for entry in sessions:
        if not isinstance(entry, dict):
            raise MalformedSecurityEvent("each of sessions must be an object")
        session_id = _text(entry, "id", MAX_SESSION_ID_CHARS)
        if session_id is None:
            return None
        ids.append(session_id)
    return ids or None


def credential_reason(event: Mapping[str, Any]) -> str:
    """``password reset by an administrator in Asgardeo``: what the audit row and the live page say."""
    credential = (_text(event, "credentialType") or "credential").lower()
    action = _text(event, "action")
    initiator = _text(event, "initiatorType")
    verb = CREDENTIAL_ACTIONS.get(action.upper(), "updated") if action else "updated"
    by = f" by {INITIATORS.get(initiator.upper(), initiator.lower())}" if initiator else ""
    return f"{credential} {verb}{by} in Asgardeo"


# When each named Asgardeo session was established, from the ``sessionEstablished`` events the inbox holds.
_ESTABLISHED_SQL = text(
    """
SELECT s.id #>> '{}' AS session_id, min(e.iat) AS established
FROM webhook_events e, jsonb_path_query(e.payload, '$.events.*.session.id') AS s(id)
WHERE e.asgardeo_user_id = :user_id AND e.event_type = 'sessionEstablished'
  AND s.id #>> '{}' = ANY(CAST(:ids AS text[]))
GROUP BY 1
"""
)


def established_times(session: Session, asgardeo_id: str, session_ids: Sequence[str]) -> dict[str, int]:
    """``{Asgardeo session id: establishment time in epoch ms}`` for the ids whose ``sessionEstablished`` is known."""
    rows = session.execute(_ESTABLISHED_SQL, {"user_id": asgardeo_id, "ids": list(session_ids)})
    return {str(row.session_id): int(row.established) for row in rows}


def _end_sessions(
    session: Session,
    user: User,
    *,
    reason: str,
    created_from: datetime | None = None,
    created_before: datetime | None = None,
) -> int:
    statement = update(AppSession).where(AppSession.user_id == user.id, AppSession.revoked_at.is_(None))
    if created_from is not None:
        statement = statement.where(AppSession.created_at >= created_from)
    if created_before is not None:
        statement = statement.where(AppSession.created_at < created_before)
    result = session.execute(statement.values(revoked_at=datetime.now(UTC), revoked_reason=reason))
    return int(getattr(result, "rowcount", 0) or 0)


def _ms(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


def _session_revoked(session: Session, user: User, ids: list[str] | None) -> tuple[int, str]:
    starts = established_times(session, user.asgardeo_id, ids) if ids else {}
    if ids and len(starts) == len(set(ids)):
        cut = _ms(min(starts.values()) - CLOCK_MARGIN_MS)
        revoked = _end_sessions(session, user, reason="identity_session_revoked", created_from=cut)
        return revoked, "Asgardeo session revoked: sessions signed in since it began ended"
    revoked = _end_sessions(session, user, reason="identity_session_revoked")
    return revoked, "Asgardeo session revoked: which sessions it began is unknown, so all ended"


def apply_security_event(
    session: Session,
    event_type: str,
    event: Mapping[str, Any],
    asgardeo_id: str | None,
    *,
    iat: int,
    event_jti: str,
    credential_ends_sessions: bool = True,
) -> Revocation:
    """Apply one event of :data:`HANDLED` (see the module docstring). Raises :class:`MalformedSecurityEvent`
    before anything is written."""
    if event_type in SESSION_RECORDED:
        return Revocation(0, None, "recorded; read when a session is revoked")
    # Parse first, so a malformed event fails whoever it names.
    ids = revoked_session_ids(event) if event_type == SESSION_REVOKED else None
    credential = credential_reason(event) if event_type == CREDENTIAL_UPDATED else ""
    if asgardeo_id is None:
        return Revocation(0, None, "the event carries no user id")
    user = get_by_asgardeo_id(session, asgardeo_id)
    if user is None:
        return Revocation(0, None, "unknown user")
    if event_type == SESSION_REVOKED:
        revoked, reason = _session_revoked(session, user, ids)
    elif not credential_ends_sessions:
        return Revocation(0, None, f"{credential}; CREDENTIAL_UPDATE_ENDS_SESSIONS is off")
    else:
        cut = _ms(iat + CLOCK_MARGIN_MS)
        revoked = _end_sessions(session, user, reason="credential_updated", created_before=cut)
        reason = f"{credential}: sessions signed in before it ended"
    if revoked == 0:
        return Revocation(0, None, f"{reason}; no live session")
    change = record_change(
        session, user, AUDIT_ACTION, {"reason": reason, "revoked": revoked}, source="webhook", event_jti=event_jti
    )
    return Revocation(revoked, change, reason)
