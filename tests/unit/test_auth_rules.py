"""Pure rules of sign-in: the ``next`` redirect filter, users from ID token claims, the bootstrap-admin rule."""

from __future__ import annotations

import pytest

from models.settings import Settings
from web.auth import bootstrap_admin_rule, record_from_claims, safe_next
from web.oidc import LoginRejected


@pytest.mark.parametrize(
    "value",
    ["/", "/profile", "/admin/users?page=2&q=kim", "/a/b#frag", "/caf%C3%A9"],
)
def test_same_origin_paths_are_kept(value: str) -> None:
    assert safe_next(value) == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "//evil.example",
        "//evil.example/path",
        "/\\evil.example",
        "\\\\evil.example",
        "/\\/evil.example",
        "https://evil.example/",
        "http:/evil.example",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "profile",
        "/ok\r\nSet-Cookie: x=1",
        "/tab\there",
        "/" + "a" * 600,
        " /profile",
    ],
)
def test_hostile_or_foreign_next_values_fall_back_to_home(value: str | None) -> None:
    assert safe_next(value) == "/"


def claims(**overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "sub": "4c1d-sub",
        "email": "kim@example.com",
        "email_verified": True,
        "given_name": "Kim",
        "family_name": "Park",
        "username": "kim",
        "groups": ["hrms-hr", 7, "staff"],
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def test_record_from_claims_maps_the_oidc_claims_and_drops_non_string_groups() -> None:
    record = record_from_claims(claims())
    assert record.asgardeo_id == "4c1d-sub"
    assert (record.username, record.email, record.first_name, record.last_name) == (
        "kim",
        "kim@example.com",
        "Kim",
        "Park",
    )
    assert record.groups == ("hrms-hr", "staff")
    assert (record.status, record.source_version) == ("active", 0)


def test_record_from_claims_falls_back_to_the_email_as_username() -> None:
    assert record_from_claims(claims(username=None)).username == "kim@example.com"


@pytest.mark.parametrize("field", ["email", "given_name", "family_name", "username"])
def test_record_from_claims_refuses_oversized_or_non_string_claims(field: str) -> None:
    with pytest.raises(LoginRejected):
        record_from_claims(claims(**{field: "x" * 400}))
    with pytest.raises(LoginRejected):
        record_from_claims(claims(**{field: {"nested": True}}))


def test_bootstrap_admin_matches_the_verified_email_case_insensitively() -> None:
    settings = Settings(bootstrap_admin_emails=" Kim@Example.com ,other@example.com")  # type: ignore[arg-type]
    assert bootstrap_admin_rule(claims(), settings) == "BOOTSTRAP_ADMIN_EMAILS"
    assert bootstrap_admin_rule(claims(email="kim@example.org"), settings) is None
    assert bootstrap_admin_rule(claims(email=None), settings) is None
    assert bootstrap_admin_rule(claims(), Settings()) is None


@pytest.mark.parametrize("verified", [False, None, "true", 1])
def test_bootstrap_admin_email_counts_only_when_the_token_says_verified_true(verified: object) -> None:
    settings = Settings(bootstrap_admin_emails="kim@example.com")  # type: ignore[arg-type]
    assert bootstrap_admin_rule(claims(email_verified=verified), settings) is None


def test_bootstrap_admin_ids_match_the_subject_without_any_email() -> None:
    settings = Settings(bootstrap_admin_ids="4c1d-sub")  # type: ignore[arg-type]
    assert bootstrap_admin_rule(claims(email=None), settings) == "BOOTSTRAP_ADMIN_IDS"
    assert bootstrap_admin_rule(claims(sub="someone-else"), settings) is None


def test_record_from_claims_falls_back_to_preferred_username_before_the_email() -> None:
    assert record_from_claims(claims(username=None, preferred_username="kim.park")).username == "kim.park"
    assert record_from_claims(claims(preferred_username="kim.park")).username == "kim"
