"""gunicorn builds a request's access line only when the access logger would write it (web/gunicorn_logger.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from web.gunicorn_logger import AccessLogWhenEnabled

REQUEST = SimpleNamespace(headers=[], method="POST", path="/webhooks/asgardeo", query="", version=(1, 1))
RESPONSE = SimpleNamespace(status="202 ACCEPTED", headers=[], response_length=10, sent=10)
ENVIRON = {
    "REMOTE_ADDR": "127.0.0.1",
    "REQUEST_METHOD": "POST",
    "RAW_URI": "/webhooks/asgardeo",
    "PATH_INFO": "/webhooks/asgardeo",
    "QUERY_STRING": "",
    "SERVER_PROTOCOL": "HTTP/1.1",
}


@pytest.fixture
def access_logger() -> Iterator[logging.Logger]:
    """gunicorn's access logger, restored afterwards (gunicorn's loggers are process-wide)."""
    log = logging.getLogger("gunicorn.access")
    handlers, level, propagate = list(log.handlers), log.level, log.propagate
    yield log
    log.handlers, log.propagate = handlers, propagate
    log.setLevel(level)


def _built(logger_class: type[Any], level: int) -> tuple[int, int]:
    """``(atoms built, lines written)`` for one request logged at access-logger ``level``."""
    cfg = Config()
    cfg.set("accesslog", "/dev/null")
    logger = logger_class(cfg)
    logger.access_log.setLevel(level)
    written: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = written.append  # type: ignore[method-assign]
    logger.access_log.addHandler(handler)
    built = 0
    atoms = logger.atoms

    def counting(*args: Any) -> Any:
        nonlocal built
        built += 1
        return atoms(*args)

    logger.atoms = counting
    logger.access(RESPONSE, REQUEST, ENVIRON, timedelta(milliseconds=3))
    return built, len(written)


def test_gunicorns_own_logger_builds_a_line_the_access_logger_then_drops(access_logger: logging.Logger) -> None:
    assert _built(Logger, logging.WARNING) == (1, 0)


def test_no_line_is_built_while_the_access_logger_would_drop_it(access_logger: logging.Logger) -> None:
    assert _built(AccessLogWhenEnabled, logging.WARNING) == (0, 0)


def test_an_operator_who_sets_the_access_logger_to_info_gets_the_lines(access_logger: logging.Logger) -> None:
    assert _built(AccessLogWhenEnabled, logging.INFO) == (1, 1)
