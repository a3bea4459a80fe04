"""The wall clock in epoch milliseconds, the unit Asgardeo's times come in (a webhook's ``iat``, SCIM's
``meta.lastModified`` kept as ``source_version``): the stale guard and the age checks compare our times with those.

Here, beneath web and tasks, because both read the clock; it imports nothing of the service.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    """Now, in whole milliseconds since the epoch (integer nanoseconds divided, so no float rounding)."""
    return time.time_ns() // 1_000_000


def iso_ms(epoch_ms: int) -> str:
    """An instant as SCIM writes one: ``2026-11-30T09:00:00.000Z``."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
