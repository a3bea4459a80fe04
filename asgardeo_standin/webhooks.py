"""Webhook publisher: WebSub handshake, signed deliveries with retries, and seeded delivery chaos.

Directory writes only enqueue (``on_change`` runs under the directory lock); one background thread does the
handshake and the HTTP. Nothing is delivered on a channel until its subscriber echoed ``hub.challenge``.

Ledger (``status()``): ``emitted`` events; each ends as exactly one of ``unverified`` (channel not verified),
``dropped`` (chaos), or a scheduled delivery; ``duplicated`` extra copies are scheduled on top; every scheduled
copy ends as ``delivered`` (2xx) or ``failed`` (4xx, or 5xx/connection error after the retries). So
``delivered + failed == emitted - unverified - dropped + duplicated`` once ``pending`` is 0.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import logging
import random
import secrets
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import requests

from .config import ChaosConfig
from .directory import CHANNEL_URI, CHANNELS, Change, build_payloads

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = (0.05, 0.2, 0.5)
LEASE_SECONDS = 864000
TIMEOUT_S = 5.0


def sign(body: bytes, secret: str) -> str:
    """The ``X-Hub-Signature`` value: ``sha256=`` + lowercase hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class _Event:
    channel: str
    name: str
    jti: str
    body: bytes


@dataclass
class _Handshake:
    generation: int


class WebhookPublisher:
    """Delivers directory changes to one subscriber; see the module docstring for the ledger."""

    def __init__(
        self, org: str, chaos: ChaosConfig | None = None, retry_backoff: tuple[float, ...] = RETRY_BACKOFF_S
    ) -> None:
        self.org = org
        self.retry_backoff = tuple(retry_backoff)
        self.root_url = ""
        self._cond = threading.Condition()
        self._intake: deque[_Event | _Handshake] = deque()
        self._heap: list[tuple[float, int, _Event]] = []
        self._held: tuple[_Event, int] | None = None
        self._seq = 0
        self._inflight = 0
        self._url: str | None = None
        self._secret: str | None = None
        self._generation = 0
        self._verified: dict[str, bool] = dict.fromkeys(CHANNELS, False)
        self._handshake_error: str | None = None
        self._counts = dict.fromkeys(
            ("emitted", "delivered", "failed", "dropped", "duplicated", "unverified", "retries"), 0
        )
        self._chaos = chaos or ChaosConfig()
        self._rng = random.Random(self._chaos.seed)  # noqa: S311 - reproducible chaos, not security
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="standin-webhooks", daemon=True)
        self._thread.start()

    # --- configuration -----------------------------------------------------------------------------------
    def configure(self, url: str | None, secret: str | None) -> None:
        """Point at a subscriber (or none) and start the WebSub handshake; never waits for it."""
        with self._cond:
            self._url, self._secret = url, secret
            self._generation += 1
            self._verified = dict.fromkeys(CHANNELS, False)
            self._handshake_error = None
            if url:
                self._intake.append(_Handshake(self._generation))
            self._cond.notify_all()

    def set_chaos(self, chaos: ChaosConfig) -> None:
        """Replace the fault rates and reseed the generator, so a test run is reproducible."""
        with self._cond:
            self._chaos = chaos
            self._rng = random.Random(chaos.seed)  # noqa: S311 - reproducible chaos, not security

    def status(self) -> dict[str, Any]:
        with self._cond:
            return {
                "url": self._url,
                "verified": bool(self._url) and all(self._verified.values()),
                "channels": dict(self._verified),
                "handshake_error": self._handshake_error,
                "pending": self._pending(),
                "chaos": asdict(self._chaos),
                **self._counts,
            }

    def _pending(self) -> int:
        return len(self._intake) + len(self._heap) + (self._held is not None) + self._inflight

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is queued, scheduled or in flight; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    # --- intake (called under the directory lock: must not block) ----------------------------------------
    def on_change(self, change: Change) -> None:
        if self._url is None:
            return
        bodies = build_payloads(change, self.root_url, self.org)
        with self._cond:
            for (channel, name), body in zip(change.events, bodies, strict=True):
                raw = json.dumps(body, separators=(",", ":")).encode()
                self._intake.append(_Event(channel, name, body["jti"], raw))
                self._counts["emitted"] += 1
            self._cond.notify_all()

    # --- worker ------------------------------------------------------------------------------------------
    def _schedule(self, event: _Event, due: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, event))

    def _admit(self, event: _Event) -> None:
        """Apply chaos to one verified event and schedule its copies (called with the condition held)."""
        chaos, rng = self._chaos, self._rng
        if chaos.drop_rate and rng.random() < chaos.drop_rate:
            self._counts["dropped"] += 1
            return
        copies = 1
        if chaos.duplicate_rate and rng.random() < chaos.duplicate_rate:
            copies = 2
            self._counts["duplicated"] += 1
        if self._held is None and chaos.reorder_rate and rng.random() < chaos.reorder_rate:
            self._held = (event, copies)
            return
        now = time.monotonic()
        for _ in range(copies):
            delay = rng.uniform(0, chaos.delay_ms_max) / 1000 if chaos.delay_ms_max else 0.0
            self._schedule(event, now + delay)
        if self._held is not None:
            # Reorder: the held event goes out right after the one that arrived after it.
            self._release_held(now + (chaos.delay_ms_max / 1000 if chaos.delay_ms_max else 0.0))

    def _release_held(self, due: float) -> None:
        assert self._held is not None
        held, copies = self._held
        self._held = None
        for _ in range(copies):
            self._schedule(held, due)

    def _run(self) -> None:
        session = requests.Session()
        while True:
            job: _Event | _Handshake | None = None
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    if self._intake and isinstance(self._intake[0], _Handshake):
                        job = self._intake.popleft()
                        self._inflight += 1
                        break
                    while self._intake and isinstance(self._intake[0], _Event):
                        event = self._intake.popleft()
                        assert isinstance(event, _Event)
                        if not self._verified.get(event.channel):
                            self._counts["unverified"] += 1
                        else:
                            self._admit(event)
                    if self._held is not None and not self._intake:
                        self._release_held(max((d for d, _, _ in self._heap), default=time.monotonic()))
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        job = heapq.heappop(self._heap)[2]
                        self._inflight += 1
                        break
                    if self._intake:
                        continue
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.notify_all()
                    self._cond.wait(timeout)
                url, secret, generation = self._url, self._secret, self._generation
            try:
                if isinstance(job, _Handshake):
                    self._handshake(session, url, job.generation if job.generation == generation else -1)
                else:
                    self._deliver(session, job, url, secret)
            finally:
                with self._cond:
                    self._inflight -= 1
                    self._cond.notify_all()

    def _handshake(self, session: requests.Session, url: str | None, generation: int) -> None:
        """One WebSub subscribe GET per channel; a channel is verified when the exact challenge comes back."""
        if url is None or generation < 0:
            return
        for channel in CHANNELS:
            challenge = secrets.token_urlsafe(16)
            params = {
                "hub.mode": "subscribe",
                "hub.topic": CHANNEL_URI.format(channel=channel),
                "hub.challenge": challenge,
                "hub.lease_seconds": str(LEASE_SECONDS),
            }
            error: str | None = None
            try:
                response = session.get(url, params=params, timeout=TIMEOUT_S)
                ok = 200 <= response.status_code < 300 and response.text.strip() == challenge
                if not ok:
                    error = f"{channel}: HTTP {response.status_code}, challenge not echoed"
            except requests.RequestException as exc:
                ok, error = False, f"{channel}: {type(exc).__name__}"
            with self._cond:
                if generation == self._generation:
                    self._verified[channel] = ok
                    if error:
                        self._handshake_error = error

    def _deliver(self, session: requests.Session, event: _Event | None, url: str | None, secret: str | None) -> None:
        """POST one copy; retries 5xx and connection errors a few times with a short backoff, never 4xx."""
        if event is None:
            return
        if url is None:
            with self._cond:
                self._counts["failed"] += 1
            return
        headers = {"Content-Type": "application/json"}
        if secret:
            headers["X-Hub-Signature"] = sign(event.body, secret)
        for attempt in range(len(self.retry_backoff) + 1):
            try:
                response = session.post(url, data=event.body, headers=headers, timeout=TIMEOUT_S)
                status = response.status_code
            except requests.RequestException:
                status = 599
            if 200 <= status < 300:
                with self._cond:
                    self._counts["delivered"] += 1
                return
            if status < 500 or attempt == len(self.retry_backoff):
                break
            with self._cond:
                self._counts["retries"] += 1
            time.sleep(self.retry_backoff[attempt])
        log.info("webhook delivery failed", extra={"jti": event.jti, "status": status})
        with self._cond:
            self._counts["failed"] += 1
