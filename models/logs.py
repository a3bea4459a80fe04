"""One logging configuration for web, worker and beat: JSON lines that carry the ids tying a story together.

Ids (``request_id``, ``jti``, ``run_id``, ``task_id``, ``user_id``) come from :func:`bind` (a context variable, so
they follow a request or a task) or from ``extra=`` on a single call. Secrets never reach a log line: callers log
ids, never tokens or bodies, and :data:`REDACTED_KEYS` are dropped from ``extra`` as a second line of defence.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

CONTEXT_KEYS = ("request_id", "jti", "run_id", "task_id", "user_id", "event_type")
REDACTED_KEYS = frozenset({"token", "secret", "password", "authorization", "cookie", "body", "id_token", "code"})

_context: ContextVar[dict[str, Any] | None] = ContextVar("log_context", default=None)
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, bound ids and safe extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_context.get() or {})
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key.lower() not in REDACTED_KEYS:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON; safe to call more than once."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "werkzeug", "kombu", "amqp"):
        logging.getLogger(noisy).setLevel("WARNING")


def push(**ids: Any) -> Token[dict[str, Any] | None]:
    """Attach ids to later log lines of this thread or task until :func:`pop` is called with the token."""
    current = dict(_context.get() or {})
    current.update({k: v for k, v in ids.items() if v is not None})
    return _context.set(current)


def pop(token: Token[dict[str, Any] | None]) -> None:
    """Restore the ids bound before the matching :func:`push`."""
    _context.reset(token)


@contextmanager
def bind(**ids: Any) -> Iterator[None]:
    """Attach ids to every log line written inside the block (this thread or task only)."""
    token = push(**ids)
    try:
        yield
    finally:
        pop(token)
