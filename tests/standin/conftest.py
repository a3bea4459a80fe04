"""Fixtures: a stand-in on a free port over real HTTP, tokens, and a webhook subscriber to receive events."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from asgardeo_standin.client import StandinAdmin
from asgardeo_standin.config import StandinConfig
from asgardeo_standin.server import StandinHandle, start_in_thread

REDIRECT_URI = "http://127.0.0.1:5999/auth/callback"
WEBHOOK_SECRET = "whsec-test"


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Poll until ``predicate()`` is truthy; fail the test on the deadline (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)


@dataclass
class Subscriber:
    """A tiny webhook receiver: answers the WebSub challenge (unless told not to) and records deliveries."""

    echo_challenge: bool = True
    fail_next: int = 0
    handshakes: list[dict[str, str]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    logouts: list[str] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        with self.lock:
            if request.path == "/backchannel":
                self.logouts.append(request.form["logout_token"])
                return Response("")(environ, start_response)
            if request.method == "GET":
                self.handshakes.append(dict(request.args))
                body = request.args.get("hub.challenge", "") if self.echo_challenge else "nope"
                return Response(body, mimetype="text/plain")(environ, start_response)
            if self.fail_next > 0:
                self.fail_next -= 1
                return Response("busy", status=503)(environ, start_response)
            raw = request.get_data()
            expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
            self.deliveries.append(
                {
                    "body": json.loads(raw),
                    "signature_ok": hmac.compare_digest(expected, request.headers.get("X-Hub-Signature", "")),
                }
            )
        return Response("", status=202)(environ, start_response)

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """(event name, body) of each delivery, in arrival order."""
        with self.lock:
            return [(next(iter(d["body"]["events"])).rsplit("/", 1)[-1], d["body"]) for d in self.deliveries]


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    sub = Subscriber()
    server = make_server("127.0.0.1", 0, sub, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sub.url = f"http://127.0.0.1:{server.server_port}/hook"
    yield sub
    server.shutdown()
    server.server_close()


def make_config(**overrides: Any) -> StandinConfig:
    config = StandinConfig(
        rate_limit_per_minute=0,
        web_redirect_uris=[REDIRECT_URI],
        web_post_logout_redirect_uris=["http://127.0.0.1:5999/"],
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


@pytest.fixture
def standin() -> Iterator[StandinHandle]:
    with start_in_thread(make_config(seed_demo=True)) as handle:
        yield handle


@pytest.fixture
def admin(standin: StandinHandle) -> StandinAdmin:
    return StandinAdmin(standin.base_url)


def m2m_token(handle: StandinHandle, scope: str = "internal_user_mgt_list internal_user_mgt_view") -> str:
    config = handle.config
    response = requests.post(
        f"{handle.base_url}/oauth2/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(config.m2m_client_id, config.m2m_client_secret),
        timeout=5,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


@pytest.fixture
def scim(standin: StandinHandle) -> requests.Session:
    """A session carrying an M2M token with every user-management scope."""
    session = requests.Session()
    scopes = " ".join(f"internal_user_mgt_{s}" for s in ("list", "view", "create", "update", "delete"))
    session.headers["Authorization"] = f"Bearer {m2m_token(standin, scopes)}"
    return session
