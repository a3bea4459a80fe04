"""A page on another port of the same host is same-site, so Chromium sends it the admin's SameSite=Lax cookie: its
form posts and no-cors fetches must still be refused and start nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import func, select

from models.db import unit_of_work
from models.tables import SyncRun

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("clean_db", "clean_redis")]


class _AttackerPages(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        form = (
            f'<form id="f" method="post" action="{self.target}/admin/sync"></form>'
            '<script>document.getElementById("f").submit();</script>'
            if self.path == "/form"
            else "<p>idle</p>"
        )
        body = f"<!doctype html><html><body>{form}</body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        return


@pytest.fixture
def attacker(live_server: Any) -> Iterator[str]:
    """A little site on another loopback port: same site as the live server, another origin."""
    handler = type("Handler", (_AttackerPages,), {"target": live_server.url})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _runs() -> int:
    with unit_of_work() as session:
        return session.execute(select(func.count()).select_from(SyncRun)).scalar_one()


def test_same_site_form_post_to_start_a_sync_is_refused(
    signed_in_admin_page: Any, attacker: str, live_server: Any
) -> None:
    page = signed_in_admin_page
    with page.expect_response(f"{live_server.url}/admin/sync") as answer:
        page.goto(f"{attacker}/form")
    assert answer.value.status == 403
    # Without the cookie the 403 would prove nothing.
    assert answer.value.request.all_headers().get("cookie")
    assert _runs() == 0


def test_same_site_no_cors_fetch_is_refused(signed_in_admin_page: Any, attacker: str, live_server: Any) -> None:
    page = signed_in_admin_page
    page.goto(f"{attacker}/idle")
    with page.expect_response(f"{live_server.url}/admin/events/replay-failed") as answer:
        page.evaluate(
            "url => fetch(url, {method: 'POST', mode: 'no-cors', credentials: 'include'}).then(() => true)",
            f"{live_server.url}/admin/events/replay-failed",
        )
    assert answer.value.status == 403
    with page.expect_response(f"{live_server.url}/admin/sync") as answer:
        page.evaluate(
            "url => fetch(url, {method: 'POST', mode: 'no-cors', credentials: 'include'}).then(() => true)",
            f"{live_server.url}/admin/sync",
        )
    assert answer.value.status == 403
    assert _runs() == 0


def test_the_apps_own_page_can_post_with_its_token(signed_in_admin_page: Any, live_server: Any) -> None:
    page = signed_in_admin_page
    page.goto(f"{live_server.url}/admin/health")
    status = page.evaluate(
        """() => fetch('/admin/sync', {method: 'POST', credentials: 'same-origin', headers: {
               'X-CSRF-Token': document.querySelector('meta[name="csrf-token"]').content}}).then(r => r.status)"""
    )
    assert status == 202
    assert _runs() == 1
