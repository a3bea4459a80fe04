"""``python -m localrun``: the whole service on one machine, on embedded defaults.

Starts (only when ``DATABASE_URL`` / ``REDIS_URL`` are not configured) an embedded PostgreSQL and Redis whose data
stays in ``.local/``, migrates, starts the Asgardeo stand-in with a demo admin and employee, then every process of the
Procfile (web, worker, beat, Flower). It waits until the service is ready, proves a worker round trip, prints the
URLs and credentials, and on Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from asgardeo_standin.server import DEMO_USERS
from localrun.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from localrun.procfile import ROOT, read_procfile
from localrun.supervisor import Supervisor

DATA = Path(os.environ.get("LOCALRUN_DATA_DIR", ROOT / ".local"))
ORG = "demo"
WEB_CLIENT_ID = "hrms-local-web"
M2M_CLIENT_ID = "hrms-local-m2m"


def _say(message: str) -> None:
    print(f"[localrun] {message}", flush=True)


@contextmanager
def _single_instance() -> Iterator[None]:
    """Two local runs on one data folder would fight over it: the second one stops with a clear message."""
    DATA.mkdir(exist_ok=True)
    handle = (DATA / "run.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit("localrun: another local run is using .local/ already; stop it first (Ctrl-C in its terminal).")
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _local_secrets() -> dict[str, str]:
    """Secrets for the local run, made once and kept in .local/ so sessions and Flower logins survive restarts."""
    path = DATA / "secrets.json"
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    made = {
        "SECRET_KEY": secrets.token_urlsafe(32),
        "OIDC_CLIENT_SECRET": secrets.token_urlsafe(24),
        "SCIM_CLIENT_SECRET": secrets.token_urlsafe(24),
        "WEBHOOK_SECRETS": secrets.token_urlsafe(24),
        "FLOWER_BASIC_AUTH": f"admin:{secrets.token_urlsafe(12)}",
    }
    path.write_text(json.dumps(made, indent=2))
    path.chmod(0o600)
    return made


def _configured_externally(name: str) -> bool:
    """True when the operator set ``name`` in the environment or in .env: then we use theirs, not an embedded one."""
    if os.environ.get(name):
        return True
    env_file = Path(".env")
    return env_file.exists() and any(line.strip().startswith(f"{name}=") for line in env_file.read_text().splitlines())


def _wait_http(url: str, what: str, timeout: float, auth: tuple[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, timeout=2, auth=auth)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(0.25)
    raise RuntimeError(f"{what} was not ready at {url} within {timeout:.0f}s ({last})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrun", description=__doc__)
    parser.add_argument("--web-port", type=int, default=int(os.environ.get("PORT", "5000")))
    parser.add_argument("--flower-port", type=int, default=int(os.environ.get("FLOWER_PORT", "5555")))
    parser.add_argument("--standin-port", type=int, default=8300)
    parser.add_argument("--postgres-port", type=int, default=55432, help="embedded PostgreSQL (when used)")
    parser.add_argument("--redis-port", type=int, default=56379, help="embedded Redis (when used)")
    parser.add_argument("--check", action="store_true", help="start, prove everything works, then stop (for CI)")
    args = parser.parse_args(argv)
    with _single_instance():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    supervisor = Supervisor(DATA / "processes.json")
    if supervisor.stop_leftovers():
        _say("stopped processes left behind by an earlier run")
    servers: list[EmbeddedPostgres | EmbeddedRedis] = []
    stopping = False

    def _on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        env = _prepare(args, servers)
        _start_processes(args, env, supervisor)
        _check_ready(args, env)
        if args.check:
            _say("check passed: ready, worker round trip, Flower behind authentication")
            return 0
        while not stopping:
            exited = supervisor.first_exited()
            if exited is not None:
                _say(f"{exited.name} exited with code {exited.process.returncode}; stopping everything")
                return 1
            time.sleep(0.5)
        return 0
    finally:
        _say("stopping ...")
        supervisor.stop_all()
        for server in reversed(servers):
            server.stop()
        _say("stopped")


def _prepare(args: argparse.Namespace, servers: list[EmbeddedPostgres | EmbeddedRedis]) -> dict[str, str]:
    local = _local_secrets()
    env = dict(os.environ)
    env.setdefault("APP_ENV", "development")
    env.setdefault("BOOTSTRAP_ADMIN_EMAILS", "admin@example.com")
    web_url = f"http://127.0.0.1:{args.web_port}"
    if not _configured_externally("DATABASE_URL"):
        pg = EmbeddedPostgres(DATA / "postgres", preferred_port=args.postgres_port)
        servers.append(pg)
        env["DATABASE_URL"] = pg.start()
        _say(f"embedded PostgreSQL on 127.0.0.1:{pg.port} (data in .local/postgres)")
    if not _configured_externally("REDIS_URL"):
        rd = EmbeddedRedis(DATA / "redis", preferred_port=args.redis_port)
        servers.append(rd)
        env["REDIS_URL"] = rd.start()
        _say(f"embedded Redis on 127.0.0.1:{rd.port} (data in .local/redis)")
    standin_port = free_port(args.standin_port)
    env.update(
        {
            "SECRET_KEY": env.get("SECRET_KEY") or local["SECRET_KEY"],
            "PUBLIC_BASE_URL": env.get("PUBLIC_BASE_URL") or web_url,
            "WEBHOOK_SECRETS": env.get("WEBHOOK_SECRETS") or local["WEBHOOK_SECRETS"],
            "FLOWER_BASIC_AUTH": env.get("FLOWER_BASIC_AUTH") or local["FLOWER_BASIC_AUTH"],
            "FLOWER_PORT": str(args.flower_port),
            # The sync pages link to Flower: it must be the Flower this run starts, whatever --flower-port says.
            "FLOWER_URL": env.get("FLOWER_URL") or f"http://127.0.0.1:{args.flower_port}",
            "FLOWER_DB": str(DATA / "flower.db"),
            "BEAT_SCHEDULE_FILE": str(DATA / "celerybeat-schedule"),
            "WEB_BIND": f"127.0.0.1:{args.web_port}",
        }
    )
    if not _configured_externally("ASGARDEO_BASE_URL"):
        env.update(
            {
                "ASGARDEO_BASE_URL": f"http://127.0.0.1:{standin_port}/t/{ORG}",
                "OIDC_CLIENT_ID": WEB_CLIENT_ID,
                "OIDC_CLIENT_SECRET": local["OIDC_CLIENT_SECRET"],
                "SCIM_CLIENT_ID": M2M_CLIENT_ID,
                "SCIM_CLIENT_SECRET": local["SCIM_CLIENT_SECRET"],
                "STANDIN_PORT": str(standin_port),
            }
        )
    _write_run_env(env)
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL")})
    from models import migrate  # noqa: PLC0415 - reads DATABASE_URL set just above
    from models.settings import get_settings  # noqa: PLC0415

    get_settings.cache_clear()
    migrate.upgrade(env["DATABASE_URL"])
    _say("database migrated")
    return env


def _write_run_env(env: dict[str, str]) -> None:
    """This run's settings as a shell file, so the ``flask`` commands in another terminal reach the same servers.
    It holds the run's secrets, like secrets.json beside it: owner-only."""
    chosen = {k: v for k, v in sorted(env.items()) if os.environ.get(k) != v and k != "PATH"}
    path = DATA / "run.env"
    path.write_text("".join(f"{name}={shlex.quote(value)}\n" for name, value in chosen.items()))
    path.chmod(0o600)


def _standin_env(env: dict[str, str]) -> dict[str, str]:
    web = env["PUBLIC_BASE_URL"]
    return {
        **env,
        "STANDIN_ORG": ORG,
        "STANDIN_PORT": env["STANDIN_PORT"],
        "STANDIN_WEB_CLIENT_ID": WEB_CLIENT_ID,
        "STANDIN_WEB_CLIENT_SECRET": env["OIDC_CLIENT_SECRET"],
        "STANDIN_WEB_REDIRECT_URIS": f"{web}/auth/callback",
        "STANDIN_WEB_POST_LOGOUT_REDIRECT_URIS": f"{web}/",
        "STANDIN_WEB_BACKCHANNEL_LOGOUT_URI": f"{web}/auth/backchannel-logout",
        "STANDIN_M2M_CLIENT_ID": M2M_CLIENT_ID,
        "STANDIN_M2M_CLIENT_SECRET": env["SCIM_CLIENT_SECRET"],
        "STANDIN_SEED_DEMO": "true",
        # The directory survives restarts, so the demo users keep their ids and the app's table stays as it was.
        "STANDIN_STATE_FILE": str(DATA / "standin-directory.json"),
    }


def _start_processes(args: argparse.Namespace, env: dict[str, str], supervisor: Supervisor) -> None:
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    if "STANDIN_PORT" in env:
        supervisor.start("standin", f"{sys.executable} -m asgardeo_standin serve", _standin_env(env), ROOT)
        _wait_http(
            f"http://127.0.0.1:{env['STANDIN_PORT']}/t/{ORG}/oauth2/token/.well-known/openid-configuration",
            "the Asgardeo stand-in",
            30,
        )
        # The stand-in's CLI reads this to find the running stand-in without --url.
        (DATA / "standin-url").write_text(f"http://127.0.0.1:{env['STANDIN_PORT']}\n")
    for name, command in read_procfile().items():
        supervisor.start(name, command, env, ROOT)


def _check_ready(args: argparse.Namespace, env: dict[str, str]) -> None:
    web = env["PUBLIC_BASE_URL"]
    _wait_http(f"{web}/readyz", "the web tier", 60)
    user, _, password = env["FLOWER_BASIC_AUTH"].partition(":")
    flower = f"http://127.0.0.1:{args.flower_port}"
    _wait_http(f"{flower}/api/workers", "Flower", 60, auth=(user, password))
    if requests.get(f"{flower}/api/workers", timeout=5).status_code != 401:
        raise RuntimeError("Flower answered without authentication")
    from tasks.health import ping  # noqa: PLC0415 - the Celery app reads REDIS_URL set by _prepare

    if ping.apply_async().get(timeout=60) != "pong":
        raise RuntimeError("the worker did not answer the ping task")
    if "STANDIN_PORT" in env:
        from asgardeo_standin.client import StandinAdmin  # noqa: PLC0415

        standin = StandinAdmin(f"http://127.0.0.1:{env['STANDIN_PORT']}")
        standin.set_webhook(f"{web}/webhooks/asgardeo", env["WEBHOOK_SECRETS"].split(",")[0])
    if args.check:
        _check_reconciliation()
    _banner(args, env, flower, user, password)


def _check_reconciliation() -> None:
    """A full reconciliation through the worker: proves the SCIM client, and that a restart changed nothing."""
    from tasks.reconcile import run as reconcile  # noqa: PLC0415 - the Celery app reads REDIS_URL set by _prepare

    outcome = reconcile.apply_async(kwargs={"trigger": "check"}).get(timeout=180)
    if outcome.get("status") != "succeeded":
        raise RuntimeError(f"the check's full reconciliation did not succeed: {outcome}")
    counts = ", ".join(f"{name} {outcome.get(name, 0)}" for name in ("seen", "created", "updated", "deactivated"))
    _say(f"full reconciliation run {outcome['run_id']} succeeded: {counts}")


def _banner(args: argparse.Namespace, env: dict[str, str], flower: str, user: str, password: str) -> None:
    """Everything a person needs next, in one place: pages, API docs, commands and credentials."""
    web = env["PUBLIC_BASE_URL"]
    lines = [
        "",
        "  The service is up.",
        "",
        "  Pages (sign in as the demo admin):",
        f"    start / sign in    {web}/",
        f"    users              {web}/admin/users",
        f"    sync (run now)     {web}/admin/sync",
        f"    inbox              {web}/admin/events",
        f"    live changes       {web}/admin/live",
        f"    sync health        {web}/admin/health",
        f"    API reference      {web}/api-docs      (machine-readable: {web}/openapi.json)",
        f"    Flower             {flower}/          user {user!r}, password {password!r}",
        "",
        "  Command line, in another terminal (this run's settings are in .local/run.env):",
        "    set -a; . .local/run.env; set +a; source .venv/bin/activate",
        "    flask --app 'web:create_app()' sync run            full reconciliation now (--user ID: one user)",
        "    flask --app 'web:create_app()' users grant-role EMAIL admin",
    ]
    if "STANDIN_PORT" in env:
        demo = ", ".join(f"{u['username']} / {u['password']}" for u in DEMO_USERS)
        lines += [
            "    asgardeo-standin dump | seed 100 | update-user ID --given-name Ada | disable ID",
            "",
            f"  Asgardeo (local stand-in): {env['ASGARDEO_BASE_URL']}",
            f"  Demo sign-ins: {demo}",
        ]
    lines += ["", "  Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
