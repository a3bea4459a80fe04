"""A publisher that records event ids instead of sending them: keeps test deliveries off the shared broker, so no
worker applies hand-made rows mid-test, and lets a test see what the intake announced."""

from __future__ import annotations

from typing import Any

from flask import Flask

from tasks.events import ApplyPublisher


class RecordingPublisher(ApplyPublisher):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[int] = []

    def publish(self, event_ids: Any) -> list[int]:
        self.sent.extend(event_ids)
        return []


def install_recorder(app: Flask) -> RecordingPublisher:
    """Make ``app``'s intake and replays announce to a new recorder instead of the broker."""
    publisher = RecordingPublisher()
    app.extensions["event_publisher"] = publisher
    return publisher
