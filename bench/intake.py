# ruff: noqa: PLC0415 - app modules load after the environment is set, exactly as a fresh process would
"""Webhook intake throughput and latency beside a bare endpoint on the same gunicorn server, in the same run.

    python -m bench.intake [--events 6000] [--concurrency 16] [--before-worker gthread]

Phases: (1) saturation: the bare endpoint, then the intake, each sent N signed deliveries as fast as possible;
(2) latency at a paced 300 events/s. The server runs with the service's ``gunicorn.conf.py``; the same phases run
first on plain ``gthread`` (the worker the service used before it buffered requests), so the report can put the
two side by side from one run on one machine. Loopback only; no worker runs (messages wait in Redis), so this
measures the intake alone: HMAC, parse, insert + commit, hand-off to the background publisher (which publishes
while the answer goes out). Targets: >= 1000/s, >= 0.5x bare, p99 <= 50 ms at 300/s. The ledger at the end fails
loudly unless every accepted delivery is in the inbox and has its message in the events queue. The server logs at
WARNING, as does the bare endpoint's (they share the middleware), so per-request log lines are not part of either
number.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import time
import uuid

from bench._support import SECRET, gunicorn, load, queued_event_ids, services


def deliveries(count: int) -> list[tuple[bytes, dict[str, str]]]:
    from models.clock import now_ms

    out = []
    now = now_ms()
    for i in range(count):
        uid = str(uuid.uuid4())
        body = {
            "iss": "https://api.asgardeo.io/t/bench",
            "jti": str(uuid.uuid4()),
            "iat": now + i,
            "events": {
                "https://schemas.identity.wso2.org/events/user/event-type/userCreated": {
                    "user": {
                        "id": uid,
                        "claims": [
                            {"uri": "http://wso2.org/claims/username", "value": f"{uid}@example.com"},
                            {"uri": "http://wso2.org/claims/emailaddress", "value": f"{uid}@example.com"},
                        ],
                    }
                }
            },
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        sig = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        out.append((raw, {"Content-Type": "application/json", "X-Hub-Signature": sig}))
    return out


def measure(env: dict[str, str], args: argparse.Namespace, worker_class: str | None, label: str) -> None:
    """Saturated and paced runs, bare endpoint then intake, on one gunicorn; prints a line per run with ``label``
    in front, and fails loudly unless every accepted delivery is in the inbox with its id in a queued message."""
    from sqlalchemy import func, select

    from models.db import SessionFactory, get_engine
    from models.tables import WebhookEvent

    def ledger() -> tuple[int, int]:
        get_engine()
        with SessionFactory() as session:
            stored = session.execute(select(func.count()).select_from(WebhookEvent)).scalar_one()
        return stored, len(queued_event_ids("events"))

    stored_before, messages_before = ledger()
    with gunicorn(env, worker_class=worker_class) as server:
        port = server.port
        warm = deliveries(300)
        load(port, "/bench/bare", warm, concurrency=args.concurrency)
        load(port, "/webhooks/asgardeo", warm, concurrency=args.concurrency)
        cpu_start = server.cpu_seconds()
        bare = load(port, "/bench/bare", deliveries(args.events), concurrency=args.concurrency, timeout=45)
        cpu_bare = server.cpu_seconds()
        intake = load(port, "/webhooks/asgardeo", deliveries(args.events), concurrency=args.concurrency, timeout=45)
        cpu_intake = server.cpu_seconds()
        paced_n = int(300 * args.paced_seconds)
        paced_bare = load(port, "/bench/bare", deliveries(paced_n), concurrency=32, rate=300, timeout=30)
        paced = load(port, "/webhooks/asgardeo", deliveries(paced_n), concurrency=32, rate=300, timeout=30)
        print(
            f"{label}intake benchmark: gunicorn {worker_class or 'gunicorn.conf.py worker'} 2x8 on loopback, "
            f"{args.concurrency} keep-alive clients"
        )
        print(bare.line(f"{label}bare endpoint (saturated)"))
        print(intake.line(f"{label}intake (saturated)"))
        print(paced_bare.line(f"{label}bare endpoint @300/s"))
        print(paced.line(f"{label}intake @300/s"))
        # The server's own CPU time per request: what the worker class costs, much less disturbed than a rate by
        # whatever else the machine is running.
        print(
            f"{label}server CPU per request (saturated): bare {(cpu_bare - cpu_start) / bare.sent * 1e6:.0f} us, "
            f"intake {(cpu_intake - cpu_bare) / intake.sent * 1e6:.0f} us"
        )
        ratio = intake.rate / bare.rate if bare.rate else 0.0
        print(f"{label}ratio intake/bare: {ratio:.2f}  (target >= 0.50)")
        print(
            f"{label}intake >= 1000/s: {'yes' if intake.rate >= 1000 else 'NO'}; "
            f"p99 @300/s <= 50 ms: {'yes' if paced.pct(0.99) <= 50 else 'NO'}"
        )
        accepted = intake.statuses.get(202, 0) + paced.statuses.get(202, 0) + 300  # the warm-up is stored too
        # No worker runs, so every accepted event's message waits in the events queue; the background publisher
        # may still be draining when the last answer arrives.
        deadline = time.monotonic() + 15
        while (now := ledger())[1] - messages_before < now[0] - stored_before and time.monotonic() < deadline:
            time.sleep(0.1)
        stored, messages = now[0] - stored_before, now[1] - messages_before
        print(f"{label}ledger: accepted {accepted} (with the warm-up), stored {stored}, ids queued {messages}")
        if not stored == messages == accepted:
            raise SystemExit("LEDGER DOES NOT BALANCE: an accepted event is missing from the inbox or the queue")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument(
        "--before-worker",
        default="gthread",
        help="also measure this gunicorn worker class first, in the same run, for a before/after figure ('' skips)",
    )
    args = parser.parse_args()
    # Each server gets fresh services: the second must not insert into a table the first already grew.
    if args.before_worker:
        with services() as env:
            measure(env, args, args.before_worker, f"before ({args.before_worker}): ")
    with services() as env:
        measure(env, args, None, "")


if __name__ == "__main__":
    main()
