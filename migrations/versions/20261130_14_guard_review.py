"""guarded-run review: the review of a run the guard stopped, its candidates; user runs found by user; budget waits

A run stopped by the deactivation guard records the users its listing missed, so an admin can approve (each one is
re-confirmed with the directory, only the really gone are retired) or dismiss it from the console, with no setting
change or restart. The user page lists a user's single-user syncs, hence the index on ``target_user_id``. A run
counts its waits for the shared SCIM rate budget, so the sync page can say how much of a run was spent waiting.

Revision ID: 1401
Revises: 0002
Create Date: 2026-11-30 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1401"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "guard_reviews",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("population", sa.Integer(), nullable=False),
        sa.Column("allowed", sa.Integer(), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("confirmed_gone", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("reviewed_by", sa.String(length=320), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'approving', 'approved', 'dismissed')", name=op.f("ck_guard_reviews_status")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_runs.id"], name=op.f("fk_guard_reviews_run_id_sync_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_guard_reviews")),
    )
    op.create_table(
        "guard_candidates",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("asgardeo_id", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('retired', 'kept', 'unchanged', 'failed')",
            name=op.f("ck_guard_candidates_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["guard_reviews.run_id"],
            name=op.f("fk_guard_candidates_run_id_guard_reviews"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_guard_candidates_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "user_id", name=op.f("pk_guard_candidates")),
    )
    op.create_index("ix_sync_runs_target_user_id", "sync_runs", ["target_user_id"], unique=False)
    op.add_column("sync_runs", sa.Column("budget_waits", sa.Integer(), server_default="0", nullable=False))
    op.add_column("sync_runs", sa.Column("budget_wait_ms", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("sync_runs", "budget_wait_ms")
    op.drop_column("sync_runs", "budget_waits")
    op.drop_index("ix_sync_runs_target_user_id", table_name="sync_runs")
    op.drop_table("guard_candidates")
    op.drop_table("guard_reviews")
