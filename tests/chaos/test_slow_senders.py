"""Slow or stalled senders must not starve the webhook intake.

An attacker needs no credentials to open connections to ``POST /webhooks/asgardeo``, send the headers with
``Content-Length: 65536`` and then trickle the body a byte at a time. While 100 such connections are held open
against the real web process (gunicorn as the Procfile starts it), correctly signed deliveries must all be answered
202 within a second (p99) and applied; the slow ones are cut off by the body read timeout with a 408.

Bounded: 100 loopback connections, at most ``TRICKLE_SECONDS`` of trickling, every request with a client timeout.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import requests
from sqlalchemy import select

from tests.chaos.conftest import Pipeline
from tests.polling import wait_for
from tests.webhook_payloads import claims, encode, event, signed_headers

pytestmark = pytest.mark.slow

SLOW_CONNECTIONS = 100
DELIVERIES = 60
TRICKLE_SECONDS = 20.0
BODY_TIMEOUT_SECONDS = 8


class SlowSenders:
    """``count`` connections that send a webhook request's headers, then one body byte every ``interval`` seconds.

    Each records what the server finally answered (``b""`` when it closed without a word)."""

    def __init__(self, port: int, count: int, interval: float = 1.0) -> None:
        self.port = port
        self.count = count
        self.interval = interval
        self.sockets: list[socket.socket] = []
        self.answers: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def open(self) -> None:
        head = (
            b"POST /webhooks/asgardeo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"X-Hub-Signature: sha256=00\r\nContent-Length: 65536\r\n\r\n"
        )
        for _ in range(self.count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(head)
            sock.setblocking(False)
            self.sockets.append(sock)
        self._thread.start()

    def _trickle(self) -> None:
        deadline = time.monotonic() + TRICKLE_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline:
            for sock in self.sockets:
                try:
                    sock.send(b"{")
                except OSError:
                    continue  # the server closed it
            self._stop.wait(self.interval)

    def collect(self, not_before: float) -> list[bytes]:
        """Keep trickling until ``not_before`` (monotonic), then stop and read what each connection was answered
        (bounded by a short timeout each)."""
        self._stop.wait(max(0.0, not_before - time.monotonic()))
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.sockets:
            sock.setblocking(True)
            sock.settimeout(0.5)
            try:
                self.answers.append(sock.recv(4096))
            except OSError:
                self.answers.append(b"")
        return self.answers

    def close(self) -> None:
        self._stop.set()
        for sock in self.sockets:
            sock.close()


@contextmanager
def slow_senders(port: int, count: int) -> Iterator[SlowSenders]:
    senders = SlowSenders(port, count)
    try:
        senders.open()
        yield senders
    finally:
        senders.close()


def _deliveries(pipeline: Pipeline) -> list[tuple[str, bytes]]:
    directory = pipeline.standin.directory
    out = []
    for i in range(DELIVERIES):
        email = f"slow{i:03d}@example.com"
        user_id = directory.create_user(email, email=email, given_name="Slow").id
        body = event("userCreated", user_id, claims=claims(username=email, email=email, first_name="Slow"))
        out.append((str(body["jti"]), encode(body)))
    return out


def _statuses(jtis: list[str]) -> dict[str, str]:
    from models.db import unit_of_work
    from models.tables import WebhookEvent

    with unit_of_work() as session:
        rows = session.execute(select(WebhookEvent.jti, WebhookEvent.status).where(WebhookEvent.jti.in_(jtis))).all()
    return {str(jti): str(status) for jti, status in rows}


def test_signed_deliveries_are_answered_and_applied_while_100_slow_senders_hold_connections(
    make_pipeline: Callable[..., Pipeline],
) -> None:
    pipeline = make_pipeline(
        web=False,
        WEB_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT_SECONDS),
    )
    pipeline.start_web(WEB_THREADS="8")
    port = int(pipeline.web_url.rsplit(":", 1)[1])
    deliveries = _deliveries(pipeline)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    opened = time.monotonic()
    with slow_senders(port, SLOW_CONNECTIONS) as senders:
        time.sleep(1.0)  # let the server take every slow connection before the real sender comes
        for _, raw in deliveries:
            started = time.perf_counter()
            try:
                # A new connection each, as a sender's retries would come: either worker process may take it.
                status = requests.post(pipeline.hook_url, data=raw, headers=signed_headers(raw), timeout=3).status_code
            except requests.RequestException:
                status = 0
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
        answers = senders.collect(not_before=opened + BODY_TIMEOUT_SECONDS + 3)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print(
        f"slow senders: {SLOW_CONNECTIONS} held; deliveries {statuses}, p50 {latencies[len(latencies) // 2]:.3f} s, "
        f"p99 {p99:.3f} s"
    )
    assert statuses == {202: DELIVERIES}, statuses
    assert p99 < 1.0, f"p99 {p99:.3f} s"
    jtis = [jti for jti, _ in deliveries]
    wait_for(lambda: set(_statuses(jtis).values()) == {"applied"}, timeout=60, what="every delivery applied")
    # The trickle outlived the body read timeout: each slow connection was answered 408 and closed.
    timed_out = sum(answer.startswith(b"HTTP/1.1 408") for answer in answers)
    assert timed_out == SLOW_CONNECTIONS, [a[:40] for a in answers if not a.startswith(b"HTTP/1.1 408")][:5]
