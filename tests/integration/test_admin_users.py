from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from models.db import unit_of_work
from models.tables import User, UserChange
from tests.factories import make_user

SignIn = Callable[..., tuple[int, str]]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _seed(**fields: object) -> int:
    with unit_of_work() as session:
        return make_user(session, **fields).id


def test_list_pages_by_keyset_without_gaps_or_repeats(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    created = {_seed() for _ in range(7)}
    seen: list[int] = []
    after = None
    while True:
        url = "/admin/users?limit=3" + (f"&after_id={after}" if after else "")
        body = client.get(url, headers=admin_headers).json
        seen += [item["id"] for item in body["users"]]
        after = body["next_after_id"]
        if after is None:
            break
    assert created <= set(seen)
    assert len(seen) == len(set(seen))


def test_search_matches_email_and_treats_wildcards_literally(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    wanted = _seed(email="grace.hopper@navy.example", first_name="Grace", last_name="Hopper")
    _seed(email="someone@else.example")
    by_email = client.get("/admin/users?q=hopper@navy", headers=admin_headers).json["users"]
    by_name = client.get("/admin/users?q=Grace Hopper", headers=admin_headers).json["users"]
    wildcard = client.get("/admin/users?q=%25", headers=admin_headers).json["users"]
    assert [u["id"] for u in by_email] == [wanted]
    assert [u["id"] for u in by_name] == [wanted]
    assert wildcard == []


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("limit=0", "limit must be between 1 and 200"),
        ("limit=abc", "limit must be an integer"),
        ("limit=100000", "limit must be between 1 and 200"),
        ("after_id=-1", "after_id must be between"),
        ("status=zombie", "status must be one of"),
        ("role=root", "role must be one of"),
        ("q=" + "x" * 201, "q is longer than 200"),
        ("q=a%00b", "q must not contain control characters"),
    ],
)
def test_bad_list_parameters_get_a_clear_400(
    client: FlaskClient, admin_headers: dict[str, str], query: str, detail: str
) -> None:
    response = client.get(f"/admin/users?{query}", headers=admin_headers)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_parameter"
    assert detail in response.json["detail"]


def test_get_one_user_with_recent_changes_and_404(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    user_id = _seed()
    assert client.get(f"/admin/users/{user_id}", headers=admin_headers).json["user"]["id"] == user_id
    missing = client.get("/admin/users/999999999", headers=admin_headers)
    assert missing.status_code == 404
    assert missing.json["error"] == "not_found"


def test_patch_changes_own_fields_and_writes_an_audit_row(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    user_id = _seed()
    response = client.patch(
        f"/admin/users/{user_id}",
        json={"role": "manager", "employee_id": " E-42 ", "department": "Finance"},
        headers=admin_headers,
    )
    assert response.status_code == 200
    assert response.json["user"]["role"] == "manager"
    assert response.json["user"]["employee_id"] == "E-42"
    with unit_of_work() as session:
        audit = session.execute(select(UserChange).where(UserChange.user_id == user_id)).scalar_one()
        assert audit.source == "admin"
        assert audit.changes["role"] == ["employee", "manager"]
        assert audit.actor is not None


@pytest.mark.parametrize(
    "body",
    [
        {"email": "hijack@example.com"},
        {"status": "active"},
        {"role": "superuser"},
        {"employee_id": 12},
        {"department": "x" * 201},
        {"department": "Fin\x00ance"},
        {"employee_id": "E-1\n2"},
        {},
        ["role", "admin"],
        "role=admin",
    ],
)
def test_patch_refuses_bad_bodies_and_changes_nothing(
    client: FlaskClient, admin_headers: dict[str, str], body: object
) -> None:
    user_id = _seed(department="Ops")
    response = client.patch(f"/admin/users/{user_id}", json=body, headers=admin_headers)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_body"
    with unit_of_work() as session:
        user = session.get(User, user_id)
        assert user is not None
        assert (user.role, user.department) == ("employee", "Ops")


def test_patch_without_json_content_type_is_refused(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    user_id = _seed()
    response = client.patch(f"/admin/users/{user_id}", data="role=admin", headers=admin_headers)
    assert response.status_code == 400


def test_last_admin_cannot_be_demoted(client: FlaskClient, make_signed_in_user: SignIn) -> None:
    admin_id, token = make_signed_in_user(role="admin")
    response = client.patch(f"/admin/users/{admin_id}", json={"role": "employee"}, headers=_bearer(token))
    assert response.status_code == 409
    assert response.json["error"] == "last_admin"


def test_non_admins_are_refused_and_anonymous_is_401(client: FlaskClient, make_signed_in_user: SignIn) -> None:
    _, employee = make_signed_in_user(role="employee")
    assert client.get("/admin/users", headers=_bearer(employee)).status_code == 403
    assert client.get("/admin/users").status_code == 401
    assert client.get("/admin/users", headers=_bearer("forged-token")).status_code == 401


@pytest.mark.parametrize("path", ["/admin/users/9223372036854775808", "/admin/events/99999999999999999999"])
def test_ids_past_bigint_are_404_not_a_database_error(
    client: FlaskClient, admin_headers: dict[str, str], path: str
) -> None:
    response = client.get(path, headers=admin_headers)
    assert response.status_code == 404
    assert response.json["error"] == "not_found"
