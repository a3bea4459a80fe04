"""RabbitMQ for the test run when ``BROKER_UNDER_TEST=rabbitmq``: one virtual host per run (and per isolated pipeline).

(Not ``TEST_BROKER``: Celery's test worker reads that variable as the broker's host name.)

A virtual host is RabbitMQ's own way to keep two deployments' queues apart, as ``REDIS_KEY_PREFIX`` does on Redis:
the run's in-process worker must never take a message meant for a chaos test's own worker. Virtual hosts are made
and removed with ``rabbitmqctl`` (the server runs on this machine, as on CI's), so no management plugin is needed.

``RABBITMQ_URL`` names the server (default ``amqp://guest:guest@127.0.0.1:5672/``); its path is ignored.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import uuid
from urllib.parse import urlsplit, urlunsplit

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
RABBITMQCTL_TIMEOUT = 30.0

_made: list[str] = []


class RabbitUnavailable(RuntimeError):
    pass


def selected() -> bool:
    """The run's broker is RabbitMQ (``BROKER_UNDER_TEST=rabbitmq``); otherwise the run's Redis is the broker."""
    return os.environ.get("BROKER_UNDER_TEST", "redis").lower() == "rabbitmq"


def server_url() -> str:
    return os.environ.get("RABBITMQ_URL", DEFAULT_URL)


def _ctl(*args: str) -> str:
    if shutil.which("rabbitmqctl") is None:
        raise RabbitUnavailable("rabbitmqctl is not on PATH; the RabbitMQ tests make a virtual host per run with it")
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=RABBITMQCTL_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RabbitUnavailable(f"rabbitmqctl {args[0]} failed: {(done.stderr or done.stdout).strip()[:300]}")
    return done.stdout


def check_reachable() -> None:
    """The AMQP port answers; raises :class:`RabbitUnavailable` saying which address did not."""
    parts = urlsplit(server_url())
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as exc:
        raise RabbitUnavailable(f"RabbitMQ at {host}:{port} is unreachable ({exc})") from exc


def check_usable() -> None:
    """The server answers and ``rabbitmqctl`` can manage it: what a RabbitMQ run needs."""
    check_reachable()
    _ctl("list_vhosts", "--quiet")


def make_vhost(label: str) -> str:
    """A new virtual host the URL's user may use fully; returns the broker URL that selects it."""
    name = f"hrms-{label}-{uuid.uuid4().hex[:8]}"
    user = urlsplit(server_url()).username or "guest"
    _ctl("add_vhost", name)
    _made.append(name)
    _ctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    return vhost_url(name)


def vhost_url(name: str) -> str:
    parts = urlsplit(server_url())
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))


def vhost_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "/"


def queue_depths(url: str) -> dict[str, tuple[int, int]]:
    """``{queue: (messages, ready)}`` of the URL's virtual host; ``messages`` counts unacknowledged ones too."""
    columns = ("name", "messages", "messages_ready")
    out = _ctl("list_queues", "-p", vhost_of(url), *columns, "--quiet", "--no-table-headers")
    depths: dict[str, tuple[int, int]] = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            depths[fields[0]] = (int(fields[1]), int(fields[2]))
    return depths


def queue_types(url: str) -> dict[str, str]:
    """``{queue: type}`` (``classic``, ``quorum``, ``stream``) of the URL's virtual host."""
    out = _ctl("list_queues", "-p", vhost_of(url), "name", "type", "--quiet", "--no-table-headers")
    return dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)


def set_policy(url: str, name: str, pattern: str, definition: str) -> None:
    _ctl("set_policy", "-p", vhost_of(url), "--apply-to", "queues", name, pattern, definition)


def clear_policy(url: str, name: str) -> None:
    _ctl("clear_policy", "-p", vhost_of(url), name)


def close_connections(url: str) -> None:
    """Close every client connection to the URL's virtual host, as a broker restart or a network cut would."""
    _ctl("close_all_connections", "--vhost", vhost_of(url), "--limit", "1000", "test: connections closed on purpose")


def remove(url: str) -> None:
    """Delete the URL's virtual host now (best effort). Each holds some 30 quorum queues (Celery's delayed-delivery
    set among them), and every one is a Raft group that keeps RabbitMQ busy: left until the run ends, dozens of them
    slowed its connection handshakes past Celery's timeouts on this 2-core machine."""
    name = vhost_of(url)
    if name in _made:
        _made.remove(name)
        with contextlib.suppress(RabbitUnavailable, subprocess.TimeoutExpired):
            _ctl("delete_vhost", name)


def remove_all() -> None:
    """Delete every virtual host this process made (best effort: the run is ending)."""
    while _made:
        remove(vhost_url(_made[-1]))
