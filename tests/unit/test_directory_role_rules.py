"""ROLE_MAP, role events and SCIM roles[] read the one way the role rules read them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.directory_roles import (
    MalformedRoleEvent,
    RoleRef,
    mapped_app_role,
    parse_member_change,
    parse_role_map,
    scim_roles,
)
from tests.webhook_payloads import sample

# The shared sample page with roles[] in today's shape (Asgardeo's older {type, value} entries in the shared copy).
PAGE = Path(__file__).parents[1] / "fixtures" / "scim_users_page.json"
ROLE_MAP = parse_role_map(["HR Manager@application:HRMS=hr", "Administrator@organization=admin", "Team Lead=manager"])


def test_role_map_entries_name_an_audience_as_precisely_as_needed() -> None:
    hrms = RoleRef("r1", "HR Manager", "application", "6db0975b", "HRMS")
    other_app = RoleRef("r2", "HR Manager", "application", "0000", "Payroll")
    org_admin = RoleRef("r3", "Administrator", "organization", "org-id", "myorg")
    app_admin = RoleRef("r4", "Administrator", "application", "6db0975b", "HRMS")
    lead = RoleRef("r5", "Team Lead", "application", "x", "Anything")
    assert [mapped_app_role(r, ROLE_MAP) for r in (hrms, other_app, org_admin, app_admin, lead)] == [
        "hr",
        None,
        "admin",
        None,
        "manager",
    ]


@pytest.mark.parametrize("entry", ["HR Manager", "HR=superuser", "=hr", "HR@group=hr"])
def test_a_bad_role_map_entry_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="ROLE_MAP"):
        parse_role_map([entry])


def test_the_sample_role_event_reads_as_the_change_it_carries() -> None:
    ((_, event),) = sample("roleUsersUpdated")["events"].items()
    change = parse_member_change(event)
    assert change.role.id == "1fad5996-3418-4883-925d-a319e3bb8e72"
    assert (change.role.name, change.role.audience_type, change.role.audience_display) == (
        "ROLE",
        "application",
        "Sample Application",
    )
    assert change.added == ("311b60cf-da6f-4378-8cd1-31e3e7026f4d",)
    assert change.removed == ("6c7f23d9-8083-4bf7-ab2c-885aa9faa186",)
    assert change.truncated is False


@pytest.mark.parametrize("extra", [{"truncated": True}, {"addedUsersCount": 1500}, {"totalRemovedUsers": 1001}])
def test_a_cut_member_list_is_recognised(extra: dict[str, object]) -> None:
    ((_, event),) = sample("roleUsersUpdated")["events"].items()
    event["role"].update(extra)
    assert parse_member_change(event).truncated is True


def test_a_role_event_without_a_role_is_refused() -> None:
    with pytest.raises(MalformedRoleEvent, match="role must be an object"):
        parse_member_change({"role": ["x"]})


def test_scim_roles_in_todays_shape_and_the_older_one_are_read() -> None:
    resource = json.loads(PAGE.read_text())["Resources"][0]
    refs = scim_roles(resource)
    assert [(r.id, r.name, r.audience_type, r.audience_display) for r in refs] == [
        ("1fad5996-3418-4883-925d-a319e3bb8e72", "HR Manager", "application", "HRMS"),
        ("4b2f0c1e-7d1a-4e61-9c7e-0a5d3f7b9e11", "everyone", "organization", "myorg"),
    ]
    assert [mapped_app_role(r, ROLE_MAP) for r in refs] == ["hr", None]
    older = scim_roles({"roles": [{"type": "default", "value": "Internal/everyone"}, {"value": 7}, "x"]})
    assert [(r.id, r.name, r.audience_type) for r in older] == [("Internal/everyone", "Internal/everyone", None)]
