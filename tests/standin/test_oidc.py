"""OIDC provider: discovery, Authlib-client login with PKCE, tokens, userinfo, logout, keys, rejections."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet

from asgardeo_standin.client import StandinAdmin
from asgardeo_standin.server import StandinHandle, start_in_thread

from .conftest import REDIRECT_URI, Subscriber, make_config, wait_until

EMPLOYEE = ("employee@example.com", "Employee#2024")


def discover(handle: StandinHandle) -> dict[str, Any]:
    response = requests.get(handle.discovery_url, timeout=5)
    response.raise_for_status()
    return dict(response.json())


def start_login(handle: StandinHandle, **kwargs: Any) -> tuple[OAuth2Session, str, str, str]:
    """Authlib's client builds the authorization URL from discovery; returns (client, url, verifier, nonce)."""
    meta = discover(handle)
    config = handle.config
    client = OAuth2Session(
        config.web_client_id,
        config.web_client_secret,
        scope="openid profile email groups",
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
    )
    verifier, nonce = generate_token(48), generate_token(16)
    url, _state = client.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce, **kwargs
    )
    return client, url, verifier, nonce


def submit_form(url: str, username: str, password: str, browser: requests.Session | None = None) -> requests.Response:
    browser = browser or requests.Session()
    page = browser.get(url, timeout=5)
    assert page.status_code == 200
    assert 'name="username"' in page.text
    assert 'name="password"' in page.text
    assert "Sign in" in page.text
    return browser.post(url, data={"username": username, "password": password}, allow_redirects=False, timeout=5)


def login(handle: StandinHandle, user: tuple[str, str] = EMPLOYEE) -> tuple[dict[str, Any], str, requests.Session]:
    """Full code flow; returns (token response, nonce, browser session)."""
    client, url, verifier, nonce = start_login(handle)
    browser = requests.Session()
    response = submit_form(url, *user, browser=browser)
    assert response.status_code == 302, response.text
    token = client.fetch_token(
        discover(handle)["token_endpoint"], authorization_response=response.headers["Location"], code_verifier=verifier
    )
    return dict(token), nonce, browser


def verify(handle: StandinHandle, token: str) -> dict[str, Any]:
    jwks = requests.get(discover(handle)["jwks_uri"], timeout=5).json()
    return dict(jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"]).claims)


def test_discovery_has_asgardeo_url_shapes(standin: StandinHandle) -> None:
    meta = discover(standin)
    base = standin.base_url
    assert standin.discovery_url == f"{base}/oauth2/token/.well-known/openid-configuration"
    assert meta["issuer"] == f"{base}/oauth2/token"
    assert meta["authorization_endpoint"] == f"{base}/oauth2/authorize"
    assert meta["jwks_uri"] == f"{base}/oauth2/jwks"
    assert meta["userinfo_endpoint"] == f"{base}/oauth2/userinfo"
    assert meta["end_session_endpoint"] == f"{base}/oidc/logout"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["backchannel_logout_supported"] is True


def test_authlib_client_logs_in_through_discovery(standin: StandinHandle) -> None:
    token, nonce, _ = login(standin)
    claims = verify(standin, token["id_token"])
    user = standin.directory.find_by_username("employee@example.com")
    assert user is not None
    assert claims["iss"] == standin.issuer
    assert claims["aud"] == [standin.config.web_client_id]
    assert claims["nonce"] == nonce
    assert claims["sub"] == user.id
    assert claims["email"] == "employee@example.com"
    assert (claims["given_name"], claims["family_name"]) == ("Erin", "Employee")
    assert claims["username"] == "employee@example.com"
    assert claims["groups"] == ["Employees"]
    assert claims["org_name"] == "demo"
    assert claims["sid"]
    header = jwt.decode(
        token["id_token"], KeySet.import_key_set(requests.get(f"{standin.base_url}/oauth2/jwks", timeout=5).json())
    ).header
    assert header["alg"] == "RS256"
    assert header["kid"].endswith("_RS256")
    assert token["refresh_token"]


def test_state_is_returned_to_the_redirect_uri(standin: StandinHandle) -> None:
    _, url, _, _ = start_login(standin, state="xyz-state")
    location = submit_form(url, *EMPLOYEE).headers["Location"]
    assert location.startswith(REDIRECT_URI)
    assert parse_qs(urlsplit(location).query)["state"] == ["xyz-state"]


def test_userinfo_and_refresh(standin: StandinHandle) -> None:
    token, _, _ = login(standin)
    info = requests.get(
        f"{standin.base_url}/oauth2/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=5
    )
    assert info.status_code == 200
    assert info.json()["email"] == "employee@example.com"
    refreshed = requests.post(
        f"{standin.base_url}/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        auth=(standin.config.web_client_id, standin.config.web_client_secret),
        timeout=5,
    )
    assert refreshed.status_code == 200, refreshed.text
    assert verify(standin, refreshed.json()["id_token"])["sub"] == info.json()["sub"]
    reused = requests.post(
        f"{standin.base_url}/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        auth=(standin.config.web_client_id, standin.config.web_client_secret),
        timeout=5,
    )
    assert reused.status_code == 400


def test_bad_pkce_verifier_is_rejected(standin: StandinHandle) -> None:
    client, url, _verifier, _ = start_login(standin)
    location = submit_form(url, *EMPLOYEE).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    response = requests.post(
        f"{standin.base_url}/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": generate_token(48),
        },
        auth=(client.client_id, client.client_secret),
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_authorize_without_pkce_is_rejected(standin: StandinHandle) -> None:
    response = requests.get(
        f"{standin.base_url}/oauth2/authorize",
        params={
            "response_type": "code",
            "client_id": standin.config.web_client_id,
            "redirect_uri": REDIRECT_URI,
            "scope": "openid",
            "state": "s",
        },
        allow_redirects=False,
        timeout=5,
    )
    assert response.status_code == 302
    assert "error=invalid_request" in response.headers["Location"]


def test_wrong_client_secret_is_rejected(standin: StandinHandle) -> None:
    response = requests.post(
        f"{standin.base_url}/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "internal_user_mgt_list"},
        auth=(standin.config.m2m_client_id, "wrong"),
        timeout=5,
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_wrong_password_shows_the_form_again(standin: StandinHandle) -> None:
    _, url, _, _ = start_login(standin)
    response = submit_form(url, EMPLOYEE[0], "wrong")
    assert response.status_code == 401
    assert "Login failed" in response.text


@pytest.mark.parametrize("action", ["disable", "lock", "delete"])
def test_disabled_locked_or_deleted_users_cannot_log_in(
    standin: StandinHandle, admin: StandinAdmin, action: str
) -> None:
    user = admin.create_user("kim@example.com", "Kim#pass1", email="kim@example.com")
    getattr(admin, action)(user["id"])
    _, url, _, _ = start_login(standin)
    assert submit_form(url, "kim@example.com", "Kim#pass1").status_code == 401


def test_disabling_a_user_invalidates_their_tokens(standin: StandinHandle, admin: StandinAdmin) -> None:
    token, _, _ = login(standin)
    user = standin.directory.find_by_username("employee@example.com")
    assert user is not None
    admin.disable(user.id)
    info = requests.get(
        f"{standin.base_url}/oauth2/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=5
    )
    assert info.status_code == 401


def test_expired_access_token_is_rejected() -> None:
    with start_in_thread(make_config(seed_demo=True, access_token_ttl=1)) as handle:
        token, _, _ = login(handle)

        def userinfo_status() -> int:
            return requests.get(
                f"{handle.base_url}/oauth2/userinfo",
                timeout=5,
                headers={"Authorization": f"Bearer {token['access_token']}"},
            ).status_code

        assert userinfo_status() == 200
        wait_until(lambda: userinfo_status() == 401, timeout=5)


def test_logout_redirects_and_sends_backchannel_logout(subscriber: Subscriber) -> None:
    backchannel = subscriber.url.replace("/hook", "/backchannel")
    with start_in_thread(make_config(seed_demo=True, web_backchannel_logout_uri=backchannel)) as handle:
        token, _, browser = login(handle)
        sid = verify(handle, token["id_token"])["sid"]
        response = browser.get(
            discover(handle)["end_session_endpoint"],
            params={
                "id_token_hint": token["id_token"],
                "post_logout_redirect_uri": "http://127.0.0.1:5999/",
                "state": "bye",
            },
            allow_redirects=False,
            timeout=5,
        )
        assert response.status_code == 302
        assert response.headers["Location"] == "http://127.0.0.1:5999/?state=bye"
        logout_token = wait_until(lambda: subscriber.logouts)[0]
        claims = verify(handle, logout_token)
        assert claims["sid"] == sid
        assert claims["aud"] == handle.config.web_client_id
        assert claims["iss"] == handle.issuer
        assert "http://schemas.openid.net/event/backchannel-logout" in claims["events"]
        # The session is over: its tokens no longer work and the refresh token is dead.
        info = requests.get(
            f"{handle.base_url}/oauth2/userinfo",
            timeout=5,
            headers={"Authorization": f"Bearer {token['access_token']}"},
        )
        assert info.status_code == 401


def test_admin_end_sessions_sends_backchannel_logout(subscriber: Subscriber) -> None:
    backchannel = subscriber.url.replace("/hook", "/backchannel")
    with start_in_thread(make_config(seed_demo=True, web_backchannel_logout_uri=backchannel)) as handle:
        token, _, _ = login(handle)
        claims = verify(handle, token["id_token"])
        assert StandinAdmin(handle.root_url).end_sessions(claims["sub"]) == 1
        logout = verify(handle, wait_until(lambda: subscriber.logouts)[0])
        assert (logout["sub"], logout["sid"]) == (claims["sub"], claims["sid"])


def test_key_rotation_keeps_the_old_key_in_jwks(standin: StandinHandle, admin: StandinAdmin) -> None:
    old_token, _, _ = login(standin)
    old_kid = jwt.decode(
        old_token["id_token"], KeySet.import_key_set(requests.get(f"{standin.base_url}/oauth2/jwks", timeout=5).json())
    ).header["kid"]
    new_kid = admin.rotate_keys()
    assert new_kid != old_kid
    assert new_kid.endswith("_RS256")
    kids = [k["kid"] for k in requests.get(f"{standin.base_url}/oauth2/jwks", timeout=5).json()["keys"]]
    assert kids == [new_kid, old_kid]
    new_token, _, _ = login(standin)
    assert (
        jwt.decode(
            new_token["id_token"],
            KeySet.import_key_set(requests.get(f"{standin.base_url}/oauth2/jwks", timeout=5).json()),
        ).header["kid"]
        == new_kid
    )
    verify(standin, old_token["id_token"])


def test_m2m_token_carries_only_allowed_scopes(standin: StandinHandle) -> None:
    response = requests.post(
        f"{standin.base_url}/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "internal_user_mgt_list openid"},
        auth=(standin.config.m2m_client_id, standin.config.m2m_client_secret),
        timeout=5,
    )
    assert response.status_code == 200
    assert response.json()["scope"] == "internal_user_mgt_list"
    assert response.json()["expires_in"] == 3600
