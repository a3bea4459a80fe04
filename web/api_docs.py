"""The API reference page: ``/openapi.json`` rendered as HTML by the app itself.

No script and no CDN: the page is plain Jinja over the document :mod:`web.openapi` serves, so it works offline and
under a strict Content-Security-Policy. Public, like ``/openapi.json``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, render_template

from web.openapi import document

bp = Blueprint("api_docs", __name__)

METHOD_ORDER = ("get", "post", "put", "patch", "delete")


def _schema_text(schema: dict[str, Any] | None) -> str:
    """A schema as short readable JSON (references shown by name)."""
    if not schema:
        return ""
    return json.dumps(schema, indent=2, sort_keys=False).replace('"#/components/schemas/', '"')


def operations() -> list[dict[str, Any]]:
    """Every operation in path order, grouped as the page lists them (first path segment)."""
    found = []
    for path, methods in document()["paths"].items():
        for method in METHOD_ORDER:
            operation = methods.get(method)
            if operation is None:
                continue
            body = operation.get("requestBody", {}).get("content", {})
            found.append(
                {
                    "group": path.strip("/").split("/")[0] or "pages",
                    "method": method.upper(),
                    "path": path,
                    "anchor": f"{method}-{path.strip('/').replace('/', '-').replace('{', '').replace('}', '')}",
                    "summary": operation.get("summary", ""),
                    "description": operation.get("description", ""),
                    "parameters": operation.get("parameters", []),
                    "body": [(kind, _schema_text(spec.get("schema"))) for kind, spec in body.items()],
                    "responses": sorted(operation.get("responses", {}).items()),
                    "secured": bool(operation.get("security")),
                }
            )
    return found


@bp.get("/api-docs")
def page() -> str:
    doc = document()
    return render_template(
        "api_docs.html",
        info=doc["info"],
        operations=operations(),
        schemas={name: _schema_text(schema) for name, schema in doc["components"].get("schemas", {}).items()},
    )
