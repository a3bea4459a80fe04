"""The callback against a fake provider that hands out forged ID tokens, and the back-channel logout endpoint.

The fake serves discovery, a JWKS with its own test key and a token endpoint over real HTTP; each test decides
which ID token (or logout token) to present. Authlib and joserfc in the product do the verifying.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.integration.auth_support import FakeIdP, authorize_params, new_key, running_fake_idp, unsigned_token
from tests.stack import WEB_CLIENT_ID


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    with running_fake_idp(WEB_CLIENT_ID) as fake:
        yield fake


@pytest.fixture
def make_app(clean_db: None, idp: FakeIdP) -> Callable[..., Flask]:
    from models.settings import get_settings
    from web import create_app

    def build(**overrides: Any) -> Flask:
        values = {"oidc_issuer": idp.issuer, "oidc_http_timeout_seconds": 0.5, **overrides}
        application = create_app(get_settings().model_copy(update=values))
        application.config["TESTING"] = True
        return application

    return build


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app().test_client()


def start(client: FlaskClient) -> dict[str, str]:
    response = client.get("/auth/login?next=/profile")
    assert response.status_code == 302, response.get_data(as_text=True)
    return authorize_params(response.headers["Location"])


def finish(client: FlaskClient, params: dict[str, str], code: str = "code-1") -> Any:
    return client.get(f"/auth/callback?code={code}&state={params['state']}", headers={"Accept": "application/json"})


def session_count() -> int:
    from models.db import unit_of_work
    from models.tables import AppSession, User

    with unit_of_work() as session:
        sessions = session.execute(select(func.count()).select_from(AppSession)).scalar_one()
        users = session.execute(select(func.count()).select_from(User)).scalar_one()
        return int(sessions) + int(users)


def login_with(client: FlaskClient, idp: FakeIdP, forge: Callable[[dict[str, str]], str]) -> Any:
    params = start(client)
    idp.id_token = forge(params)
    return finish(client, params)


def test_valid_token_from_the_fake_provider_signs_in(client: FlaskClient, idp: FakeIdP) -> None:
    answer = login_with(client, idp, lambda p: idp.sign(idp.claims(p["nonce"])))
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["user"]["first_name"] == "Grace"
    assert idp.last_token_form["code_verifier"]
    assert idp.last_token_form["grant_type"] == "authorization_code"


def test_login_request_uses_pkce_s256_state_and_nonce(client: FlaskClient) -> None:
    params = start(client)
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) >= 43
    assert len(params["state"]) >= 20
    assert len(params["nonce"]) >= 16
    assert params["scope"] == "openid profile email groups"


def expect_refused(answer: Any, error: str, status: int = 400) -> None:
    assert answer.status_code == status, answer.get_json()
    assert answer.get_json()["error"] == error
    assert "Set-Cookie" not in answer.headers or "hrms_session" not in answer.headers.get("Set-Cookie", "")
    assert session_count() == 0


def tampered(idp: FakeIdP, params: dict[str, str]) -> str:
    header, _payload, signature = idp.sign(idp.claims(params["nonce"])).split(".")
    _other_header, other_payload, _ = idp.sign(idp.claims(params["nonce"], sub="someone-else")).split(".")
    return f"{header}.{other_payload}.{signature}"


@pytest.mark.parametrize(
    ("case", "forge"),
    [
        ("tampered payload", tampered),
        (
            "expired",
            lambda idp, p: idp.sign(idp.claims(p["nonce"], iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
        ),
        ("wrong audience", lambda idp, p: idp.sign(idp.claims(p["nonce"], aud=["another-app"], azp="another-app"))),
        ("wrong issuer", lambda idp, p: idp.sign(idp.claims(p["nonce"], iss="https://evil.example/oauth2/token"))),
        ("alg none", lambda idp, p: unsigned_token(idp.claims(p["nonce"]))),
        ("unknown key", lambda idp, p: idp.sign(idp.claims(p["nonce"]), key=new_key("stranger_RS256"))),
        ("nonce mismatch", lambda idp, p: idp.sign(idp.claims("a-different-nonce"))),
        ("missing nonce", lambda idp, p: idp.sign(idp.claims(None))),
        ("missing sub", lambda idp, p: idp.sign({k: v for k, v in idp.claims(p["nonce"]).items() if k != "sub"})),
        ("missing exp", lambda idp, p: idp.sign({k: v for k, v in idp.claims(p["nonce"]).items() if k != "exp"})),
        ("issued in the future", lambda idp, p: idp.sign(idp.claims(p["nonce"], iat=int(time.time()) + 3600))),
        ("garbage", lambda idp, p: "not.a.jwt"),
    ],
)
def test_forged_id_token_is_refused_and_creates_nothing(
    client: FlaskClient, idp: FakeIdP, case: str, forge: Callable[[FakeIdP, dict[str, str]], str]
) -> None:
    answer = login_with(client, idp, lambda p: forge(idp, p))
    expect_refused(answer, "invalid_id_token")


def test_unknown_kid_refreshes_the_jwks_once_then_refuses(client: FlaskClient, idp: FakeIdP) -> None:
    answer = login_with(client, idp, lambda p: idp.sign(idp.claims(p["nonce"]), key=new_key("stranger_RS256")))
    expect_refused(answer, "invalid_id_token")
    assert idp.counts["jwks"] == 2


def test_rotated_key_is_picked_up_by_one_jwks_refresh(client: FlaskClient, idp: FakeIdP) -> None:
    assert login_with(client, idp, lambda p: idp.sign(idp.claims(p["nonce"]))).status_code == 200
    rotated = new_key("fake-2_RS256")
    idp.published = [rotated, idp.key]
    answer = login_with(client, idp, lambda p: idp.sign(idp.claims(p["nonce"]), key=rotated))
    assert answer.status_code == 200, answer.get_json()
    assert idp.counts["jwks"] == 2


def test_discovery_and_jwks_are_cached_across_logins(client: FlaskClient, idp: FakeIdP) -> None:
    for _ in range(3):
        assert login_with(client, idp, lambda p: idp.sign(idp.claims(p["nonce"]))).status_code == 200
    assert (idp.counts["discovery"], idp.counts["jwks"], idp.counts["token"]) == (1, 1, 3)


def test_token_response_without_an_id_token_is_refused(client: FlaskClient, idp: FakeIdP) -> None:
    params = start(client)
    idp.id_token = None
    expect_refused(finish(client, params), "invalid_id_token")


def test_provider_error_on_the_code_exchange_is_refused(client: FlaskClient, idp: FakeIdP) -> None:
    params = start(client)
    idp.token_status, idp.token_body = 400, {"error": "invalid_grant", "error_description": "code used"}
    expect_refused(finish(client, params), "invalid_grant")


def test_slow_token_endpoint_gives_a_502_page_without_hanging(client: FlaskClient, idp: FakeIdP) -> None:
    params = start(client)
    idp.token_delay = 3.0
    started = time.monotonic()
    answer = client.get(f"/auth/callback?code=c&state={params['state']}", headers={"Accept": "text/html"})
    assert time.monotonic() - started < 2.0
    assert answer.status_code == 502
    assert "provider_unavailable" in answer.get_data(as_text=True)
    assert session_count() == 0


def test_token_endpoint_server_error_gives_a_502(client: FlaskClient, idp: FakeIdP) -> None:
    params = start(client)
    idp.token_status, idp.token_body = 503, {"error": "temporarily_unavailable"}
    expect_refused(finish(client, params), "provider_unavailable", status=502)


def test_provider_down_gives_a_502_at_login(make_app: Callable[..., Flask]) -> None:
    from localrun.embedded import free_port

    client = make_app(oidc_issuer=f"http://127.0.0.1:{free_port()}").test_client()
    started = time.monotonic()
    answer = client.get("/auth/login", headers={"Accept": "text/html"})
    assert time.monotonic() - started < 2.0
    assert answer.status_code == 502
    assert "provider_unavailable" in answer.get_data(as_text=True)


def test_unknown_user_with_jit_off_is_refused_with_403(make_app: Callable[..., Flask], idp: FakeIdP) -> None:
    client = make_app(oidc_jit_create=False).test_client()
    expect_refused(login_with(client, idp, lambda p: idp.sign(idp.claims(p["nonce"]))), "unknown_user", 403)


def test_known_user_signs_in_with_jit_off(make_app: Callable[..., Flask], idp: FakeIdP) -> None:
    from models.db import unit_of_work
    from tests.factories import make_user

    with unit_of_work() as session:
        user = make_user(session)
        asgardeo_id = user.asgardeo_id
    client = make_app(oidc_jit_create=False).test_client()
    answer = login_with(client, idp, lambda p: idp.sign(idp.claims(p["nonce"], sub=asgardeo_id)))
    assert answer.status_code == 200
    assert answer.get_json()["user"]["asgardeo_id"] == asgardeo_id


def test_missing_email_is_refused_when_required(make_app: Callable[..., Flask], idp: FakeIdP) -> None:
    client = make_app(oidc_require_email=True).test_client()
    answer = login_with(client, idp, lambda p: idp.sign(idp.claims(p["nonce"], email=None)))
    expect_refused(answer, "email_required", 403)


def test_oversized_claim_is_refused(client: FlaskClient, idp: FakeIdP) -> None:
    answer = login_with(client, idp, lambda p: idp.sign(idp.claims(p["nonce"], given_name="x" * 5000)))
    expect_refused(answer, "invalid_id_token")


def test_bootstrap_admin_email_gets_the_admin_role_and_an_audit_row(
    make_app: Callable[..., Flask], idp: FakeIdP
) -> None:
    from models.db import unit_of_work
    from models.tables import UserChange

    client = make_app(bootstrap_admin_emails=["Boss@Example.com"]).test_client()
    answer = login_with(client, idp, lambda p: idp.sign(idp.claims(p["nonce"], email="boss@example.com")))
    assert answer.get_json()["user"]["role"] == "admin"
    with unit_of_work() as session:
        # The login follow-up may add its ("login", "login") row at any moment when a worker is running.
        actions = session.execute(
            select(UserChange.action, UserChange.source).where(UserChange.action != "login").order_by(UserChange.id)
        ).all()
    assert [tuple(a) for a in actions] == [("created", "login"), ("role_changed", "bootstrap")]


def test_bootstrap_admin_needs_a_verified_email(make_app: Callable[..., Flask], idp: FakeIdP) -> None:
    client = make_app(bootstrap_admin_emails=["boss@example.com"]).test_client()
    answer = login_with(
        client, idp, lambda p: idp.sign(idp.claims(p["nonce"], email="boss@example.com", email_verified=False))
    )
    assert answer.get_json()["user"]["role"] == "employee"


def test_bootstrap_admin_email_without_email_verified_gets_no_admin_role(
    make_app: Callable[..., Flask], idp: FakeIdP
) -> None:
    client = make_app(bootstrap_admin_emails=["boss@example.com"]).test_client()
    answer = login_with(
        client, idp, lambda p: idp.sign(idp.claims(p["nonce"], email="boss@example.com", email_verified=None))
    )
    assert answer.get_json()["user"]["role"] == "employee"


def test_bootstrap_admin_arriving_after_an_admin_exists_gets_no_admin_role(
    make_app: Callable[..., Flask], idp: FakeIdP, make_signed_in_user: Callable[..., tuple[int, str]]
) -> None:
    make_signed_in_user(role="admin")
    client = make_app(bootstrap_admin_emails=["boss@example.com"]).test_client()
    answer = login_with(client, idp, lambda p: idp.sign(idp.claims(p["nonce"], email="boss@example.com")))
    assert answer.get_json()["user"]["role"] == "employee"


def test_a_demoted_bootstrap_admin_stays_demoted_after_signing_in_again(
    make_app: Callable[..., Flask], idp: FakeIdP, make_signed_in_user: Callable[..., tuple[int, str]]
) -> None:
    client = make_app(bootstrap_admin_emails=["boss@example.com"]).test_client()
    sub = str(uuid.uuid4())

    def sign_in() -> Any:
        return login_with(client, idp, lambda p: idp.sign(idp.claims(p["nonce"], sub=sub, email="boss@example.com")))

    first = sign_in().get_json()["user"]
    assert first["role"] == "admin"
    # A second admin appears, then demotes the bootstrap admin through the API.
    _, other_admin = make_signed_in_user(role="admin")
    demoted = client.patch(
        f"/admin/users/{first['id']}", json={"role": "employee"}, headers={"Authorization": f"Bearer {other_admin}"}
    )
    assert demoted.status_code == 200
    assert sign_in().get_json()["user"]["role"] == "employee"


def test_bootstrap_admin_id_needs_no_email(make_app: Callable[..., Flask], idp: FakeIdP) -> None:
    from models.db import unit_of_work
    from models.tables import UserChange

    sub = str(uuid.uuid4())
    client = make_app(bootstrap_admin_ids=[sub]).test_client()
    answer = login_with(client, idp, lambda p: idp.sign(idp.claims(p["nonce"], sub=sub, email=None)))
    assert answer.get_json()["user"]["role"] == "admin"
    with unit_of_work() as session:
        actors = session.execute(select(UserChange.actor).where(UserChange.source == "bootstrap")).scalars().all()
    assert actors == ["BOOTSTRAP_ADMIN_IDS"]


def test_group_role_map_applies_to_a_just_in_time_user(make_app: Callable[..., Flask], idp: FakeIdP) -> None:
    client = make_app(group_role_map=["hrms-hr=hr"]).test_client()
    answer = login_with(client, idp, lambda p: idp.sign(idp.claims(p["nonce"], groups=["hrms-hr"])))
    assert answer.get_json()["user"]["role"] == "hr"


# --- back-channel logout -------------------------------------------------------------------------------------


def signed_in(client: FlaskClient, idp: FakeIdP, **claims: Any) -> tuple[str, dict[str, Any]]:
    params = start(client)
    values = idp.claims(params["nonce"], **claims)
    idp.id_token = idp.sign(values)
    answer = finish(client, params)
    assert answer.status_code == 200
    return answer.get_json()["session_token"], values


def logout_claims(idp: FakeIdP, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": idp.issuer,
        "aud": WEB_CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": "jti-1",
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def me(client: FlaskClient, token: str) -> int:
    return client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code


def test_back_channel_logout_by_sid_ends_only_that_session(client: FlaskClient, idp: FakeIdP) -> None:
    first, claims = signed_in(client, idp)
    second, _ = signed_in(client, idp, sub=claims["sub"])
    token = idp.sign(logout_claims(idp, sid=claims["sid"], sub=claims["sub"]), typ="logout+jwt")
    answer = client.post("/auth/backchannel-logout", data={"logout_token": token})
    assert answer.status_code == 200
    assert answer.get_json() == {"revoked": 1}
    assert (me(client, first), me(client, second)) == (401, 200)


def test_back_channel_logout_by_sub_ends_every_session_of_the_user(client: FlaskClient, idp: FakeIdP) -> None:
    first, claims = signed_in(client, idp)
    second, _ = signed_in(client, idp, sub=claims["sub"])
    other, _ = signed_in(client, idp)
    token = idp.sign(logout_claims(idp, sub=claims["sub"]))
    assert client.post("/auth/backchannel-logout", data={"logout_token": token}).status_code == 200
    assert (me(client, first), me(client, second), me(client, other)) == (401, 401, 200)


@pytest.mark.parametrize(
    ("case", "forge"),
    [
        ("foreign key", lambda idp, c: idp.sign(logout_claims(idp, **c), key=new_key("stranger_RS256"))),
        ("alg none", lambda idp, c: unsigned_token(logout_claims(idp, **c))),
        ("wrong issuer", lambda idp, c: idp.sign(logout_claims(idp, iss="https://evil.example", **c))),
        ("wrong audience", lambda idp, c: idp.sign(logout_claims(idp, aud="another-app", **c))),
        ("missing iat", lambda idp, c: idp.sign(logout_claims(idp, iat=None, **c))),
        ("expired", lambda idp, c: idp.sign(logout_claims(idp, iat=1, exp=2, **c))),
        ("no event", lambda idp, c: idp.sign(logout_claims(idp, events={"other": {}}, **c))),
        ("events not an object", lambda idp, c: idp.sign(logout_claims(idp, events="logout", **c))),
        ("carries a nonce", lambda idp, c: idp.sign(logout_claims(idp, nonce="n", **c))),
        ("neither sid nor sub", lambda idp, c: idp.sign(logout_claims(idp))),
        ("sid not a string", lambda idp, c: idp.sign(logout_claims(idp, sid=["x"], sub=c["sub"]))),
        ("garbage", lambda idp, c: "garbage"),
        ("empty", lambda idp, c: ""),
        ("oversized", lambda idp, c: "a" * 20_000),
    ],
)
def test_bad_logout_token_is_refused_with_400_and_revokes_nothing(
    client: FlaskClient, idp: FakeIdP, case: str, forge: Callable[[FakeIdP, dict[str, Any]], str]
) -> None:
    token, claims = signed_in(client, idp)
    answer = client.post(
        "/auth/backchannel-logout", data={"logout_token": forge(idp, {"sid": claims["sid"], "sub": claims["sub"]})}
    )
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["error"] in ("invalid_logout_token", "invalid_request")
    assert answer.get_json()["detail"]
    assert me(client, token) == 200


def test_back_channel_logout_without_the_form_field_is_refused(client: FlaskClient) -> None:
    answer = client.post("/auth/backchannel-logout", json={"logout_token": "x"})
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_request"


def test_back_channel_logout_for_an_unknown_session_is_accepted(client: FlaskClient, idp: FakeIdP) -> None:
    token = idp.sign(logout_claims(idp, sid="never-seen"))
    answer = client.post("/auth/backchannel-logout", data={"logout_token": token})
    assert answer.status_code == 200
    assert answer.get_json() == {"revoked": 0}


def test_forged_logout_tokens_with_invented_kids_force_one_jwks_read_per_interval(
    client: FlaskClient, idp: FakeIdP
) -> None:
    _, claims = signed_in(client, idp)
    before = idp.counts["jwks"]
    for i in range(5):
        forged = idp.sign(logout_claims(idp, sid=claims["sid"]), key=new_key(f"invented-{i}_RS256"))
        answer = client.post("/auth/backchannel-logout", data={"logout_token": forged})
        assert answer.status_code == 400
        assert answer.get_json()["error"] == "invalid_logout_token"
    assert idp.counts["jwks"] == before + 1


def test_a_rotated_key_is_picked_up_once_the_refresh_interval_has_passed(
    client: FlaskClient, idp: FakeIdP, monkeypatch: pytest.MonkeyPatch
) -> None:
    from web import oidc

    _, claims = signed_in(client, idp)
    gate = client.application.extensions[oidc.REFRESH_GATE]
    stranger = idp.sign(logout_claims(idp, sid=claims["sid"]), key=new_key("stranger_RS256"))
    assert client.post("/auth/backchannel-logout", data={"logout_token": stranger}).status_code == 400
    rotated = new_key("fake-2_RS256")
    idp.published = [rotated, idp.key]
    token = idp.sign(logout_claims(idp, sid=claims["sid"]), key=rotated)
    assert client.post("/auth/backchannel-logout", data={"logout_token": token}).status_code == 400
    monkeypatch.setattr(gate, "interval", 0.0)
    answer = client.post("/auth/backchannel-logout", data={"logout_token": token})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"revoked": 1}


def test_the_login_follow_up_keeps_a_session_whose_subject_the_directory_does_not_know(
    client: FlaskClient, idp: FakeIdP, celery_worker: Any, standin: Any, clean_redis: None
) -> None:
    """The fake provider's subjects are unknown to the directory: the follow-up's refresh gets a 404. It must not
    retire the user (this once revoked the session of ``test_a_rotated_key_is_picked_up_once_the_refresh_interval_
    has_passed`` before its back-channel logout arrived, on a loaded machine)."""
    from models.db import unit_of_work
    from models.tables import SyncRun
    from tests.polling import wait_for

    def refreshed() -> bool:
        with unit_of_work() as session:
            runs = session.execute(select(SyncRun.status).where(SyncRun.trigger == "login")).scalars().all()
            return bool(runs) and "running" not in runs

    token, claims = signed_in(client, idp)
    wait_for(refreshed, what="the login follow-up's refresh to finish")
    assert me(client, token) == 200
    answer = client.post(
        "/auth/backchannel-logout", data={"logout_token": idp.sign(logout_claims(idp, sid=claims["sid"]))}
    )
    assert answer.get_json() == {"revoked": 1}


def test_a_discovery_document_naming_another_issuer_is_not_used(client: FlaskClient, idp: FakeIdP) -> None:
    idp.discovery_overrides = {"issuer": idp.issuer + "/"}  # one character off is already another issuer
    answer = client.get("/auth/login", headers={"Accept": "application/json"})
    assert answer.status_code == 502
    assert answer.get_json()["error"] == "issuer_mismatch"
    assert session_count() == 0


@pytest.mark.parametrize(
    ("iss", "advertised", "status"),
    [("https://evil.example", False, 400), (None, True, 400), ("own", True, 200), (None, False, 200)],
)
def test_the_rfc_9207_iss_response_parameter_is_checked_when_present_or_promised(
    client: FlaskClient, idp: FakeIdP, iss: str | None, advertised: bool, status: int
) -> None:
    if advertised:
        idp.discovery_overrides = {"authorization_response_iss_parameter_supported": True}
    params = start(client)
    idp.id_token = idp.sign(idp.claims(params["nonce"]))
    query = {"code": "c", "state": params["state"]}
    if iss is not None:
        query["iss"] = idp.issuer if iss == "own" else iss
    answer = client.get("/auth/callback", query_string=query, headers={"Accept": "application/json"})
    assert answer.status_code == status, answer.get_json()
    if status == 400:
        expect_refused(answer, "invalid_issuer")


@pytest.mark.parametrize(("length", "status"), [(255, 200), (256, 400)])
def test_a_subject_of_up_to_255_characters_signs_in(
    client: FlaskClient, idp: FakeIdP, length: int, status: int
) -> None:
    answer = login_with(client, idp, lambda p: idp.sign(idp.claims(p["nonce"], sub="s" * length)))
    assert answer.status_code == status, answer.get_json()
