"""Prometheus endpoint of the web tier, built with prometheus_client.

Two kinds of numbers: counters and histograms that every process records in Redis (tasks/metrics.py), and gauges
read from PostgreSQL at scrape time (inbox backlog, failures, apply lag, last reconciliation, active sessions), so
any web process answers for the whole deployment. When ``METRICS_TOKEN`` is set the endpoint wants it as a Bearer;
production refuses to start without it unless ``METRICS_PUBLIC=true`` says the numbers may be read by anyone.
"""

from __future__ import annotations

import hmac
import logging
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from models.db import unit_of_work
from models.health_figures import service_gauges
from models.settings import Settings
from models.tables import EVENT_STATUSES
from tasks.metrics import parse_field, read_all
from tasks.staleness import staleness
from web.errors import APIError

bp = Blueprint("metrics", __name__)
log = logging.getLogger(__name__)
PREFIX = "asgardeo_sync_"

COUNTERS = {
    "webhooks_received": "Webhook deliveries accepted into the inbox",
    "webhooks_duplicate": "Webhook deliveries whose jti was already in the inbox",
    "webhooks_jti_conflicts": "Deliveries that reused a stored jti with a different body (not applied)",
    "webhooks_rejected": "Webhook deliveries refused, by reason",
    "events_applied": "Inbox events applied by workers, by outcome",
    "identity_events": "Asgardeo login and token events recorded, by event type",
    "scim_requests": "Requests to Asgardeo's SCIM2 and OAuth2 APIs, by status",
    "scim_throttled": "HTTP 429 answers from Asgardeo",
    "rate_budget_waits": "Times a caller waited for the shared SCIM rate budget",
    "rate_budget_wait_seconds": "Seconds spent waiting for the shared SCIM rate budget",
    "housekeeping_removed": "Rows removed by housekeeping under the retention settings, by kind",
    "housekeeping_runs": "Housekeeping runs, by status (done, partial, refused)",
    "config_warnings": "Configuration problems seen by workers, by code (see the sync-health page)",
    "drift_checked": "Users the drift check fetched from SCIM and compared with the table",
    "drift_differences": "Users the drift check found different from the directory (and repaired), by kind",
}
HISTOGRAMS = {"webhook_intake_seconds": "Time to accept one webhook delivery (verify, store, enqueue)"}


class ServiceCollector(Collector):
    """Builds every family on each scrape; nothing is cached in the process."""

    def collect(self) -> Iterator[Any]:
        yield from self._redis_series()
        yield from self._database_gauges()
        yield from self._staleness_gauges()

    def _staleness_gauges(self) -> Iterator[Any]:
        """The drift check's last figures and the oldest confirmation (see tasks/staleness.py)."""
        try:
            with unit_of_work() as session:
                found = staleness(session)
        except Exception as exc:
            log.warning("metrics: staleness unreadable", extra={"error": type(exc).__name__})
            return
        drift = found["drift"] or {}
        yield GaugeMetricFamily(
            PREFIX + "drift_share",
            "Share of the users in the last drift check that differed from the directory",
            value=float(drift.get("share", 0.0)),
        )
        yield GaugeMetricFamily(
            PREFIX + "drift_oldest_difference_seconds",
            "How long ago the directory made the oldest change the last drift check found missing (0: none)",
            value=float(drift.get("oldest_difference_seconds", 0.0)),
        )
        oldest = found["oldest_confirmed_at"]
        yield GaugeMetricFamily(
            PREFIX + "oldest_confirmation_age_seconds",
            "Time since the least recently confirmed live user was last compared with the directory",
            value=(datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds() if oldest else 0.0,
        )
        yield GaugeMetricFamily(
            PREFIX + "users_never_confirmed",
            "Live users never compared with the directory",
            value=found["never_confirmed"],
        )

    def _redis_series(self) -> Iterator[Any]:
        try:
            series = read_all()
        except Exception as exc:
            log.warning("metrics: redis unreadable", extra={"error": type(exc).__name__})
            return
        grouped: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for field, value in series.items():
            name, labels = parse_field(field)
            grouped[name].append((labels, value))
        for name, help_text in COUNTERS.items():
            label_names = sorted({k for labels, _ in grouped.get(name, []) for k in labels})
            family = CounterMetricFamily(PREFIX + name, help_text, labels=label_names)
            for labels, value in grouped.get(name, []):
                family.add_metric([labels.get(k, "") for k in label_names], value)
            yield family
        for name, help_text in HISTOGRAMS.items():
            buckets = sorted(
                ((labels["le"], value) for labels, value in grouped.get(f"{name}_bucket", [])),
                key=lambda b: float(b[0]),
            )
            total = sum(v for _, v in grouped.get(f"{name}_sum", []))
            histogram = HistogramMetricFamily(PREFIX + name, help_text)
            if buckets:
                histogram.add_metric([], buckets, total)
            yield histogram

    def _database_gauges(self) -> Iterator[Any]:
        try:
            with unit_of_work() as session:
                row = service_gauges(session)
        except Exception as exc:
            log.warning("metrics: postgres unreadable", extra={"error": type(exc).__name__})
            return
        backlog = GaugeMetricFamily(PREFIX + "inbox_events", "Inbox events by status", labels=["status"])
        counts = row["backlog"] or {}
        for status in EVENT_STATUSES:
            backlog.add_metric([status], counts.get(status, 0))
        yield backlog
        yield GaugeMetricFamily(
            PREFIX + "failed_events", "Events that gave up and wait for an admin", value=counts.get("failed", 0)
        )
        yield GaugeMetricFamily(
            PREFIX + "inbox_oldest_pending_seconds",
            "Age of the oldest unapplied event",
            value=float(row["oldest_pending_seconds"] or 0),
        )
        yield GaugeMetricFamily(
            PREFIX + "apply_lag_seconds",
            "Mean receipt-to-applied time over 5 minutes",
            value=float(row["apply_lag_seconds"] or 0),
        )
        yield GaugeMetricFamily(PREFIX + "active_sessions", "Live application sessions", value=row["active_sessions"])
        last = row["last_reconcile"]
        if last:
            yield GaugeMetricFamily(
                PREFIX + "last_reconcile_timestamp_seconds",
                "When the last successful full reconciliation finished",
                value=last["finished"],
            )
            yield GaugeMetricFamily(
                PREFIX + "last_reconcile_duration_seconds", "How long it took", value=last["duration"]
            )
            outcome = GaugeMetricFamily(PREFIX + "last_reconcile_users", "Its counters", labels=["outcome"])
            for name in ("seen", "created", "updated", "unchanged", "deactivated", "failed"):
                outcome.add_metric([name], last[name])
            yield outcome


_registry = CollectorRegistry(auto_describe=False)
_registry.register(ServiceCollector())


@bp.get("/metrics")
def metrics() -> Response:
    settings: Settings = current_app.config["SETTINGS"]
    if settings.metrics_token:
        expected = f"Bearer {settings.metrics_token.get_secret_value()}"
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected.encode()):
            raise APIError(
                401,
                "unauthenticated",
                "send the metrics token as a Bearer",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    return Response(generate_latest(_registry), mimetype="text/plain; version=0.0.4")
