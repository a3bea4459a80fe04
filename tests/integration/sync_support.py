"""Helpers for the sync tests: a private stand-in per test, a SCIM client aimed at it, injected HTTP faults."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests

from tests.stack import M2M_CLIENT_ID, M2M_CLIENT_SECRET, STACK

Fault = Callable[[str, str, dict[str, Any]], int | None]


class FaultyHTTP(requests.Session):
    """A real ``requests.Session`` whose ``fault`` hook may answer a request with a status instead of sending it,
    whose ``before`` hook runs before each real request (to change the directory mid-run), and whose ``rewrite``
    hook may change the query parameters actually sent (to make the server answer a short page).

    Shared by the listing's threads: the hooks must be thread-safe; ``injected`` is counted under a lock.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fault: Fault | None = None
        self.before: Callable[[str, str, dict[str, Any]], None] | None = None
        self.rewrite: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.injected = 0
        self._lock = threading.Lock()

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        params = dict(kwargs.get("params") or {})
        if self.before is not None:
            self.before(str(method), str(url), params)
        status = self.fault(str(method), str(url), params) if self.fault is not None else None
        if status is not None:
            with self._lock:
                self.injected += 1
            response = requests.Response()
            response.status_code = status
            response._content = b'{"status": "%d", "detail": "injected"}' % status
            response.headers["Content-Type"] = "application/scim+json"
            response.url = str(url)
            return response
        if self.rewrite is not None and kwargs.get("params") is not None:
            kwargs["params"] = self.rewrite(params)
        return super().request(method, url, *args, **kwargs)


@contextmanager
def private_standin(**overrides: Any) -> Iterator[Any]:
    from asgardeo_standin.server import start_in_thread

    handle = start_in_thread(STACK.standin_config(port=0, **overrides))
    try:
        yield handle
    finally:
        handle.stop()


def client_for(
    handle: Any,
    *,
    rate_per_minute: int = 100_000,
    period: float = 60.0,
    http: requests.Session | None = None,
    page_size: int = 100,
    list_concurrency: int = 3,
    max_attempts: int = 6,
    backoff_base: float = 0.01,
    backoff_cap: float = 0.2,
) -> Any:
    """A SCIM client for ``handle`` with its own rate bucket (a fresh key, so tests never share one)."""
    from models.settings import get_settings
    from tasks.ratelimit import BucketShape, RateBudget
    from tasks.redis_client import get_redis, key
    from tasks.scim import ScimClient

    budget = RateBudget(
        get_redis(),
        key(f"test-bucket:{uuid.uuid4().hex}"),
        BucketShape.for_limit(rate_per_minute, period),
        max_wait=30,
    )
    return ScimClient(
        handle.base_url,
        M2M_CLIENT_ID,
        M2M_CLIENT_SECRET,
        settings=get_settings(),
        budget=budget,
        http=http,
        page_size=page_size,
        list_concurrency=list_concurrency,
        max_attempts=max_attempts,
        backoff_base=backoff_base,
        backoff_cap=backoff_cap,
    )


def start_run(trigger: str = "test") -> int:
    from models.db import unit_of_work
    from models.runs import start_full_run

    with unit_of_work() as session:
        return start_full_run(session, trigger=trigger).id
