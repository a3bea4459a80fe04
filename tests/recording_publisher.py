"""A publisher that records event ids instead of sending them: keeps test deliveries off the shared broker, so no
worker applies hand-made rows mid-test, and lets a test see what the intake announced.

It is installed the way production builds the intake (:class:`web.intake.Intake` over a publisher), so a test's
delivery still goes through the writer thread and the background publisher thread.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from tasks.events import ApplyPublisher
from web.intake import EXTENSION, Intake

DRAIN_SECONDS = 10.0


def install_publisher(app: Flask, publisher: ApplyPublisher) -> Intake:
    """Give ``app`` a new intake that announces through ``publisher``."""
    intake = Intake(publisher)
    app.extensions[EXTENSION] = intake
    return intake


class RecordingPublisher(ApplyPublisher):
    def __init__(self) -> None:
        super().__init__()
        self.intake: Intake | None = None
        self._sent: list[int] = []

    def publish(self, event_ids: Any) -> list[int]:
        self._sent.extend(event_ids)
        return []

    @property
    def sent(self) -> list[int]:
        """The ids announced, once the background thread has handed over everything submitted so far."""
        if self.intake is not None:
            assert self.intake.background.flush(DRAIN_SECONDS), "the background publisher did not drain"
        return list(self._sent)


def install_recorder(app: Flask) -> RecordingPublisher:
    """Make ``app``'s intake and replays announce to a new recorder instead of the broker."""
    publisher = RecordingPublisher()
    publisher.intake = install_publisher(app, publisher)
    return publisher
