"""Asgardeo roles grant application roles (ROLE_MAP in tests/stack.py): the stand-in's role changes reach the user
table through the real intake and worker; hand-made deliveries force duplicates and order."""

from __future__ import annotations

import copy
import random
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import requests
from sqlalchemy import select

from models.clock import now_ms
from models.db import SessionFactory, unit_of_work
from models.directory_roles import best_role
from models.tables import User, UserChange, WebhookEvent
from models.user_edits import edit_app_fields
from models.users import upsert_users
from tests.factories import user_record
from tests.integration.auth_support import new_standin_user
from tests.integration.subscription_support import local_user
from tests.polling import wait_for
from tests.stack import WEBHOOK_SECRET, LiveServer
from tests.webhook_payloads import encode, sample, signed_headers

pytestmark = pytest.mark.usefixtures("celery_worker", "clean_db")

WITHIN_SECONDS = 1.0
HRMS = {"audience_type": "application", "audience_value": str(uuid.uuid4()), "audience_display": "HRMS"}


def role_of(asgardeo_id: str) -> str | None:
    user = local_user(asgardeo_id)
    return user.role if user else None


def synced(standin_admin: Any) -> str:
    person = new_standin_user(standin_admin)
    wait_for(lambda: local_user(person["id"]), what="the userCreated webhook applied")
    return str(person["id"])


def until(check: Any, started: float, what: str, timeout: float = 10.0) -> float:
    wait_for(check, timeout=timeout, what=what, interval=0.02)
    return time.monotonic() - started


def role_audit(asgardeo_id: str) -> list[dict[str, Any]]:
    with SessionFactory() as session:
        rows = session.execute(
            select(UserChange.changes, UserChange.source)
            .where(UserChange.asgardeo_id == asgardeo_id, UserChange.action == "role_changed")
            .order_by(UserChange.id)
        ).all()
        return [{**changes, "source": source} for changes, source in rows]


def test_adding_a_user_to_a_mapped_role_grants_the_app_role_within_a_second_and_removing_takes_it_away(
    subscribed: Any,
) -> None:
    uid = synced(subscribed)
    role = subscribed.create_role("HR Manager", **HRMS)
    started = time.monotonic()
    subscribed.role_members(role["id"], add=[uid])
    assert until(lambda: role_of(uid) == "hr", started, "hr granted") < WITHIN_SECONDS

    started = time.monotonic()
    subscribed.role_members(role["id"], remove=[uid])
    assert until(lambda: role_of(uid) == "employee", started, "hr taken away") < WITHIN_SECONDS
    audit = role_audit(uid)
    assert [a["role"] for a in audit] == [["employee", "hr"], ["hr", "employee"]]
    assert audit[0]["granted_by"] == "Asgardeo role HR Manager (HRMS): member of"
    assert audit[1]["granted_by"] == "Asgardeo role HR Manager (HRMS): removed from"
    assert {a["source"] for a in audit} == {"webhook"}


def test_a_role_an_admin_granted_by_hand_survives_a_directory_role_removal(subscribed: Any) -> None:
    uid = synced(subscribed)
    user = local_user(uid)
    assert user is not None
    with unit_of_work() as session:
        edit_app_fields(session, user.id, {"role": "manager"}, actor="admin@example.com")
    role = subscribed.create_role("HR Manager", **HRMS)
    subscribed.role_members(role["id"], add=[uid])
    wait_for(lambda: role_of(uid) == "hr", what="hr granted above the hand-set manager")
    subscribed.role_members(role["id"], remove=[uid])
    wait_for(lambda: role_of(uid) == "manager", what="the hand-set manager back")

    # A directory role below the hand-set one changes nothing, and its removal takes nothing away.
    lead = subscribed.create_role("Team Lead", audience_type="organization")
    subscribed.role_members(lead["id"], add=[uid])
    subscribed.role_members(lead["id"], remove=[uid])
    subscribed.wait_for_deliveries(timeout=10)
    wait_for(inbox_done, what="role events handled")
    assert role_of(uid) == "manager"


def inbox_done() -> bool:
    with SessionFactory() as session:
        statuses = set(session.execute(select(WebhookEvent.status)).scalars())
    return statuses <= {"applied", "ignored", "failed"}


def test_a_rename_keeps_the_grant_and_a_deleted_role_takes_it_away(subscribed: Any) -> None:
    uid, other = synced(subscribed), synced(subscribed)
    role = subscribed.create_role("HR Manager", **HRMS)
    subscribed.role_members(role["id"], add=[uid])
    wait_for(lambda: role_of(uid) == "hr", what="hr granted")
    subscribed.rename_role(role["id"], "People Partner")
    subscribed.role_members(role["id"], add=[other])
    wait_for(lambda: role_of(other) == "hr", what="the renamed role still grants hr (mapped by id)")
    assert role_of(uid) == "hr"
    subscribed.delete_role(role["id"])
    wait_for(lambda: role_of(uid) == role_of(other) == "employee", what="a deleted role grants nothing")


def role_event(
    role_id: str, *, added: Sequence[str] = (), removed: Sequence[str] = (), iat: int | None = None, **role: Any
) -> dict[str, Any]:
    body = sample("roleUsersUpdated", iat=iat if iat is not None else now_ms())
    ((_, event),) = body["events"].items()
    event["role"] = {
        "id": role_id,
        "name": "HR Manager",
        "audience": {"type": "application", "value": str(uuid.uuid4()), "display": "HRMS"},
        **role,
    }
    if added:
        event["role"]["addedUsers"] = [{"id": u, "userStoreDomain": "DEFAULT"} for u in added]
    if removed:
        event["role"]["removedUsers"] = [{"id": u, "userStoreDomain": "DEFAULT"} for u in removed]
    return body


def deliver(live_server: LiveServer, body: dict[str, Any], **headers: str) -> requests.Response:
    raw = encode(body)
    return requests.post(
        live_server.url + "/webhooks/asgardeo", data=raw, headers={**signed_headers(raw), **headers}, timeout=10
    )


def handled(jti: str) -> WebhookEvent | None:
    with SessionFactory() as session:
        row = session.execute(select(WebhookEvent).where(WebhookEvent.jti == jti)).scalar_one_or_none()
        return row if row is not None and row.status in ("applied", "ignored", "failed") else None


def test_duplicate_and_out_of_order_role_events_leave_the_right_state(subscribed: Any, live_server: LiveServer) -> None:
    uid = synced(subscribed)
    role_id = str(uuid.uuid4())
    base = now_ms() - 10_000
    added = role_event(role_id, added=[uid], iat=base)
    removed = role_event(role_id, removed=[uid], iat=base + 1000)
    # The removal arrives first, then the older addition, then copies of both (a retry: same jti, new delivery).
    for body in (removed, added, copy.deepcopy(added), copy.deepcopy(removed)):
        assert deliver(live_server, body).status_code in (200, 202)
    for body in (removed, added):
        wait_for(lambda b=body: handled(b["jti"]), what="role event handled")
    assert role_of(uid) == "employee"
    # A duplicate occurrence with a new jti but the same time changes nothing either.
    again = role_event(role_id, added=[uid], iat=base)
    deliver(live_server, again)
    wait_for(lambda: handled(again["jti"]), what="replayed addition handled")
    assert role_of(uid) == "employee"
    # A newer addition wins.
    newer = role_event(role_id, added=[uid], iat=base + 2000)
    deliver(live_server, newer)
    wait_for(lambda: role_of(uid) == "hr", what="the newer addition applied")
    # The first two may have been applied in either order (two worker threads); the newest fact is what stands.
    assert role_audit(uid)[-1]["role"] == ["employee", "hr"]


def test_removing_the_admin_role_from_the_last_admin_is_refused_with_a_warning(
    subscribed: Any, live_server: LiveServer
) -> None:
    uid = synced(subscribed)
    role = subscribed.create_role("Administrator", audience_type="organization")
    subscribed.role_members(role["id"], add=[uid])
    wait_for(lambda: role_of(uid) == "admin", what="admin granted")
    subscribed.role_members(role["id"], remove=[uid])
    subscribed.wait_for_deliveries(timeout=10)
    wait_for(inbox_done, what="role events handled")
    assert role_of(uid) == "admin"
    with SessionFactory() as session:
        notes = list(
            session.execute(
                select(WebhookEvent.last_error).where(WebhookEvent.event_type == "roleUsersUpdated")
            ).scalars()
        )
    assert "the last active admin kept admin" in notes
    summary = requests.get(f"{live_server.url}/admin/health/summary", headers=admin_headers(), timeout=10).json()
    assert "last_admin_kept" in str(summary)


def admin_headers() -> dict[str, str]:
    from tests.factories import login, make_user

    with unit_of_work() as session:
        user = make_user(session, role="admin")
        return {"Authorization": f"Bearer {login(session, user).token}"}


def test_a_1500_member_role_change_is_applied_in_full_through_the_roles_api(
    standin_admin: Any, live_server: LiveServer
) -> None:
    prefix = f"r{uuid.uuid4().hex[:6]}"
    standin_admin.set_webhook(None)
    standin_admin.seed(1500, prefix=prefix)
    ids = [u["id"] for u in standin_admin.dump()["users"] if u["userName"].startswith(f"DEFAULT/{prefix}")]
    assert len(ids) == 1500
    # The users are known here already (as after a nightly run); what is tested is the role change.
    with unit_of_work() as session:
        upsert_users(session, [user_record(asgardeo_id=i) for i in ids], source="reconcile")
    status = standin_admin.set_webhook(live_server.url + "/webhooks/asgardeo", WEBHOOK_SECRET, wait_verified=10)
    assert status["verified"], status
    try:
        role = standin_admin.create_role("HR Manager", **HRMS)
        before = roles_api_reads(standin_admin)
        standin_admin.role_members(role["id"], add=ids)
        wait_for(lambda: count_role("hr") == 1500, timeout=60, what="all 1,500 members granted hr")
    finally:
        standin_admin.wait_for_deliveries(timeout=30)
        standin_admin.set_webhook(None)
    with SessionFactory() as session:
        row = session.execute(select(WebhookEvent).where(WebhookEvent.event_type == "roleUsersUpdated")).scalar_one()
    ((_, event),) = row.payload["events"].items()
    assert len(event["role"]["addedUsers"]) == 1000
    assert event["role"]["truncated"] is True
    assert event["role"]["addedUsersCount"] == 1500
    assert roles_api_reads(standin_admin) == before + 1


def roles_api_reads(standin_admin: Any) -> int:
    counts = standin_admin.stats()["requests"]
    return sum(int(n) for rule, n in counts.items() if rule.startswith("GET ") and "/v2/Roles/" in rule)


def count_users() -> int:
    with SessionFactory() as session:
        return len(list(session.execute(select(User.id)).scalars()))


def count_role(role: str) -> int:
    with SessionFactory() as session:
        return len(list(session.execute(select(User.id).where(User.role == role)).scalars()))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"role": "HR"}, "role must be an object"),
        ({"role": {"name": "HR Manager"}}, "role.id must be a string"),
        ({"addedUsers": "everyone"}, "addedUsers must be a list of at most 1000 users"),
        ({"addedUsers": [{"id": str(n)} for n in range(1001)]}, "addedUsers must be a list of at most 1000 users"),
        ({"removedUsers": [{"name": "x"}]}, "each of removedUsers must be an object with a string id"),
    ],
)
def test_a_malformed_or_oversized_role_event_fails_and_changes_nobody(
    subscribed: Any, live_server: LiveServer, change: dict[str, Any], error: str
) -> None:
    uid = synced(subscribed)
    body = role_event(str(uuid.uuid4()), added=[uid])
    ((_, event),) = body["events"].items()
    if "role" in change:
        event["role"] = change["role"]
    else:
        event["role"].update(change)
    assert deliver(live_server, body).status_code == 202
    row = wait_for(lambda: handled(body["jti"]), what="role event handled")
    assert row.status == "failed"
    assert error in (row.last_error or "")
    assert role_of(uid) == "employee"


def test_a_badly_signed_role_event_is_refused_and_an_unmapped_role_is_ignored(
    subscribed: Any, live_server: LiveServer
) -> None:
    uid = synced(subscribed)
    body = role_event(str(uuid.uuid4()), added=[uid])
    assert deliver(live_server, body, **{"X-Hub-Signature": "sha256=" + "0" * 64}).status_code == 401
    assert handled(body["jti"]) is None
    unmapped = role_event(str(uuid.uuid4()), added=[uid], name="Cafeteria", audience={"type": "organization"})
    assert deliver(live_server, unmapped).status_code == 202
    row = wait_for(lambda: handled(unmapped["jti"]), what="unmapped role handled")
    assert (row.status, row.last_error) == ("ignored", "the role is not in ROLE_MAP")
    assert role_of(uid) == "employee"


def test_with_a_fifth_of_role_events_dropped_one_nightly_run_leaves_no_role_difference(
    live_server: LiveServer,
) -> None:
    from asgardeo_standin.client import StandinAdmin
    from tasks.reconcile import reconcile_all
    from tests.integration.sync_support import client_for, private_standin, start_run

    with private_standin() as handle:
        admin = StandinAdmin(handle.root_url)
        admin.seed(60, prefix="drop")
        assert reconcile_all(start_run(), client=client_for(handle)).status == "succeeded"
        ids = [u.id for u in handle.directory.all_users()]
        status = admin.set_webhook(live_server.url + "/webhooks/asgardeo", WEBHOOK_SECRET, wait_verified=10)
        assert status["verified"], status
        admin.set_chaos(seed=16, drop_rate=0.2)
        roles = {
            admin.create_role("HR Manager", **HRMS)["id"]: "hr",
            admin.create_role("Team Lead", audience_type="organization")["id"]: "manager",
        }
        held: dict[str, set[str]] = {i: set() for i in ids}
        rng = random.Random(16)
        for _ in range(150):
            role_id, user_id = rng.choice(sorted(roles)), rng.choice(ids)
            if role_id in held[user_id]:
                admin.role_members(role_id, remove=[user_id])
                held[user_id].discard(role_id)
            else:
                admin.role_members(role_id, add=[user_id])
                held[user_id].add(role_id)
        ledger = admin.wait_for_deliveries(timeout=30)
        wait_for(inbox_done, timeout=30, what="role events handled")

        def differences() -> int:
            expected = {u: best_role(roles[r] for r in rs) or "employee" for u, rs in held.items()}
            return sum(1 for u, role in expected.items() if role_of(u) != role)

        assert ledger["dropped"] > 0
        lost = differences()
        assert lost > 0, "with events dropped some roles must be wrong before the nightly run"
        admin.set_chaos()
        assert reconcile_all(start_run(), client=client_for(handle)).status == "succeeded"
        assert differences() == 0, f"{lost} differences before the run"
        admin.set_webhook(None)
