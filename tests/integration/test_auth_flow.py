"""Sign-in against the Asgardeo stand-in over real HTTP: the API client's path, logout, back-channel logout,
deactivation, replays and the login follow-ups on a real worker."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import func, select

from tests.integration.auth_support import HttpLogin, new_standin_user, provider_sign_in, set_cookies, wait_until
from tests.stack import STACK, WEB_CLIENT_ID

pytestmark = pytest.mark.usefixtures("clean_db")


@pytest.fixture
def http(live_server: Any, standin: Any) -> HttpLogin:
    return HttpLogin(live_server.url)


def sessions_of(asgardeo_id: str) -> list[Any]:
    from models.db import unit_of_work
    from models.tables import AppSession, User

    with unit_of_work() as session:
        return list(
            session.execute(
                select(AppSession).join(User, User.id == AppSession.user_id).where(User.asgardeo_id == asgardeo_id)
            ).scalars()
        )


def local_user(asgardeo_id: str) -> Any:
    from models.db import unit_of_work
    from models.users import get_by_asgardeo_id

    with unit_of_work() as session:
        return get_by_asgardeo_id(session, asgardeo_id)


def test_api_client_logs_in_and_reads_me_with_the_bearer_token(http: HttpLogin, standin_admin: Any) -> None:
    person = new_standin_user(standin_admin, given_name="Kim", family_name="Park")
    answer = http.login(person["_username"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"session_token", "expires_at", "user"}
    assert body["user"]["asgardeo_id"] == person["id"]
    assert body["user"]["email"] == person["_username"]
    assert (body["user"]["role"], body["user"]["status"]) == ("employee", "active")
    assert body["user"]["first_name"] == "Kim"
    assert answer.headers["Cache-Control"] == "no-store"

    cookie = set_cookies(answer)["hrms_session"]["hrms_session"]
    assert cookie.value == body["session_token"]
    assert cookie["httponly"]
    assert cookie["secure"]
    assert cookie["samesite"] == "Lax"

    me = http.me(body["session_token"])
    assert me.status_code == 200
    assert me.json()["user"]["asgardeo_id"] == person["id"]

    [row] = sessions_of(person["id"])
    assert row.token_hash != body["session_token"]
    assert row.idp_sid
    assert row.id_token
    assert row.id_token.count(".") == 2
    assert local_user(person["id"]).last_login_at is not None


def test_browser_callback_sets_the_cookie_and_redirects_to_the_safe_next_path(
    http: HttpLogin, standin_admin: Any
) -> None:
    person = new_standin_user(standin_admin)
    answer = http.login(person["_username"], json_client=False, next_path="/profile")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/profile"
    assert "hrms_session" in set_cookies(answer)


def test_hostile_next_path_falls_back_to_the_home_page(http: HttpLogin, standin_admin: Any) -> None:
    person = new_standin_user(standin_admin)
    answer = http.login(person["_username"], json_client=False, next_path="//evil.example/phish")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/"


def test_logout_revokes_the_session_and_points_at_the_end_session_endpoint(
    http: HttpLogin, standin: Any, standin_admin: Any
) -> None:
    person = new_standin_user(standin_admin)
    token = http.login(person["_username"]).json()["session_token"]
    answer = requests.post(
        f"{http.base_url}/auth/logout",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 200
    assert answer.json()["signed_out"] is True
    end = urlsplit(answer.json()["end_session_url"])
    params = parse_qs(end.query)
    assert f"{end.scheme}://{end.netloc}{end.path}" == f"{standin.base_url}/oidc/logout"
    assert params["post_logout_redirect_uri"] == [f"{STACK.web_url}/"]
    assert params["client_id"] == [WEB_CLIENT_ID]
    assert params["id_token_hint"][0].count(".") == 2

    assert http.me(token).status_code == 401
    [row] = sessions_of(person["id"])
    assert row.revoked_reason == "logout"


def test_logout_from_a_foreign_origin_is_refused_and_keeps_the_session(http: HttpLogin, standin_admin: Any) -> None:
    person = new_standin_user(standin_admin)
    token = http.login(person["_username"]).json()["session_token"]
    answer = requests.post(
        f"{http.base_url}/auth/logout",
        headers={"Cookie": f"hrms_session={token}", "Origin": "https://evil.example"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 403
    assert http.me(token).status_code == 200


def test_back_channel_logout_from_the_provider_ends_the_session(http: HttpLogin, standin_admin: Any) -> None:
    person = new_standin_user(standin_admin)
    token = http.login(person["_username"]).json()["session_token"]
    assert http.me(token).status_code == 200
    assert standin_admin.end_sessions(person["id"]) == 1
    assert wait_until(lambda: http.me(token).status_code == 401)
    [row] = sessions_of(person["id"])
    assert row.revoked_reason == "backchannel_logout"


def test_deactivating_the_user_locks_the_bearer_out_at_once(http: HttpLogin, standin_admin: Any) -> None:
    from models.db import unit_of_work
    from models.users import apply_user_patch

    person = new_standin_user(standin_admin)
    token = http.login(person["_username"]).json()["session_token"]
    with unit_of_work() as session:
        apply_user_patch(session, person["id"], {"status": "inactive"}, source_version=2_000_000_000_000, source="test")
    me = http.me(token)
    assert me.status_code == 401
    assert me.json()["error"] == "unauthenticated"


def test_inactive_local_user_is_refused_with_403_and_gets_no_session(http: HttpLogin, standin_admin: Any) -> None:
    from models.db import unit_of_work
    from models.users import apply_user_patch

    person = new_standin_user(standin_admin)
    assert http.login(person["_username"]).status_code == 200
    with unit_of_work() as session:
        apply_user_patch(session, person["id"], {"status": "inactive"}, source_version=2_000_000_000_000, source="test")
    again = http.login(person["_username"])
    assert again.status_code == 403
    assert again.json()["error"] == "account_inactive"
    assert len(sessions_of(person["id"])) == 1


def test_replayed_code_with_the_old_login_cookie_is_refused_by_the_provider(
    http: HttpLogin, standin_admin: Any
) -> None:
    person = new_standin_user(standin_admin)
    authorize_url, cookie = http.start()
    callback_url = provider_sign_in(authorize_url, person["_username"])
    assert http.callback(callback_url, cookie).status_code == 200
    replay = http.callback(callback_url, cookie)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert len(sessions_of(person["id"])) == 1


def test_second_use_of_a_callback_in_the_same_browser_fails_on_state(http: HttpLogin, standin_admin: Any) -> None:
    person = new_standin_user(standin_admin)
    authorize_url, cookie = http.start()
    callback_url = provider_sign_in(authorize_url, person["_username"])
    first = http.callback(callback_url, cookie)
    assert first.status_code == 200
    cookie_after = set_cookies(first)["session"]["session"].value
    replay = http.callback(callback_url, cookie_after)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_state"
    assert len(sessions_of(person["id"])) == 1


def test_callback_from_another_browser_fails_on_state(http: HttpLogin, standin_admin: Any) -> None:
    person = new_standin_user(standin_admin)
    authorize_url, _cookie = http.start()
    _other_authorize, other_cookie = http.start()
    callback_url = provider_sign_in(authorize_url, person["_username"])
    answer = http.callback(callback_url, other_cookie)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_state"
    assert sessions_of(person["id"]) == []


def test_callback_without_state_is_refused(http: HttpLogin) -> None:
    answer = requests.get(f"{http.base_url}/auth/callback?code=abc", headers={"Accept": "application/json"}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_state"


def test_access_denied_from_the_provider_is_shown_as_a_readable_page(http: HttpLogin) -> None:
    _authorize, cookie = http.start()
    state = parse_qs(urlsplit(_authorize).query)["state"][0]
    answer = requests.get(
        f"{http.base_url}/auth/callback",
        params={"error": "access_denied", "error_description": "The user denied <b>consent</b>", "state": state},
        headers={"Cookie": f"session={cookie}", "Accept": "text/html"},
        timeout=10,
    )
    assert answer.status_code == 400
    assert "text/html" in answer.headers["Content-Type"]
    assert "access_denied" in answer.text
    assert "<b>consent" not in answer.text  # escaped, never markup
    assert "hrms_session" not in set_cookies(answer)


def test_login_follow_up_audits_the_login_and_asks_for_a_refresh(
    http: HttpLogin, standin_admin: Any, celery_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.login
    from models.db import unit_of_work
    from models.tables import UserChange

    refreshed: list[tuple[str, str]] = []
    monkeypatch.setattr(tasks.login, "request_user_refresh", lambda a, trigger: refreshed.append((a, trigger)))
    person = new_standin_user(standin_admin)
    body = http.login(person["_username"]).json()

    def audited() -> int:
        with unit_of_work() as session:
            return int(
                session.execute(
                    select(func.count()).where(
                        UserChange.asgardeo_id == person["id"],
                        UserChange.action == "login",
                        UserChange.source == "login",
                    )
                ).scalar_one()
            )

    assert wait_until(lambda: audited() == 1, timeout=20)
    assert wait_until(lambda: (person["id"], "login") in refreshed, timeout=10)
    assert body["user"]["asgardeo_id"] == person["id"]
