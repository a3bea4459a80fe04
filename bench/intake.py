# ruff: noqa: PLC0415 - app modules load after the environment is set, exactly as a fresh process would
"""Webhook intake throughput and latency beside a bare endpoint on the same gunicorn server, in the same run.

    python -m bench.intake [--events 6000] [--concurrency 16]

Phases: (1) saturation: the bare endpoint, then the intake, each sent N signed deliveries as fast as possible;
(2) latency at a paced 300 events/s. Loopback only; no worker runs (messages wait in Redis), so this measures the
intake alone: HMAC, parse, insert + commit, hand-off to the background publisher (which publishes while the answer
goes out). Targets: >= 1000/s, >= 0.5x bare, p99 <= 50 ms at 300/s. The ledger at the end fails loudly unless every
accepted delivery is in the inbox and has its message in the events queue. The server logs at WARNING, as does the
bare endpoint's (they share the middleware), so per-request log lines are not part of either number.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import time
import uuid

from bench._support import SECRET, gunicorn, load, queued_messages, services


def deliveries(count: int) -> list[tuple[bytes, dict[str, str]]]:
    out = []
    now = int(time.time() * 1000)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    args = parser.parse_args()
    with services() as env, gunicorn(env) as port:
        warm = deliveries(300)
        load(port, "/bench/bare", warm, concurrency=args.concurrency)
        load(port, "/webhooks/asgardeo", warm, concurrency=args.concurrency)
        bare = load(port, "/bench/bare", deliveries(args.events), concurrency=args.concurrency, timeout=45)
        intake = load(port, "/webhooks/asgardeo", deliveries(args.events), concurrency=args.concurrency, timeout=45)
        paced_n = int(300 * args.paced_seconds)
        paced_bare = load(port, "/bench/bare", deliveries(paced_n), concurrency=32, rate=300, timeout=30)
        paced = load(port, "/webhooks/asgardeo", deliveries(paced_n), concurrency=32, rate=300, timeout=30)
        print(f"intake benchmark: gunicorn gthread 2x8 on loopback, {args.concurrency} keep-alive clients")
        print(bare.line("bare endpoint (saturated)"))
        print(intake.line("intake (saturated)"))
        print(paced_bare.line("bare endpoint @300/s"))
        print(paced.line("intake @300/s"))
        ratio = intake.rate / bare.rate if bare.rate else 0.0
        print(f"ratio intake/bare: {ratio:.2f}  (target >= 0.50)")
        print(
            f"intake >= 1000/s: {'yes' if intake.rate >= 1000 else 'NO'}; "
            f"p99 @300/s <= 50 ms: {'yes' if paced.pct(0.99) <= 50 else 'NO'}"
        )
        accepted = intake.statuses.get(202, 0) + paced.statuses.get(202, 0)
        from sqlalchemy import func, select

        from models.db import SessionFactory, get_engine
        from models.tables import WebhookEvent

        get_engine()
        with SessionFactory() as session:
            stored = session.execute(select(func.count()).select_from(WebhookEvent)).scalar_one()
        # No worker runs, so every accepted event's message waits in the events queue; the background publisher
        # may still be draining when the last answer arrives.
        deadline = time.monotonic() + 15
        while (messages := queued_messages("events")) < stored and time.monotonic() < deadline:
            time.sleep(0.1)
        # The warm-up's 300 deliveries are stored too.
        print(f"ledger: accepted {accepted} (+300 warm-up), stored {stored}, messages in the events queue {messages}")
        if not stored == messages == accepted + 300:
            raise SystemExit("LEDGER DOES NOT BALANCE: an accepted event is missing from the inbox or the queue")


if __name__ == "__main__":
    main()
