"""Schema-driven fuzzing of the admin and operations API: schemathesis generates valid and invalid requests from
``/openapi.json`` for every operation, an admin sends them, and no answer may be a 5xx.

Excluded here, covered elsewhere: the webhook intake (hypothesis, test_fuzz_webhooks.py), the login flow (its 502 for
an unreachable provider is by design; test_auth_*), and the live stream (it stays open).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.core import NotSet

from web.openapi import document

SCHEMA = schemathesis.openapi.from_dict(document())
EXCLUDED = ("/webhooks/", "/auth/", "/events/users")
OPERATIONS = sorted(
    (op.method.upper(), op.path)
    for op in (result.ok() for result in SCHEMA.get_all_operations())
    if not op.path.startswith(EXCLUDED)
)
# Invalid requests exist only where there is input to get wrong.
WITH_INPUT = {
    (method.upper(), path)
    for path, operations in document()["paths"].items()
    for method, operation in operations.items()
    if "{" in path or operation.get("parameters") or operation.get("requestBody")
}
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if (m, p) in WITH_INPUT
]


@pytest.fixture(autouse=True)
def recursion_headroom() -> Iterator[None]:
    """Hypothesis names a filter by parsing its source with ``ast``; CPython 3.11's AST conversion fails with
    ``SystemError: AST constructor recursion depth mismatch`` when that parse starts deep in the stack (as it does
    here, under pytest, hypothesis and Flask's test client) and nears the recursion limit. Seen once in a full run."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    yield
    sys.setrecursionlimit(limit)


def _send(app: Flask, case: Any, token: str) -> int:
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in ("authorization", "cookie")}
    headers["Authorization"] = f"Bearer {token}"
    payload: dict[str, Any] = {}
    if isinstance(case.body, bytes | str):
        payload = {"data": case.body, "content_type": case.media_type or "application/json"}
    elif not isinstance(case.body, NotSet):
        payload = {"json": case.body}
    response = app.test_client().open(
        case.formatted_path, method=case.method, query_string=case.query or None, headers=headers, **payload
    )
    return response.status_code


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_no_generated_request_gets_a_5xx(
    app: Flask, make_signed_in_user: Any, clean_redis: None, method: str, path: str, mode: GenerationMode
) -> None:
    _, token = make_signed_in_user(role="admin")
    operation = SCHEMA[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        status = _send(app, case, token)
        assert status < 500, f"{method} {case.formatted_path} query={case.query} body={case.body!r} -> {status}"

    run()
