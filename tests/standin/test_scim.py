"""SCIM2 /Users: paging, filters, CRUD, Asgardeo's shape, auth scopes, errors and the rate limit."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import requests
from scim2_models import Context

from asgardeo_standin.client import StandinAdmin
from asgardeo_standin.directory import now_ms
from asgardeo_standin.scim import ScimUser, user_resource
from asgardeo_standin.server import StandinHandle, start_in_thread

from .conftest import m2m_token, make_config

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


def test_list_pages_with_start_index_and_caps_count(
    standin: StandinHandle, scim: requests.Session, admin: StandinAdmin
) -> None:
    admin.seed(250)
    page = scim.get(f"{standin.base_url}/scim2/Users", params={"startIndex": 1, "count": 500}, timeout=5).json()
    assert page["totalResults"] == 252
    assert page["itemsPerPage"] == 100
    assert len(page["Resources"]) == 100
    last = scim.get(f"{standin.base_url}/scim2/Users", params={"startIndex": 201, "count": 100}, timeout=5).json()
    assert last["startIndex"] == 201
    assert last["itemsPerPage"] == 52
    beyond = scim.get(f"{standin.base_url}/scim2/Users", params={"startIndex": 400}, timeout=5).json()
    assert beyond["itemsPerPage"] == 0
    assert "Resources" not in beyond


def test_resources_have_asgardeo_shape(standin: StandinHandle, scim: requests.Session) -> None:
    page = scim.get(
        f"{standin.base_url}/scim2/Users", params={"filter": 'userName eq "admin@example.com"'}, timeout=5
    ).json()
    assert page["totalResults"] == 1
    user = page["Resources"][0]
    assert user["userName"] == "DEFAULT/admin@example.com"
    assert user["emails"] == [{"value": "admin@example.com", "primary": True}]
    assert user["name"] == {"givenName": "Alex", "familyName": "Admin"}
    assert [g["display"] for g in user["groups"]] == ["Admins", "Employees"]
    assert user["urn:scim:wso2:schema"] == {"accountDisabled": "false", "accountLocked": "false"}
    assert user["meta"]["location"] == f"{standin.base_url}/scim2/Users/{user['id']}"
    assert user["meta"]["lastModified"].endswith("Z")


def test_fast_list_resource_round_trips_through_scim2_models(standin: StandinHandle) -> None:
    for record in standin.directory.all_users():
        fast = user_resource(record, standin.base_url)
        model = ScimUser.model_validate(fast, scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        dumped = model.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        assert {k: v for k, v in dumped.items() if k != "meta"} == {k: v for k, v in fast.items() if k != "meta"}
        assert model.meta is not None
        assert model.meta.last_modified is not None
        assert int(model.meta.last_modified.timestamp() * 1000) == record.last_modified_ms


def test_filters(standin: StandinHandle, scim: requests.Session) -> None:
    def total(expression: str) -> int:
        response = scim.get(f"{standin.base_url}/scim2/Users", params={"filter": expression}, timeout=5)
        assert response.status_code == 200, response.text
        return int(response.json()["totalResults"])

    assert total('userName eq "DEFAULT/employee@example.com"') == 1
    assert total('userName eq "nobody@example.com"') == 0
    assert total('emails co "example.com"') == 2
    assert total('name.givenName sw "Al" and userName ew "example.com"') == 1
    response = scim.get(
        f"{standin.base_url}/scim2/Users", params={"filter": 'userName eq "a" or userName eq "b"'}, timeout=5
    )
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidFilter"
    assert ERROR_SCHEMA in response.json()["schemas"]


def test_search_endpoint(standin: StandinHandle, scim: requests.Session) -> None:
    response = scim.post(
        f"{standin.base_url}/scim2/Users/.search",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": 'userName eq "admin@example.com"',
            "startIndex": 1,
            "count": 10,
        },
        timeout=5,
    )
    assert response.status_code == 200, response.text
    assert response.json()["totalResults"] == 1


def test_create_get_put_patch_delete(standin: StandinHandle, scim: requests.Session) -> None:
    users = f"{standin.base_url}/scim2/Users"
    created = scim.post(
        users,
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "lee@example.com",
            "password": "Lee#pass1",
            "name": {"givenName": "Lee", "familyName": "Park"},
            "emails": [{"value": "lee@example.com", "primary": True}],
        },
        timeout=5,
    )
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    assert created.json()["userName"] == "DEFAULT/lee@example.com"
    assert scim.get(f"{users}/{user_id}", timeout=5).json()["name"]["familyName"] == "Park"
    duplicate = scim.post(
        users,
        json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "lee@example.com"},
        timeout=5,
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["scimType"] == "uniqueness"

    replaced = scim.put(
        f"{users}/{user_id}",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:scim:wso2:schema"],
            "id": user_id,
            "userName": "lee@example.com",
            "name": {"givenName": "Lee", "familyName": "Kim"},
            "emails": [{"value": "lee@example.com"}],
            "urn:scim:wso2:schema": {"accountDisabled": "true"},
        },
        timeout=5,
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"]["familyName"] == "Kim"
    assert replaced.json()["urn:scim:wso2:schema"]["accountDisabled"] == "true"

    patched = scim.patch(
        f"{users}/{user_id}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "name.givenName", "value": "Leo"}],
        },
        timeout=5,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == {"givenName": "Leo", "familyName": "Kim"}

    assert scim.delete(f"{users}/{user_id}", timeout=5).status_code == 204
    gone = scim.get(f"{users}/{user_id}", timeout=5)
    assert gone.status_code == 404
    assert gone.json()["schemas"] == [ERROR_SCHEMA]
    assert gone.json()["status"] == "404"
    assert user_id in StandinAdmin(standin.root_url).dump()["deleted"]


def test_missing_or_bad_token_is_401(standin: StandinHandle) -> None:
    users = f"{standin.base_url}/scim2/Users"
    assert requests.get(users, timeout=5).status_code == 401
    response = requests.get(users, headers={"Authorization": "Bearer nope"}, timeout=5)
    assert response.status_code == 401
    assert response.json()["schemas"] == [ERROR_SCHEMA]


def test_wrong_scope_is_403(standin: StandinHandle) -> None:
    view_only = {"Authorization": f"Bearer {m2m_token(standin, 'internal_user_mgt_view')}"}
    response = requests.get(f"{standin.base_url}/scim2/Users", headers=view_only, timeout=5)
    assert response.status_code == 403
    assert response.json()["schemas"] == [ERROR_SCHEMA]
    list_only = {"Authorization": f"Bearer {m2m_token(standin, 'internal_user_mgt_list')}"}
    user = standin.directory.all_users()[0]
    assert requests.get(f"{standin.base_url}/scim2/Users/{user.id}", headers=list_only, timeout=5).status_code == 403


def test_rate_limit_answers_429_per_ip() -> None:
    with start_in_thread(make_config(rate_limit_per_minute=5)) as handle:
        token = m2m_token(handle, "internal_user_mgt_list")  # one /oauth2 request counts too
        headers = {"Authorization": f"Bearer {token}"}
        statuses = [
            requests.get(f"{handle.base_url}/scim2/Users", headers=headers, timeout=5).status_code for _ in range(6)
        ]
        assert statuses == [200, 200, 200, 200, 429, 429]
        assert requests.post(f"{handle.base_url}/oauth2/token", timeout=5).status_code == 429
        admin = StandinAdmin(handle.root_url)
        assert admin.stats()["rate_limited"] == 3
        admin.set_rate_limit(0)
        assert requests.get(f"{handle.base_url}/scim2/Users", headers=headers, timeout=5).status_code == 200


def test_discovery_documents(standin: StandinHandle) -> None:
    base = f"{standin.base_url}/scim2"
    assert requests.get(f"{base}/ServiceProviderConfig", timeout=5).json()["patch"]["supported"] is True
    types = requests.get(f"{base}/ResourceTypes", timeout=5).json()
    assert [t["id"] for t in types["Resources"]] == ["User"]
    schemas = requests.get(f"{base}/Schemas", timeout=5).json()
    assert {s["id"] for s in schemas["Resources"]} == {
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:scim:wso2:schema",
    }


def _changed_since(scim: requests.Session, base_url: str, op: str, iso: str, start: int, count: int) -> dict[str, Any]:
    params = {"filter": f'meta.lastModified {op} "{iso}"', "startIndex": start, "count": count}
    response = scim.get(f"{base_url}/scim2/Users", params=params, timeout=5)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_last_modified_filter_pages_through_the_users_changed_since_an_instant(
    standin: StandinHandle, scim: requests.Session, admin: StandinAdmin
) -> None:
    admin.seed(30)
    users = standin.directory.all_users()
    cut = max(u.last_modified_ms for u in users) + 1
    # A change in the seed's last millisecond would be stamped before the cut: wait for the clock to pass it.
    while now_ms() < cut:
        time.sleep(0.001)
    changed = {standin.directory.set_disabled(u.id, True).id for u in users[5:12]}
    # Milliseconds matter: the instant is written with and without a fraction, and must compare as time, not text.
    iso = datetime.fromtimestamp(cut / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    seen: set[str] = set()
    for start in (1, 4, 7):
        page = _changed_since(scim, standin.base_url, "ge", iso, start, 3)
        assert page["totalResults"] == len(changed)
        seen |= {r["id"] for r in page.get("Resources", [])}
    assert seen == changed
    stamps = [u.last_modified_ms for u in standin.directory.all_users()]
    last = max(stamps)
    at_last = datetime.fromtimestamp(last / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert _changed_since(scim, standin.base_url, "gt", at_last, 1, 100)["totalResults"] == 0
    assert _changed_since(scim, standin.base_url, "ge", at_last, 1, 100)["totalResults"] == stamps.count(last)
    whole_second = datetime.fromtimestamp(cut // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _changed_since(scim, standin.base_url, "ge", whole_second, 1, 100)["totalResults"] >= len(changed)


def test_an_organisation_without_last_modified_filters_refuses_or_ignores_them(
    standin: StandinHandle, scim: requests.Session, admin: StandinAdmin
) -> None:
    admin.seed(10)
    future = 'meta.lastModified ge "2999-01-01T00:00:00Z"'
    url = f"{standin.base_url}/scim2/Users"
    assert scim.get(url, params={"filter": future}, timeout=5).json()["totalResults"] == 0
    admin.set_lastmodified_filter("refuse")
    refused = scim.get(url, params={"filter": future}, timeout=5)
    assert refused.status_code == 400
    assert refused.json()["scimType"] == "invalidFilter"
    # Other filters still work: only the lastModified support is missing.
    assert scim.get(url, params={"filter": 'userName eq "admin@example.com"'}, timeout=5).json()["totalResults"] == 1
    admin.set_lastmodified_filter("ignore")
    ignored = scim.get(url, params={"filter": future, "count": 5}, timeout=5).json()
    assert ignored["totalResults"] == standin.directory.count()
    assert ignored["itemsPerPage"] == 5
    bad = requests.put(f"{standin.root_url}/_standin/scim", json={"lastmodified_filter": "maybe"}, timeout=5)
    assert bad.status_code == 400
    admin.set_lastmodified_filter("honour")
    assert scim.get(url, params={"filter": future}, timeout=5).json()["totalResults"] == 0
