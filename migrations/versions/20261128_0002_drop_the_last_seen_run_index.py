"""drop the index on users.last_seen_run_id

Nothing reads through it: the reconciliation asks for users whose ``last_seen_run_id IS DISTINCT FROM`` the run,
which no b-tree answers. Every run stamps every seen user, so the index only cost an index write per user per run
and kept those updates from being HOT.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 06:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_users_last_seen_run_id", table_name="users")


def downgrade() -> None:
    op.create_index("ix_users_last_seen_run_id", "users", ["last_seen_run_id"], unique=False)
