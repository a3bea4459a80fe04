"""Asgardeo webhook deliveries for tests: the shared sample payloads and a builder, signed like the real thing."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

from models.clock import now_ms
from tests.stack import WEBHOOK_SECRET

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
EVENT_URI = "https://schemas.identity.wso2.org/events/{channel}/event-type/{name}"
CLAIM = "http://wso2.org/claims/{name}"


def sample(name: str, **overrides: Any) -> dict[str, Any]:
    """A sample from shared/asgardeo/webhooks with a fresh ``jti`` and ``iat`` (the samples are older than the
    retention window); ``user_id`` replaces the user's id."""
    body: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    body["jti"] = overrides.get("jti", str(uuid.uuid4()))
    body["iat"] = overrides.get("iat", now_ms())
    if "user_id" in overrides:
        ((_, event),) = body["events"].items()
        event["user"]["id"] = overrides["user_id"]
    return body


def claims(**values: Any) -> list[dict[str, Any]]:
    names = {
        "username": "username",
        "email": "emailaddress",
        "first_name": "givenname",
        "last_name": "lastname",
        "groups": "groups",
    }
    return [{"uri": CLAIM.format(name=names[k]), "value": v} for k, v in values.items()]


def event(
    name: str,
    user_id: str | None = None,
    *,
    iat: int | None = None,
    jti: str | None = None,
    channel: str = "user",
    **user_part: Any,
) -> dict[str, Any]:
    """An envelope for event ``name`` about ``user_id``; ``user_part`` adds claims / addedClaims / ... to ``user``."""
    user: dict[str, Any] = {"id": user_id or str(uuid.uuid4())}
    user.update(copy.deepcopy(user_part))
    return {
        "iss": "https://api.asgardeo.io/t/test",
        "jti": jti or str(uuid.uuid4()),
        "iat": iat if iat is not None else now_ms(),
        "events": {EVENT_URI.format(channel=channel, name=name): {"initiatorType": "ADMIN", "user": user}},
    }


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def signature(raw: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def signed_headers(raw: bytes, secret: str = WEBHOOK_SECRET, header: str = "X-Hub-Signature") -> dict[str, str]:
    return {"Content-Type": "application/json", header: signature(raw, secret)}
