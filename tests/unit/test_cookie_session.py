"""The session's signer is built only for a request that carries the session cookie (web/cookie_session.py)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, session
from flask.sessions import SecureCookieSessionInterface

from web.cookie_session import LazySignerSessionInterface


def _app(interface: SecureCookieSessionInterface) -> Flask:
    app = Flask(__name__)
    app.secret_key = "test-only-key"
    app.session_interface = interface

    @app.post("/remember")
    def remember() -> str:
        session["state"] = "abc"
        return "ok"

    @app.get("/recall")
    def recall() -> str:
        return str(session.get("state"))

    return app


def _signers_built(monkeypatch: pytest.MonkeyPatch, interface: SecureCookieSessionInterface) -> list[Any]:
    built: list[Any] = []
    real = SecureCookieSessionInterface.get_signing_serializer

    def counting(self: SecureCookieSessionInterface, app: Flask) -> Any:
        built.append(app)
        return real(self, app)

    monkeypatch.setattr(SecureCookieSessionInterface, "get_signing_serializer", counting)
    _app(interface).test_client().get("/recall")
    return built


def test_flasks_own_interface_builds_a_signer_for_a_request_without_the_cookie(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert len(_signers_built(monkeypatch, SecureCookieSessionInterface())) == 1


def test_no_signer_is_built_for_a_request_without_the_cookie(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _signers_built(monkeypatch, LazySignerSessionInterface()) == []


def test_the_session_still_round_trips_and_a_forged_cookie_is_an_empty_session() -> None:
    client = _app(LazySignerSessionInterface()).test_client()
    assert client.post("/remember").status_code == 200
    assert client.get("/recall").text == "abc"
    client.set_cookie("session", "forged.value.sig")
    assert client.get("/recall").text == "None"
