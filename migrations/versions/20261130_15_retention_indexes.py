"""indexes the housekeeping deletes go through

- ``ix_user_changes_run_id`` (only rows that name a run): a run is removed only when no audit row points to it,
  and Postgres's ``ON DELETE SET NULL`` on that foreign key looks the run up in ``user_changes`` for every run
  deleted. Without the index each of those checks reads the whole audit trail.
- ``ix_sessions_revoked_at`` (only revoked sessions): revoked sessions are removed after their grace period; live
  sessions, the ones logins and requests write, are not in it.

Both are small partial indexes. Building them blocks writes to the two tables for as long as the build takes
(proportional to the revoked sessions and reconciliation audit rows already there).

Revision ID: 1501
Revises: 1401
Create Date: 2026-11-30 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1501"
down_revision: str | None = "1401"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_user_changes_run_id", "user_changes", ["run_id"], postgresql_where=sa.text("run_id IS NOT NULL")
    )
    op.create_index(
        "ix_sessions_revoked_at", "sessions", ["revoked_at"], postgresql_where=sa.text("revoked_at IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_index("ix_sessions_revoked_at", table_name="sessions")
    op.drop_index("ix_user_changes_run_id", table_name="user_changes")
