"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from models.db import get_engine
from tasks.redis_client import get_redis

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is alive and serving; says nothing about its dependencies, so it never flaps with them."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """200 when Postgres and Redis both answer; 503 naming each part that does not."""
    checks: dict[str, str] = {}
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["postgres"] = "ok"
    except Exception as exc:
        log.warning("readiness: postgres unreachable", extra={"error": type(exc).__name__})
        checks["postgres"] = "unreachable"
    try:
        get_redis().ping()
        checks["redis"] = "ok"
    except Exception as exc:
        log.warning("readiness: redis unreachable", extra={"error": type(exc).__name__})
        checks["redis"] = "unreachable"
    failing = sorted(name for name, state in checks.items() if state != "ok")
    if failing:
        body = jsonify(error="not_ready", detail=f"unreachable: {', '.join(failing)}", checks=checks)
        return body, 503
    return jsonify(status="ready", checks=checks), 200
