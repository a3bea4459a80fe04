"""Asgardeo's SCIM resource shapes read into UserRecords, and malformed listings refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tasks.errors import DirectoryUnavailable
from tasks.scim import InvalidResource, parse_page, parse_user, valid_id

SAMPLE = Path("/work/shared/asgardeo/scim_users_page.json")


def resource(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "3987d74e-8432-4f4d-b1a8-cad463af843d",
        "userName": "DEFAULT/kim@example.com",
        "name": {"givenName": "Kim", "familyName": "Lee"},
        "emails": [{"value": "kim@example.com", "primary": True}],
        "meta": {"created": "2025-08-19T15:55:21.154Z", "lastModified": "2025-08-20T10:00:00.500Z"},
        "urn:scim:wso2:schema": {"accountDisabled": "false", "accountLocked": "false"},
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize("name", ["DEFAULT/kim@example.com", "PRIMARY/kim@example.com", "default/kim@example.com"])
def test_the_primary_store_prefix_is_stripped_from_username(name: str) -> None:
    assert parse_user(resource(userName=name)).username == "kim@example.com"


@pytest.mark.parametrize("name", ["team/kim", "HR/kim@example.com", "HR/DEFAULT/kim"])
def test_a_secondary_store_prefix_is_kept_so_two_stores_never_collapse(name: str) -> None:
    assert parse_user(resource(userName=name)).username == name


def test_values_longer_than_their_columns_are_cut_not_refused() -> None:
    user = parse_user(resource(name={"givenName": "G" * 201, "familyName": "F" * 500}, userName="u" * 400))
    assert (len(user.first_name or ""), len(user.last_name or ""), len(user.username or "")) == (200, 200, 320)


def test_emails_as_plain_strings_give_the_first() -> None:
    assert parse_user(resource(emails=["a@example.com", "b@example.com"])).email == "a@example.com"


def test_primary_email_object_wins_over_earlier_ones() -> None:
    emails = [{"value": "work@example.com"}, {"value": "home@example.com", "primary": True}]
    assert parse_user(resource(emails=emails)).email == "home@example.com"


def test_no_emails_gives_none() -> None:
    assert parse_user(resource(emails=None)).email is None
    assert parse_user(resource(emails=[42, None, {"primary": True}])).email is None


@pytest.mark.parametrize("flag", ["true", "TRUE", True])
def test_account_disabled_as_string_or_bool_makes_user_inactive(flag: object) -> None:
    user = parse_user(resource(**{"urn:scim:wso2:schema": {"accountDisabled": flag}}))
    assert user.status == "inactive"


@pytest.mark.parametrize("flag", ["true", True])
def test_account_locked_makes_user_inactive(flag: object) -> None:
    user = parse_user(resource(**{"urn:scim:wso2:schema": {"accountLocked": flag, "accountDisabled": False}}))
    assert user.status == "inactive"


@pytest.mark.parametrize("flag", ["false", False, None, "garbage"])
def test_false_or_unknown_flags_leave_user_active(flag: object) -> None:
    user = parse_user(resource(**{"urn:scim:wso2:schema": {"accountDisabled": flag, "accountLocked": flag}}))
    assert user.status == "active"


def test_active_false_makes_user_inactive() -> None:
    assert parse_user(resource(active=False)).status == "inactive"


def test_last_modified_becomes_epoch_ms_source_version() -> None:
    assert parse_user(resource()).source_version == 1755684000500


def test_missing_last_modified_falls_back_to_created_then_fetch_time() -> None:
    assert parse_user(resource(meta={"created": "2025-08-19T15:55:21.154Z"})).source_version == 1755618921154
    assert parse_user(resource(meta={}), fetched_ms=123).source_version == 123
    assert parse_user(resource(meta={"lastModified": "not a date"}), fetched_ms=7).source_version == 7


def test_groups_are_display_names_without_store_prefix() -> None:
    groups = [{"value": "g1", "display": "PRIMARY/Admins"}, {"value": "g2", "display": "Employees"}, "Raw", 5]
    assert parse_user(resource(groups=groups)).groups == ("Admins", "Employees", "Raw")


def test_names_are_read_and_non_strings_ignored() -> None:
    user = parse_user(resource(name={"givenName": "  Kim ", "familyName": 12}))
    assert (user.first_name, user.last_name) == ("Kim", None)


@pytest.mark.parametrize(
    "bad", [{}, {"id": ""}, {"id": 12}, {"id": "../etc"}, {"id": "x" * 65}, {"id": "a b"}, "not a dict", None]
)
def test_resource_without_usable_id_is_invalid(bad: Any) -> None:
    with pytest.raises(InvalidResource):
        parse_user(bad)


def test_hostile_id_is_not_a_valid_id() -> None:
    assert not valid_id("abc/../../Users")
    assert not valid_id("abc?filter=x")
    assert valid_id("3987d74e-8432-4f4d-b1a8-cad463af843d")


def test_sample_page_from_the_docs_parses() -> None:
    body = json.loads(SAMPLE.read_text())
    page = parse_page(body, 1)
    assert page.total_results == 3
    assert page.items == 2
    assert [u.username for u in page.users] == ["johndoe@aol.com", "peter@aol.com"]
    assert page.users[0].email == "johndoe@aol.com"
    assert page.users[1].email == "peter@aol.com"


def test_page_counts_unreadable_resources_without_failing() -> None:
    page = parse_page({"totalResults": 2, "Resources": [resource(), {"userName": "no-id"}]}, 1)
    assert (len(page.users), page.invalid, page.items) == (1, 1, 2)


def test_empty_page_without_resources_key_is_an_empty_page() -> None:
    page = parse_page({"totalResults": 0}, 1)
    assert (page.items, page.users) == (0, [])


@pytest.mark.parametrize(
    "body",
    [
        [],
        "x",
        {"Resources": []},
        {"totalResults": "3", "Resources": []},
        {"totalResults": -1, "Resources": []},
        {"totalResults": True, "Resources": []},
        {"totalResults": 3, "Resources": {}},
    ],
)
def test_malformed_listing_is_refused(body: Any) -> None:
    with pytest.raises(DirectoryUnavailable):
        parse_page(body, 1)
