"""Webhook claims and SCIM resources describing the same user give the same row values (one parser, one rule set).

The two paths once disagreed (the claim parser cut any ``x/`` prefix, the SCIM parser only upper-case ones, and group
names lost their store prefix on one path only), so each sync flipped a username back and an audit row was written.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from models.attributes import group_names, username_from_directory
from models.events import plan_event
from tasks.scim import parse_user

USER_ID = "3987d74e-8432-4f4d-b1a8-cad463af843d"
CLAIM = "http://wso2.org/claims/"
STORES = st.sampled_from(["", "DEFAULT/", "PRIMARY/", "default/", "Primary/", "HR/", "team/", "SECONDARY.STORE/"])
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=400)
NAMES = st.builds(lambda store, name: store + name, STORES, TEXT)


def scim_resource(username: str, email: str, given: str, family: str, groups: list[str]) -> dict[str, Any]:
    return {
        "id": USER_ID,
        "userName": username,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"value": email, "primary": True}],
        "groups": [{"value": f"g-{n}", "display": name} for n, name in enumerate(groups)],
        "meta": {"lastModified": "2026-11-30T08:00:00.000Z"},
    }


def claims(username: str, email: str, given: str, family: str, groups: list[str]) -> list[dict[str, Any]]:
    return [
        {"uri": CLAIM + "username", "value": username},
        {"uri": CLAIM + "emailaddress", "value": email},
        {"uri": CLAIM + "givenname", "value": given},
        {"uri": CLAIM + "lastname", "value": family},
        {"uri": CLAIM + "groups", "value": groups},
    ]


def row(username: Any, email: Any, first: Any, last: Any, groups: Any) -> tuple[Any, ...]:
    return (username, email, first, last, tuple(sorted(set(groups))))


@settings(max_examples=300, deadline=None)
@given(username=NAMES, email=TEXT, given_name=TEXT, family=TEXT, groups=st.lists(NAMES, max_size=6))
def test_a_created_event_and_the_scim_resource_give_the_same_row(
    username: str, email: str, given_name: str, family: str, groups: list[str]
) -> None:
    values = (username, email, given_name, family, groups)
    scim = parse_user(scim_resource(*values))
    plan = plan_event("userCreated", {"user": {"claims": claims(*values)}}, USER_ID, 1)
    assert plan.record is not None
    webhook = plan.record
    assert row(scim.username, scim.email, scim.first_name, scim.last_name, scim.groups) == row(
        webhook.username, webhook.email, webhook.first_name, webhook.last_name, webhook.groups
    )


@settings(max_examples=200, deadline=None)
@given(username=NAMES, given_name=TEXT, groups=st.lists(NAMES, max_size=6))
def test_a_profile_update_event_writes_what_the_scim_resource_holds(
    username: str, given_name: str, groups: list[str]
) -> None:
    scim = parse_user(scim_resource(username, "a@example.com", given_name, "F", groups))
    updated = [
        {"uri": CLAIM + "username", "value": username},
        {"uri": CLAIM + "givenname", "value": given_name},
        {"uri": CLAIM + "groups", "value": groups},
    ]
    patch = plan_event("userProfileUpdated", {"user": {"updatedClaims": updated}}, USER_ID, 1).patch
    assert (patch["username"], patch["first_name"], tuple(sorted(set(patch["groups"])))) == (
        scim.username,
        scim.first_name,
        tuple(sorted(set(scim.groups))),
    )


def test_only_the_primary_store_prefix_is_stripped_in_any_case() -> None:
    assert username_from_directory("DEFAULT/kim") == "kim"
    assert username_from_directory("primary/kim") == "kim"
    assert username_from_directory("team/kim") == "team/kim"
    assert username_from_directory("HR/kim") == "HR/kim"
    assert group_names(["DEFAULT/Staff", "HR/Staff", " Staff ", ""]) == ("HR/Staff", "Staff")


def test_values_longer_than_their_columns_are_cut_on_the_claim_path_too() -> None:
    plan = plan_event("userCreated", {"user": {"claims": claims("u" * 400, "e" * 400, "G" * 201, "F", [])}}, "x", 1)
    assert plan.record is not None
    assert (len(plan.record.username or ""), len(plan.record.email or ""), len(plan.record.first_name or "")) == (
        320,
        320,
        200,
    )
