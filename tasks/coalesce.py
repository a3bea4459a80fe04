"""Coalesced single-user refreshes: many triggers for one user within a short window cost one SCIM call.

Webhook deltas and logins both ask for a refresh of a user from SCIM. A Redis ``SET NX`` with a time-to-live makes
the first request in a window enqueue the ``users.sync`` task and the rest do nothing; the window is
``REFRESH_COALESCE_SECONDS``. The task runs after the window's first trigger, so it sees every change up to then, and
a change that lands later opens a new window.
"""

from __future__ import annotations

import contextlib
import logging

import redis

from models.settings import get_settings
from tasks.app import app, broker_countdown
from tasks.redis_client import get_redis, key

log = logging.getLogger(__name__)

SYNC_USER_TASK = "users.sync"


def request_user_refresh(asgardeo_id: str, *, trigger: str) -> bool:
    """Enqueue a SCIM refresh of one user unless one was requested within the window. True when enqueued.

    If Redis cannot be asked, the refresh is enqueued anyway: a duplicate refresh is harmless, a missed one is not.
    The broker's error, when it refuses the task, goes to the caller, and the window is released.
    """
    window = get_settings().refresh_coalesce_seconds
    claimed = None
    if window > 0:
        claimed = key(f"refresh:{asgardeo_id}")
        try:
            if not get_redis().set(claimed, trigger, nx=True, px=int(window * 1000)):
                return False
        except redis.RedisError:
            claimed = None
    try:
        app.send_task(
            SYNC_USER_TASK,
            args=[asgardeo_id],
            kwargs={"trigger": trigger},
            countdown=broker_countdown(window),
        )
    except Exception:
        # The window must not swallow the caller's next try (an event's retry) for a refresh that never left.
        if claimed is not None:
            with contextlib.suppress(redis.RedisError):
                get_redis().delete(claimed)
        raise
    log.info("user refresh requested", extra={"user_id": asgardeo_id, "trigger": trigger})
    return True
