"""The Flask web tier: login, webhook intake, admin API, live stream and pages.

Gunicorn serves ``web:create_app()``.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import uuid
from typing import Any

from flask import Flask, Response, g, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.routing import IntegerConverter, Map

from models import logs
from models.settings import Settings, get_settings
from web import (
    admin,
    admin_inbox,
    admin_sync,
    api_docs,
    auth,
    cli_users,
    console,
    console_sync,
    console_users,
    cookie_session,
    csrf,
    health,
    intake,
    live,
    metrics,
    oidc,
    openapi,
    pages,
    security_headers,
    sync_health,
    webhooks,
)
from web.access import current_user
from web.errors import register_error_handlers

log = logging.getLogger(__name__)
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def create_app(settings: Settings | None = None) -> Flask:
    """Build an app; tests pass their own settings, production reads the environment."""
    settings = settings or get_settings()
    settings.check_production()
    logs.configure_logging(settings.log_level)

    app = Flask(__name__)
    app.url_map.converters["int"] = DatabaseIdConverter
    app.config.update(
        SETTINGS=settings,
        SECRET_KEY=(settings.secret_key.get_secret_value() if settings.secret_key else secrets.token_hex(32)),
        MAX_CONTENT_LENGTH=settings.max_request_body_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.app_env != "development",
        JSON_SORT_KEYS=False,
    )
    register_error_handlers(app)
    cookie_session.init_app(app)
    oidc.init_app(app, settings)
    intake.init_app(app)
    csrf.init_app(app)
    security_headers.init_app(app, settings)
    console.init_app(app)
    app.cli.add_command(cli_users.users)
    blueprints = (health, metrics, openapi, pages, auth, webhooks, admin, admin_inbox, admin_sync, live, sync_health)
    for module in blueprints:
        app.register_blueprint(module.bp)
    for module in (console_users, console_sync, api_docs):
        app.register_blueprint(module.bp)
    _install_request_ids(app)
    app.context_processor(_template_user)
    return app


class DatabaseIdConverter(IntegerConverter):
    """``<int:...>`` in routes means a database id: past Postgres's bigint it is a 404, never a driver error."""

    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(url_map, *args, **kwargs)


def _template_user() -> dict[str, Any]:
    """The signed-in user for the page header. An error page must still render when the database is away."""
    try:
        return {"user": current_user()}
    except SQLAlchemyError:
        return {"user": None}


def _install_request_ids(app: Flask) -> None:
    """Every request gets an id (the caller's ``X-Request-ID`` when it is sane), logged and echoed back."""

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        g.request_id = request_id
        g.started = time.perf_counter()
        g.log_token = logs.push(request_id=request_id)

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        elapsed_ms = round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2)
        log.info(
            "request",
            extra={"method": request.method, "path": request.path, "status": response.status_code, "ms": elapsed_ms},
        )
        return response

    @app.teardown_request
    def _teardown(_exc: BaseException | None) -> None:
        token = g.pop("log_token", None)
        if token is not None:
            logs.pop(token)
