"""The SSE stream over real HTTP: admin only, live changes from pub/sub, resume from the audit trail."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from models.db import unit_of_work
from models.users import apply_user_patch
from tasks.live import publish_changes
from tests.stack import LiveServer

pytestmark = pytest.mark.usefixtures("clean_db")


def sse_events(response: requests.Response) -> Iterator[dict[str, Any]]:
    """Parsed ``data:`` messages with their ``id``; comments and ``retry`` lines are skipped."""
    current: dict[str, str] = {}
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if "data" in current:
                yield {"id": int(current["id"]), **json.loads(current["data"])}
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = value


def change(first_name: str, asgardeo_id: str | None = None) -> Any:
    with unit_of_work() as session:
        result = apply_user_patch(
            session, asgardeo_id or str(uuid.uuid4()), {"first_name": first_name}, source_version=1, source="test"
        )
    assert result is not None
    return result


def test_stream_refuses_anonymous_and_non_admin(live_server: LiveServer, make_signed_in_user: Any) -> None:
    assert requests.get(live_server.url + "/events/users", timeout=5).status_code == 401
    _, token = make_signed_in_user(role="employee")
    response = requests.get(live_server.url + "/events/users", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


@pytest.mark.parametrize("bad", ["abc", "-1", "1" * 30])
def test_stream_refuses_a_malformed_last_event_id(
    live_server: LiveServer, admin_headers: dict[str, str], bad: str
) -> None:
    response = requests.get(
        live_server.url + "/events/users", headers={**admin_headers, "Last-Event-ID": bad}, timeout=5
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_last_event_id"


def test_stream_resumes_after_last_event_id_then_goes_live(
    live_server: LiveServer, admin_headers: dict[str, str]
) -> None:
    first = change("Before")
    missed = change("Missed")
    with requests.get(
        live_server.url + "/events/users",
        headers={**admin_headers, "Last-Event-ID": str(first.change_id)},
        stream=True,
        timeout=10,
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        stream = sse_events(response)
        replayed = next(stream)
        assert replayed["id"] == missed.change_id
        assert replayed["changes"]["first_name"] == [None, "Missed"]
        live = change("Live")
        publish_changes([missed, live])  # the missed one again: the stream must not repeat it
        received = next(stream)
        assert received["id"] == live.change_id
        assert received["asgardeo_id"] == live.asgardeo_id


def test_one_published_batch_becomes_one_event_per_change_and_junk_is_skipped(
    live_server: LiveServer, admin_headers: dict[str, str]
) -> None:
    from tasks.live import channel
    from tasks.redis_client import get_redis

    with requests.get(live_server.url + "/events/users", headers=admin_headers, stream=True, timeout=10) as response:
        assert response.status_code == 200
        stream = sse_events(response)
        batch = [change(f"Batch{i}") for i in range(3)]
        for junk in (b"not json", b'{"id": 1}', b'[{"no": "id"}, 7, {"id": "x"}]'):
            get_redis().publish(channel(), junk)
        assert publish_changes(batch) == 3
        received = [next(stream) for _ in batch]
    assert [e["id"] for e in received] == [c.change_id for c in batch]
    assert [e["changes"]["first_name"][1] for e in received] == ["Batch0", "Batch1", "Batch2"]
