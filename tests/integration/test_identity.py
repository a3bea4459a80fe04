"""One identity model: a login, the single-user sync and the nightly run agree on one row, and nobody present is
retired. Against the shared stand-in over real HTTP with the real embedded worker.

The stand-in can issue another subject than the user id (``subject_claim``), the way an Asgardeo application may,
and can answer a false 404 once for a present user (``fail_get``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.integration.auth_support import authorize_params, new_standin_user, path_of, provider_sign_in
from tests.integration.sync_support import start_run
from tests.polling import wait_for

pytestmark = pytest.mark.usefixtures("clean_db", "clean_redis")


@pytest.fixture
def subject_rule(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Set ``OIDC_SUBJECT_ATTRIBUTE`` for the worker (which reads the process settings) and later apps."""
    from models.settings import get_settings

    def use(rule: str) -> None:
        monkeypatch.setenv("OIDC_SUBJECT_ATTRIBUTE", rule)
        get_settings.cache_clear()

    yield use
    monkeypatch.delenv("OIDC_SUBJECT_ATTRIBUTE", raising=False)
    get_settings.cache_clear()


@pytest.fixture
def standin_subject(standin_admin: Any) -> Iterator[Callable[[str], None]]:
    """What the shared stand-in's ID tokens carry as ``sub``; back to the user id after the test."""
    yield standin_admin.set_subject_claim
    standin_admin.set_subject_claim("id")


def web_client() -> FlaskClient:
    from models.settings import get_settings
    from web import create_app

    application: Flask = create_app(get_settings())
    application.config["TESTING"] = True
    return application.test_client()


def sign_in(client: FlaskClient, username: str) -> str:
    """The whole code flow: our /auth/login, the stand-in's form over HTTP, our callback. Returns the session token."""
    started = client.get("/auth/login")
    assert started.status_code == 302
    callback = provider_sign_in(started.headers["Location"], username)
    assert authorize_params(started.headers["Location"])["state"] in callback
    answer = client.get(path_of(callback), headers={"Accept": "application/json"})
    assert answer.status_code == 200, answer.get_json()
    return str(answer.get_json()["session_token"])


def me(client: FlaskClient, token: str) -> int:
    return client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code


def rows_of(email: str) -> list[Any]:
    from models.db import unit_of_work
    from models.tables import User

    with unit_of_work() as session:
        return list(session.execute(select(User).where(User.email == email)).scalars())


def user_runs_done(trigger: str) -> int:
    from models.db import unit_of_work
    from models.tables import SyncRun

    with unit_of_work() as session:
        return int(
            session.execute(
                select(func.count()).where(
                    SyncRun.kind == "user", SyncRun.trigger == trigger, SyncRun.status != "running"
                )
            ).scalar_one()
        )


def full_run() -> Any:
    from tasks.reconcile import reconcile_all

    outcome = reconcile_all(start_run())
    assert outcome.status == "succeeded", outcome
    return outcome


def test_login_whose_subject_is_the_username_is_linked_to_the_directory_user_and_survives_the_nightly_run(
    celery_worker: Any, standin_admin: Any, standin_subject: Callable[[str], None], subject_rule: Callable[[str], None]
) -> None:
    standin_subject("username")
    subject_rule("username")
    person = new_standin_user(standin_admin, given_name="Kim", family_name="Park")
    client = web_client()
    token = sign_in(client, person["_username"])

    linked = wait_for(
        lambda: [u for u in rows_of(person["_username"]) if u.asgardeo_id == person["id"]],
        what="the login's row to be linked to the directory id",
    )
    assert (linked[0].oidc_subject, linked[0].status, linked[0].first_name) == (person["_username"], "active", "Kim")
    assert me(client, token) == 200

    full_run()
    rows = rows_of(person["_username"])
    assert [(u.asgardeo_id, u.status) for u in rows] == [(person["id"], "active")]
    assert me(client, token) == 200
    # The next login finds the same row by its subject.
    assert me(client, sign_in(client, person["_username"])) == 200
    assert len(rows_of(person["_username"])) == 1


def test_a_login_that_resolves_to_nobody_stays_signed_in_and_raises_a_configuration_warning(
    celery_worker: Any, standin_admin: Any, standin_subject: Callable[[str], None], subject_rule: Callable[[str], None]
) -> None:
    from tasks.config_warnings import LOGIN_SUBJECT_UNRESOLVED, warnings

    standin_subject("username")  # the application issues usernames, but OIDC_SUBJECT_ATTRIBUTE was left at "id"
    subject_rule("id")
    person = new_standin_user(standin_admin)
    client = web_client()
    token = sign_in(client, person["_username"])

    wait_for(lambda: user_runs_done("login"), what="the login follow-up's refresh")
    assert wait_for(lambda: warnings().get(LOGIN_SUBJECT_UNRESOLVED), what="the configuration warning")["count"] >= 1
    assert [u.status for u in rows_of(person["_username"])] == ["active"]
    assert me(client, token) == 200

    full_run()
    signed_in = [u for u in rows_of(person["_username"]) if u.oidc_subject == person["_username"]]
    assert [u.status for u in signed_in] == ["active"]
    assert me(client, token) == 200


def test_a_background_refresh_answered_404_retires_nobody(standin: Any, standin_admin: Any) -> None:
    from tasks.users import sync_user
    from tests.integration.test_sync_user import local, new_directory_user

    resource = new_directory_user(standin_admin)
    sync_user(resource["id"], trigger="test")
    standin_admin.fail_get(resource["id"], status=404)
    result = sync_user(resource["id"], trigger="event")
    assert (result.status, result.action) == ("succeeded", "not_found")
    assert local(resource["id"]).status == "active"


def test_one_false_404_retires_a_present_user_only_until_the_next_full_run(standin: Any, standin_admin: Any) -> None:
    from models.db import unit_of_work
    from models.tables import UserChange
    from tasks.users import sync_user
    from tests.integration.test_sync_user import local, new_directory_user

    resource = new_directory_user(standin_admin)
    sync_user(resource["id"], trigger="test")
    standin_admin.fail_get(resource["id"], status=404)
    assert sync_user(resource["id"], trigger="admin").action == "deleted"
    assert local(resource["id"]).status == "deleted"

    full_run()
    assert local(resource["id"]).status == "active"
    assert local(resource["id"]).retired_by is None
    with unit_of_work() as session:
        back = session.execute(
            select(UserChange).where(UserChange.asgardeo_id == resource["id"], UserChange.action == "reactivated")
        ).scalar_one()
    assert back.changes["reason"] == ["absent from the directory", "present in the directory"]
    assert back.changes["status"] == ["deleted", "active"]


def test_linking_a_login_row_into_a_row_the_directory_created_meanwhile_moves_its_sessions(db_session: Any) -> None:
    from models.identity import link_to_directory, provisional_id
    from models.sessions import find_active_session
    from models.tables import User
    from tests.factories import login, make_user

    subject = "kim@example.com"
    login_row = make_user(db_session, asgardeo_id=provisional_id(subject), oidc_subject=subject, source_version=0)
    issued = login(db_session, login_row)
    directory_row = make_user(db_session, email=subject, role="hr")
    assert link_to_directory(db_session, login_row.id, directory_row.asgardeo_id) == directory_row.id
    assert db_session.get(User, login_row.id) is None
    db_session.refresh(directory_row)
    assert (directory_row.oidc_subject, directory_row.role) == (subject, "hr")
    found = find_active_session(db_session, issued.token)
    assert found is not None
    assert found[1].id == directory_row.id
    assert link_to_directory(db_session, login_row.id, directory_row.asgardeo_id) is None  # a re-run is a no-op
