"""A small typed client for the stand-in's admin API (``/_standin/``), for tests and scripts.

Accepts either the root URL (``http://127.0.0.1:PORT``) or the tenant base URL (``.../t/demo``). Methods raise
``requests.HTTPError`` on non-2xx answers and return the decoded JSON.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import requests


class StandinAdmin:
    """Wraps ``/_standin/``: directory changes (which emit webhooks), keys, chaos, webhook ledger, stats."""

    def __init__(self, root_or_base_url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(root_or_base_url)
        self.root_url = f"{parts.scheme}://{parts.netloc}"
        self.timeout = timeout
        self.session = requests.Session()

    def _call(self, method: str, path: str, json: Any = None, timeout: float | None = None) -> Any:
        response = self.session.request(
            method, f"{self.root_url}/_standin{path}", json=json, timeout=timeout or self.timeout
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def seed(self, count: int, prefix: str = "user") -> dict[str, int]:
        """Create ``count`` deterministic users (``{prefix}000001@example.com``..., password ``Passw0rd!``)."""
        result: dict[str, int] = self._call("POST", "/seed", {"count": count, "prefix": prefix}, timeout=300)
        return result

    def create_user(self, username: str, password: str | None = None, **fields: Any) -> dict[str, Any]:
        """Create a user; ``fields``: email, given_name, family_name, groups, disabled, locked, id.

        Returns the SCIM resource.
        """
        result: dict[str, Any] = self._call("POST", "/users", {"username": username, "password": password, **fields})
        return result

    def update_user(self, user_id: str, **fields: Any) -> dict[str, Any]:
        """Change profile fields (given_name, family_name, email, username, groups, password)."""
        result: dict[str, Any] = self._call("PATCH", f"/users/{user_id}", fields)
        return result

    def disable(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/users/{user_id}/disable")
        return result

    def enable(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/users/{user_id}/enable")
        return result

    def lock(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/users/{user_id}/lock")
        return result

    def unlock(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/users/{user_id}/unlock")
        return result

    def delete(self, user_id: str) -> None:
        self._call("DELETE", f"/users/{user_id}")

    def end_sessions(self, user_id: str) -> int:
        """End every OIDC session of the user (``sessionRevoked`` is emitted, back-channel logouts are sent); returns
        how many ended."""
        return int(self._call("POST", f"/users/{user_id}/end-sessions")["ended"])

    def reset_password(self, user_id: str, password: str, action: str | None = None) -> dict[str, Any]:
        """An administrator's password reset (emits ``credentialUpdated``, action ``CREDENTIAL_RESET`` unless given)."""
        body: dict[str, Any] = {"password": password}
        if action is not None:
            body["action"] = action
        result: dict[str, Any] = self._call("POST", f"/users/{user_id}/reset-password", body)
        return result

    def create_role(self, name: str, **fields: Any) -> dict[str, Any]:
        """A role (``audience_type``, ``audience_value``, ``audience_display``, ``id`` optional)."""
        result: dict[str, Any] = self._call("POST", "/roles", {"name": name, **fields})
        return result

    def role_members(self, role_id: str, add: Any = (), remove: Any = ()) -> dict[str, Any]:
        """Add and remove members (emits ``roleUsersUpdated``; lists over 1,000 are cut in the event)."""
        result: dict[str, Any] = self._call(
            "PATCH", f"/roles/{role_id}/users", {"add": list(add), "remove": list(remove)}, timeout=120
        )
        return result

    def rename_role(self, role_id: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PATCH", f"/roles/{role_id}", {"name": name})
        return result

    def delete_role(self, role_id: str) -> None:
        self._call("DELETE", f"/roles/{role_id}")

    def fail_get(self, user_id: str, status: int = 404, times: int = 1) -> None:
        """Make the next ``times`` SCIM GETs of this user answer ``status`` (a false 404 once, by default)."""
        self._call("POST", f"/users/{user_id}/fail-get", {"status": status, "times": times})

    def set_subject_claim(self, claim: str) -> None:
        """What ID tokens carry as ``sub`` from now on: ``id`` (default), ``username`` or ``email``."""
        self._call("PUT", "/oidc", {"subject_claim": claim})

    def set_lastmodified_filter(self, mode: str) -> None:
        """How SCIM listings treat a ``meta.lastModified`` filter from now on: ``honour``, ``refuse`` or ``ignore``."""
        self._call("PUT", "/scim", {"lastmodified_filter": mode})

    def rotate_keys(self) -> str:
        """Rotate the signing key; the previous key stays in the JWKS. Returns the new ``kid``."""
        return str(self._call("POST", "/keys/rotate")["kid"])

    def dump(self) -> dict[str, Any]:
        """``{"users": [SCIM resources as listed], "deleted": [ids]}``."""
        result: dict[str, Any] = self._call("GET", "/dump", timeout=300)
        return result

    def set_chaos(
        self,
        seed: int = 0,
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        delay_ms_max: int = 0,
        reorder_rate: float = 0.0,
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "PUT",
            "/chaos",
            {
                "seed": seed,
                "drop_rate": drop_rate,
                "duplicate_rate": duplicate_rate,
                "delay_ms_max": delay_ms_max,
                "reorder_rate": reorder_rate,
            },
        )
        return result

    def set_webhook(self, url: str | None, secret: str | None = None, wait_verified: float = 0.0) -> dict[str, Any]:
        """Set the subscriber and start the WebSub handshake; optionally poll until verified (or time out)."""
        status: dict[str, Any] = self._call("PUT", "/webhook", {"url": url, "secret": secret})
        deadline = time.monotonic() + wait_verified
        while wait_verified and not status["verified"] and time.monotonic() < deadline:
            time.sleep(0.02)
            status = self.webhook_status()
        return status

    def webhook_status(self) -> dict[str, Any]:
        """Verification state and the delivery ledger (emitted, delivered, failed, dropped, ...)."""
        result: dict[str, Any] = self._call("GET", "/webhook")
        return result

    def wait_for_deliveries(self, timeout: float = 10.0) -> dict[str, Any]:
        """Block until the delivery queue is empty; the result's ``idle`` is False on timeout."""
        result: dict[str, Any] = self._call("POST", "/webhook/flush", {"timeout": timeout}, timeout=timeout + 10)
        return result

    def set_rate_limit(self, per_minute: int, window_seconds: float | None = None) -> int:
        """Change the per-IP budget (0 = off); resets every window."""
        body: dict[str, Any] = {"per_minute": per_minute}
        if window_seconds:
            body["window_seconds"] = window_seconds
        return int(self._call("PUT", "/ratelimit", body)["per_minute"])

    def stats(self) -> dict[str, Any]:
        """Request counts per route, the 429 count, back-channel logout and webhook counters."""
        result: dict[str, Any] = self._call("GET", "/stats")
        return result
