"""An HTTP front for the stand-in that answers storms of 5xx and 429 and hangs past client timeouts, seeded.

Everything else is forwarded unchanged, so the product's SCIM client (in the test process or a worker process
pointed at :attr:`FaultyFront.base_url`) meets the faults over real HTTP, token endpoint included.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length", "host"}


class FaultyFront:
    def __init__(self, upstream_root: str, org_path: str, seed: int = 0) -> None:
        self.upstream_root = upstream_root.rstrip("/")
        self.org_path = org_path  # "/t/test"
        self.rng = random.Random(seed)  # reproducible faults, not security
        self.lock = threading.Lock()
        self.error_rate = 0.0
        self.throttle_rate = 0.0
        self.hang_rate = 0.0
        self.hang_seconds = 2.0
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self._http = requests.Session()
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-front", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.org_path}"

    def set_faults(self, *, error: float = 0.0, throttle: float = 0.0, hang: float = 0.0) -> None:
        with self.lock:
            self.error_rate, self.throttle_rate, self.hang_rate = error, throttle, hang

    def _draw(self) -> str | None:
        with self.lock:
            roll = self.rng.random()
            for name, rate in (("5xx", self.error_rate), ("429", self.throttle_rate), ("hang", self.hang_rate)):
                if roll < rate:
                    self.injected[name] += 1
                    return name
                roll -= rate
            self.forwarded += 1
            return None

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        fault = self._draw()
        if fault == "5xx":
            response = Response('{"detail": "injected"}', status=self.rng.choice((500, 502, 503)))
        elif fault == "429":
            response = Response('{"detail": "slow down"}', status=429, headers={"Retry-After": "1"})
        else:
            if fault == "hang":
                time.sleep(self.hang_seconds)
            upstream = self._http.request(
                request.method,
                self.upstream_root + request.full_path.rstrip("?"),
                data=request.get_data(),
                headers={k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS},
                allow_redirects=False,
                timeout=30,
            )
            headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS]
            response = Response(upstream.content, status=upstream.status_code, headers=headers)
        return response(environ, start_response)

    def start(self) -> FaultyFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
