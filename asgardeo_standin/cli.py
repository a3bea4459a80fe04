"""``asgardeo-standin``: run the stand-in, or operate a running one through its admin API.

``serve`` reads ``STANDIN_*`` variables (see :meth:`StandinConfig.from_env`), then applies the flags.
The other commands talk to ``--url``: by default ``$STANDIN_URL``, else the stand-in of a running local run (its
address is in ``.local/standin-url``), else ``http://127.0.0.1:8300``, the local run's own default.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import requests

from .client import StandinAdmin
from .config import StandinConfig
from .server import start_in_thread

DEFAULT_URL = "http://127.0.0.1:8300"
# Written by ``python -m localrun`` when its stand-in is up (it may have moved off 8300 when that port was taken).
LOCAL_RUN_URL_FILE = Path(os.environ.get("LOCALRUN_DATA_DIR", ".local")) / "standin-url"


def default_url() -> str:
    if os.environ.get("STANDIN_URL"):
        return os.environ["STANDIN_URL"]
    if LOCAL_RUN_URL_FILE.exists():
        return LOCAL_RUN_URL_FILE.read_text().strip() or DEFAULT_URL
    return DEFAULT_URL


def _serve(args: argparse.Namespace) -> int:
    config = StandinConfig.from_env()
    if args.port is not None:
        config.port = args.port
    if args.org:
        config.org = args.org
    if args.host:
        config.host = args.host
    if args.seed_demo:
        config.seed_demo = True
    if args.rate_limit is not None:
        config.rate_limit_per_minute = args.rate_limit
    if args.webhook_url:
        config.webhook_url = args.webhook_url
    if args.webhook_secret:
        config.webhook_secret = args.webhook_secret
    if args.redirect_uri:
        config.web_redirect_uris = args.redirect_uri
    if args.backchannel_logout_uri:
        config.web_backchannel_logout_uri = args.backchannel_logout_uri
    handle = start_in_thread(config)
    if args.seed:
        started = time.perf_counter()
        handle.directory.seed(args.seed)
        print(f"seeded {args.seed} users in {time.perf_counter() - started:.1f}s (password Passw0rd!)")
    print(f"Asgardeo stand-in for org '{config.org}' at {handle.base_url}")
    print(f"  discovery: {handle.discovery_url}")
    print(f"  web client: {config.web_client_id} / {config.web_client_secret}")
    print(f"  m2m client: {config.m2m_client_id} / {config.m2m_client_secret}")
    if config.seed_demo:
        for user in handle.standin.seed_demo():
            print(f"  demo user: {user['username']} / {user['password']}")
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    handle.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asgardeo-standin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the stand-in until interrupted")
    serve.add_argument("--port", type=int)
    serve.add_argument("--host")
    serve.add_argument("--org")
    serve.add_argument("--seed-demo", action="store_true", help="create admin@ and employee@example.com")
    serve.add_argument("--seed", type=int, default=0, help="seed N deterministic users at start")
    serve.add_argument("--rate-limit", type=int, help="requests per minute per IP (0 = off)")
    serve.add_argument("--webhook-url")
    serve.add_argument("--webhook-secret")
    serve.add_argument("--redirect-uri", action="append", help="web client redirect URI (repeatable)")
    serve.add_argument("--backchannel-logout-uri")

    url_help = f"admin URL of a running stand-in (default: $STANDIN_URL, the local run's, or {DEFAULT_URL})"
    commands = {
        "seed": ("seed N deterministic users", ["count"], ["--prefix"]),
        "create-user": ("create a user", ["username"], ["--password", "--email", "--given-name", "--family-name"]),
        "update-user": ("update profile fields", ["id"], ["--email", "--given-name", "--family-name", "--username"]),
        "disable": ("disable a user", ["id"], []),
        "enable": ("enable a user", ["id"], []),
        "lock": ("lock a user", ["id"], []),
        "unlock": ("unlock a user", ["id"], []),
        "delete": ("delete a user", ["id"], []),
        "end-sessions": ("end a user's sessions", ["id"], []),
        "rotate-keys": ("rotate the signing key", [], []),
        "dump": ("print the directory as JSON", [], []),
        "stats": ("print request and webhook counters", [], []),
    }
    for name, (help_text, positionals, options) in commands.items():
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--url", default=default_url(), help=url_help)
        for positional in positionals:
            cmd.add_argument(positional)
        for option in options:
            cmd.add_argument(option)
        if name in ("create-user", "update-user"):
            cmd.add_argument("--group", action="append", dest="groups")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    admin = StandinAdmin(args.url)
    profile = {
        k: v
        for k, v in vars(args).items()
        if k in ("email", "given_name", "family_name", "username", "groups") and v is not None
    }
    results = {
        "seed": lambda: admin.seed(int(args.count), args.prefix or "user"),
        "create-user": lambda: admin.create_user(args.username, args.password, **profile),
        "update-user": lambda: admin.update_user(args.id, **profile),
        "disable": lambda: admin.disable(args.id),
        "enable": lambda: admin.enable(args.id),
        "lock": lambda: admin.lock(args.id),
        "unlock": lambda: admin.unlock(args.id),
        "delete": lambda: admin.delete(args.id),
        "end-sessions": lambda: admin.end_sessions(args.id),
        "rotate-keys": admin.rotate_keys,
        "dump": admin.dump,
        "stats": admin.stats,
    }
    try:
        print(json.dumps(results[args.command](), indent=2))
    except requests.ConnectionError:
        print(
            f"asgardeo-standin: no stand-in answers at {args.url}. Start the local run (python -m localrun) or pass"
            " --url (or set STANDIN_URL) to a running stand-in.",
            file=sys.stderr,
        )
        return 2
    except requests.HTTPError as exc:
        detail = exc.response.text.strip() if exc.response is not None else str(exc)
        print(f"asgardeo-standin: the stand-in refused {args.command}: {detail}", file=sys.stderr)
        return 1
    return 0
