"""Honest run outcomes and request counts: a run with failed confirmations is ``partial``, a single-user sync does
not make a running full run ask again, and a changed SCIM secret is noticed. Real HTTP against the stand-in."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from tests.integration.sync_support import client_for, private_standin, start_run
from tests.integration.test_sync_user import local, new_directory_user

pytestmark = pytest.mark.usefixtures("clean_db", "clean_redis")


def single_user_gets(handle: Any) -> int:
    requests_by_rule: dict[str, int] = handle.standin.stats_snapshot()["requests"]
    return sum(n for rule, n in requests_by_rule.items() if rule.startswith("GET ") and rule.endswith("/<user_id>"))


def token_requests(handle: Any) -> int:
    requests_by_rule: dict[str, int] = handle.standin.stats_snapshot()["requests"]
    return sum(n for rule, n in requests_by_rule.items() if rule.startswith("POST ") and rule.endswith("/oauth2/token"))


def test_a_run_whose_confirmations_partly_failed_ends_partial_names_them_and_the_cli_exits_non_zero(
    app: Flask, standin: Any, standin_admin: Any, make_signed_in_user: Any
) -> None:
    from models.db import unit_of_work
    from models.tables import SyncRun
    from tasks.users import sync_user

    resource = new_directory_user(standin_admin)
    sync_user(resource["id"], trigger="test")
    sync_user(new_directory_user(standin_admin)["id"], trigger="test")  # one who stays listed
    standin_admin.delete(resource["id"])  # no longer listed ...
    standin_admin.fail_get(resource["id"], status=400)  # ... and the confirming GET fails

    result = app.test_cli_runner().invoke(args=["sync", "run"])
    assert result.exit_code != 0, result.output
    assert "partial" in result.output
    with unit_of_work() as session:
        run = session.execute(select(SyncRun).where(SyncRun.kind == "full")).scalar_one()
    assert (run.status, run.unconfirmed, run.failed) == ("partial", [resource["id"]], 1)
    assert local(resource["id"]).status == "active"  # not confirmed gone, so kept

    _, token = make_signed_in_user(role="admin")  # made now: a local-only admin would be unlisted in the run
    admin_headers = {"Authorization": f"Bearer {token}"}
    shown = app.test_client().get("/admin/health/summary", headers=admin_headers).get_json()["last_run"]
    assert (shown["status"], shown["unconfirmed"]) == ("partial", [resource["id"]])
    page = app.test_client().get("/admin/health", headers=admin_headers).get_data(as_text=True)
    assert resource["id"] in page


def test_a_single_user_sync_during_a_full_run_costs_no_extra_request() -> None:
    from tasks.reconcile import reconcile_all
    from tasks.users import sync_user

    with private_standin() as handle:
        handle.directory.seed(5, prefix="during-run")
        target = handle.directory.all_users()[0].id
        synced: list[str] = []

        def sync_once_while_listing(phase: str, _counters: Any) -> None:
            if phase == "listing" and not synced:
                synced.append(sync_user(target, trigger="admin", client=client_for(handle)).status)

        outcome = reconcile_all(start_run(), client=client_for(handle), progress=sync_once_while_listing)
        assert (outcome.status, synced) == ("succeeded", ["succeeded"])
        assert single_user_gets(handle) == 1  # the sync's own GET; the run did not ask for the user again
        assert local(target).status == "active"


def test_a_changed_scim_secret_is_noticed_while_a_token_from_the_old_one_is_cached() -> None:
    from tasks.errors import DirectoryUnavailable
    from tasks.scim import ScimClient
    from tests.stack import M2M_CLIENT_ID

    with private_standin() as handle:
        client_for(handle).list_page(1)
        assert token_requests(handle) == 1
        changed = client_for(handle)
        rotated = ScimClient(
            handle.base_url, M2M_CLIENT_ID, "a-secret-the-directory-does-not-know", budget=changed.budget
        )
        with pytest.raises(DirectoryUnavailable):
            rotated.list_page(1)
        assert token_requests(handle) == 2


def test_an_unusable_directory_fails_the_run_changes_nobody_and_warns_the_operator() -> None:
    from tasks.config_warnings import DIRECTORY_UNUSABLE, warnings
    from tasks.reconcile import reconcile_all
    from tasks.scim import ScimClient
    from tasks.users import sync_user
    from tests.stack import M2M_CLIENT_ID

    with private_standin() as handle:
        resource = handle.directory.create_user("kept@example.com", email="kept@example.com")
        sync_user(resource.id, trigger="test", client=client_for(handle))
        refused = ScimClient(handle.base_url, M2M_CLIENT_ID, "wrong", budget=client_for(handle).budget)
        outcome = reconcile_all(start_run(), client=refused)
        assert outcome.status == "failed"
        assert local(resource.id).status == "active"
        assert warnings()[DIRECTORY_UNUSABLE]["count"] == 1
