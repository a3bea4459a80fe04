"""Product processes started exactly as the Procfile starts them, for fault tests: kill -9, restart, talk to them.

:class:`ProcfileProcess` runs one Procfile line (``worker``, ``web``, ``beat``) with a given environment in its own
process group, so :meth:`~ProcfileProcess.kill` SIGKILLs the Celery pool children too, as a crashed machine would.
Output goes to a log file whose tail is shown when a start fails. :class:`Broker` is a bare Celery client on the
same broker and key prefix as such processes, to send them tasks (``health.ping``, ``events.relay``,
``reconcile.run``) and to read their queues.

Usage::

    env = isolated_env(services, ASGARDEO_BASE_URL=...)
    with ProcfileProcess("worker", env) as worker:
        Broker(env).wait_ready()
        worker.kill()
        worker.start()
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import kombu.exceptions
import requests
from celery import Celery

from localrun.procfile import read_procfile
from tests import rabbitmq

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
QUEUES = ("default", "events", "users", "reconcile")
_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def procfile_argv(name: str, env: Mapping[str, str]) -> list[str]:
    """The Procfile's ``name`` line as an argv, ``${VAR:-default}`` expanded from ``env`` as a shell would."""
    line = read_procfile()[name]
    return shlex.split(_DEFAULT.sub(lambda m: env.get(m.group(1)) or m.group(2), line))


def isolated_env(base: Mapping[str, str] | None = None, **overrides: str) -> dict[str, str]:
    """The test run's environment with a fresh Redis key prefix (under the run's own, so ``clean_redis`` and the
    run's teardown delete it): processes started with it share Postgres with the tests but not their queues."""
    env = dict(os.environ if base is None else base)
    env["REDIS_KEY_PREFIX"] = f"{env.get('REDIS_KEY_PREFIX', '')}iso-{uuid.uuid4().hex[:8]}:"
    if env.get("CELERY_BROKER_URL"):
        # On RabbitMQ the queues live in a virtual host, not under the key prefix: give the pipeline its own.
        env["CELERY_BROKER_URL"] = rabbitmq.make_vhost("iso")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env.setdefault("LOG_LEVEL", "WARNING")
    env.update(overrides)
    return env


class ProcfileProcess:
    """One Procfile process; ``extra_args`` are appended (a later option wins, e.g. ``--hostname``)."""

    def __init__(self, name: str, env: Mapping[str, str], extra_args: Sequence[str] = ()) -> None:
        self.name = name
        self.env = dict(env)
        self.extra_args = list(extra_args)
        self.log_path = Path(tempfile.mkstemp(prefix=f"procfile-{name}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def argv(self) -> list[str]:
        return [*procfile_argv(self.name, self.env), *self.extra_args]

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> ProcfileProcess:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() reaches the pool children
            )
        self.starts += 1
        return self

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group, no goodbye: unacknowledged messages stay where the broker put them."""
        self._signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Celery's warm shutdown, gunicorn's graceful stop), then SIGKILL after ``timeout``."""
        if self.process is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        # Pool children of a killed parent may linger for a moment; make sure the group is gone.
        self._signal_group(signal.SIGKILL)

    def restart(self) -> ProcfileProcess:
        self.kill()
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> ProcfileProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def close(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


def wait_http_ok(url: str, timeout: float = 30.0, process: ProcfileProcess | None = None) -> None:
    """Poll ``url`` until it answers 200; on timeout the process's log tail is in the error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        if process is not None and not process.alive:
            break
        time.sleep(0.1)
    tail = process.log_tail() if process is not None else ""
    raise AssertionError(f"{url} did not answer 200 within {timeout:.0f}s\n{tail}")


class Broker:
    """A Celery client on the broker and key prefix of ``env`` (not the test process's own app)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.prefix = env.get("REDIS_KEY_PREFIX", "")
        url = env["REDIS_URL"]
        self.broker_url = env.get("CELERY_BROKER_URL") or url
        self.on_rabbitmq = self.broker_url != url
        transport = {"confirm_publish": True} if self.on_rabbitmq else {"global_keyprefix": self.prefix}
        self.app = Celery("procfile-client", broker=self.broker_url, backend=url, set_as_current=False)
        self.app.conf.update(
            broker_transport_options=transport,
            result_backend_transport_options={"global_keyprefix": self.prefix},
            task_routes={
                "events.*": {"queue": "events"},
                "users.*": {"queue": "users"},
                "reconcile.*": {"queue": "reconcile"},
            },
            task_default_queue="default",
            broker_connection_retry_on_startup=True,
            # Celery prefers the CELERY_BROKER_URL environment variable over any configured broker_url; this
            # process's variable names the run's broker, not the pipeline's, so name the pipeline's explicitly.
            broker_read_url=self.broker_url,
            broker_write_url=self.broker_url,
        )
        if self.on_rabbitmq:
            # The product's own queue declarations (quorum, topic exchanges): a client that declared them
            # differently would be refused by RabbitMQ (PRECONDITION_FAILED).
            from celeryconfig import task_queues

            self.app.conf.task_queues = task_queues
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=5)

    def send(self, name: str, *args: Any, **options: Any) -> Any:
        """Send a task; a broker connection that a test just broke on purpose is re-opened (three tries)."""
        kwargs = options.pop("kwargs", {})
        for _ in range(2):
            try:
                return self.app.send_task(name, args=list(args), kwargs=kwargs, **options)
            except kombu.exceptions.OperationalError:
                self.app.pool.force_close_all()
                time.sleep(0.5)
        return self.app.send_task(name, args=list(args), kwargs=kwargs, **options)

    def wait_ready(self, timeout: float = 60.0, process: ProcfileProcess | None = None) -> None:
        """A ``health.ping`` round trip through the worker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.send("health.ping").get(timeout=min(10.0, max(deadline - time.monotonic(), 0.5))) == "pong":
                    return
            except Exception:  # not up yet (timeout, connection refused): ask again
                if process is not None and not process.alive:
                    break
        tail = process.log_tail() if process is not None else ""
        raise AssertionError(f"the worker did not answer health.ping within {timeout:.0f}s\n{tail}")

    def backlog(self, include_unacked: bool = True) -> int:
        """Messages waiting in the queues plus (by default) those delivered to a worker and not yet acknowledged
        (ETA ones too; on RabbitMQ also those waiting in its delayed-delivery queues)."""
        if self.on_rabbitmq:
            depths = rabbitmq.queue_depths(self.broker_url).values()
            return sum(total if include_unacked else ready for total, ready in depths)
        waiting = sum(int(self.redis.llen(f"{self.prefix}{queue}")) for queue in QUEUES)
        if not include_unacked:
            return waiting
        unacked = int(self.redis.hlen(f"{self.prefix}unacked"))
        return waiting + unacked

    def depths(self) -> dict[str, int]:
        """Each non-empty queue's depth, unacknowledged messages included, for a failure message to name."""
        if self.on_rabbitmq:
            return {name: total for name, (total, _) in rabbitmq.queue_depths(self.broker_url).items() if total}
        names = [*(f"{self.prefix}{queue}" for queue in QUEUES), f"{self.prefix}unacked"]
        lengths = [int(self.redis.hlen(n)) if n.endswith("unacked") else int(self.redis.llen(n)) for n in names]
        return {name: length for name, length in zip(names, lengths, strict=True) if length}

    def metrics(self) -> dict[str, float]:
        """The processes' Redis-backed counters (``tasks.metrics``), as ``{field: value}``."""
        raw: dict[bytes, bytes] = self.redis.hgetall(f"{self.prefix}metrics")  # type: ignore[assignment]
        return {k.decode(): float(v) for k, v in raw.items()}

    def close(self) -> None:
        """Close the clients; on RabbitMQ also delete the pipeline's own virtual host (the run's is kept)."""
        self.app.close()
        self.redis.close()
        if self.on_rabbitmq and self.broker_url != os.environ.get("CELERY_BROKER_URL"):
            rabbitmq.remove(self.broker_url)

    def __enter__(self) -> Broker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
