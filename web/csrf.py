"""Cross-site request forgery defence for the requests that the session cookie authenticates.

A browser attaches the ``SameSite=Lax`` cookie to a form post or a no-cors ``fetch`` from any *same-site* page (another
port of this host, or in production any sibling subdomain), so the cookie alone proves nothing about who asked.
Every POST, PUT, PATCH and DELETE that carries the session cookie (and no Bearer token) must therefore come with:

- an ``Origin`` header (or, when a browser sends none, a ``Referer``) whose origin is ``PUBLIC_BASE_URL``'s, and
- the session's CSRF token, as the form field ``csrf_token`` or the header ``X-CSRF-Token``.

Anything else is a 403 before the view runs, so nothing changes. Pages get the token from the Jinja global
``csrf_token()`` (forms) and from ``<meta name="csrf-token">`` in the layout (scripts send it as the header).

The token is an HMAC keyed by the session token itself: it differs per session, needs no storage and no shared
``SECRET_KEY`` between processes, and showing it in a page reveals nothing about the HttpOnly cookie it comes from.

Not covered, because no cookie authenticates them: Bearer clients (a browser never adds that header on its own),
the webhook intake (HMAC-signed by Asgardeo) and the back-channel logout (a token signed by the provider).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from urllib.parse import urlsplit

from flask import Flask, current_app, request

from models.settings import Settings
from web.errors import APIError

log = logging.getLogger(__name__)

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
# Server-to-server endpoints, authenticated by what they carry rather than by the cookie (see the module docstring).
EXEMPT_ENDPOINTS = frozenset({"webhooks.receive", "auth.backchannel_logout"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def init_app(app: Flask) -> None:
    """Check every unsafe request before its view, and give templates ``csrf_token()``."""
    app.before_request(_check_request)
    app.jinja_env.globals["csrf_token"] = csrf_token


def csrf_token() -> str:
    """This request's session's token, or ``""`` when no session cookie came (no form of such a page can post)."""
    cookie = _session_cookie()
    return token_for(cookie) if cookie else ""


def token_for(session_token: str) -> str:
    """The CSRF token of the session whose (raw) token is ``session_token``."""
    return hmac.new(session_token.encode(), b"csrf-token", hashlib.sha256).hexdigest()


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL, lower-cased, default port dropped; None if it has none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


def _settings() -> Settings:
    settings: Settings = current_app.config["SETTINGS"]
    return settings


def _session_cookie() -> str | None:
    """The session cookie when it is what authenticates this request: a Bearer header wins over it (see access)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return None
    return request.cookies.get(_settings().session_cookie_name) or None


def _check_request() -> None:
    if request.method not in UNSAFE_METHODS or request.endpoint in EXEMPT_ENDPOINTS:
        return
    cookie = _session_cookie()
    if cookie is None:
        return
    expected_origin = origin_of(_settings().public_base_url)
    sent_origin = request.headers.get("Origin")
    if sent_origin is None:
        sent_origin = request.headers.get("Referer")
    if sent_origin is None or origin_of(sent_origin) != expected_origin:
        _refuse(
            "cross_origin", "This request must come from this application's own pages.", origin=sent_origin or "none"
        )
    sent_token = request.headers.get(HEADER) or request.form.get(FORM_FIELD) or ""
    if not hmac.compare_digest(sent_token.encode(), token_for(cookie).encode()):
        _refuse("csrf_token_invalid", "The form is out of date or was not sent by this application: reload the page.")


def _refuse(error: str, detail: str, *, origin: str | None = None) -> None:
    # The origin a browser sent is a site name, not personal data; the token and cookie are never logged.
    log.warning(
        "csrf refused",
        extra={"error": error, "path": request.path, "method": request.method, "origin": (origin or "")[:200]},
    )
    raise APIError(403, error, detail)
