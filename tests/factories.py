"""Small builders for test data, so tests state only what matters to them."""

from __future__ import annotations

import itertools
import uuid

from sqlalchemy.orm import Session

from models.inbox import parse_envelope
from models.sessions import IssuedSession, create_session
from models.tables import User, WebhookEvent
from models.users import UserRecord

_counter = itertools.count(1)


def user_record(**overrides: object) -> UserRecord:
    n = next(_counter)
    values: dict[str, object] = {
        "asgardeo_id": str(uuid.uuid4()),
        "username": f"person{n}@example.com",
        "email": f"person{n}@example.com",
        "first_name": f"First{n}",
        "last_name": f"Last{n}",
        "groups": (),
        "status": "active",
        "source_version": 1_700_000_000_000 + n,
    }
    values.update(overrides)
    return UserRecord(**values)  # type: ignore[arg-type]


def make_user(session: Session, **overrides: object) -> User:
    n = next(_counter)
    values: dict[str, object] = {
        "asgardeo_id": str(uuid.uuid4()),
        "username": f"user{n}@example.com",
        "email": f"user{n}@example.com",
        "first_name": f"First{n}",
        "last_name": f"Last{n}",
        "status": "active",
        "role": "employee",
        "groups": [],
        "source_version": 1_700_000_000_000,
    }
    values.update(overrides)
    user = User(**values)
    session.add(user)
    session.flush()
    return user


def login(session: Session, user: User, ttl_seconds: int = 3600) -> IssuedSession:
    return create_session(session, user, ttl_seconds=ttl_seconds)


def make_event(session: Session, kind: str = "userCreated", **overrides: object) -> WebhookEvent:
    """An inbox row for a well-formed sample delivery of ``kind`` (so a replay can really apply it)."""
    from tests import webhook_payloads

    body = webhook_payloads.sample(kind)
    envelope = parse_envelope(body)
    values: dict[str, object] = {
        "jti": envelope.jti,
        "event_type": envelope.event_type,
        "event_uri": envelope.event_uri,
        "asgardeo_id": envelope.asgardeo_id,
        "iat": envelope.iat,
        "payload": body,
        "status": "received",
    }
    values.update(overrides)
    event = WebhookEvent(**values)
    session.add(event)
    session.flush()
    return event


def failed_event(session: Session, last_error: str = "DirectoryUnavailable: SCIM answered 503") -> WebhookEvent:
    """A well-formed ``userCreated`` event that failed earlier, so a replay can really apply it."""
    return make_event(session, "userCreated", status="failed", attempts=5, last_error=last_error)
