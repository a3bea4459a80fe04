"""The SCIM listing with several pages in flight (``ScimClient.iter_listing``), against a private stand-in.

What must hold whatever order the answers arrive in: pages come out in index order, no more than the window is in
flight, a short page's gap is fetched, the listing follows ``totalResults`` as it grows or shrinks, an error comes
out after every page before it, and a listing longer than its cap is refused as incomplete.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.sync_support import FaultyHTTP, client_for, private_standin


@pytest.fixture
def directory(clean_redis: None) -> Iterator[Any]:
    with private_standin() as handle:
        yield handle


class InFlight:
    """Counts listing requests in flight at once (the ``before`` hook runs on the sending thread)."""

    def __init__(self, http: FaultyHTTP, delay_for: dict[int, float] | None = None) -> None:
        self.current = self.peak = 0
        self.starts: list[int] = []
        self._lock = threading.Lock()
        self._delay_for = delay_for or {}
        self._send = http.send
        http.before = self.before
        http.send = self.send  # type: ignore[method-assign]

    def before(self, _method: str, _url: str, params: dict[str, Any]) -> None:
        if "startIndex" in params:
            with self._lock:
                self.starts.append(int(params["startIndex"]))

    def send(self, request: Any, **kwargs: Any) -> Any:
        start = int(request.url.split("startIndex=")[1].split("&")[0]) if "startIndex=" in request.url else None
        with self._lock:
            self.current += 1
            self.peak = max(self.peak, self.current)
        try:
            time.sleep(self._delay_for.get(start or 0, 0.02))
            return self._send(request, **kwargs)
        finally:
            with self._lock:
                self.current -= 1


def listed(client: Any, **kwargs: Any) -> list[Any]:
    return list(client.iter_listing(**kwargs))


def test_pages_come_out_in_index_order_with_the_window_in_flight(directory: Any) -> None:
    directory.directory.seed(1000, prefix="window")
    http = FaultyHTTP()
    flight = InFlight(http, delay_for={101: 0.3})  # the second page answers last
    client = client_for(directory, http=http, list_concurrency=3)

    pages = listed(client)

    assert [p.start_index for p in pages] == list(range(1, 1001, 100))
    ids = [r["id"] for p in pages for r in p.resources]
    assert ids == [u.id for u in directory.directory.all_users()]
    assert flight.peak == 3
    assert sorted(flight.starts) == list(range(1, 1001, 100))


def test_a_window_of_one_lists_one_page_after_another(directory: Any) -> None:
    directory.directory.seed(300, prefix="serial")
    http = FaultyHTTP()
    flight = InFlight(http)
    pages = listed(client_for(directory, http=http, list_concurrency=1))
    assert [p.start_index for p in pages] == [1, 101, 201]
    assert flight.peak == 1


def test_a_short_page_has_its_gap_fetched_before_the_next_page(directory: Any) -> None:
    directory.directory.seed(300, prefix="short")
    http = FaultyHTTP()
    # The server serves only 60 of the 100 asked at index 101, as a directory under load may.
    http.rewrite = lambda params: {**params, "count": 60} if params.get("startIndex") == 101 else params
    pages = listed(client_for(directory, http=http, list_concurrency=3))
    assert [(p.start_index, p.items) for p in pages] == [(1, 100), (101, 60), (161, 40), (201, 100)]
    assert len({r["id"] for p in pages for r in p.resources}) == 300


def test_the_listing_follows_a_directory_that_grows_while_it_runs(directory: Any) -> None:
    directory.directory.seed(250, prefix="grow")
    http = FaultyHTTP()
    added = threading.Event()

    def grow(_method: str, _url: str, params: dict[str, Any]) -> None:
        if params.get("startIndex") == 201 and not added.is_set():
            added.set()
            directory.directory.seed(150, prefix="late")

    http.before = grow
    pages = listed(client_for(directory, http=http, list_concurrency=2))
    assert added.is_set()
    assert sum(p.items for p in pages) == 400
    assert pages[-1].total_results == 400


def test_the_listing_stops_early_when_the_directory_shrinks(directory: Any) -> None:
    directory.directory.seed(500, prefix="shrink")
    doomed = [u.id for u in directory.directory.all_users()][-300:]
    http = FaultyHTTP()
    removed = threading.Event()

    def shrink(_method: str, _url: str, params: dict[str, Any]) -> None:
        if params.get("startIndex") == 101 and not removed.is_set():
            removed.set()
            for user_id in doomed:
                directory.directory.delete_user(user_id)

    http.before = shrink
    pages = listed(client_for(directory, http=http, list_concurrency=3))
    assert removed.is_set()
    # Pages asked for before the removal may still carry the last 300; none is asked for past the new end + window.
    assert {r["id"] for p in pages for r in p.resources} >= {u.id for u in directory.directory.all_users()}
    assert all(p.items > 0 for p in pages)


def test_an_error_comes_out_after_every_page_before_it(directory: Any) -> None:
    from tasks.errors import DirectoryError

    directory.directory.seed(600, prefix="broken")
    http = FaultyHTTP()
    http.fault = lambda _m, _u, params: 503 if params.get("startIndex") == 301 else None
    client = client_for(directory, http=http, list_concurrency=3, max_attempts=2)
    seen: list[int] = []

    def consume() -> None:
        for page in client.iter_listing():
            seen.append(page.start_index)

    with pytest.raises(DirectoryError):
        consume()
    assert seen == [1, 101, 201]


def test_a_listing_longer_than_its_cap_is_incomplete(directory: Any) -> None:
    from tasks.errors import DirectoryUnavailable

    directory.directory.seed(450, prefix="capped")
    client = client_for(directory, list_concurrency=3)
    with pytest.raises(DirectoryUnavailable, match="after 3"):
        listed(client, max_pages=3)
    assert len(listed(client, max_pages=5)) == 5
