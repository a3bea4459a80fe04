"""The login follow-up's audit rule and the ``flask users grant-role`` command."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.tables import UserChange
from tasks.login import record_login
from tests.factories import make_user


def test_record_login_writes_one_audit_row_per_session_even_when_rerun(db_session: Session) -> None:
    user = make_user(db_session)
    assert record_login(db_session, user.id, 41) == user.asgardeo_id
    assert record_login(db_session, user.id, 41) == user.asgardeo_id
    assert record_login(db_session, user.id, 42) == user.asgardeo_id
    rows = db_session.execute(select(UserChange).where(UserChange.user_id == user.id)).scalars().all()
    assert sorted(r.changes["session_id"] for r in rows) == [41, 42]
    assert {(r.action, r.source) for r in rows} == {("login", "login")}


def test_record_login_for_a_vanished_user_does_nothing(db_session: Session) -> None:
    assert record_login(db_session, 987_654_321, 1) is None


def grant(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["users", "grant-role", *args])


def role_of(email: str) -> str:
    from models.db import unit_of_work
    from models.tables import User

    with unit_of_work() as session:
        return str(session.execute(select(User.role).where(User.email == email)).scalar_one())


@pytest.fixture
def person() -> str:
    from models.db import unit_of_work

    with unit_of_work() as session:
        return str(make_user(session, email="First.Admin@example.com").email)


def test_grant_role_makes_the_first_admin_and_audits_it(app: Flask, person: str) -> None:
    from models.db import unit_of_work

    result = grant(app, "first.admin@EXAMPLE.com", "admin")
    assert result.exit_code == 0, result.output
    assert "is now admin (was employee)" in result.output
    assert role_of(person) == "admin"
    with unit_of_work() as session:
        change = session.execute(select(UserChange).where(UserChange.action == "role_changed")).scalar_one()
    assert (change.changes, change.source) == ({"role": ["employee", "admin"]}, "cli")


def test_grant_role_twice_is_a_no_op(app: Flask, person: str) -> None:
    assert grant(app, person, "hr").exit_code == 0
    again = grant(app, person, "hr")
    assert again.exit_code == 0
    assert "already has the role hr" in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nobody@example.com", "admin"), "no user with email"),
        (("first.admin@example.com", "overlord"), "unknown role"),
        (("", "admin"), "give the user's email"),
        (("x" * 400 + "@example.com", "admin"), "give the user's email"),
    ],
)
def test_grant_role_refuses_bad_input_and_changes_nothing(
    app: Flask, person: str, args: tuple[str, str], message: str
) -> None:
    result = grant(app, *args)
    assert result.exit_code == 1
    assert message in result.output
    assert role_of(person) == "employee"


def test_grant_role_refuses_an_ambiguous_email(app: Flask) -> None:
    from models.db import unit_of_work

    with unit_of_work() as session:
        make_user(session, email="twin@example.com")
        make_user(session, email="TWIN@example.com")
    result = grant(app, "twin@example.com", "admin")
    assert result.exit_code == 1
    assert "several users" in result.output
