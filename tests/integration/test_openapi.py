"""The OpenAPI file describes exactly the routes the app serves, and every admin route refuses non-admins."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from web.openapi import document

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def _routes(app: Flask) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        routes.setdefault(path, set()).update((rule.methods or set()) - IGNORED_METHODS)
    return routes


def test_document_is_valid_openapi() -> None:
    validate(document())  # type: ignore[arg-type]


def test_document_and_routes_match_exactly(app: Flask) -> None:
    documented = {path: {m.upper() for m in ops} for path, ops in document()["paths"].items()}
    assert documented == _routes(app)


def test_document_is_served(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json["openapi"].startswith("3.")


def test_every_admin_operation_documents_401_and_403() -> None:
    for path, operations in document()["paths"].items():
        if path.startswith(("/admin", "/events")):
            for method, operation in operations.items():
                assert {"401", "403"} <= set(operation["responses"]), f"{method.upper()} {path}"


def _admin_operations() -> list[tuple[str, str]]:
    return sorted(
        (
            method.upper(),
            path.replace("{", "")
            .replace("}", "")
            .replace("user_id", "1")
            .replace("event_id", "1")
            .replace("run_id", "1")
            .replace("session_id", "1"),
        )
        for path, operations in document()["paths"].items()
        if path.startswith(("/admin", "/events"))
        for method in operations
    )


@pytest.mark.parametrize(("method", "path"), _admin_operations())
@pytest.mark.parametrize("who", ["anonymous", "employee", "manager", "hr", "forged"])
def test_every_admin_route_refuses_non_admins(
    client: FlaskClient, make_signed_in_user: Callable[..., tuple[int, str]], method: str, path: str, who: str
) -> None:
    headers: dict[str, str] = {}
    if who == "forged":
        headers["Authorization"] = "Bearer not-a-session"
    elif who != "anonymous":
        _, token = make_signed_in_user(role=who)
        headers["Authorization"] = f"Bearer {token}"
    response = client.open(path, method=method, headers=headers, json={})
    expected = 403 if who in ("employee", "manager", "hr") else 401
    assert response.status_code == expected
    assert response.json is not None
    assert {"error", "detail"} <= set(response.json)
