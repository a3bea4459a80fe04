"""Helpers for the sign-in tests: driving the stand-in's login form, and a tiny fake OpenID provider whose token
endpoint hands out whatever ID token a test forges (signed with the fake's own keys, served from its JWKS)."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from flask import Flask, jsonify, request
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server

PASSWORD = "Sign-in#2024-test"


def new_standin_user(standin_admin: Any, **fields: Any) -> dict[str, Any]:
    """A fresh user in the shared stand-in (unique name), password :data:`PASSWORD`; returns its SCIM resource."""
    name = f"login-{uuid.uuid4().hex[:10]}@example.com"
    values = {"email": name, "given_name": "Ada", "family_name": "Lovelace", **fields}
    resource: dict[str, Any] = standin_admin.create_user(name, password=PASSWORD, **values)
    resource["_username"] = name
    return resource


def set_cookies(response: Any) -> dict[str, SimpleCookie]:
    """Every ``Set-Cookie`` of a requests or werkzeug response, parsed, keyed by cookie name."""
    headers = response.raw.headers.getlist("Set-Cookie") if hasattr(response, "raw") and response.raw else None
    if headers is None:
        headers = response.headers.getlist("Set-Cookie")
    found: dict[str, SimpleCookie] = {}
    for header in headers:
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            found[name] = cookie
    return found


def provider_sign_in(authorize_url: str, username: str, password: str = PASSWORD) -> str:
    """Fill in the stand-in's login form like a person would; returns the callback URL it redirects to."""
    browser = requests.Session()
    page = browser.get(authorize_url, timeout=10)
    assert page.status_code == 200, page.text[:300]
    assert 'name="username"' in page.text
    answer = browser.post(
        authorize_url, data={"username": username, "password": password}, allow_redirects=False, timeout=10
    )
    assert answer.status_code == 302, answer.text[:300]
    return str(answer.headers["Location"])


def authorize_params(authorize_url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class HttpLogin:
    """A sign-in over real HTTP against the live server, with the login-state cookie carried by hand (it is Secure
    outside development, and ``requests`` withholds Secure cookies from plain-HTTP URLs)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def start(self, next_path: str | None = None) -> tuple[str, str]:
        """``/auth/login``: returns (authorize URL, Flask session cookie value)."""
        params = {"next": next_path} if next_path else None
        response = requests.get(f"{self.base_url}/auth/login", params=params, allow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text[:300]
        return str(response.headers["Location"]), set_cookies(response)["session"]["session"].value

    def callback(self, callback_url: str, state_cookie: str, *, json_client: bool = True) -> requests.Response:
        headers = {"Cookie": f"session={state_cookie}"}
        if json_client:
            headers["Accept"] = "application/json"
        return requests.get(callback_url, headers=headers, allow_redirects=False, timeout=15)

    def login(self, username: str, *, json_client: bool = True, next_path: str | None = None) -> requests.Response:
        authorize_url, cookie = self.start(next_path)
        return self.callback(provider_sign_in(authorize_url, username), cookie, json_client=json_client)

    def me(self, token: str) -> requests.Response:
        return requests.get(f"{self.base_url}/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def unsigned_token(claims: dict[str, Any]) -> str:
    """An ``alg: none`` JWT: the forgery a verifier must never accept."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def new_key(kid: str) -> RSAKey:
    fresh = RSAKey.generate_key(2048, private=True)
    return RSAKey.import_key(fresh.as_dict(private=True), {"kid": kid, "alg": "RS256", "use": "sig"})


class FakeIdP:
    """Discovery, JWKS and a token endpoint over real HTTP. ``id_token`` is what the next token call returns."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.key = new_key("fake-1_RS256")
        self.published: list[RSAKey] = [self.key]
        self.id_token: str | None = None
        self.token_delay = 0.0
        self.token_status = 200
        self.token_body: dict[str, Any] | None = None
        # Entries replacing or adding to the discovery document (a foreign issuer, RFC 9207 support, ...).
        self.discovery_overrides: dict[str, Any] = {}
        self.counts: Counter[str] = Counter()
        self._server = make_server("127.0.0.1", 0, self._app(), threaded=True)
        self.issuer = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _app(self) -> Flask:
        app = Flask("fake_idp")

        @app.get("/.well-known/openid-configuration")
        def discovery() -> Any:
            self.counts["discovery"] += 1
            return jsonify(
                {
                    "issuer": self.issuer,
                    "authorization_endpoint": f"{self.issuer}/authorize",
                    "token_endpoint": f"{self.issuer}/token",
                    "jwks_uri": f"{self.issuer}/jwks",
                    "end_session_endpoint": f"{self.issuer}/logout",
                    "id_token_signing_alg_values_supported": ["RS256"],
                    **self.discovery_overrides,
                }
            )

        @app.get("/jwks")
        def jwks() -> Any:
            self.counts["jwks"] += 1
            return jsonify(KeySet(list(self.published)).as_dict(private=False))

        @app.post("/token")
        def token() -> Any:
            self.counts["token"] += 1
            self.last_token_form = request.form.to_dict()
            if self.token_delay:
                time.sleep(self.token_delay)
            if self.token_body is not None:
                return jsonify(self.token_body), self.token_status
            body = {"access_token": uuid.uuid4().hex, "token_type": "Bearer", "expires_in": 3600}
            if self.id_token is not None:
                body["id_token"] = self.id_token
            return jsonify(body), self.token_status

        return app

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def claims(self, nonce: str | None, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        values: dict[str, Any] = {
            "iss": self.issuer,
            "aud": [self.client_id],
            "azp": self.client_id,
            "sub": str(uuid.uuid4()),
            "iat": now,
            "exp": now + 3600,
            "nonce": nonce,
            "sid": str(uuid.uuid4()),
            "email": f"fake-{uuid.uuid4().hex[:8]}@example.com",
            "email_verified": True,
            "given_name": "Grace",
            "family_name": "Hopper",
            "username": "grace",
        }
        values.update(overrides)
        return {k: v for k, v in values.items() if v is not None}

    def sign(self, claims: dict[str, Any], key: RSAKey | None = None, **header: Any) -> str:
        key = key or self.key
        return jwt.encode({"alg": "RS256", "kid": key.kid, **header}, claims, key, algorithms=["RS256"])


@contextmanager
def running_fake_idp(client_id: str) -> Iterator[FakeIdP]:
    idp = FakeIdP(client_id)
    idp.start()
    try:
        yield idp
    finally:
        idp.stop()
