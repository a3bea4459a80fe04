"""The test run's wiring between the product and the Asgardeo stand-in: ports, client ids and secrets.

Ports are reserved before any app module is imported, so the settings every process reads (web, worker, tasks)
already point at the stand-in and at the live web server that the stand-in calls back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from localrun.embedded import free_port

ORG = "test"
WEB_CLIENT_ID = "hrms-web"
WEB_CLIENT_SECRET = "web-client-secret-for-tests"
M2M_CLIENT_ID = "hrms-m2m"
M2M_CLIENT_SECRET = "m2m-client-secret-for-tests"
WEBHOOK_SECRET = "webhook-secret-for-tests"


@dataclass
class Stack:
    standin_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)

    @property
    def standin_root(self) -> str:
        return f"http://127.0.0.1:{self.standin_port}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def environment(self) -> dict[str, str]:
        """The product's settings for a run against the stand-in."""
        return {
            "ASGARDEO_BASE_URL": f"{self.standin_root}/t/{ORG}",
            "OIDC_CLIENT_ID": WEB_CLIENT_ID,
            "OIDC_CLIENT_SECRET": WEB_CLIENT_SECRET,
            "SCIM_CLIENT_ID": M2M_CLIENT_ID,
            "SCIM_CLIENT_SECRET": M2M_CLIENT_SECRET,
            "WEBHOOK_SECRETS": WEBHOOK_SECRET,
            "PUBLIC_BASE_URL": self.web_url,
            "SECRET_KEY": "flask-secret-key-for-tests",
            # The shared stand-in runs without a rate limit; rate tests start their own limited instance.
            "SCIM_RATE_PER_MINUTE": "6000",
            "REFRESH_COALESCE_SECONDS": "0.2",
            # Roles the stand-in's role tests create (tests/integration/test_directory_roles.py).
            "ROLE_MAP": "HR Manager@application:HRMS=hr,Administrator@organization=admin,Team Lead=manager",
        }

    def standin_config(self, **overrides: Any) -> Any:
        from asgardeo_standin.config import StandinConfig

        values: dict[str, Any] = {
            "org": ORG,
            "port": self.standin_port,
            "rate_limit_per_minute": 0,
            "web_client_id": WEB_CLIENT_ID,
            "web_client_secret": WEB_CLIENT_SECRET,
            "web_redirect_uris": [f"{self.web_url}/auth/callback"],
            "web_post_logout_redirect_uris": [f"{self.web_url}/"],
            "web_backchannel_logout_uri": f"{self.web_url}/auth/backchannel-logout",
            "m2m_client_id": M2M_CLIENT_ID,
            "m2m_client_secret": M2M_CLIENT_SECRET,
        }
        values.update(overrides)
        return StandinConfig(**values)


STACK = Stack()


class LiveServer:
    """``web.create_app()`` in a background thread on a real port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from models.settings import get_settings
        from web import create_app

        self._server = make_server("127.0.0.1", self.port, create_app(get_settings()), threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="live-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
