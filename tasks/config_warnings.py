"""Configuration warnings: something the operator must fix, seen by a worker, shown on the sync-health page.

A warning is a log line, a counter (``asgardeo_sync_config_warnings_total{code}``) and an entry in a Redis hash
(one per code: the message, how often, when last), so every process reports to the same page. Messages name
settings and counts, never a user's data. Recording is best effort: a Redis outage loses the page entry, not the
log line.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from tasks import metrics
from tasks.redis_client import get_redis, key

log = logging.getLogger(__name__)

LOGIN_SUBJECT_UNRESOLVED = "login_subject_unresolved"
DIRECTORY_UNUSABLE = "directory_unusable"
LAST_ADMIN_KEPT = "last_admin_kept"
MESSAGES = {
    DIRECTORY_UNUSABLE: (
        "The directory's SCIM API could not be used (not configured, credentials refused, or an unreadable answer), "
        "so users are neither refreshed nor linked and the nightly run cannot confirm anyone. Check "
        "ASGARDEO_BASE_URL, SCIM_CLIENT_ID and SCIM_CLIENT_SECRET; the failed runs say more. Nobody was retired."
    ),
    LAST_ADMIN_KEPT: (
        "Asgardeo took away the role that grants admin here (ROLE_MAP) from the last active admin, so the admin role "
        "was kept: nobody else could undo it. Grant admin to someone else first; the user's history shows the event."
    ),
    LOGIN_SUBJECT_UNRESOLVED: (
        "A login's subject (the ID token's sub) matched no directory user, so that person's row is not linked to "
        "the directory. Check OIDC_SUBJECT_ATTRIBUTE (id, username or email) against the subject the application "
        "issues. Nobody was retired."
    ),
}


def record_warning(code: str, **ids: Any) -> None:
    """Report the warning ``code`` (a key of :data:`MESSAGES`); ``ids`` (local ids only) go to the log line."""
    message = MESSAGES[code]
    log.warning(message, extra={"warning": code, **ids})
    metrics.inc("config_warnings", code=code)
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.hincrby(key(f"config:warning:{code}"), "count", 1)
        pipe.hset(key(f"config:warning:{code}"), "last_at", str(time.time()))
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not record the configuration warning", extra={"error": type(exc).__name__})


def warnings() -> dict[str, dict[str, Any]]:
    """``{code: {"message", "count", "last_at" (epoch s)}}``; empty when none was recorded or Redis is away."""
    found: dict[str, dict[str, Any]] = {}
    try:
        for code, message in MESSAGES.items():
            raw: dict[bytes, bytes] = get_redis().hgetall(key(f"config:warning:{code}"))  # type: ignore[assignment]
            if raw:
                found[code] = {"message": message, "count": int(raw[b"count"]), "last_at": float(raw[b"last_at"])}
    except (redis.RedisError, KeyError, ValueError):
        return found
    return found
