"""A round-trip probe: operators and tests send ``health.ping`` to prove a worker is consuming."""

from __future__ import annotations

from tasks.app import app


@app.task(name="health.ping", acks_late=True, ignore_result=False)
def ping() -> str:
    """Answer ``pong``; the caller reads the result, so this task keeps it."""
    return "pong"
