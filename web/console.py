"""What every console page shares: the navigation, the words filters, and the form helpers.

The console is server-rendered Jinja over the admin API's own rules; its scripts live in ``web/static`` (no inline
script or handler, so a strict Content-Security-Policy holds).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from web import wording
from web.errors import APIError

# (section key, link text, endpoint) in the order the navigation shows them.
SECTIONS = (
    ("users", "Users", "admin.list_users"),
    ("sync", "Sync", "console_sync.page"),
    ("inbox", "Inbox", "admin_inbox.list_events"),
    ("live", "Live", "live.live_users"),
    ("health", "Sync health", "sync_health.page"),
)
_PREFIXES = (
    ("/admin/users", "users"),
    ("/admin/sync", "sync"),
    ("/admin/events", "inbox"),
    ("/admin/live", "live"),
    ("/admin/health", "health"),
    ("/profile", "profile"),
    ("/api-docs", "api"),
)


def _navigation() -> dict[str, Any]:
    """Which section the page belongs to, so the navigation marks it (``aria-current="page"``)."""
    section = next((key for prefix, key in _PREFIXES if request.path.startswith(prefix)), None)
    return {"section": section, "console_sections": SECTIONS}


def form_text(name: str, *, max_length: int = 200) -> str:
    """A posted form field, bounded; a missing or oversized one is a 400 that names it."""
    value = request.form.get(name)
    if value is None:
        raise APIError(400, "invalid_form", f"the form must send {name}")
    if len(value) > max_length:
        raise APIError(400, "invalid_form", f"{name} is longer than {max_length} characters")
    return value


def init_app(app: Flask) -> None:
    app.context_processor(_navigation)
    app.add_template_filter(wording.describe_change, "change_words")
    app.add_template_filter(wording.describe_source, "source_words")
    app.add_template_filter(wording.when, "at")
    app.add_template_filter(wording.when_iso, "iso_at")
    app.add_template_global(wording.duration, "duration")
