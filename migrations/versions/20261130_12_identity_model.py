"""one identity model: the login subject, who retired a user, and partial runs

- ``users.oidc_subject``: the ``sub`` a person signs in with. It equals ``asgardeo_id`` by default, but an application
  may issue another subject (a username or an email); the login finds the row by it, and the follow-up links the row
  to the directory's id. Up to 255 characters, as OpenID Connect allows.
- ``users.retired_by``: ``event`` (a signed delete or disable) or ``absence`` (a listing without the user and a
  confirming 404, or an admin's single-user sync). A user retired by absence comes back when the directory shows them
  again, whatever the timestamps; one retired by an event does not.
- ``sync_runs.status`` gains ``partial`` (the listing completed but some unlisted users could not be confirmed), and
  ``sync_runs.unconfirmed`` names those users.

Revision ID: 1201
Revises: 1501
Create Date: 2026-11-30 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "1201"
down_revision: str | None = "1501"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("oidc_subject", sa.String(length=255), nullable=True))
    op.create_unique_constraint(op.f("uq_users_oidc_subject"), "users", ["oidc_subject"])
    op.add_column("users", sa.Column("retired_by", sa.String(length=16), nullable=True))
    op.create_check_constraint(op.f("ck_users_retired_by"), "users", "retired_by IN ('event', 'absence')")
    op.drop_constraint(op.f("ck_sync_runs_status"), "sync_runs", type_="check")
    op.create_check_constraint(
        op.f("ck_sync_runs_status"), "sync_runs", "status IN ('running', 'succeeded', 'failed', 'guarded', 'partial')"
    )
    op.add_column("sync_runs", sa.Column("unconfirmed", postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column("sync_runs", "unconfirmed")
    op.execute("UPDATE sync_runs SET status = 'failed' WHERE status = 'partial'")
    op.drop_constraint(op.f("ck_sync_runs_status"), "sync_runs", type_="check")
    op.create_check_constraint(
        op.f("ck_sync_runs_status"), "sync_runs", "status IN ('running', 'succeeded', 'failed', 'guarded')"
    )
    op.drop_constraint(op.f("ck_users_retired_by"), "users", type_="check")
    op.drop_column("users", "retired_by")
    op.drop_constraint(op.f("uq_users_oidc_subject"), "users", type_="unique")
    op.drop_column("users", "oidc_subject")
