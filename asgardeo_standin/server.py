"""Assembles the stand-in (directory, OIDC, SCIM, webhooks, rate limit, admin) and serves it over HTTP.

``start_in_thread`` runs a real threaded werkzeug server on a free port, for test fixtures and the local run.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import Counter
from types import TracebackType
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from . import admin, oidc, scim
from .config import StandinConfig
from .directory import Directory
from .oidc import KeyStore, OidcProvider
from .persist import DirectoryFile
from .ratelimit import RateLimiter
from .webhooks import WebhookPublisher

log = logging.getLogger(__name__)

DEMO_USERS = (
    {
        "username": "admin@example.com",
        "password": "Admin#2024",
        "given_name": "Alex",
        "family_name": "Admin",
        "groups": ["Admins", "Employees"],
    },
    {
        "username": "employee@example.com",
        "password": "Employee#2024",
        "given_name": "Erin",
        "family_name": "Employee",
        "groups": ["Employees"],
    },
)


class Standin:
    """The state of one running stand-in organisation; ``root_url`` is set once the socket is bound."""

    def __init__(self, config: StandinConfig) -> None:
        self.config = config
        self.directory = Directory()
        self.keys = KeyStore()
        self.limiter = RateLimiter(config.rate_limit_per_minute)
        self.publisher = WebhookPublisher(config.org, config.chaos, retry_backoff=config.webhook_retry_backoff_s)
        self.directory.subscribe(self.publisher.on_change)
        self.directory_file = DirectoryFile(self.directory, config.state_file) if config.state_file else None
        self.provider = OidcProvider(config, self.directory, self.keys)
        self.get_faults = scim.GetFaults()
        self._stats_lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._root_url = ""

    @property
    def root_url(self) -> str:
        return self._root_url

    @root_url.setter
    def root_url(self, value: str) -> None:
        self._root_url = value
        self.provider.root_url = value
        self.publisher.root_url = value

    @property
    def base_url(self) -> str:
        return f"{self._root_url}/t/{self.config.org}"

    def seed_demo(self) -> list[dict[str, Any]]:
        """Create the two demo users if absent; returns their credentials (for printing)."""
        for user in DEMO_USERS:
            if self.directory.find_by_username(str(user["username"])) is None:
                self.directory.create_user(email=str(user["username"]), **user)  # type: ignore[arg-type]
        return [{"username": u["username"], "password": u["password"]} for u in DEMO_USERS]

    def count_request(self, rule: str) -> None:
        with self._stats_lock:
            self._requests[rule] += 1

    def stats_snapshot(self) -> dict[str, Any]:
        with self._stats_lock:
            requests_by_path = dict(self._requests)
        return {
            "requests": requests_by_path,
            "rate_limited": self.limiter.rejected,
            "rate_limit_per_minute": self.limiter.per_minute,
            "users": self.directory.count(),
            "backchannel_logout": dict(self.provider.backchannel_counts),
            "webhook": self.publisher.status(),
        }

    def stop(self) -> None:
        self.publisher.stop()
        self.provider.stop()
        if self.directory_file is not None:
            self.directory_file.stop()


def create_app(standin: Standin) -> Flask:
    """The WSGI app: OIDC and SCIM under ``/t/{org}``, admin under ``/_standin``, Asgardeo's rate limit."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = secrets.token_hex(32)
    app.config["SESSION_COOKIE_NAME"] = f"standin_{standin.config.org}"
    standin.provider.init_app(app)
    limited = (f"/t/{standin.config.org}/scim2/", f"/t/{standin.config.org}/oauth2/")

    @app.before_request
    def rate_limit() -> Response | tuple[Response, int] | None:
        if not request.path.startswith(limited):
            return None
        if standin.limiter.allow(request.remote_addr or "unknown"):
            return None
        if "/scim2/" in request.path:
            return jsonify(
                {
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                    "status": "429",
                    "detail": "Too many requests",
                }
            ), 429
        return jsonify({"error": "too_many_requests", "error_description": "Rate limit exceeded"}), 429

    @app.after_request
    def count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule else request.path
        standin.count_request(f"{request.method} {rule}")
        return response

    app.register_blueprint(oidc.create_blueprint(standin.provider))
    app.register_blueprint(scim.create_blueprint(standin.directory, standin.provider, standin.get_faults))
    app.register_blueprint(admin.create_blueprint(standin))
    return app


class _QuietHandler(WSGIRequestHandler):
    """Werkzeug's handler without a log line per request (100,000-user scans would flood the output)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class StandinHandle:
    """A running stand-in: URLs, the in-memory ``directory`` for white-box assertions, and ``stop()``."""

    def __init__(self, standin: Standin, server: BaseWSGIServer, thread: threading.Thread) -> None:
        self.standin = standin
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @property
    def root_url(self) -> str:
        return self.standin.root_url

    @property
    def base_url(self) -> str:
        return self.standin.base_url

    @property
    def issuer(self) -> str:
        return self.standin.provider.issuer

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def app(self) -> Any:
        """The WSGI app, for in-process clients (e.g. scim2-client's ``WSGISCIMClient``)."""
        return self._server.app

    @property
    def directory(self) -> Directory:
        return self.standin.directory

    @property
    def config(self) -> StandinConfig:
        return self.standin.config

    def stop(self) -> None:
        """Stop serving and the background workers; safe to call twice."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.standin.stop()

    def __enter__(self) -> StandinHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_in_thread(config: StandinConfig | None = None) -> StandinHandle:
    """Bind (port 0 = a free port), start serving in a daemon thread, configure webhooks and demo users."""
    config = config or StandinConfig()
    standin = Standin(config)
    app = create_app(standin)
    server = make_server(config.host, config.port, app, threaded=True, request_handler=_QuietHandler)
    server.daemon_threads = True  # type: ignore[attr-defined]  # ThreadedWSGIServer: don't wait on clients
    standin.root_url = f"http://{config.host}:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, name="standin-http", daemon=True)
    thread.start()
    if standin.directory_file is not None:
        standin.directory_file.load()
        standin.directory_file.start()
    if config.seed_demo:
        standin.seed_demo()
    if config.webhook_url:
        standin.publisher.configure(config.webhook_url, config.webhook_secret)
    return StandinHandle(standin, server, thread)
