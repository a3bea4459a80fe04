from __future__ import annotations

from flask.testing import FlaskClient
from pytest import MonkeyPatch
from sqlalchemy.exc import OperationalError


def test_healthz_answers_without_dependencies(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_is_ready_with_postgres_and_redis(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"postgres": "ok", "redis": "ok"}


def test_readyz_names_postgres_when_it_is_down(client: FlaskClient, monkeypatch: MonkeyPatch) -> None:
    from models.db import make_engine
    from web import health

    dead = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    monkeypatch.setattr(health, "get_engine", lambda: dead)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["error"] == "not_ready"
    assert response.json["detail"] == "unreachable: postgres"
    assert response.json["checks"]["redis"] == "ok"


def test_readyz_names_redis_when_it_is_down(client: FlaskClient, monkeypatch: MonkeyPatch) -> None:
    import redis

    from web import health

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    monkeypatch.setattr(health, "get_redis", lambda: dead)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["detail"] == "unreachable: redis"


def test_unknown_api_route_answers_json_error(client: FlaskClient) -> None:
    response = client.get("/admin/does-not-exist")
    assert response.status_code == 404
    assert response.json["error"] == "not_found"
    assert "detail" in response.json


def test_unexpected_error_shows_no_stack_trace(client: FlaskClient, app: object) -> None:
    from flask import Flask

    assert isinstance(app, Flask)

    @app.get("/admin/boom")
    def boom() -> str:
        raise OperationalError("SELECT secret", {}, Exception("password=hunter2"))

    response = client.get("/admin/boom")
    body = response.get_data(as_text=True)
    assert response.status_code == 500
    assert response.json["error"] == "internal_error"
    assert "Traceback" not in body
    assert "hunter2" not in body
