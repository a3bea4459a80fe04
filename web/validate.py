"""Small request-validation helpers: every bad parameter becomes a 400 that names it, never a 500."""

from __future__ import annotations

from typing import Any

from flask import request

from web.errors import APIError


def int_arg(name: str, default: int, *, minimum: int, maximum: int) -> int:
    """A bounded integer query parameter."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise APIError(400, "invalid_parameter", f"{name} must be an integer") from None
    if not minimum <= value <= maximum:
        raise APIError(400, "invalid_parameter", f"{name} must be between {minimum} and {maximum}")
    return value


def optional_int_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    return int_arg(name, 0, minimum=0, maximum=2**62)


def choice_arg(name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise APIError(400, "invalid_parameter", f"{name} must be one of {', '.join(choices)}")
    return raw


def text_arg(name: str, *, max_length: int = 200) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw.strip() == "":
        return None
    if len(raw) > max_length:
        raise APIError(400, "invalid_parameter", f"{name} is longer than {max_length} characters")
    if not printable(raw):
        raise APIError(400, "invalid_parameter", f"{name} must not contain control characters")
    return raw.strip()


def printable(value: str) -> bool:
    """No control characters: Postgres refuses a NUL in text (a 500 if it got that far), and no name, filter or
    field of this API needs one."""
    return not any(ord(c) < 32 or ord(c) == 127 for c in value)


def json_object(*, allowed: set[str], required: set[str] | None = None) -> dict[str, Any]:
    """The request body as a JSON object with only ``allowed`` keys (and every ``required`` one)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise APIError(400, "invalid_body", "send a JSON object with Content-Type: application/json")
    unknown = set(body) - allowed
    if unknown:
        raise APIError(400, "invalid_body", f"unknown field(s): {', '.join(sorted(unknown))}")
    missing = (required or set()) - set(body)
    if missing:
        raise APIError(400, "invalid_body", f"missing field(s): {', '.join(sorted(missing))}")
    return body
