"""directory roles: which Asgardeo roles a user holds, and who granted the application role

- ``users.directory_roles``: the user's memberships of Asgardeo roles that ``ROLE_MAP`` maps, as
  ``[{"id", "role", "member", "iat"}]``: the role's id, the application role it mapped to when the membership was
  applied (so a rename keeps it), whether the user is a member, and Asgardeo's time of that fact (an older event for
  the same role and user changes nothing).
- ``users.role_source``: ``directory`` when the current role was granted by an Asgardeo role, ``admin`` when an admin
  set it by hand; ``users.base_role``: while the directory's grant is above it, the role an admin set (or the role
  from before), given back when the grant goes. The directory only ever takes away a role it granted.

Revision ID: 1601
Revises: 1201
Create Date: 2026-11-30 09:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "1601"
down_revision: str | None = "1201"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column(
            "directory_roles",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column("users", sa.Column("role_source", sa.String(length=16), nullable=True))
    op.create_check_constraint(op.f("ck_users_role_source"), "users", "role_source IN ('admin', 'directory')")
    op.add_column("users", sa.Column("base_role", sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "base_role")
    op.drop_constraint(op.f("ck_users_role_source"), "users", type_="check")
    op.drop_column("users", "role_source")
    op.drop_column("users", "directory_roles")
