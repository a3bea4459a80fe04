# ruff: noqa: PLC0415 - app modules load after the environment is set, exactly as a fresh process would
"""End-to-end lag of a webhook event, from receipt to its committed user row, at a paced 100 events/s.

    python -m bench.e2e_lag [--rate 100] [--seconds 20]

Processes as the Procfile starts them: ``gunicorn --config gunicorn.conf.py 'web:create_app()'`` (bound to a
loopback port through ``WEB_BIND``) and ``celery -A tasks worker ... --concurrency 2``, on a fresh database and
Redis prefix (tests/services.py). The generator sends signed deliveries (userCreated, and userDeleted for users it
created earlier, neither of which asks for a SCIM refresh) open-loop at ``--rate``, with a few deliberate
duplicates (answered 200) and forged signatures (answered 401). Bounded by count and by time; loopback only.

Every 10th send (from the 4th) adds a prepared user to a role ROLE_MAP maps (``roleUsersUpdated``: the role is
granted and audited), and every 10th (from the 8th) revokes a prepared user's Asgardeo sessions (``sessionRevoked``
without a session list: every live session of the user ends); the prepared users and their sessions are written
before the run. Their lag is reported in rows of their own.

Measured per accepted event, from the inbox row: ``processed_at - received_at`` (the row's insert to the worker's
commit; ``processed_at`` is stamped in the same transaction that writes the user), and from the client's send time
to ``processed_at``. Baselines from the same run: the direct in-process ``events.apply`` call on events of the same
shape (no HTTP, no broker), and the bare ``health.ping`` publish → consume → result round trip.
The ledger must balance (sent = applied + duplicate + rejected, and every accepted event applied); it fails loudly
otherwise. Results also go to ``bench/results/e2e_lag.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._support import ROOT, SECRET, load, services, wait_http
from localrun.embedded import free_port
from tests.webhook_payloads import claims, encode, event, signature

RESULTS = ROOT / "bench" / "results" / "e2e_lag.json"
DRAIN_SECONDS = 60.0


@dataclass
class Delivery:
    jti: str
    raw: bytes
    headers: dict[str, str]
    expect: int  # 202 new, 200 duplicate, 401 forged
    kind: str = "user"  # user, role (roleUsersUpdated) or session (sessionRevoked)


ROLE_MAP = "HR Manager@application:HRMS=hr"
ROLE_ID = str(uuid.uuid4())


def security_body(kind: str, user_id: str, iat: int) -> dict[str, Any]:
    """A ``roleUsersUpdated`` adding ``user_id`` to the mapped role, or a ``sessionRevoked`` of all their sessions."""
    if kind == "role":
        role = {
            "id": ROLE_ID,
            "name": "HR Manager",
            "audience": {"type": "application", "value": ROLE_ID, "display": "HRMS"},
            "addedUsers": [{"id": user_id, "userStoreDomain": "DEFAULT"}],
        }
        uri = "https://schemas.identity.wso2.org/events/role/event-type/roleUsersUpdated"
        return {"iss": "bench", "jti": str(uuid.uuid4()), "iat": iat, "events": {uri: {"role": role}}}
    return event("sessionRevoked", user_id, iat=iat, channel="session")


def prepare_users(count: int) -> list[str]:
    """Users with one live session each, for the role and session events (written before the clock starts)."""
    from models.db import unit_of_work
    from models.sessions import create_session
    from models.users import UserRecord, get_by_asgardeo_id, upsert_users

    ids = [str(uuid.uuid4()) for _ in range(count)]
    records = [UserRecord(i, f"{i}@example.com", f"{i}@example.com", None, None, (), "active", 1) for i in ids]
    with unit_of_work() as session:
        upsert_users(session, records, source="reconcile")
        for user_id in ids:
            user = get_by_asgardeo_id(session, user_id)
            assert user is not None
            create_session(session, user, ttl_seconds=3600)
    return ids


def plan_deliveries(count: int, prepared: list[str] | None = None) -> list[Delivery]:
    """``count`` sends: mostly new users, every 5th deletes an earlier one, every 50th repeats, every 100th forged;
    with ``prepared`` users, every 10th also a role grant and every 10th a session revocation."""
    from models.clock import now_ms

    out: list[Delivery] = []
    created: list[str] = []
    base = now_ms()
    granted = iter(prepared or [])
    revoked = iter(prepared or [])
    for i in range(count):
        kind = {3: "role", 7: "session"}.get(i % 10) if prepared else None
        target = next(granted if kind == "role" else revoked, None) if kind else None
        if kind and target:
            raw = encode(security_body(kind, target, base + i))
            headers = {"Content-Type": "application/json", "X-Hub-Signature": signature(raw, SECRET)}
            out.append(Delivery(json.loads(raw)["jti"], raw, headers, 202, kind))
            continue
        if i % 100 == 99:
            raw = encode(event("userCreated", claims=claims(username=f"forged-{i}@example.com"), iat=base + i))
            out.append(
                Delivery("", raw, {"Content-Type": "application/json", "X-Hub-Signature": "sha256=" + "0" * 64}, 401)
            )
            continue
        if i % 50 == 49 and out:
            first = next(d for d in out if d.expect == 202)
            out.append(Delivery(first.jti, first.raw, first.headers, 200))
            continue
        if i % 5 == 4 and created:
            body = event("userDeleted", created.pop(0), iat=base + i)
        else:
            uid = str(uuid.uuid4())
            created.append(uid)
            body = event("userCreated", uid, iat=base + i, claims=claims(username=f"{uid}@example.com"))
        raw = encode(body)
        headers = {"Content-Type": "application/json", "X-Hub-Signature": signature(raw, SECRET)}
        out.append(Delivery(body["jti"], raw, headers, 202))
    return out


def send_paced(
    port: int, plan: list[Delivery], rate: float, clients: int, limit_seconds: float
) -> list[tuple[float, int]]:
    """Open-loop at ``rate``. Returns (send wall time, status) per delivery; unsent ones keep status -1."""
    results: list[tuple[float, int]] = [(0.0, -1)] * len(plan)

    def record(index: int, sent_at: float, _latency_ms: float, status: int) -> None:
        results[index] = (sent_at, status)

    bodies = [(item.raw, item.headers) for item in plan]
    load(port, "/webhooks/asgardeo", bodies, concurrency=clients, rate=rate, timeout=limit_seconds, on_response=record)
    return results


@contextmanager
def procfile_processes(env: dict[str, str], logdir: Path) -> Iterator[int]:
    """The Procfile's web and worker lines (worker concurrency 2); their logs go to files, as in production."""
    port = free_port()
    child_env = {**env, "WEB_BIND": f"127.0.0.1:{port}", "LOG_LEVEL": "INFO", "WORKER_CONCURRENCY": "2"}
    web_cmd = [str(ROOT / ".venv/bin/gunicorn"), "--config", "gunicorn.conf.py", "web:create_app()"]
    worker_cmd = [
        str(ROOT / ".venv/bin/celery"), "-A", "tasks", "worker", "--queues", "default,events,users,reconcile",
        "--concurrency", "2", "--hostname", f"bench-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "INFO",
    ]  # fmt: skip
    procs = []
    for name, cmd in (("web", web_cmd), ("worker", worker_cmd)):
        log = (logdir / f"{name}.log").open("wb")
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT))
    try:
        wait_http(port)
        yield port
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def pct(values: list[float], q: float) -> float:
    data = sorted(values)
    return round(data[min(len(data) - 1, int(q * len(data)))], 2) if data else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": pct(values, 0.5), "p95_ms": pct(values, 0.95), "p99_ms": pct(values, 0.99)}


def ping_round_trips(count: int) -> list[float]:
    from tasks.health import ping

    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        assert ping.delay().get(timeout=10) == "pong"
        out.append((time.perf_counter() - t0) * 1000)
    return out


def direct_apply(count: int) -> list[float]:
    """The same kind of event applied by calling the task in this process: inbox row committed, then apply."""
    from models import inbox
    from models.db import get_engine
    from tasks.events import apply

    out = []
    for i in range(count):
        uid = str(uuid.uuid4())
        body = event("userCreated", uid, claims=claims(username=f"direct-{i}-{uid}@example.com"))
        with get_engine().begin() as conn:
            event_id = inbox.insert_event(conn, inbox.parse_envelope(body), json.dumps(body))
        assert event_id is not None
        t0 = time.perf_counter()
        assert apply(event_id) == "applied"
        out.append((time.perf_counter() - t0) * 1000)
    return out


def inbox_rows(jtis: list[str]) -> dict[str, tuple[str, float, float | None]]:
    from sqlalchemy import select

    from models.db import SessionFactory, get_engine
    from models.tables import WebhookEvent

    get_engine()
    with SessionFactory() as session:
        rows = session.execute(
            select(WebhookEvent.jti, WebhookEvent.status, WebhookEvent.received_at, WebhookEvent.processed_at).where(
                WebhookEvent.jti.in_(jtis)
            )
        ).all()
    return {
        jti: (status, received.timestamp(), processed.timestamp() if processed else None)
        for jti, status, received, processed in rows
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    count = int(args.rate * args.seconds)
    os.environ["ROLE_MAP"] = ROLE_MAP
    logdir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    with services() as env, procfile_processes(env, logdir) as port:
        plan = plan_deliveries(count, prepare_users(count // 10 + 1))
        ping_round_trips(5)  # the worker is up and consuming
        ping_ms = ping_round_trips(50)
        sent = send_paced(port, plan, args.rate, args.clients, limit_seconds=args.seconds * 2 + 10)
        statuses: dict[int, int] = {}
        for _, status in sent:
            statuses[status] = statuses.get(status, 0) + 1
        accepted = [(d, s) for d, s in zip(plan, sent, strict=True) if s[1] == 202]
        jtis = [d.jti for d, _ in accepted]
        deadline = time.monotonic() + DRAIN_SECONDS
        while True:
            rows = inbox_rows(jtis)
            pending = [j for j in jtis if rows.get(j, ("", 0, None))[0] not in ("applied", "ignored", "failed")]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        direct_ms = direct_apply(200)

    def lag_of(kind: str) -> list[float]:
        picked = [d.jti for d, _ in accepted if d.kind == kind and d.jti in rows]
        return [(p - r) * 1000 for s, r, p in (rows[j] for j in picked) if p is not None and s == "applied"]

    server_lag = lag_of("user")
    client_lag = [
        (rows[d.jti][2] - sent_at) * 1000  # type: ignore[operator]
        for d, (sent_at, _) in accepted
        if d.jti in rows and rows[d.jti][2] is not None
    ]
    applied = sum(1 for j in jtis if rows.get(j, ("",))[0] == "applied")
    ledger = {
        "sent": len(plan),
        "accepted_202": statuses.get(202, 0),
        "applied": applied,
        "duplicate_200": statuses.get(200, 0),
        "rejected_401": statuses.get(401, 0),
        "other": {str(k): v for k, v in statuses.items() if k not in (200, 202, 401)},
        "expected": {
            "accepted": sum(1 for d in plan if d.expect == 202),
            "duplicate": sum(1 for d in plan if d.expect == 200),
            "rejected": sum(1 for d in plan if d.expect == 401),
        },
    }
    result = {
        "setup": {
            "web": "gunicorn --config gunicorn.conf.py (gthread, defaults 2 workers x 8 threads), LOG_LEVEL=INFO",
            "worker": "celery -A tasks worker --concurrency 2 (prefork), LOG_LEVEL=INFO",
            "rate_per_s": args.rate,
            "seconds": args.seconds,
            "clients": args.clients,
            "cpus": os.cpu_count(),
        },
        "receipt_to_commit": summary(server_lag),
        "role_change_receipt_to_commit": summary(lag_of("role")),
        "session_revocation_receipt_to_commit": summary(lag_of("session")),
        "send_to_commit": summary(client_lag),
        "direct_apply_call": summary(direct_ms),
        "ping_round_trip": summary(ping_ms),
        "ledger": ledger,
    }
    e2e50 = result["receipt_to_commit"]["p50_ms"]
    result["ratio_p50_vs_direct_apply"] = round(e2e50 / result["direct_apply_call"]["p50_ms"], 2)
    result["ratio_p50_vs_ping"] = round(e2e50 / result["ping_round_trip"]["p50_ms"], 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"end-to-end lag at {args.rate:.0f} events/s for {args.seconds:.0f} s (gunicorn as the Procfile + celery -c 2)"
    )
    for name in (
        "receipt_to_commit",
        "role_change_receipt_to_commit",
        "session_revocation_receipt_to_commit",
        "send_to_commit",
        "direct_apply_call",
        "ping_round_trip",
    ):
        s: Any = result[name]
        print(f"{name:<37} p50 {s['p50_ms']:8.2f} ms  p95 {s['p95_ms']:8.2f} ms  p99 {s['p99_ms']:8.2f} ms  n={s['n']}")
    print(
        f"ratio receipt→commit p50 / direct apply p50: {result['ratio_p50_vs_direct_apply']}; "
        f"/ ping round trip p50: {result['ratio_p50_vs_ping']}"
    )
    print(
        f"targets: p50 <= 100 ms: {'yes' if e2e50 <= 100 else 'NO'}; "
        f"p99 <= 1000 ms: {'yes' if result['receipt_to_commit']['p99_ms'] <= 1000 else 'NO'}"
    )
    print(f"ledger: {json.dumps(ledger)}")
    print(f"worker and web logs: {logdir}")
    expected = ledger["expected"]
    balanced = (
        ledger["sent"] == ledger["applied"] + ledger["duplicate_200"] + ledger["rejected_401"]
        and ledger["applied"] == ledger["accepted_202"] == expected["accepted"]
        and ledger["duplicate_200"] == expected["duplicate"]
        and ledger["rejected_401"] == expected["rejected"]
    )
    if not balanced:
        raise SystemExit(f"LEDGER DOES NOT BALANCE: {json.dumps(ledger)}")


if __name__ == "__main__":
    main()
