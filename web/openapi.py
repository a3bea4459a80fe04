"""Serves the OpenAPI description of every route; tests keep it and the routes in step."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from flask import Blueprint, Response, jsonify

bp = Blueprint("openapi", __name__)


@cache
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(resources.files("web").joinpath("openapi.json").read_text())
    return loaded


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(document())
