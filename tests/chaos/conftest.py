"""A whole pipeline per test, isolated from the rest of the run: a private Asgardeo stand-in, the web tier under
gunicorn and a Celery worker, both started from the Procfile on their own Redis key prefix (so the session's
in-process worker never takes their messages), writing to the run's database.

The stand-in and the reconciliation run in the test process; everything between them is real processes over
real HTTP, Redis and Postgres.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from localrun.embedded import free_port
from tests.chaos.faulty_front import FaultyFront
from tests.services import libpq_url
from tests.stack import STACK, WEBHOOK_SECRET
from tests.worker_process import Broker, ProcfileProcess, isolated_env, wait_http_ok

DONE = ("applied", "ignored")


# --- what the service holds ----------------------------------------------------------------------------------------

_engines: dict[str, Engine] = {}


@contextmanager
def reading(database_url: str | None = None) -> Iterator[Session]:
    """A transaction on the run's database, or on a pipeline's own (``make_pipeline(own_database=True)``)."""
    from models.db import make_engine, unit_of_work

    if database_url is None:
        with unit_of_work() as session:
            yield session
        return
    if database_url not in _engines:
        _engines[database_url] = make_engine(database_url, pool_size=2)
    with Session(_engines[database_url]) as session, session.begin():
        yield session


def inbox_counts(database_url: str | None = None) -> dict[str, int]:
    from models.tables import WebhookEvent

    with reading(database_url) as session:
        rows = session.execute(select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)).all()
    return {status: int(count) for status, count in rows}


def running_user_syncs(database_url: str | None = None) -> int:
    from models.tables import SyncRun

    with reading(database_url) as session:
        query = select(func.count()).select_from(SyncRun).where(SyncRun.kind == "user", SyncRun.status == "running")
        return int(session.execute(query).scalar_one())


def user_trail(asgardeo_ids: Sequence[str], database_url: str | None = None) -> dict[str, dict[str, list[str]]]:
    """What happened to each user, for a failure message: their inbox events and single-user syncs in order, one
    line each (no names or emails: types, statuses, times and errors)."""
    from models.tables import SyncRun, WebhookEvent

    trail: dict[str, dict[str, list[str]]] = {}
    with reading(database_url) as session:
        for asgardeo_id in asgardeo_ids:
            events = session.execute(
                select(WebhookEvent).where(WebhookEvent.asgardeo_id == asgardeo_id).order_by(WebhookEvent.id)
            ).scalars()
            runs = session.execute(
                select(SyncRun).where(SyncRun.asgardeo_id == asgardeo_id).order_by(SyncRun.id)
            ).scalars()
            trail[asgardeo_id] = {
                "events": [
                    f"{e.id} {e.event_type} iat={e.iat} {e.status} attempts={e.attempts} received={e.received_at}"
                    f" processed={e.processed_at} error={e.last_error}"
                    for e in events
                ],
                "syncs": [
                    f"{r.id} {r.kind} {r.trigger} {r.status} started={r.started_at} finished={r.finished_at}"
                    f" error={r.error}"
                    for r in runs
                ],
            }
    return trail


def local_users(database_url: str | None = None) -> dict[str, dict[str, Any]]:
    from models.tables import User

    with reading(database_url) as session:
        return {
            u.asgardeo_id: {
                "username": u.username,
                "email": u.email,
                "first_name": u.first_name,
                "last_name": u.last_name,
                "groups": sorted(u.groups or []),
                "status": u.status,
            }
            for u in session.execute(select(User)).scalars()
        }


NAME_COLUMN = 200


def cut(value: str | None, length: int) -> str | None:
    return value[:length] if value else value


def expected_users(dump: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """The stand-in's dump read independently of the product's SCIM parser: ``({id: fields}, deleted ids)``."""
    expected: dict[str, dict[str, Any]] = {}
    for resource in dump["users"]:
        emails = resource.get("emails") or []
        primary = next((e["value"] for e in emails if e.get("primary")), emails[0]["value"] if emails else None)
        name = resource.get("name") or {}
        flags = resource.get("urn:scim:wso2:schema") or {}
        inactive = (
            str(flags.get("accountDisabled")).lower() == "true" or str(flags.get("accountLocked")).lower() == "true"
        )
        # The documented rules, written out again: only the primary store's prefix goes; names are cut to 200.
        expected[resource["id"]] = {
            "username": resource["userName"].removeprefix("DEFAULT/"),
            "email": primary,
            "first_name": cut(name.get("givenName"), NAME_COLUMN),
            "last_name": cut(name.get("familyName"), NAME_COLUMN),
            "groups": sorted(g["display"] for g in resource.get("groups") or []),
            "status": "inactive" if inactive else "active",
        }
    return expected, set(dump["deleted"])


def mismatches(dump: dict[str, Any], database_url: str | None = None) -> list[str]:
    """Every difference between the users table (of the run's database, or ``database_url``) and the directory,
    field by field, one line each.

    A user deleted in the directory must be a ``deleted`` tombstone locally, or absent (never seen alive).
    """
    expected, deleted = expected_users(dump)
    local = local_users(database_url)
    found: list[str] = []
    for asgardeo_id, want in expected.items():
        have = local.get(asgardeo_id)
        if have is None:
            found.append(f"{asgardeo_id}: missing locally")
            continue
        for name, value in want.items():
            if have[name] != value:
                found.append(f"{asgardeo_id}: {name} is {have[name]!r}, directory has {value!r}")
    for asgardeo_id, have in local.items():
        if asgardeo_id in expected:
            continue
        if asgardeo_id in deleted:
            if have["status"] != "deleted":
                found.append(f"{asgardeo_id}: deleted in the directory, {have['status']} locally")
        else:
            found.append(f"{asgardeo_id}: unknown to the directory")
    return found


def duplicate_usernames() -> list[str]:
    """Usernames held by more than one live (not deleted) user row."""
    from models.db import unit_of_work
    from models.tables import User

    with unit_of_work() as session:
        rows = session.execute(
            select(User.username).where(User.status != "deleted").group_by(User.username).having(func.count() > 1)
        ).scalars()
        return [str(name) for name in rows]


# --- what the directory does ------------------------------------------------------------------------------------

# Updates, disables, deletions (and some enables and locks so the mix stays realistic); deletions stay under the
# deactivation guard's share a test sets, as in a real day.
WEIGHTS = {"update": 60, "disable": 20, "enable": 8, "lock": 8, "delete": 4}


def random_changes(directory: Any, rng: random.Random, count: int, first: int = 0) -> dict[str, int]:
    """``count`` random changes at a stand-in's directory, drawn from ``rng`` in the mix of :data:`WEIGHTS` (numbered
    from ``first``, so values stay unique across batches); the kinds made."""
    live = [u.id for u in directory.all_users()]
    done = dict.fromkeys(WEIGHTS, 0)
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    for i in range(first, first + count):
        kind = rng.choices(kinds, weights)[0]
        target = rng.choice(live)
        if kind == "update":
            field_name = rng.choice(("given_name", "family_name", "email", "groups"))
            value: Any = {
                "given_name": f"Given{i}",
                "family_name": f"Family{i}",
                "email": f"outage{i:05d}@example.com",
                "groups": rng.sample(("Employees", "Sales", "HR", "Finance"), rng.randint(0, 2)),
            }[field_name]
            directory.update_profile(target, {field_name: value})
        elif kind == "delete":
            directory.delete_user(target)
            live.remove(target)
        elif kind == "lock":
            directory.set_locked(target, True)
        else:
            directory.set_disabled(target, kind == "disable")
        done[kind] += 1
    return done


# --- the pipeline --------------------------------------------------------------------------------------------------


@dataclass
class Pipeline:
    standin: Any
    admin: Any
    env: dict[str, str]
    broker: Broker
    web: ProcfileProcess | None = None
    worker: ProcfileProcess | None = None
    web_url: str = ""
    front: FaultyFront | None = None
    processes: list[ProcfileProcess] = field(default_factory=list)
    # None: the run's database; else the pipeline's own (its processes' DATABASE_URL), for pipelines run side by side.
    database_url: str | None = None

    @property
    def hook_url(self) -> str:
        return f"{self.web_url}/webhooks/asgardeo"

    def subscribe(self, **chaos: Any) -> None:
        self.admin.set_chaos(**chaos)
        status = self.admin.set_webhook(self.hook_url, WEBHOOK_SECRET, wait_verified=15)
        assert status["verified"], status

    def start_web(self, **overrides: str) -> ProcfileProcess:
        port = free_port()
        env = {**self.env, "WEB_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2", "WEB_THREADS": "4", **overrides}
        self.web = ProcfileProcess("web", env).start()
        self.processes.append(self.web)
        self.web_url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{self.web_url}/healthz", process=self.web)
        return self.web

    def start_worker(self, **overrides: str) -> ProcfileProcess:
        self.worker = ProcfileProcess("worker", {**self.env, **overrides}).start()
        self.processes.append(self.worker)
        self.broker.wait_ready(process=self.worker)
        return self.worker

    def relay(self) -> None:
        """One ``events.relay`` run on the pipeline's worker (what beat sends every 30 s)."""
        self.broker.send("events.relay")

    def settled(self, include_unacked: bool = True) -> bool:
        """Nothing left anywhere: no delivery pending, no event waiting, no message queued or held, no sync running.

        ``include_unacked=False`` ignores messages held unacknowledged, for tests that SIGKILL workers (what a dead
        worker held stays there until the visibility timeout; the relay covers its events)."""
        if self.admin.webhook_status()["pending"]:
            return False
        counts = inbox_counts(self.database_url)
        if counts.get("received") or counts.get("queued"):
            return False
        return self.broker.backlog(include_unacked) == 0 and running_user_syncs(self.database_url) == 0

    def drain(self, timeout: float = 90.0, relay_every: float | None = None, include_unacked: bool = True) -> None:
        """Wait until :meth:`settled` holds twice in a row, half a second apart (a coalesced refresh lands late).

        ``relay_every`` sends ``events.relay`` that often while waiting (beat's job, at test speed).
        """
        self.admin.wait_for_deliveries(timeout=timeout)
        deadline = time.monotonic() + timeout
        last_relay = 0.0
        while time.monotonic() < deadline:
            if relay_every is not None and time.monotonic() - last_relay >= relay_every:
                self.relay()
                last_relay = time.monotonic()
            if self.settled(include_unacked):
                time.sleep(0.5)
                if self.settled(include_unacked):
                    return
            time.sleep(0.2)
        raise AssertionError(
            f"the pipeline did not drain in {timeout:.0f}s: inbox {inbox_counts(self.database_url)}, "
            f"backlog {self.broker.backlog()} {self.broker.depths()}, "
            f"running user syncs {running_user_syncs(self.database_url)}, "
            f"stand-in {self.admin.webhook_status()}\nworker log:\n{self.worker.log_tail() if self.worker else ''}"
        )

    def recorded(self, name: str) -> dict[str, Any] | None:
        """A value the pipeline's processes keep in Redis under their own key prefix (a sync's outcome, say)."""
        from tasks.redis_client import get_redis

        raw = get_redis().get(self.env["REDIS_KEY_PREFIX"] + name)
        return dict(orjson.loads(raw)) if raw else None

    def differences(self) -> list[str]:
        """:func:`mismatches` between this pipeline's table and its stand-in's directory."""
        return mismatches(self.admin.dump(), self.database_url)

    def reconcile(self, **kwargs: Any) -> Any:
        """One full reconciliation against this stand-in, in the test process (``reconcile_all``)."""
        from tasks.reconcile import reconcile_all
        from tests.integration.sync_support import client_for, start_run

        assert self.database_url is None, "the test process writes the run's database: use reconcile_on_worker"
        return reconcile_all(start_run("chaos"), client=client_for(self.standin, **kwargs))

    def reconcile_on_worker(self, timeout: float = 120.0) -> dict[str, Any]:
        """One full reconciliation run by the pipeline's worker (``reconcile.run``), inside its rate budget."""
        return dict(self.broker.send("reconcile.run", kwargs={"trigger": "chaos"}).get(timeout=timeout))

    def metrics(self) -> dict[str, float]:
        return self.broker.metrics()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.close()


def create_database() -> str:
    """A fresh database beside the run's, migrated; its SQLAlchemy URL. Pipelines that run side by side need one
    each: they would otherwise share the inbox (the catch-up's starting point), the run lock and the users."""
    from models import migrate
    from models.settings import get_settings

    run_url = get_settings().database_url
    name = f"{run_url.rpartition('/')[2]}_p{uuid.uuid4().hex[:6]}"
    with psycopg.connect(libpq_url(run_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{run_url.rpartition('/')[0]}/{name}"
    migrate.upgrade(url)
    return url


def drop_database(database_url: str) -> None:
    engine = _engines.pop(database_url, None)
    if engine is not None:
        engine.dispose()
    from models.settings import get_settings

    name = database_url.rpartition("/")[2]
    with psycopg.connect(libpq_url(get_settings().database_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def make_pipeline(clean_db: None, clean_redis: None) -> Iterator[Callable[..., Pipeline]]:
    """``make_pipeline(web=True, worker=True, own_database=False, standin_overrides={}, **env)``: a private stand-in
    and, on a fresh key prefix (and with ``own_database`` a database of its own), gunicorn and a Celery worker from
    the Procfile pointed at it. Everything stops (and an own database is dropped) after the test."""
    from asgardeo_standin.client import StandinAdmin
    from asgardeo_standin.server import start_in_thread

    built: list[Pipeline] = []
    handles: list[Any] = []
    fronts: list[FaultyFront] = []
    databases: list[str] = []

    def build(
        *,
        web: bool = True,
        worker: bool = True,
        front: bool = False,
        own_database: bool = False,
        standin_overrides: dict[str, Any] | None = None,
        **env: str,
    ) -> Pipeline:
        database_url = None
        if own_database:
            database_url = create_database()
            databases.append(database_url)
            env = {"DATABASE_URL": database_url, **env}
        handle = start_in_thread(STACK.standin_config(port=0, **(standin_overrides or {})))
        handles.append(handle)
        faulty = FaultyFront(handle.root_url, "/t/test").start() if front else None
        if faulty is not None:
            fronts.append(faulty)
        defaults = {
            "ASGARDEO_BASE_URL": faulty.base_url if faulty is not None else handle.base_url,
            "SCIM_RATE_PER_MINUTE": "6000",
            "REFRESH_COALESCE_SECONDS": "0.2",
            "EVENT_REQUEUE_AFTER_SECONDS": "3",
            "WORKER_CONCURRENCY": "2",
        }
        environment = isolated_env(None, **{**defaults, **env})
        pipeline = Pipeline(
            standin=handle,
            admin=StandinAdmin(handle.root_url),
            env=environment,
            broker=Broker(environment),
            database_url=database_url,
        )
        pipeline.front = faulty
        built.append(pipeline)
        if worker:
            pipeline.start_worker()
        if web:
            pipeline.start_web()
        return pipeline

    try:
        yield build
    finally:
        for pipeline in reversed(built):
            pipeline.admin.set_webhook(None)
            pipeline.stop()
            pipeline.broker.close()
        for faulty in fronts:
            faulty.stop()
        for handle in handles:
            handle.stop()
        for database_url in databases:
            drop_database(database_url)
