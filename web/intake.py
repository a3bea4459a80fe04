"""The web process's intake machinery, one per app: the inbox writer, the broker publisher and its thread.

:func:`init_app` (called by the app factory) creates it; views reach it with :func:`current_intake`. The threads
start on first use, in the process that uses them (see :mod:`web.batch_thread`). A test that must keep its
deliveries off the shared broker installs an ``Intake`` over another :class:`tasks.events.ApplyPublisher`, so its
deliveries still take the production path: writer thread, commit, background thread, publisher.
"""

from __future__ import annotations

from collections.abc import Sequence

from flask import Flask, current_app

from models import inbox
from tasks.events import ApplyPublisher
from web.intake_publisher import BackgroundPublisher, leave_for_relay
from web.intake_writer import InboxWriter

EXTENSION = "intake"


class Intake:
    """Stores deliveries (group commit) and announces committed events to the workers."""

    def __init__(self, publisher: ApplyPublisher | None = None) -> None:
        self.writer = InboxWriter()
        self.publisher = publisher or ApplyPublisher()
        self.background = BackgroundPublisher(self.publisher)

    def store(self, envelope: inbox.Envelope, raw_body: str) -> int | None:
        """Commit one delivery (see :meth:`web.intake_writer.InboxWriter.insert`): its id, ``None`` for a duplicate."""
        return self.writer.insert(envelope, raw_body)

    def announce(self, event_id: int) -> bool:
        """Announce one committed event without waiting for the broker; when the background queue is full
        (back-pressure) it is sent inline. ``False`` only when an inline send failed (the relay sends it later)."""
        if self.background.submit(event_id):
            return True
        return not self.send_now([event_id])

    def send_now(self, event_ids: Sequence[int]) -> list[int]:
        """Publish inline; the ids the broker did not take are left for the relay and returned."""
        unsent = self.publisher.publish(event_ids)
        if unsent:
            leave_for_relay(unsent)
        return unsent


def init_app(app: Flask) -> Intake:
    intake = Intake()
    app.extensions[EXTENSION] = intake
    return intake


def current_intake() -> Intake:
    intake: Intake = current_app.extensions[EXTENSION]
    return intake
