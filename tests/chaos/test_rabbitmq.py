"""What RabbitMQ as the broker promises beyond the shared suite: replicated queues, confirmed publishes, and no
message lost when the broker drops every connection in the middle of a burst.

These run in the RabbitMQ pass (``BROKER_UNDER_TEST=rabbitmq``, which ``.ci/run`` runs after the Redis pass);
in the Redis pass they say so and do not run.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests import rabbitmq
from tests.chaos.amqp_front import ClosingAmqpFront
from tests.chaos.conftest import Pipeline, mismatches
from tests.chaos.tcp_proxy import through
from tests.chaos.test_faults import assert_nothing_lost, create_users, created_audits
from tests.polling import wait_for
from tests.worker_process import QUEUES, Broker, ProcfileProcess, isolated_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("CELERY_BROKER_URL"),
        reason="RabbitMQ only: runs in the BROKER_UNDER_TEST=rabbitmq pass of .ci/run",
    ),
]


@pytest.fixture
def full_events_queue() -> Iterator[str]:
    """A virtual host whose ``events`` queue refuses every message (a full queue with ``reject-publish``)."""
    url = rabbitmq.make_vhost("full")
    rabbitmq.set_policy(url, "full-events", "^events$", '{"max-length": 0, "overflow": "reject-publish"}')
    yield url
    rabbitmq.remove(url)


def test_task_queues_are_quorum_queues(make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline(web=False)
    types = rabbitmq.queue_types(pipeline.broker.broker_url)
    assert {name: types.get(name) for name in ("default", "events", "users", "reconcile")} == dict.fromkeys(
        ("default", "events", "users", "reconcile"), "quorum"
    )


def test_a_message_the_broker_refuses_is_reported_unsent_so_the_relay_sends_it(full_events_queue: str) -> None:
    """With publisher confirms a refused publish is a nack, not silence: the intake leaves the event for the relay
    instead of marking it sent. Without confirms this message would vanish and the event wait for the requeue."""
    from tasks.events import ApplyPublisher

    publisher = ApplyPublisher(broker_url=full_events_queue)
    ids = [10_000_001, 10_000_002]
    # A quorum queue refuses once it is over its limit, so the first message (both ids in one batch) may still be
    # stored; the next is refused.
    publisher.publish(ids)
    assert publisher.publish(ids) == ids
    rabbitmq.clear_policy(full_events_queue, "full-events")
    assert publisher.publish(ids) == []


def test_a_sub_second_countdown_is_delivered(celery_worker: Any) -> None:
    """RabbitMQ delays in whole seconds and Celery refuses 0 < delay < 1 there: the coalesced refresh's window
    (REFRESH_COALESCE_SECONDS, fractional in tests) and a jittered retry must still arrive."""
    from tasks.app import broker_countdown
    from tasks.health import ping

    started = time.monotonic()
    assert ping.apply_async(countdown=broker_countdown(0.2)).get(timeout=30) == "pong"
    assert time.monotonic() - started >= 0.2


def test_every_broker_connection_closed_during_a_burst_loses_nothing(
    make_pipeline: Callable[..., Pipeline],
) -> None:
    pipeline = make_pipeline()
    pipeline.subscribe()
    prefix = f"rmq{uuid.uuid4().hex[:4]}"
    ids = create_users(pipeline, prefix, 150)  # 300 deliveries
    closes = 0
    for floor in (30, 120, 210):
        wait_for(lambda f=floor: pipeline.admin.webhook_status()["delivered"] >= f, 60, "deliveries to flow")
        rabbitmq.close_connections(pipeline.broker.broker_url)
        closes += 1
    pipeline.drain(timeout=120, relay_every=2.0, include_unacked=False)

    status = pipeline.admin.webhook_status()
    assert closes == 3
    assert status["failed"] == 0
    assert status["delivered"] == 300
    assert_nothing_lost(pipeline)
    audits = created_audits()
    assert {audits.get(i) for i in ids} == {1}, {i: audits.get(i) for i in ids if audits.get(i) != 1}
    assert mismatches(pipeline.admin.dump()) == []


def test_a_connection_closed_as_the_worker_begins_consuming_is_reopened() -> None:
    """RabbitMQ closes the worker's connection just as its event loop begins (tests/chaos/amqp_front.py), so the
    close is found by the loop's first, short read. Celery's own version of that read drops every error without an
    ``errno``, and AMQP's ``ConnectionForced`` has none: the worker went on waiting on a connection that no longer
    existed and took no message until its heartbeat check failed, 144 s later (in CI a burst's last 129 events sat
    unapplied for the two minutes the test waited). It must reconnect and answer within seconds."""
    env = isolated_env(None, WORKER_CONCURRENCY="1")
    front = ClosingAmqpFront(urlsplit(env["CELERY_BROKER_URL"]).port or 5672, QUEUES)
    front.start()
    worker = ProcfileProcess("worker", {**env, "CELERY_BROKER_URL": through(env["CELERY_BROKER_URL"], front)})
    try:
        worker.start()
        wait_for(front.closed.is_set, 60, "the worker to begin consuming")
        Broker(env).wait_ready(timeout=20, process=worker)
    finally:
        worker.close()
        front.stop()
        rabbitmq.remove(env["CELERY_BROKER_URL"])
