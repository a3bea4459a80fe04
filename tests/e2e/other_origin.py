"""A little site on another loopback port: same site as the live server (so Chromium sends its SameSite=Lax cookie
along), another origin. Cross-site tests serve their forging pages from it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def other_origin(render: Callable[[str], str]) -> Iterator[str]:
    """Serve ``render(path)`` as the HTML page at every GET path; yields the site's base URL."""

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = render(self.path).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
