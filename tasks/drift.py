"""The drift check: every minute a few users are fetched from SCIM and compared with the table; what differs is
repaired at once, and how much differed is measured.

Which users: the ``DRIFT_SAMPLE_PER_MINUTE`` live users least recently confirmed (``users.last_synced_at``, set
whenever the directory's version of the user was written or found equal: by a full run, a sweep, a webhook's refresh
or this check), so the sample walks the whole table before it repeats: at 20 a minute, 10,000 users are each checked
about three times a day.

Each user is one GET through the shared rate budget, then the same upsert a full run does (stale guard, audit, live
stream, sessions of a user who lost access revoked), which says whether anything differed. A user the GET answers 404
for is not retired on that alone (a single background 404 is no evidence, see the identity model): the check asks
the listing (``userName eq``) and GETs once more; only when the listing does not show the user and the second GET is
a 404 too is the user retired by absence, the evidence a full run uses. At most ``RECONCILE_MAX_DEACTIVATE_SHARE`` of
the users are retired by one check.

The last check's figures are kept in Redis (the metrics endpoint and the sync-health page read them) and counted
(``asgardeo_sync_drift_checked_total``, ``asgardeo_sync_drift_differences_total{kind}``). One check at a time: a
check still running when the next is due makes the next one skip.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from models.clock import now_ms
from models.db import unit_of_work
from models.settings import get_settings
from models.users import least_recently_confirmed, retire_absent, retire_limit, upsert_users
from tasks import metrics
from tasks.app import app
from tasks.errors import DirectoryError, UserGone
from tasks.live import publish_changes, publish_encoded
from tasks.redis_client import get_redis, key
from tasks.scim import ScimClient

log = logging.getLogger(__name__)

SOURCE = "drift"
LAST_KEY = "drift:last"
RUNNING_KEY = "drift:running"
# Longer than any check can take (a sample of 200 inside the rate budget), shorter than a few periods.
RUNNING_TTL_SECONDS = 150


@dataclass
class DriftCheck:
    """One check's figures. ``share`` is ``differing / checked``; ``oldest_difference_seconds`` how long ago the
    directory made the oldest change the table was found missing (0 when nothing differed)."""

    at: float
    sampled: int = 0
    checked: int = 0
    differing: int = 0
    missing: int = 0
    retired: int = 0
    failed: int = 0
    share: float = 0.0
    oldest_difference_seconds: float = 0.0


def _sample(size: int) -> list[tuple[str, str]]:
    with unit_of_work() as session:
        return least_recently_confirmed(session, size)


def _retire_limit() -> int:
    """How many users one check may retire: ``RECONCILE_MAX_DEACTIVATE_SHARE`` of those not deleted."""
    with unit_of_work() as session:
        return retire_limit(session, get_settings().reconcile_max_deactivate_share).allowed


def _confirmed_gone(scim: ScimClient, asgardeo_id: str, username: str) -> bool:
    """The confirm path after a 404: the listing must not show the user, and a second GET must be a 404 too."""
    listed = scim.find_users("userName", username, limit=2)
    if any(user.asgardeo_id == asgardeo_id for user in listed):
        return False
    try:
        scim.get_user(asgardeo_id)
    except UserGone:
        return True
    return False


def _missing(
    scim: ScimClient, result: DriftCheck, asgardeo_id: str, username: str, asked_ms: int, allowed: int
) -> None:
    """A GET answered 404: retire the user only through the confirm path, and within the guard."""
    result.missing += 1
    try:
        gone = _confirmed_gone(scim, asgardeo_id, username)
    except (ValueError, DirectoryError):
        result.failed += 1
        return
    result.checked += 1
    if not gone:
        return
    if result.retired >= allowed:
        log.warning("drift check: guard reached, a user confirmed gone is left for the full run")
        return
    with unit_of_work() as session:
        change = retire_absent(session, asgardeo_id, asked_ms=asked_ms, source=SOURCE, run_id=None)
    if change is not None:
        result.retired += 1
        result.differing += 1
        publish_changes([change])


def check_drift(size: int, *, client: ScimClient | None = None) -> DriftCheck:
    """Fetch ``size`` users, repair what differs, return (and keep) the figures. Safe to re-run."""
    started_ms = now_ms()
    result = DriftCheck(at=started_ms / 1000)
    sample = _sample(size)
    result.sampled = len(sample)
    if not sample:
        return _keep(result)
    scim = client or ScimClient()
    role_map = get_settings().group_roles or None
    # The guard's limit needs a count of every user; it is taken only once a user is missing, not every minute.
    allowed: int | None = None
    oldest_ms: int | None = None
    for asgardeo_id, username in sample:
        asked_ms = now_ms()
        try:
            record = scim.get_user(asgardeo_id)
        except UserGone:
            if allowed is None:
                allowed = _retire_limit()
            _missing(scim, result, asgardeo_id, username, asked_ms, allowed)
            continue
        except (ValueError, DirectoryError) as exc:
            result.failed += 1
            log.warning("drift check could not fetch a user", extra={"error": type(exc).__name__})
            continue
        with unit_of_work() as session:
            written = upsert_users(session, [record], source=SOURCE, role_map=role_map, stamp_seen=False)
        result.checked += 1
        if written.created or written.updated:
            result.differing += 1
            oldest_ms = record.source_version if oldest_ms is None else min(oldest_ms, record.source_version)
            publish_encoded(written.encoded_changes, written.created + written.updated)
    if result.checked:
        result.share = result.differing / result.checked
    if oldest_ms is not None:
        result.oldest_difference_seconds = max(0.0, (started_ms - oldest_ms) / 1000)
    metrics.inc("drift_checked", result.checked)
    if result.differing:
        metrics.inc("drift_differences", result.differing - result.retired, kind="changed")
        metrics.inc("drift_differences", result.retired, kind="missing")
        log.warning("drift found and repaired", extra={"differing": result.differing, "retired": result.retired})
    return _keep(result)


def _keep(result: DriftCheck) -> DriftCheck:
    get_redis().set(key(LAST_KEY), orjson.dumps(asdict(result)))
    return result


def last_check() -> dict[str, Any] | None:
    """The last check's figures (see :class:`DriftCheck`), or None before the first."""
    raw = get_redis().get(key(LAST_KEY))
    return dict(orjson.loads(raw)) if raw else None


@app.task(
    name="reconcile.drift_check",
    acks_late=True,
    # Above the default limits for short tasks: a sample of 200 inside the rate budget takes a minute or more.
    soft_time_limit=RUNNING_TTL_SECONDS - 40,
    time_limit=RUNNING_TTL_SECONDS - 20,
)
def drift_check_task() -> dict[str, Any]:
    """Beat sends it every minute. Not retried (the next minute checks again); skipped while one still runs."""
    size = get_settings().drift_sample_per_minute
    redis = get_redis()
    if size <= 0 or not redis.set(key(RUNNING_KEY), "1", nx=True, ex=RUNNING_TTL_SECONDS):
        return {"status": "skipped"}
    try:
        return {"status": "checked", **asdict(check_drift(size))}
    except DirectoryError as exc:
        log.warning("drift check failed", extra={"error": type(exc).__name__})
        return {"status": "failed"}
    finally:
        redis.delete(key(RUNNING_KEY))
