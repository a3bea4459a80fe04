"""The first read of Celery's event loop, mended: a RabbitMQ close that lands in it restarts the consumer.

Celery's worker begins its event loop with one short read of the broker connection (``_quick_drain`` in
``celery.worker.loops``, Celery 5.7). To ignore that read's own timeout it drops every error that has no ``errno``,
and AMQP's ``ConnectionForced`` has none: it is what RabbitMQ sends when it closes a connection (a restart, a node
shutting down, an operator, a policy). A close that lands in that read is answered and the socket closed by py-amqp,
but the worker goes on waiting on the dead connection and takes no message until the connection's heartbeat check
fails: 144 s on this machine (RabbitMQ's 60-s heartbeat). In CI a burst's last 129 events sat unapplied for the two
minutes the test waited.

:func:`quick_drain` keeps the read and Celery's rule for it, and re-raises the connection's own errors, so the
consumer reconnects at once, as it does for a close that lands anywhere else. Installed in the worker's main process
(``worker_init``); ``tests/chaos/test_rabbitmq.py`` closes the connection in exactly that moment, and shows when a
Celery release no longer needs it.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from celery.worker import loops

log = logging.getLogger(__name__)


def quick_drain(connection: Any, timeout: float = 0.1) -> None:
    """Read what is already waiting on ``connection``; nothing to read is fine, a broken connection is raised."""
    try:
        connection.drain_events(timeout=timeout)
    except Exception as exc:
        code = getattr(exc, "errno", None)
        if isinstance(exc, TimeoutError) or code == errno.EAGAIN:
            return  # nothing arrived in time: the case Celery's catch is for
        if code is not None or isinstance(exc, tuple(connection.connection_errors)):
            raise


def install() -> None:
    """Put :func:`quick_drain` in Celery's place; says so in the log if this Celery no longer has that read."""
    if not hasattr(loops, "_quick_drain"):
        log.warning("celery.worker.loops has no _quick_drain: the event loop's first read is left as Celery has it")
        return
    setattr(loops, "_quick_drain", quick_drain)  # noqa: B010 (a private name, assigned on purpose)
