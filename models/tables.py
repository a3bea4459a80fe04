"""The schema: typed SQLAlchemy models for every table, with the constraints the sync rules depend on.

Constraint and index names are fixed by the naming convention so Alembic migrations stay stable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

USER_STATUSES = ("active", "inactive", "deleted")
ROLES = ("employee", "manager", "hr", "admin")
EVENT_STATUSES = ("received", "queued", "applied", "ignored", "failed")
RUN_STATUSES = ("running", "succeeded", "failed", "guarded", "partial")
# Who retired a user: a signed webhook event, or the directory no longer answering for them (listing + 404).
RETIRED_BY = ("event", "absence")
RUN_KINDS = ("full", "user")
# Who granted a user's current role: an Asgardeo role mapped by ROLE_MAP, or an admin by hand.
ROLE_SOURCES = ("admin", "directory")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONB, list[str]: JSONB}


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class User(Base):
    """A person as the HR application knows them: Asgardeo's identity fields plus the app's own fields.

    Sync writes the identity fields only; ``role``, ``employee_id`` and ``department`` belong to the application.
    """

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(_in("status", USER_STATUSES), name="status"),
        CheckConstraint(_in("role", ROLES), name="role"),
        CheckConstraint(_in("retired_by", RETIRED_BY), name="retired_by"),
        CheckConstraint(_in("role_source", ROLE_SOURCES), name="role_source"),
        Index("ix_users_email_lower", func.lower(text("email"))),
        Index("ix_users_status", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    asgardeo_id: Mapped[str] = mapped_column(String(64), unique=True)
    username: Mapped[str | None] = mapped_column(String(320))
    email: Mapped[str | None] = mapped_column(String(320))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    groups: Mapped[list[str]] = mapped_column(server_default=text("'[]'::jsonb"), default=list)
    status: Mapped[str] = mapped_column(String(16), server_default="active", default="active")
    role: Mapped[str] = mapped_column(String(32), server_default="employee", default="employee")
    employee_id: Mapped[str | None] = mapped_column(String(64))
    department: Mapped[str | None] = mapped_column(String(200))
    # Asgardeo's time (epoch ms) of the newest change applied; anything older is stale and ignored.
    source_version: Mapped[int] = mapped_column(BigInteger, server_default="0", default=0)
    last_seen_run_id: Mapped[int | None] = mapped_column(BigInteger)
    # The ``sub`` this person signs in with; equal to ``asgardeo_id`` unless the application issues another subject.
    oidc_subject: Mapped[str | None] = mapped_column(String(255), unique=True)
    # Why an inactive or deleted user is so: ``event`` (signed) or ``absence`` (a presence later shown undoes it).
    retired_by: Mapped[str | None] = mapped_column(String(16))
    # Memberships of mapped Asgardeo roles, ``[{"id", "role", "member", "iat"}]`` (models/directory_roles.py).
    directory_roles: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb"), default=list
    )
    # ``directory`` or ``admin``: who granted ``role``; the directory takes away only what it granted.
    role_source: Mapped[str | None] = mapped_column(String(16))
    # While the directory's grant sits above it: the role without it (an admin's, or from before), given back after.
    base_role: Mapped[str | None] = mapped_column(String(32))
    last_synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class AppSession(Base):
    """The application's own login session; only a hash of the opaque token is stored."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_user_id", "user_id"),
        Index("ix_sessions_idp_sid", "idp_sid"),
        Index("ix_sessions_expires_at", "expires_at"),
        Index("ix_sessions_revoked_at", "revoked_at", postgresql_where=text("revoked_at IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    idp_sid: Mapped[str | None] = mapped_column(String(200))
    # Kept only to send as ``id_token_hint`` at RP-initiated logout; it grants nothing on this service's API.
    id_token: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_reason: Mapped[str | None] = mapped_column(String(64))


class WebhookEvent(Base):
    """The durable inbox: every accepted webhook delivery, keyed by its ``jti`` so copies collapse."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        CheckConstraint(_in("status", EVENT_STATUSES), name="status"),
        Index("ix_webhook_events_status_received_at", "status", "received_at"),
        Index("ix_webhook_events_asgardeo_user_id", "asgardeo_user_id"),
        Index("ix_webhook_events_event_type", "event_type"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    jti: Mapped[str] = mapped_column(String(128), unique=True)
    event_type: Mapped[str] = mapped_column(String(64))
    event_uri: Mapped[str] = mapped_column(String(300))
    # The column keeps its first name (no migration for a rename); in code it is the directory's id, asgardeo_id.
    asgardeo_id: Mapped[str | None] = mapped_column("asgardeo_user_id", String(64))
    iat: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), server_default="received", default="received")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = _now()
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = _now()


class SyncRun(Base):
    """One reconciliation (``full``) or single-user sync (``user``) with its progress counters."""

    __tablename__ = "sync_runs"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        CheckConstraint(_in("kind", RUN_KINDS), name="kind"),
        Index("ix_sync_runs_status", "status"),
        Index("ix_sync_runs_started_at", "started_at"),
        Index("ix_sync_runs_target_user_id", "target_user_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(32))
    # The Asgardeo id of the user a single-user run syncs (the column keeps its first name, as the API does).
    asgardeo_id: Mapped[str | None] = mapped_column("target_user_id", String(64))
    requested_by: Mapped[str | None] = mapped_column(String(320))
    task_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), server_default="running", default="running")
    total_results: Mapped[int | None] = mapped_column(Integer)
    pages_done: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    seen: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    created: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    updated: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    unchanged: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    deactivated: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    failed: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    budget_waits: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    budget_wait_ms: Mapped[int] = mapped_column(BigInteger, server_default="0", default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # Directory ids of users a ``partial`` run could not confirm (neither listed nor answering a GET).
    unconfirmed: Mapped[list[str] | None] = mapped_column()
    started_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Touched on every page; a ``running`` row whose lock nobody holds and whose heartbeat is old was abandoned.
    heartbeat_at: Mapped[datetime] = _now()


class UserChange(Base):
    """The audit trail: what changed on a user, from what to what, and which event, run or person caused it.

    Its id is also the live stream's event id, so a reconnecting client resumes from here.
    """

    __tablename__ = "user_changes"
    __table_args__ = (
        Index("ix_user_changes_user_id", "user_id"),
        Index("ix_user_changes_created_at", "created_at"),
        # Housekeeping keeps a run while an audit row points to it, and deleting a run looks it up here.
        Index("ix_user_changes_run_id", "run_id", postgresql_where=text("run_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    asgardeo_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    changes: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"), default=dict)
    source: Mapped[str] = mapped_column(String(32))
    event_jti: Mapped[str | None] = mapped_column(String(128))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_runs.id", ondelete="SET NULL"))
    actor: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = _now()


REVIEW_STATUSES = ("pending", "approving", "approved", "dismissed")
CANDIDATE_OUTCOMES = ("retired", "kept", "unchanged", "failed")


class GuardReview(Base):
    """A full run the deactivation guard stopped, waiting for an admin: approve (re-confirm each candidate with the
    directory, retire the really gone) or dismiss. One per guarded run."""

    __tablename__ = "guard_reviews"
    __table_args__ = (CheckConstraint(_in("status", REVIEW_STATUSES), name="status"),)

    run_id: Mapped[int] = mapped_column(ForeignKey("sync_runs.id", ondelete="CASCADE"), primary_key=True)
    # Users not deleted when the run started counting, and how many of them the guard allows to retire.
    population: Mapped[int] = mapped_column(Integer)
    allowed: Mapped[int] = mapped_column(Integer)
    share: Mapped[float]
    # Confirmed gone (404) before the guard stopped the run; the rest of the candidates were not asked yet.
    confirmed_gone: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), server_default="pending", default="pending")
    reviewed_by: Mapped[str | None] = mapped_column(String(320))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()


class GuardCandidate(Base):
    """An active user the guarded run's listing did not show: retired on approval only if the directory says 404."""

    __tablename__ = "guard_candidates"
    __table_args__ = (CheckConstraint(f"outcome IS NULL OR {_in('outcome', CANDIDATE_OUTCOMES)}", name="outcome"),)

    run_id: Mapped[int] = mapped_column(ForeignKey("guard_reviews.run_id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    asgardeo_id: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str | None] = mapped_column(String(16))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
