"""The promise, tested: under delivery chaos the users table ends equal to the directory, and no delivery is
unaccounted for.

A private stand-in holds ``SEEDED`` users, copied into the table by a first reconciliation (seeding before the
subscription keeps the test about changes, not about 2 x ``SEEDED`` creation webhooks). Then the stand-in drops
10%, duplicates 10% and reorders 10% of its deliveries, with small delays, while a seeded random generator makes
``CHANGES`` changes of every kind. Once the pipeline has drained, the table is compared with the directory's dump
field by field: what differs then is what lost events alone left behind; one reconciliation must leave nothing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from tests.chaos.conftest import Pipeline, duplicate_usernames, inbox_counts, mismatches
from tests.polling import wait_for

SEED = 20261128
SEEDED = 2000
CHANGES = 2500
CHAOS = {"seed": SEED, "drop_rate": 0.10, "duplicate_rate": 0.10, "reorder_rate": 0.10, "delay_ms_max": 20}
# Operation mix; "unlock" and "enable" keep the population from drifting to all-inactive.
WEIGHTS = {"create": 12, "update": 38, "disable": 10, "enable": 10, "lock": 10, "unlock": 8, "delete": 6}
GIVEN = ("Ana", "Bo", "Chen", "Dana", "Eli", "Femi", "Gia", "Hugo")
FAMILY = ("Smith", "Okafor", "Tanaka", "Silva", "Novak", "Haddad")
GROUPS = ("Employees", "Engineering", "Sales", "HR", "Finance", "Support")
# Usernames from several user stores (a secondary store keeps its prefix; two stores may hold one bare name), and
# names longer than their columns (cut to 200, never a failed event).
STORES = ("", "", "", "HR/", "CONTRACTORS/")
LONG_NAME_SHARE = 0.1
# Pairs were made every fifth creation at first; the drain then took about twice as long (unexplained, see the
# closing note of the identity issue), so they are rarer: the rule is the same for one pair as for hundreds.
PAIR_EVERY = 25


def person_name(rng: random.Random, names: tuple[str, ...]) -> str:
    if rng.random() < LONG_NAME_SHARE:
        return rng.choice(names) + "-" + "x" * rng.randint(200, 300)
    return rng.choice(names)


def random_changes(directory: Any, rng: random.Random, count: int) -> dict[str, int]:
    """Make ``count`` changes straight on the stand-in's directory (each emits its webhooks); returns the mix."""
    live = [u.id for u in directory.all_users()]
    done = dict.fromkeys(WEIGHTS, 0)
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    for i in range(count):
        kind = rng.choices(kinds, weights)[0]
        if kind == "create" or not live:
            name = f"chaos{i:05d}@example.com"
            # Now and then the same bare name in the primary store and in a secondary one: two people, two rows.
            for store in ("", "HR/") if i % PAIR_EVERY == 0 else (rng.choice(STORES),):
                user = directory.create_user(
                    store + name,
                    email=name,
                    given_name=person_name(rng, GIVEN),
                    family_name=person_name(rng, FAMILY),
                    groups=rng.sample(GROUPS, 2),
                )
                live.append(user.id)
            done["create"] += 1
            continue
        target = rng.choice(live)
        if kind == "update":
            field = rng.choice(("given_name", "family_name", "email", "groups", "username"))
            value: Any = {
                "given_name": person_name(rng, GIVEN),
                "family_name": person_name(rng, FAMILY),
                "email": f"mail{i:05d}@example.com",
                "groups": rng.sample(GROUPS, rng.randint(0, 3)),
                "username": f"{rng.choice(STORES)}renamed{i:05d}@example.com",
            }[field]
            directory.update_profile(target, {field: value})
        elif kind == "delete":
            directory.delete_user(target)
            live.remove(target)
        else:
            flag, on = {"disable": ("disabled", True), "enable": ("disabled", False)}.get(
                kind, ("locked", kind == "lock")
            )
            if flag == "disabled":
                directory.set_disabled(target, on)
            else:
                directory.set_locked(target, on)
        done[kind] += 1
    return done


def ledger(pipeline: Pipeline) -> dict[str, int]:
    """Both sides of every delivery: the stand-in's copies and the intake's outcomes and inbox."""
    status = pipeline.admin.webhook_status()
    counters = pipeline.metrics()
    rejected = sum(v for k, v in counters.items() if k.startswith("webhooks_rejected"))
    inbox = inbox_counts()
    return {
        "emitted": status["emitted"],
        "dropped": status["dropped"],
        "duplicated": status["duplicated"],
        "unverified": status["unverified"],
        "sent": status["delivered"] + status["failed"],
        "delivered_2xx": status["delivered"],
        "failed": status["failed"],
        "retries": status["retries"],
        "received": int(counters.get("webhooks_received", 0)),
        "duplicate": int(counters.get("webhooks_duplicate", 0)),
        "rejected": int(rejected),
        "inbox_rows": sum(inbox.values()),
        "applied": inbox.get("applied", 0),
        "ignored": inbox.get("ignored", 0),
        "inbox_failed": inbox.get("failed", 0),
    }


def test_users_equal_the_directory_after_chaos_and_one_reconciliation(
    make_pipeline: Callable[..., Pipeline], capsys: Any
) -> None:
    started = time.monotonic()
    pipeline = make_pipeline()
    directory = pipeline.standin.directory
    directory.seed(SEEDED, prefix="chaos-seed")
    first = pipeline.reconcile()
    assert (first.status, first.counters.created) == ("succeeded", SEEDED)
    assert mismatches(pipeline.admin.dump()) == []

    pipeline.subscribe(**CHAOS)
    mix = random_changes(directory, random.Random(SEED), CHANGES)
    pipeline.drain(timeout=150)
    # The intake's counters reach Redis within a second of each answer.
    wait_for(lambda: (b := ledger(pipeline))["sent"] == b["received"] + b["duplicate"] + b["rejected"], 10, "counters")
    books = ledger(pipeline)
    lost = mismatches(pipeline.admin.dump())

    outcome = pipeline.reconcile()
    left = mismatches(pipeline.admin.dump())
    with capsys.disabled():
        print(f"\nchanges made: {mix}")
        print("ledger: " + ", ".join(f"{k}={v}" for k, v in books.items()))
        print(
            f"ledger check: sent {books['sent']} = received {books['received']} + duplicate {books['duplicate']}"
            f" + rejected {books['rejected']}; received {books['received']} = inbox rows {books['inbox_rows']}"
            f" = applied {books['applied']} + ignored {books['ignored']} + failed {books['inbox_failed']}"
        )
        print(f"mismatches left by lost events alone: {len(lost)}; examples: {lost[:3]}")
        print(f"reconciliation {outcome.status}: {outcome.counters.as_dict()}; mismatches after it: {len(left)}")
        print(f"consistency test took {time.monotonic() - started:.0f}s")

    # The chaos really happened.
    assert books["dropped"] > 0
    assert books["duplicated"] > 0
    assert books["duplicate"] > 0
    # The stand-in's own books: every admitted copy ended delivered or failed.
    assert books["sent"] == books["emitted"] - books["unverified"] - books["dropped"] + books["duplicated"]
    # sent = applied + duplicate + rejected, with every accepted delivery one inbox row, every row done.
    assert books["sent"] == books["received"] + books["duplicate"] + books["rejected"]
    assert books["received"] == books["inbox_rows"] == books["applied"] + books["ignored"]
    assert books["rejected"] == 0
    assert books["failed"] == 0
    assert books["inbox_failed"] == 0
    assert outcome.status == "succeeded"
    assert left == []
    assert duplicate_usernames() == []
