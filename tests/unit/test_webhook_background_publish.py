"""The intake's background publisher: batches, hands refused ids to the relay path, survives errors, pushes back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from tasks.events import ApplyPublisher
from web.intake_publisher import BackgroundPublisher


class FakePublisher(ApplyPublisher):
    """Records batches; refuses the ids in ``refuse``; raises once when ``explode`` is set; may block on ``gate``."""

    def __init__(self, refuse: Iterable[int] = (), explode: bool = False, gate: threading.Event | None = None) -> None:
        super().__init__("redis://127.0.0.1:1/0")
        self.batches: list[list[int]] = []
        self.refuse = set(refuse)
        self.explode = explode
        self.gate = gate

    def publish(self, event_ids: Iterable[int]) -> list[int]:
        ids = list(event_ids)
        if self.gate is not None:
            self.gate.wait(10)
        if self.explode:
            self.explode = False
            raise RuntimeError("boom")
        self.batches.append(ids)
        return [i for i in ids if i in self.refuse]


def test_every_submitted_id_is_published_once_in_order() -> None:
    fake = FakePublisher()
    background = BackgroundPublisher(fake, on_unsent=lambda ids: None)
    for event_id in range(1, 301):
        assert background.submit(event_id)
    assert background.flush(5)
    sent = [i for batch in fake.batches for i in batch]
    assert sent == list(range(1, 301))
    assert all(len(batch) <= background.batch for batch in fake.batches)


def test_ids_the_broker_refused_go_to_the_relay_path() -> None:
    unsent: list[int] = []
    background = BackgroundPublisher(FakePublisher(refuse={2, 3}), on_unsent=unsent.extend)
    for event_id in (1, 2, 3, 4):
        background.submit(event_id)
    assert background.flush(5)
    assert sorted(unsent) == [2, 3]


def test_a_failing_batch_does_not_stop_the_thread() -> None:
    fake = FakePublisher(explode=True)
    background = BackgroundPublisher(fake, on_unsent=lambda ids: None)
    background.submit(1)
    assert background.flush(5)
    background.submit(2)
    assert background.flush(5)
    assert [2] in fake.batches


def test_a_full_queue_refuses_so_the_request_publishes_inline_and_flush_times_out() -> None:
    gate = threading.Event()
    fake = FakePublisher(gate=gate)
    background = BackgroundPublisher(fake, on_unsent=lambda ids: None, max_pending=2, batch=1)
    assert background.submit(1)  # taken by the thread, which blocks on the gate
    deadline = time.monotonic() + 5
    while background._queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert background.submit(2)
    assert background.submit(3)
    assert not background.submit(4)
    started = time.monotonic()
    assert not background.flush(0.2)
    assert time.monotonic() - started < 2
    gate.set()
    assert background.flush(5)
    assert [i for batch in fake.batches for i in batch] == [1, 2, 3]


def test_on_unsent_errors_are_contained(caplog: Any) -> None:
    def broken(ids: Sequence[int]) -> None:
        raise RuntimeError("postgres away")

    background = BackgroundPublisher(FakePublisher(refuse={1}), on_unsent=broken)
    background.submit(1)
    assert background.flush(5)
    background.submit(2)
    assert background.flush(5)
    assert "background publish failed" in caplog.text
