"""Faults a skeptical operator would inject, each against a whole pipeline of real processes (see conftest.py).

After each: no accepted event lost (every inbox row applied), no user duplicated, no ``received`` event left once
the relay has run, and every failure that exhausted its retries visible through the admin API.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import delete, func, select, text

from localrun.embedded import EmbeddedRedis
from tests.chaos.conftest import Pipeline, duplicate_usernames, inbox_counts, mismatches
from tests.chaos.tcp_proxy import TcpProxy
from tests.polling import wait_for
from tests.webhook_payloads import claims, encode, event, signed_headers

pytestmark = pytest.mark.slow


def created_audits() -> dict[str, int]:
    """How many ``created`` audit entries each user has: exactly one when every creation applied exactly once."""
    from models.db import unit_of_work
    from models.tables import UserChange

    with unit_of_work() as session:
        rows = session.execute(
            select(UserChange.asgardeo_id, func.count())
            .where(UserChange.action == "created")
            .group_by(UserChange.asgardeo_id)
        ).all()
    return {asgardeo_id: int(count) for asgardeo_id, count in rows}


def inbox_errors() -> list[tuple[str, int, str | None]]:
    """Each unfinished or failed event's status, attempts and last error, for a failure message to show."""
    from models.db import unit_of_work
    from models.tables import WebhookEvent

    with unit_of_work() as session:
        rows = session.execute(
            select(WebhookEvent.status, WebhookEvent.attempts, WebhookEvent.last_error).where(
                WebhookEvent.status.not_in(("applied", "ignored"))
            )
        ).all()
    return [(status, int(attempts), error) for status, attempts, error in rows]


def applied_count() -> int:
    return inbox_counts().get("applied", 0)


def assert_nothing_lost(pipeline: Pipeline, extra_accepted: int = 0) -> None:
    """Every delivery the stand-in saw accepted (no chaos here, so no duplicates) plus ``extra_accepted`` hand-made
    ones is one inbox row, and every row is done; no live user twice."""
    counts = inbox_counts()
    accepted = pipeline.admin.webhook_status()["delivered"] + extra_accepted
    assert set(counts) <= {"applied", "ignored"}, (counts, inbox_errors())
    assert sum(counts.values()) == accepted, (counts, accepted)
    assert duplicate_usernames() == []


def create_users(pipeline: Pipeline, prefix: str, count: int) -> list[str]:
    directory = pipeline.standin.directory
    return [
        directory.create_user(f"{prefix}{i:04d}@example.com", email=f"{prefix}{i:04d}@example.com", given_name="F").id
        for i in range(count)
    ]


def admin_runs(client: FlaskClient, make_signed_in_user: Callable[..., tuple[int, str]]) -> dict[int, Any]:
    """``GET /admin/sync/runs`` as an admin made just for it (and removed after: a reconciliation would retire a
    local admin the stand-in does not know, and the comparison would count it)."""
    from models.db import unit_of_work
    from models.tables import AppSession, User

    user_id, token = make_signed_in_user(role="admin")
    try:
        response = client.get("/admin/sync/runs?limit=100", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        return {run["id"]: run for run in response.get_json()["runs"]}
    finally:
        with unit_of_work() as session:
            session.execute(delete(AppSession).where(AppSession.user_id == user_id))
            session.execute(delete(User).where(User.id == user_id))


# --- (a) a worker SIGKILLed again and again during a burst ---------------------------------------------------------


def test_worker_killed_repeatedly_during_a_burst_applies_every_event_exactly_once(
    make_pipeline: Callable[..., Pipeline],
) -> None:
    pipeline = make_pipeline()
    pipeline.subscribe()
    assert pipeline.worker is not None
    ids = create_users(pipeline, "burst", 400)  # 800 deliveries, sent one by one as fast as the intake answers
    kills = 0
    for _ in range(3):
        floor = applied_count()
        # Kill while it is busy: some events applied since the last start, more still coming.
        wait_for(lambda f=floor: applied_count() >= f + 40, 60, "the worker to apply some events")
        pipeline.worker.kill()
        kills += 1
        pipeline.worker.start()
        pipeline.broker.wait_ready(process=pipeline.worker)
    # Messages the killed workers held stay unacknowledged for the visibility timeout; the relay re-sends their
    # events (EVENT_REQUEUE_AFTER_SECONDS=3 here), so the drain ignores the broker's unacked set.
    pipeline.drain(timeout=120, relay_every=2.0, include_unacked=False)

    status = pipeline.admin.webhook_status()
    assert kills == 3
    assert status["failed"] == 0
    assert status["delivered"] == 800
    assert_nothing_lost(pipeline)
    audits = created_audits()
    assert sorted({audits.get(i) for i in ids}, key=str) == [1], {i: audits.get(i) for i in ids if audits.get(i) != 1}
    assert mismatches(pipeline.admin.dump()) == []


# --- (b) Redis restarted during intake -----------------------------------------------------------------------------


def test_events_accepted_while_redis_is_down_wait_as_received_and_the_relay_sends_them(
    make_pipeline: Callable[..., Pipeline], tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", persistent=True)
    url = server.start()
    try:
        pipeline = make_pipeline(REDIS_URL=url)
        pipeline.subscribe()
        create_users(pipeline, "before", 20)
        pipeline.drain(timeout=60)
        port = server.port
        server.stop()

        during = create_users(pipeline, "during", 25)  # 50 deliveries
        pipeline.admin.wait_for_deliveries(timeout=60)
        assert pipeline.admin.webhook_status()["failed"] == 0
        from tests.chaos.conftest import local_users

        if not pipeline.broker.on_rabbitmq:
            # Accepted (2xx) while the broker is down: stored, and left ``received`` for the relay. (With RabbitMQ
            # as the broker, Redis down leaves the broker up: the events may apply at once; nothing may be lost.)
            wait_for(lambda: inbox_counts().get("received", 0) == 50, 30, "50 events left received")
            time.sleep(1.0)
            assert inbox_counts().get("received", 0) == 50
            assert not set(during) & set(local_users())

        server = EmbeddedRedis(tmp_path / "redis", preferred_port=port, persistent=True)
        assert server.start() == url
        pipeline.drain(timeout=90, relay_every=2.0)
        assert_nothing_lost(pipeline)
        assert set(during) <= set(local_users())
        assert mismatches(pipeline.admin.dump()) == []
    finally:
        server.stop()


# --- (c) Postgres unreachable for a while --------------------------------------------------------------------------


def test_intake_answers_503_while_postgres_is_unreachable_and_reconciliation_repairs_what_the_sender_gave_up(
    make_pipeline: Callable[..., Pipeline], services: Any
) -> None:
    from sqlalchemy.engine import make_url

    pg_port = make_url(services.database_url).port
    proxy = TcpProxy(pg_port)
    proxy.start()
    try:
        pipeline = make_pipeline(DATABASE_URL=proxy.url_for(services.database_url))
        pipeline.subscribe()
        create_users(pipeline, "pre", 20)
        pipeline.drain(timeout=60)

        proxy.cut()
        body = event("userCreated", claims=claims(username="probe@example.com"))
        raw = encode(body)
        answer = requests.post(pipeline.hook_url, data=raw, headers=signed_headers(raw), timeout=10)
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "5"
        assert answer.json()["error"] == "inbox_unavailable"
        lost = create_users(pipeline, "cut", 15)  # 30 deliveries, each retried 3 times by the sender, then given up
        status = pipeline.admin.wait_for_deliveries(timeout=60)
        assert status["failed"] == 30
        assert status["retries"] >= 90
        proxy.restore()

        # The same body again once Postgres is back: accepted (it was never stored).
        again = requests.post(pipeline.hook_url, data=raw, headers=signed_headers(raw), timeout=10)
        assert again.status_code == 202
        pipeline.drain(timeout=60, relay_every=2.0)
        assert_nothing_lost(pipeline, extra_accepted=1)
        before = mismatches(pipeline.admin.dump())
        assert sum("missing locally" in line for line in before) == len(lost)

        outcome = pipeline.reconcile()
        assert outcome.status == "succeeded"
        assert outcome.counters.created == len(lost)
        assert [m for m in mismatches(pipeline.admin.dump()) if "unknown to the directory" not in m] == []
    finally:
        proxy.stop()


# --- (d) the directory answers 5xx and 429 storms and times out -----------------------------------------------------


def scim_client(base_url: str, *, max_attempts: int) -> Any:
    from tasks.ratelimit import BucketShape, RateBudget
    from tasks.redis_client import get_redis, key
    from tasks.scim import ScimClient
    from tests.stack import M2M_CLIENT_ID, M2M_CLIENT_SECRET

    budget = RateBudget(
        get_redis(), key(f"chaos-bucket:{uuid.uuid4().hex}"), BucketShape.for_limit(100_000), max_wait=30
    )
    return ScimClient(
        base_url,
        M2M_CLIENT_ID,
        M2M_CLIENT_SECRET,
        budget=budget,
        timeout=0.5,
        max_attempts=max_attempts,
        backoff_base=0.01,
        backoff_cap=0.2,
        page_size=20,  # 30 pages for 600 users: enough requests for every kind of fault
    )


def run_user_sync(pipeline: Pipeline, asgardeo_id: str, **options: Any) -> Any:
    """Send ``users.sync`` to the pipeline's worker and wait for its run row to finish (it keeps no result)."""
    from models.db import unit_of_work
    from models.tables import SyncRun

    pipeline.broker.send("users.sync", asgardeo_id, kwargs={"trigger": "chaos"}, **options)

    def finished() -> Any:
        with unit_of_work() as session:
            return session.execute(
                select(SyncRun).where(
                    SyncRun.kind == "user", SyncRun.asgardeo_id == asgardeo_id, SyncRun.status != "running"
                )
            ).scalar_one_or_none()

    return wait_for(finished, 90, f"users.sync of {asgardeo_id} to finish")


def test_reconciliation_and_user_sync_ride_out_5xx_429_and_timeouts_and_report_what_gave_up(
    make_pipeline: Callable[..., Pipeline], client: FlaskClient, make_signed_in_user: Callable[..., tuple[int, str]]
) -> None:
    from tasks.reconcile import reconcile_all
    from tests.integration.sync_support import start_run

    pipeline = make_pipeline(web=False, front=True, SCIM_MAX_ATTEMPTS="6", SCIM_HTTP_TIMEOUT_SECONDS="0.5")
    front = pipeline.front
    assert front is not None
    front.hang_seconds = 1.0
    directory = pipeline.standin.directory
    directory.seed(600, prefix="storm")

    # A storm: 45% of requests fail one way or another; every call still gets through within its attempts.
    front.set_faults(error=0.25, throttle=0.15, hang=0.05)
    outcome = reconcile_all(start_run("storm"), client=scim_client(front.base_url, max_attempts=12))
    assert outcome.status == "succeeded"
    assert mismatches(pipeline.admin.dump()) == []
    target = directory.all_users()[0].id
    directory.update_profile(target, {"given_name": "Stormy"})
    synced = run_user_sync(pipeline, target)
    assert synced.status == "succeeded"
    assert mismatches(pipeline.admin.dump()) == []
    assert min(front.injected["5xx"], front.injected["429"], front.injected["hang"]) > 0

    # An outage: everything answers 503. The run fails, deactivates nobody and says why; the user sync's last
    # retry (sent as such: the real backoff would take a minute) gives up and says so.
    front.set_faults(error=1.0)
    directory.delete_user(target)
    failed = reconcile_all(start_run("outage"), client=scim_client(front.base_url, max_attempts=3))
    assert failed.status == "failed"
    from tasks.users import MAX_RETRIES

    gave_up = run_user_sync(pipeline, directory.all_users()[1].id, retries=MAX_RETRIES)
    assert gave_up.status == "failed"
    from tests.chaos.conftest import local_users

    assert all(u["status"] == "active" for u in local_users().values()), "a failed run retired someone"

    runs = admin_runs(client, make_signed_in_user)
    assert runs[failed.run_id]["status"] == "failed"
    assert "listing incomplete, nobody deactivated" in runs[failed.run_id]["error"]
    assert runs[gave_up.id]["status"] == "failed"
    assert runs[gave_up.id]["error"].startswith("gave up")

    # Once the directory is back, one run repairs everything, the deletion included.
    front.set_faults()
    assert pipeline.reconcile().status == "succeeded"
    assert mismatches(pipeline.admin.dump()) == []


def test_events_the_worker_could_not_apply_while_postgres_was_away_are_relayed_and_applied(
    make_pipeline: Callable[..., Pipeline], services: Any
) -> None:
    """The worker (alone) loses Postgres: its events exhaust their retries without being able to record even that,
    so they stay ``queued``; once Postgres is back the relay re-sends them and every one applies.

    Two retries with short backoff make giving up take seconds. With one, a transient error just after Postgres
    returned (not a connection error) marked an event ``failed`` on a loaded machine, which is what that setting
    means for an error about the work. The waits count
    queued messages, not those a worker holds unacknowledged: on a loaded CI machine the worker once held one
    message unacknowledged for over 60 s after every event had applied (cause not yet known). The ledger and the
    audit trail below still prove every event applied exactly once.
    """
    from sqlalchemy.engine import make_url

    proxy = TcpProxy(make_url(services.database_url).port)
    proxy.start()
    try:
        pipeline = make_pipeline(worker=False)
        worker = pipeline.start_worker(
            DATABASE_URL=proxy.url_for(services.database_url),
            EVENT_MAX_RETRIES="2",
            EVENT_RETRY_BACKOFF_MAX_SECONDS="1",
        )
        pipeline.subscribe()
        proxy.cut()
        ids = create_users(pipeline, "nodb", 5)  # 10 deliveries, accepted: the web tier still reaches Postgres
        assert pipeline.admin.wait_for_deliveries(timeout=30)["failed"] == 0
        wait_for(lambda: inbox_counts() == {"queued": 10}, 30, "10 stored events")
        # Each message: one attempt, two retries, then given up (the failure itself could not be written). Unacked
        # messages count here: a retry the worker has taken and not yet run is unacknowledged, and one that ran just
        # as Postgres came back recorded its event as failed (CI, RabbitMQ pass, 2026-12-07).
        try:
            wait_for(
                lambda: pipeline.broker.backlog(include_unacked=True) == 0,
                90,
                "the worker to give up on every message",
                0.2,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; queues {pipeline.broker.depths()}\n{worker.log_tail(150)}") from exc
        assert inbox_counts() == {"queued": 10}
        proxy.restore()
        try:
            pipeline.drain(timeout=90, relay_every=2.0, include_unacked=False)
            assert_nothing_lost(pipeline)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{worker.log_tail(150)}") from exc
        assert all(created_audits().get(i) == 1 for i in ids)
        assert mismatches(pipeline.admin.dump()) == []
    finally:
        proxy.stop()


# --- (e) the worker running a reconciliation killed mid-run -------------------------------------------------------


def test_reconciliation_killed_mid_run_is_detected_as_abandoned_and_a_new_run_completes(
    make_pipeline: Callable[..., Pipeline], client: FlaskClient, make_signed_in_user: Callable[..., tuple[int, str]]
) -> None:
    from models.db import get_engine, unit_of_work
    from models.runs import lock_holder_exists, running_full_run

    # 240 requests a minute: the 4,000-user listing takes about ten seconds, long enough to be killed in.
    pipeline = make_pipeline(web=False, SCIM_RATE_PER_MINUTE="240")
    assert pipeline.worker is not None
    pipeline.standin.directory.seed(4000, prefix="killed")
    pipeline.broker.send("reconcile.run", kwargs={"trigger": "beat"})

    def mid_run() -> int | None:
        with unit_of_work() as session:
            run = running_full_run(session)
            return run.id if run is not None and run.pages_done >= 3 else None

    run_id = wait_for(mid_run, 60, "the reconciliation to be a few pages in")
    pipeline.worker.kill()
    pipeline.worker.start()
    pipeline.broker.wait_ready(process=pipeline.worker)

    with unit_of_work() as session:
        assert running_full_run(session).id == run_id  # type: ignore[union-attr]
        assert not lock_holder_exists(session)  # Postgres released the dead worker's lock with its connection
    # While its heartbeat is young the row may be a queued run not yet started: a new trigger is refused.
    refused = pipeline.broker.send("reconcile.run", kwargs={"trigger": "beat"}).get(timeout=30)
    assert refused == {"status": "refused", "running_run_id": run_id}
    # Past the staleness window (15 minutes, travelled here) the next trigger declares it abandoned.
    with get_engine().begin() as conn:
        conn.execute(
            text("UPDATE sync_runs SET heartbeat_at = now() - interval '16 minutes' WHERE id = :id"), {"id": run_id}
        )
    done = pipeline.broker.send("reconcile.run", kwargs={"trigger": "beat"}).get(timeout=120)
    if done["status"] == "refused" and done["running_run_id"] != run_id:
        # On RabbitMQ the killed worker's unacknowledged trigger goes back to the queue. Taken after the heartbeat's
        # travel, it declares the killed run abandoned and starts the new run itself, and this trigger is refused
        # naming that run: the new run is the one to check. (CI's RabbitMQ pass once saw this trigger refused naming
        # run 2, where the killed run is run 1; the redelivery is the likeliest starter, not shown.)
        newer = done["running_run_id"]

        def newer_finished() -> dict[str, Any] | None:
            with unit_of_work() as session:
                row = session.execute(
                    text("SELECT status, created, unchanged, updated FROM sync_runs WHERE id = :id"), {"id": newer}
                ).one()
            return None if row.status == "running" else {"run_id": newer, **row._asdict()}

        done = wait_for(newer_finished, 120, f"run {newer}, started by the redelivered trigger, to finish")
    if done["status"] != "succeeded":
        with unit_of_work() as session:
            runs = session.execute(
                text("SELECT id, status, task_id, heartbeat_at, now() AS at, error FROM sync_runs ORDER BY id")
            ).all()
            held = lock_holder_exists(session)
        raise AssertionError(
            f"{done}; runs {runs}; run lock held {held}; queues {pipeline.broker.depths()}\n"
            f"{pipeline.worker.log_tail(150)}"
        )
    assert done["created"] + done["unchanged"] + done["updated"] == 4000

    runs = admin_runs(client, make_signed_in_user)
    assert runs[run_id]["status"] == "failed"
    assert runs[run_id]["error"] == "abandoned: no worker held its lock"
    assert runs[done["run_id"]]["status"] == "succeeded"
    assert mismatches(pipeline.admin.dump()) == []
    assert duplicate_usernames() == []
