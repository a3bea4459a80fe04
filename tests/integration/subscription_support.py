"""A look-up of the user row a webhook synced (the ``subscribed`` fixture is in tests/conftest.py)."""

from __future__ import annotations

from sqlalchemy import select

from models.db import SessionFactory, get_engine
from models.tables import User


def local_user(asgardeo_id: str) -> User | None:
    get_engine()
    with SessionFactory() as session:
        return session.execute(select(User).where(User.asgardeo_id == asgardeo_id)).scalar_one_or_none()
