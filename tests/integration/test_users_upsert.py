from __future__ import annotations

from dataclasses import replace

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.sessions import find_active_session
from models.tables import User, UserChange
from models.users import apply_user_patch, get_by_asgardeo_id, upsert_users
from tests.factories import login, make_user, user_record


def test_upsert_creates_then_second_run_changes_nothing(db_session: Session) -> None:
    records = [user_record() for _ in range(3)]
    first = upsert_users(db_session, records, source="reconcile")
    second = upsert_users(db_session, records, source="reconcile")
    assert (first.created, first.updated, first.unchanged) == (3, 0, 0)
    assert (second.created, second.updated, second.unchanged) == (0, 0, 3)
    assert db_session.scalar(select(func.count()).select_from(UserChange)) == 3


def test_upsert_keeps_the_apps_own_fields(db_session: Session) -> None:
    user = make_user(db_session, role="hr", employee_id="E-7", department="Payroll")
    email_before = user.email
    record = user_record(
        asgardeo_id=user.asgardeo_id,
        username=user.username,
        first_name=user.first_name,
        last_name=user.last_name,
        source_version=user.source_version + 1,
        email="new@example.com",
    )
    result = upsert_users(db_session, [record], source="reconcile")
    db_session.refresh(user)
    assert result.updated == 1
    assert (user.role, user.employee_id, user.department, user.email) == (
        "hr",
        "E-7",
        "Payroll",
        "new@example.com",
    )
    assert result.changes[0].changes == {"email": [email_before, "new@example.com"]}


def test_stale_record_changes_nothing_but_is_stamped_seen(db_session: Session) -> None:
    user = make_user(db_session, source_version=2_000)
    stale = user_record(asgardeo_id=user.asgardeo_id, source_version=1_000, email="old@example.com")
    result = upsert_users(db_session, [stale], source="reconcile", run_id=None)
    db_session.refresh(user)
    assert (result.stale, result.updated) == (1, 0)
    assert user.email != "old@example.com"
    assert user.source_version == 2_000


def test_deactivation_revokes_sessions(db_session: Session) -> None:
    user = make_user(db_session)
    issued = login(db_session, user)
    record = user_record(asgardeo_id=user.asgardeo_id, status="inactive", source_version=user.source_version + 5)
    result = upsert_users(db_session, [record], source="reconcile")
    assert [c.action for c in result.changes] == ["deactivated"]
    assert find_active_session(db_session, issued.token) is None


def test_group_role_mapping_grants_the_most_privileged_role(db_session: Session) -> None:
    record = user_record(groups=("hrms-hr", "hrms-admins"))
    upsert_users(db_session, [record], source="reconcile", role_map={"hrms-admins": "admin", "hrms-hr": "hr"})
    user = get_by_asgardeo_id(db_session, record.asgardeo_id)
    assert user is not None
    assert user.role == "admin"
    unmapped = replace(record, groups=("other",), source_version=record.source_version + 1)
    upsert_users(db_session, [unmapped], source="reconcile", role_map={"hrms-admins": "admin"})
    db_session.refresh(user)
    assert user.role == "admin"


def test_update_after_delete_does_not_resurrect_user(db_session: Session) -> None:
    user = make_user(db_session, source_version=1_000)
    deleted = apply_user_patch(
        db_session, user.asgardeo_id, {"status": "deleted"}, source_version=3_000, source="webhook"
    )
    late = apply_user_patch(
        db_session, user.asgardeo_id, {"email": "late@example.com"}, source_version=2_000, source="webhook"
    )
    db_session.refresh(user)
    assert deleted is not None
    assert deleted.action == "deleted"
    assert late is None
    assert user.status == "deleted"


def test_patch_for_unknown_user_leaves_a_tombstone_that_blocks_older_create(db_session: Session) -> None:
    record = user_record(source_version=1_000)
    apply_user_patch(db_session, record.asgardeo_id, {"status": "deleted"}, source_version=2_000, source="webhook")
    result = upsert_users(db_session, [record], source="webhook")
    user = db_session.execute(select(User).where(User.asgardeo_id == record.asgardeo_id)).scalar_one()
    assert result.stale == 1
    assert user.status == "deleted"


def test_a_listing_shows_a_user_retired_by_absence_and_brings_them_back_whatever_the_timestamps(
    db_session: Session,
) -> None:
    record = user_record(source_version=1_000)
    upsert_users(db_session, [record], source="reconcile")
    apply_user_patch(
        db_session, record.asgardeo_id, {"status": "deleted"}, source_version=9_000, source="sync", retired_by="absence"
    )
    result = upsert_users(db_session, [record], source="reconcile")  # older than the tombstone's stamp
    user = get_by_asgardeo_id(db_session, record.asgardeo_id)
    assert user is not None
    assert (user.status, user.retired_by, result.updated, result.stale) == ("active", None, 1, 0)
    assert result.changes[0].changes["reason"] == ["absent from the directory", "present in the directory"]


def test_a_page_read_before_a_signed_delete_does_not_resurrect_the_user(db_session: Session) -> None:
    record = user_record(source_version=1_000)
    upsert_users(db_session, [record], source="reconcile")
    apply_user_patch(db_session, record.asgardeo_id, {"status": "deleted"}, source_version=2_000, source="webhook")
    result = upsert_users(db_session, [record], source="reconcile")
    user = get_by_asgardeo_id(db_session, record.asgardeo_id)
    assert user is not None
    assert (user.status, user.retired_by, result.stale) == ("deleted", "event", 1)


def test_an_absence_never_overrides_a_signed_retirement(db_session: Session) -> None:
    record = user_record(source_version=1_000)
    upsert_users(db_session, [record], source="reconcile")
    apply_user_patch(db_session, record.asgardeo_id, {"status": "deleted"}, source_version=2_000, source="webhook")
    apply_user_patch(
        db_session, record.asgardeo_id, {"status": "deleted"}, source_version=3_000, source="sync", retired_by="absence"
    )
    upsert_users(db_session, [record], source="reconcile")
    user = get_by_asgardeo_id(db_session, record.asgardeo_id)
    assert user is not None
    assert (user.status, user.retired_by) == ("deleted", "event")
