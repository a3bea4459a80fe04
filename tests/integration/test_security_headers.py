"""Every HTML page (error pages too) carries the CSP, anti-framing, nosniff and referrer headers; HSTS only in
production behind https; and no page holds an inline script that the CSP would block."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr

from models.settings import get_settings
from web import create_app

PAGES = ("/", "/profile", "/auth/logout", "/admin/health", "/admin/live", "/no-such-page", "/admin/events/1")
EXPECTED = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}


def _assert_secured(response: object, path: str) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    for name, value in EXPECTED.items():
        assert headers.get(name) == value, (path, name)
    policy = headers.get("Content-Security-Policy", "")
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["frame-ancestors"] == "'none'", path
    assert directives["script-src"] == "'self'", path
    assert "unsafe-inline" not in policy, path


@pytest.fixture
def admin_browser(client: FlaskClient, make_signed_in_user: Callable[..., tuple[int, str]]) -> FlaskClient:
    _, token = make_signed_in_user(role="admin")
    client.set_cookie(get_settings().session_cookie_name, token)
    return client


@pytest.mark.parametrize("path", PAGES)
def test_every_html_page_carries_the_security_headers(admin_browser: FlaskClient, path: str) -> None:
    response = admin_browser.get(path, headers={"Accept": "text/html"})
    if response.mimetype == "text/html":
        body = response.get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", body), f"inline script on {path}"
        assert not re.search(r"\son[a-z]+\s*=", body), f"inline event handler on {path}"
    assert response.status_code < 500
    _assert_secured(response, path)


def test_signed_out_and_refused_pages_carry_them_too(client: FlaskClient) -> None:
    for response in (
        client.get("/", headers={"Accept": "text/html"}),
        client.get("/admin/health", headers={"Accept": "text/html"}),
        client.post("/auth/logout", headers={"Accept": "text/html", "Origin": "https://evil.example"}),
    ):
        _assert_secured(response, response.request.path)


def test_no_hsts_outside_production(client: FlaskClient) -> None:
    assert "Strict-Transport-Security" not in client.get("/").headers


def _production_app(public_base_url: str) -> Flask:
    settings = get_settings().model_copy(
        update={
            "app_env": "production",
            "public_base_url": public_base_url,
            "flower_basic_auth": SecretStr("ops:pw"),
            "metrics_token": SecretStr("scrape-token"),
        }
    )
    return create_app(settings)


@pytest.mark.usefixtures("clean_db")
def test_hsts_in_production_behind_https() -> None:
    answer = _production_app("https://hrms.example.com").test_client().get("/")
    assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"
    plain = _production_app("http://10.0.0.5:5000").test_client().get("/")
    assert "Strict-Transport-Security" not in plain.headers
