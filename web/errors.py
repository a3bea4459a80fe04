"""One API error class and one place that turns every error into a response.

API routes (and clients that ask for JSON) get ``{"error": ..., "detail": ...}``; browsers get a readable page. A
stack trace is logged, never sent.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

API_PREFIXES = (
    "/admin",
    "/webhooks",
    "/events",
    "/auth/me",
    "/auth/backchannel-logout",
    "/readyz",
    "/healthz",
)


class APIError(Exception):
    """An expected failure with a status, a stable machine-readable ``error`` code and a human ``detail``."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}


def wants_page() -> bool:
    """A browser asking for a page: no Bearer token, and ``text/html`` preferred to JSON.

    Admin URLs serve people and scripts alike: a browser's navigation says ``text/html`` first, while API clients
    send a Bearer token, ``Accept: application/json``, ``*/*`` or nothing, and all of those keep getting JSON.
    """
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        return False
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def wants_json() -> bool:
    """API paths answer JSON unless a browser asks for a page; elsewhere the ``Accept`` header decides."""
    if wants_page():
        return False
    if request.path.startswith(API_PREFIXES):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    """The one error body of this service, as JSON or as a page.

    A browser without a session is sent to sign in and brought back to the page it asked for.
    """
    if status == 401 and wants_page():
        back = request.full_path.rstrip("?") if request.method == "GET" else "/"
        return Response(status=303, headers={"Location": "/auth/login?" + urlencode({"next": back})})
    if wants_json():
        response = jsonify(error=error, detail=detail)
    else:
        response = Response(render_template("error.html", status=status, error=error, detail=detail))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _snake(name: str) -> str:
    return name.lower().replace(" ", "_").replace("'", "")


def register_error_handlers(app: Flask) -> None:
    """Map :class:`APIError`, werkzeug's HTTP errors and anything unexpected to :func:`error_response`."""

    @app.errorhandler(APIError)
    def _api_error(exc: APIError) -> Response:
        return error_response(exc.status, exc.error, exc.detail, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers: dict[str, Any] = dict(exc.get_headers()) if status in (405, 401) else {}
        headers.pop("Content-Type", None)
        return error_response(status, _snake(exc.name), exc.description or exc.name, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return error_response(500, "internal_error", "The server hit an unexpected error; it has been logged.")
