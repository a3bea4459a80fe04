"""Scale: 100,000 seeded users, paged through by a plain requests loop with the rate limit off."""

from __future__ import annotations

import time

import requests

from asgardeo_standin.client import StandinAdmin
from asgardeo_standin.server import start_in_thread

from .conftest import m2m_token, make_config

N = 100_000


def test_seed_and_page_through_100k_users() -> None:
    with start_in_thread(make_config()) as handle:
        admin = StandinAdmin(handle.root_url)
        started = time.perf_counter()
        assert admin.seed(N) == {"created": N, "skipped": 0, "total": N}
        seed_s = time.perf_counter() - started
        assert admin.seed(N)["skipped"] == N, "re-seeding is idempotent"

        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {m2m_token(handle, 'internal_user_mgt_list')}"
        started = time.perf_counter()
        seen: list[str] = []
        start_index = 1
        while True:
            page = session.get(
                f"{handle.base_url}/scim2/Users", params={"startIndex": start_index, "count": 100}, timeout=10
            ).json()
            seen.extend(r["id"] for r in page.get("Resources", []))
            if page["itemsPerPage"] == 0 or start_index - 1 + page["itemsPerPage"] >= page["totalResults"]:
                break
            start_index += page["itemsPerPage"]
        page_s = time.perf_counter() - started
        assert len(seen) == N
        assert len(set(seen)) == N
        print(f"seed {N}: {seed_s:.2f}s, page-through: {page_s:.2f}s")
        assert seed_s < 30
        assert page_s < 60
