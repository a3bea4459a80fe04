"""The identity model: which local row a login belongs to, and linking that row to its directory user.

The local key is the directory's user id (``users.asgardeo_id`` = SCIM ``id`` = webhook ``user.id``). An ID token's
``sub`` is that id by default (``OIDC_SUBJECT_ATTRIBUTE=id``). An application may issue another subject, a username or
an email (Asgardeo allows it, and any OpenID provider beside a separate SCIM server has its own subjects), so a login
finds its row in this order:

1. the row already linked to this ``sub`` (``users.oidc_subject``);
2. by the configured attribute: the row whose id, username (store prefix rule of :mod:`models.attributes`) or email
   equals the ``sub``, if exactly one live row does;
3. none: a first login creates a row. Its ``asgardeo_id`` is the ``sub`` when the rule says ``sub`` is the directory
   id; otherwise a *provisional* id, which the login follow-up replaces by the directory's id once a SCIM filter
   finds the user (:func:`link_to_directory`).

A provisional id starts with ``~``, which no SCIM id (nor :func:`tasks.scim.valid_id`) accepts, so no SCIM call is
ever made for it. A row no directory write ever described keeps ``source_version`` 0 and is never retired by
absence: nothing at the directory ever vouched for it, and its login may simply not resolve (a configuration to fix,
not a person to lock out).

Functions take an open ``Session`` and never commit.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from models.attributes import username_from_directory
from models.tables import AppSession, User, UserChange
from models.users import lock_users

PROVISIONAL_PREFIX = "~"
MAX_SUBJECT_LENGTH = 255


def provisional_id(subject: str) -> str:
    """A stable placeholder ``asgardeo_id`` for a login whose directory id is not known yet (41 characters)."""
    return PROVISIONAL_PREFIX + hashlib.sha256(subject.encode()).hexdigest()[:40]


def is_provisional(asgardeo_id: str) -> bool:
    return asgardeo_id.startswith(PROVISIONAL_PREFIX)


def find_login_user(session: Session, subject: str, rule: str) -> User | None:
    """The row a login with ``sub`` = ``subject`` belongs to (steps 1 and 2 of the module docstring), or None.

    A row found by the rule is linked to the subject here, replacing an older one (the caller commits). Deleted rows
    are never matched by username or email: a name can come back for another person, and the provider signs in only
    present users.
    """
    user = session.execute(select(User).where(User.oidc_subject == subject)).scalar_one_or_none()
    if user is not None:
        return user
    if rule == "id":
        user = session.execute(select(User).where(User.asgardeo_id == subject)).scalar_one_or_none()
    else:
        column = User.username if rule == "username" else User.email
        wanted = username_from_directory(subject) if rule == "username" else subject
        found = (
            session.execute(
                select(User).where(func.lower(column) == (wanted or "").lower(), User.status != "deleted").limit(2)
            )
            .scalars()
            .all()
        )
        user = found[0] if len(found) == 1 else None
    if user is not None:
        # Also replaces an older subject: after a rename at the directory the provider issues the new name.
        user.oidc_subject = subject
    return user


def first_login_id(subject: str, rule: str, *, valid: bool) -> str:
    """The ``asgardeo_id`` of a row created by a first login (step 3 of the module docstring)."""
    return subject if rule == "id" and valid else provisional_id(subject)


def link_to_directory(session: Session, user_id: int, asgardeo_id: str) -> int | None:
    """Give the login-created row ``user_id`` its directory id; returns the id of the row that now holds the person.

    When another row already holds that directory id (the nightly run or a webhook created it meanwhile), that row
    is kept: it takes the login's subject, sessions and audit rows (and the login row's role, if it had been
    granted more than the default), and the login row is removed. Returns None when ``user_id`` is gone or no
    longer provisional (a re-run is a no-op).
    """
    lock_users(session, [asgardeo_id])
    login_row = session.execute(select(User).where(User.id == user_id).with_for_update()).scalar_one_or_none()
    if login_row is None or not is_provisional(login_row.asgardeo_id):
        return None
    old_id = login_row.asgardeo_id
    directory_row = session.execute(
        select(User).where(User.asgardeo_id == asgardeo_id).with_for_update()
    ).scalar_one_or_none()
    if directory_row is None:
        login_row.asgardeo_id = asgardeo_id
        session.execute(update(UserChange).where(UserChange.user_id == user_id).values(asgardeo_id=asgardeo_id))
        session.flush()
        return login_row.id
    subject, role = login_row.oidc_subject, login_row.role
    login_row.oidc_subject = None
    session.flush()
    directory_row.oidc_subject = subject
    if directory_row.role == "employee" and role != "employee":
        directory_row.role = role
    session.execute(update(AppSession).where(AppSession.user_id == user_id).values(user_id=directory_row.id))
    session.execute(
        update(UserChange)
        .where(or_(UserChange.user_id == user_id, UserChange.asgardeo_id == old_id))
        .values(user_id=directory_row.id, asgardeo_id=asgardeo_id)
    )
    session.delete(login_row)
    session.flush()
    return directory_row.id
