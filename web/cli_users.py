"""``flask users ...``: operator commands on the application's own user fields (the first admin, above all).

The other way to get a first admin is ``BOOTSTRAP_ADMIN_EMAILS``: a login whose verified email is listed there is
promoted to ``admin`` (see :func:`web.auth.complete_login`).
"""

from __future__ import annotations

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.db import unit_of_work
from models.tables import ROLES, User
from models.users import Change, record_change


class GrantError(click.ClickException):
    """A grant that cannot be done; the message says why and the exit status is 1."""


def grant_role(session: Session, email: str, role: str, *, actor: str) -> Change | None:
    """Give the single user with ``email`` (case-insensitive) the application role ``role`` and audit it.

    Returns ``None`` when the user already had the role (a re-run is a no-op). Raises :class:`GrantError` for an
    unknown role, no such user, or an email shared by several users.
    """
    if role not in ROLES:
        raise GrantError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    email = email.strip()
    if not email or len(email) > 320:
        raise GrantError("give the user's email address")
    users = (
        session.execute(select(User).where(func.lower(User.email) == email.lower()).order_by(User.id).limit(2))
        .scalars()
        .all()
    )
    if not users:
        raise GrantError(f"no user with email {email}; they appear after their first sign-in or the next sync")
    if len(users) > 1:
        raise GrantError(f"several users share the email {email}; fix the directory first")
    user = users[0]
    if user.role == role:
        return None
    change = record_change(session, user, "role_changed", {"role": [user.role, role]}, source="cli", actor=actor)
    user.role = role
    return change


@click.group("users", help="Manage the application's own user fields.")
def users() -> None:
    """The ``flask users`` command group."""


@users.command("grant-role")
@click.argument("email")
@click.argument("role")
def grant_role_command(email: str, role: str) -> None:
    """Give the user with EMAIL the application role ROLE (employee, manager, hr, admin)."""
    with unit_of_work() as session:
        change = grant_role(session, email, role, actor="cli")
    if change is None:
        click.echo(f"{email} already has the role {role}")
    else:
        click.echo(f"{email} is now {role} (was {change.changes['role'][0]})")
