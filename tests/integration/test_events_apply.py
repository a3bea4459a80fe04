"""Events applied by the real worker from real signed deliveries (the stand-in's, and hand-made ones to force order)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

import kombu.exceptions
import pytest
import requests
from sqlalchemy import func, select, update

from models.clock import now_ms
from models.db import SessionFactory, get_engine, unit_of_work
from models.tables import AppSession, SyncRun, User, UserChange, WebhookEvent
from tasks.events import ApplyPublisher, relay
from tests.polling import wait_for
from tests.recording_publisher import install_publisher
from tests.stack import WEBHOOK_SECRET, LiveServer
from tests.webhook_payloads import claims, encode, event, signed_headers

pytestmark = pytest.mark.usefixtures("celery_worker", "clean_db")


def user(asgardeo_id: str) -> User | None:
    get_engine()
    with SessionFactory() as session:
        return session.execute(select(User).where(User.asgardeo_id == asgardeo_id)).scalar_one_or_none()


def events_done(expected: int) -> bool:
    with SessionFactory() as session:
        statuses = list(session.execute(select(WebhookEvent.status)).scalars())
    return len(statuses) >= expected and all(s in ("applied", "ignored") for s in statuses)


def audit_count(asgardeo_id: str) -> int:
    with SessionFactory() as session:
        query = select(func.count()).select_from(UserChange).where(UserChange.asgardeo_id == asgardeo_id)
        return int(session.execute(query).scalar_one())


@pytest.fixture
def subscribed(standin_admin: Any, live_server: LiveServer) -> Iterator[Any]:
    status = standin_admin.set_webhook(live_server.url + "/webhooks/asgardeo", WEBHOOK_SECRET, wait_verified=10)
    assert status["verified"], status
    yield standin_admin
    standin_admin.wait_for_deliveries(timeout=10)
    standin_admin.set_webhook(None)


def deliver(live_server: LiveServer, body: dict[str, Any]) -> requests.Response:
    raw = encode(body)
    return requests.post(live_server.url + "/webhooks/asgardeo", data=raw, headers=signed_headers(raw), timeout=10)


def test_standin_changes_of_every_type_reach_the_user_table(subscribed: Any) -> None:
    name = f"kim-{uuid.uuid4().hex[:8]}@example.com"
    created = subscribed.create_user(name, "Passw0rd!", email=name, given_name="Kim", family_name="Lee")
    uid = created["id"]
    found = wait_for(lambda: user(uid), what="created user")
    assert (found.username, found.email, found.first_name, found.last_name, found.status) == (
        name,
        name,
        "Kim",
        "Lee",
        "active",
    )

    subscribed.update_user(uid, given_name="Kimberly")
    wait_for(lambda: (u := user(uid)) and u.first_name == "Kimberly", what="profile update")

    subscribed.disable(uid)
    wait_for(lambda: (u := user(uid)) and u.status == "inactive", what="disable")
    subscribed.enable(uid)
    wait_for(lambda: (u := user(uid)) and u.status == "active", what="enable")
    subscribed.lock(uid)
    wait_for(lambda: (u := user(uid)) and u.status == "inactive", what="lock")
    subscribed.unlock(uid)
    wait_for(lambda: (u := user(uid)) and u.status == "active", what="unlock")
    subscribed.delete(uid)
    wait_for(lambda: (u := user(uid)) and u.status == "deleted", what="delete")
    subscribed.wait_for_deliveries(timeout=10)
    wait_for(lambda: events_done(8), what="every event done")
    with SessionFactory() as session:
        types = sorted(session.execute(select(WebhookEvent.event_type)).scalars())
    assert types == sorted(
        [
            "userCreated",
            "registrationSuccess",
            "userProfileUpdated",
            "userDisabled",
            "userEnabled",
            "userAccountLocked",
            "userAccountUnlocked",
            "userDeleted",
        ]
    )


def test_disabling_a_user_revokes_their_sessions(live_server: LiveServer, make_signed_in_user: Any) -> None:
    uid = str(uuid.uuid4())
    local_id, token = make_signed_in_user(asgardeo_id=uid, source_version=1)
    assert deliver(live_server, event("userDisabled", uid)).status_code == 202
    wait_for(lambda: (u := user(uid)) and u.status == "inactive", what="disable")
    with SessionFactory() as session:
        revoked = session.execute(select(AppSession.revoked_at).where(AppSession.user_id == local_id)).scalar_one()
    assert revoked is not None
    me = requests.get(live_server.url + "/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert me.status_code == 401


def test_duplicate_deliveries_apply_once(live_server: LiveServer) -> None:
    uid = str(uuid.uuid4())
    body = event("userCreated", uid, claims=claims(username="dup@example.com", email="dup@example.com"))
    assert deliver(live_server, body).status_code == 202
    assert deliver(live_server, body).status_code == 200
    wait_for(lambda: events_done(1), what="applied")
    assert audit_count(uid) == 1


def test_update_before_create_keeps_the_update(live_server: LiveServer) -> None:
    uid = str(uuid.uuid4())
    t0 = now_ms()
    update = event("userProfileUpdated", uid, iat=t0 + 10, updatedClaims=claims(first_name="New"))
    create = event("userCreated", uid, iat=t0, claims=claims(username="o@example.com", first_name="Old"))
    assert deliver(live_server, update).status_code == 202
    wait_for(lambda: events_done(1), what="update applied")
    assert deliver(live_server, create).status_code == 202
    wait_for(lambda: events_done(2), what="create applied")
    found = user(uid)
    assert found is not None
    assert found.first_name == "New"
    assert found.source_version == t0 + 10


def test_update_after_delete_does_not_resurrect_the_user(live_server: LiveServer) -> None:
    uid = str(uuid.uuid4())
    t0 = now_ms()
    create = event("userCreated", uid, iat=t0, claims=claims(username="gone@example.com"))
    delete = event("userDeleted", uid, iat=t0 + 20)
    late_update = event("userProfileUpdated", uid, iat=t0 + 10, updatedClaims=claims(first_name="Zombie"))
    late_enable = event("userEnabled", uid, iat=t0 + 15)
    for body in (create, delete, late_update, late_enable):
        assert deliver(live_server, body).status_code == 202
    wait_for(lambda: events_done(4), what="all applied")
    found = user(uid)
    assert found is not None
    assert found.status == "deleted"
    assert found.first_name is None


def test_unknown_event_type_is_recorded_as_ignored_and_changes_nothing(live_server: LiveServer) -> None:
    uid = str(uuid.uuid4())
    assert deliver(live_server, event("userLoggedIn", uid, channel="login")).status_code == 202
    wait_for(lambda: events_done(1), what="ignored")
    with SessionFactory() as session:
        row = session.execute(select(WebhookEvent)).scalar_one()
    assert row.status == "ignored"
    assert row.last_error is not None
    assert user(uid) is None


def test_hostile_claims_fail_the_event_permanently_without_retrying(live_server: LiveServer) -> None:
    uid = str(uuid.uuid4())
    body = event("userCreated", uid, claims=[{"uri": "http://wso2.org/claims/givenname", "value": {"$ne": 1}}])
    assert deliver(live_server, body).status_code == 202

    def failed() -> WebhookEvent | None:
        with SessionFactory() as session:
            return session.execute(select(WebhookEvent).where(WebhookEvent.status == "failed")).scalar_one_or_none()

    row = wait_for(failed, what="failed")
    assert row.attempts == 1
    assert "not a string" in (row.last_error or "")
    assert user(uid) is None


def test_events_accepted_while_the_broker_is_down_are_applied_after_the_relay(app: Any) -> None:
    install_publisher(app, ApplyPublisher("redis://127.0.0.1:1/0"))
    client = app.test_client()
    ids = [str(uuid.uuid4()) for _ in range(5)]
    for uid in ids:
        raw = encode(event("userCreated", uid, claims=claims(username=f"{uid}@example.com")))
        assert client.post("/webhooks/asgardeo", data=raw, headers=signed_headers(raw)).status_code == 202

    def statuses() -> set[str]:
        with SessionFactory() as session:
            return set(session.execute(select(WebhookEvent.status)).scalars())

    wait_for(lambda: statuses() == {"received"}, what="every event left received for the relay")
    relay.delay()
    wait_for(lambda: events_done(5), what="relayed events applied")
    assert all(user(uid) is not None for uid in ids)


def test_relay_resends_events_stuck_in_queued_past_the_deadline() -> None:
    uid = str(uuid.uuid4())
    with unit_of_work() as session:
        session.add(
            WebhookEvent(
                jti=str(uuid.uuid4()),
                event_type="userCreated",
                event_uri="https://schemas.identity.wso2.org/events/user/event-type/userCreated",
                asgardeo_id=uid,
                iat=now_ms(),
                payload=event("userCreated", uid, claims=claims(username="stuck@example.com")),
                status="queued",
                queued_at=func.now() - func.make_interval(0, 0, 0, 0, 1),
            )
        )
    relay.delay()
    wait_for(lambda: events_done(1), what="stuck event applied")
    assert user(uid) is not None


def test_webhooks_and_scim_agree_on_a_secondary_store_user_so_a_sync_changes_nothing(subscribed: Any) -> None:
    from tasks.users import sync_user

    name = f"team/kim-{uuid.uuid4().hex[:8]}@example.com"
    created = subscribed.create_user(name, "Passw0rd!", email="kim@example.com", given_name="Kim", groups=["Staff"])
    uid = created["id"]
    found = wait_for(lambda: user(uid), what="created user")
    assert (found.username, found.groups) == (name, ["Staff"])
    subscribed.wait_for_deliveries(timeout=10)
    wait_for(lambda: events_done(2), what="both creation events done")
    before = audit_count(uid)
    assert sync_user(uid, trigger="test").action == "unchanged"
    assert audit_count(uid) == before
    assert user(uid).username == name  # type: ignore[union-attr]


def test_a_signed_creation_with_a_201_character_name_is_applied_with_the_name_cut(subscribed: Any) -> None:
    name = f"long-{uuid.uuid4().hex[:8]}@example.com"
    given = "G" * 201
    created = subscribed.create_user(name, "Passw0rd!", email=name, given_name=given, family_name="F" * 250)
    uid = created["id"]
    found = wait_for(lambda: user(uid), what="created user")
    assert (found.first_name, found.last_name) == (given[:200], "F" * 200)
    subscribed.wait_for_deliveries(timeout=10)
    wait_for(lambda: events_done(2), what="both creation events applied")


def test_a_failed_event_stores_a_short_error_without_the_rows_values(live_server: LiveServer) -> None:
    from sqlalchemy.exc import DataError

    from models.events import short_error

    secret = "Ada.Lovelace.Private@example.com"
    refused = DataError("INSERT INTO users ... VALUES (%(email)s)", {"email": secret}, Exception("value too long"))
    assert secret not in short_error(refused)
    assert len(short_error(refused)) <= 200
    uid = str(uuid.uuid4())
    body = event("userCreated", uid, claims=[{"uri": "http://wso2.org/claims/givenname", "value": {"name": secret}}])
    assert deliver(live_server, body).status_code == 202

    def failed() -> WebhookEvent | None:
        with SessionFactory() as session:
            return session.execute(select(WebhookEvent).where(WebhookEvent.status == "failed")).scalar_one_or_none()

    row = wait_for(failed, what="failed")
    assert secret not in (row.last_error or "")
    assert len(row.last_error or "") <= 200


def _stored_event(asgardeo_id: str, name: str = "userCreated", **user_part: Any) -> int:
    """A ``queued`` event ``name`` in the inbox, as the intake leaves it (a ``userCreated`` one with a username by
    default); returns its id."""
    body = event(name, asgardeo_id, **(user_part or {"claims": claims(username=f"{asgardeo_id}@example.com")}))
    with unit_of_work() as session:
        row = WebhookEvent(
            jti=body["jti"],
            event_type=name,
            event_uri=next(iter(body["events"])),
            asgardeo_id=asgardeo_id,
            iat=body["iat"],
            payload=body,
            status="queued",
        )
        session.add(row)
        session.flush()
        return row.id


def _event_row(event_id: int) -> WebhookEvent:
    with SessionFactory() as session:
        return session.execute(select(WebhookEvent).where(WebhookEvent.id == event_id)).scalar_one()


@pytest.fixture
def refuse_user_writes() -> Iterator[Callable[[Iterable[str]], None]]:
    """``refuse(ids)``: from now on Postgres refuses writes of these users (and only these) with a serialization
    failure (SQLSTATE 40001, a transient error) raised by a trigger: the real error from the real server."""
    from sqlalchemy import text

    def refuse(ids: Iterable[str]) -> None:
        listed = ", ".join(f"'{uuid.UUID(uid)}'" for uid in ids) or "''"
        with get_engine().begin() as conn:
            conn.execute(
                text(
                    "CREATE OR REPLACE FUNCTION test_refuse_user() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"IF NEW.asgardeo_id IN ({listed}) THEN "
                    "RAISE EXCEPTION 'refused by the test' USING ERRCODE = '40001'; END IF; RETURN NEW; END $$"
                )
            )
            conn.execute(text("DROP TRIGGER IF EXISTS test_refuse_user ON users"))
            conn.execute(
                text(
                    "CREATE TRIGGER test_refuse_user BEFORE INSERT OR UPDATE ON users "
                    "FOR EACH ROW EXECUTE FUNCTION test_refuse_user()"
                )
            )

    yield refuse
    with get_engine().begin() as conn:
        conn.execute(text("DROP TRIGGER IF EXISTS test_refuse_user ON users"))
        conn.execute(text("DROP FUNCTION IF EXISTS test_refuse_user()"))


def test_a_batch_applies_each_event_and_hands_the_rest_to_retries_at_a_transient_error(
    refuse_user_writes: Callable[[Iterable[str]], None],
) -> None:
    from tasks.events import apply_batch

    uids = [str(uuid.uuid4()) for _ in range(4)]
    ids = [_stored_event(uid) for uid in uids]
    refuse_user_writes([uids[1]])
    assert apply_batch(ids) == 1  # the first applied here; the second failed, so it and the rest went on
    assert user(uids[0]) is not None
    # The worker's events.apply messages: the third and fourth apply, the second keeps failing and counts attempts.
    wait_for(lambda: user(uids[2]) is not None and user(uids[3]) is not None, what="the rest applied one by one")
    wait_for(lambda: _event_row(ids[1]).attempts >= 1, what="the refused event's attempts counted")
    assert user(uids[1]) is None
    refuse_user_writes([])
    wait_for(lambda: user(uids[1]) is not None, what="the refused event applied by a retry", timeout=60)
    assert {_event_row(i).status for i in ids} == {"applied"}


def test_a_batch_with_an_event_that_can_never_apply_applies_the_others_and_fails_only_that_one() -> None:
    """The batch is one transaction; the hostile event rolls it back, and one transaction per event follows."""
    from tasks.events import apply_batch

    uids = [str(uuid.uuid4()) for _ in range(3)]
    hostile = [{"uri": "http://wso2.org/claims/givenname", "value": {"$ne": 1}}]
    ids = [_stored_event(uids[0]), _stored_event(uids[1], claims=hostile), _stored_event(uids[2])]
    assert apply_batch(ids) == 3
    assert [_event_row(i).status for i in ids] == ["applied", "failed", "applied"]
    assert [_event_row(i).attempts for i in ids] == [1, 1, 1]  # the rolled-back batch counted no attempt
    assert [user(uid) is not None for uid in uids] == [True, False, True]


def test_a_rolled_back_batch_reports_what_its_events_did_once() -> None:
    """A batch rolled back by an event that can never apply is taken again one event at a time; what an event reports
    beyond the database (here a login, counted) is reported for the try that committed, not for both."""
    from tasks import metrics
    from tasks.events import apply_batch

    def logins_counted() -> float:
        metrics.flush()
        wanted = ("identity_events", {"event_type": "loginSuccess"})
        return sum(value for name, value in metrics.read_all().items() if metrics.parse_field(name) == wanted)

    hostile = [{"uri": "http://wso2.org/claims/givenname", "value": {"$ne": 1}}]
    ids = [_stored_event(str(uuid.uuid4()), name="loginSuccess"), _stored_event(str(uuid.uuid4()), claims=hostile)]
    before = logins_counted()
    assert apply_batch(ids) == 2
    assert [_event_row(i).status for i in ids] == ["ignored", "failed"]
    assert logins_counted() - before == 1


def test_a_batch_applies_events_of_one_user_in_order_and_an_id_listed_twice_once() -> None:
    from tasks.events import apply_batch

    uid = str(uuid.uuid4())
    create = _stored_event(uid)
    update = _stored_event(uid, "userProfileUpdated", updatedClaims=claims(first_name="Later"))
    assert apply_batch([create, update, create]) == 3
    found = user(uid)
    assert found is not None
    assert (found.username, found.first_name) == (f"{uid}@example.com", "Later")
    assert audit_count(uid) == 2  # created, then updated; the repeated create was skipped
    assert {_event_row(i).status for i in (create, update)} == {"applied"}


def test_a_batch_records_each_events_own_outcome() -> None:
    """The batch's outcomes are written in one statement at its end: each row still gets its own status and note, one
    attempt, and the time it was done."""
    from tasks.events import apply_batch

    uid = str(uuid.uuid4())
    created, unknown = _stored_event(uid), _stored_event(uid, "userTeleported")
    before = _event_row(created)
    assert apply_batch([created, unknown]) == 2
    rows = [_event_row(created), _event_row(unknown)]
    assert [(r.status, r.attempts) for r in rows] == [("applied", 1), ("ignored", 1)]
    assert rows[0].last_error is None
    assert rows[1].last_error == "event type userTeleported is not applied to users"
    assert all(r.processed_at is not None and r.processed_at >= before.received_at for r in rows)


@pytest.mark.parametrize("value", [[], [0], [1, "2"], "1,2", [1] * 1001, None, {"ids": [1]}])
def test_a_malformed_batch_changes_nothing(value: Any) -> None:
    from tasks.events import apply_batch

    assert apply_batch(value) == 0
    with SessionFactory() as session:
        assert session.execute(select(func.count()).select_from(WebhookEvent)).scalar_one() == 0


def test_an_event_whose_refresh_cannot_be_queued_stays_unapplied_until_the_refresh_is_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A partial event is applied only together with its refresh: were the refresh lost after the commit (a broker
    away, a worker killed in between), a user first seen through an update would keep no username until the nightly
    run. The refresh is queued before the commit, so a broker that refuses it leaves the event for the relay."""
    from tasks import coalesce
    from tasks.events import apply, apply_batch
    from tasks.redis_client import get_redis, key

    uid = str(uuid.uuid4())
    update = _stored_event(uid, "userProfileUpdated", updatedClaims=claims(first_name="New"))

    def broker_away(*args: Any, **kwargs: Any) -> None:
        raise kombu.exceptions.OperationalError("[Errno 111] Connection refused")

    with monkeypatch.context() as patched:
        patched.setattr(coalesce.app, "send_task", broker_away)
        assert apply_batch([update]) == 0
        # Released at once (the window is 0.2 s here), so the retry's refresh is not taken as already requested.
        assert not get_redis().exists(key(f"refresh:{uid}"))
        assert apply(update) == "left for the relay"
    assert _event_row(update).status == "queued"
    assert user(uid) is None  # nothing of the event committed

    assert apply_batch([update]) == 1
    assert _event_row(update).status == "applied"
    assert user(uid) is not None

    def user_syncs() -> int:
        with SessionFactory() as session:
            query = select(func.count()).select_from(SyncRun).where(SyncRun.kind == "user", SyncRun.asgardeo_id == uid)
            return int(session.execute(query).scalar_one())

    wait_for(user_syncs, what="the refresh queued with the event, run by the worker")


def test_a_batch_stalled_mid_transaction_holds_its_user_only_until_postgres_ends_its_session() -> None:
    """A worker cut off from the network mid-batch keeps its locks until the server ends its session: here the
    first batch stops inside its transaction (its refresh request never returns, as a publish on a cut link), and a
    second batch about the same user goes ahead once Postgres ends the idle transaction, not when the first resumes."""
    import dataclasses
    import threading
    import time

    from models.events import APPLY_IDLE_TIMEOUT, apply_events
    from tasks.events import SERVICES, TRANSIENT_ERRORS

    uid = str(uuid.uuid4())
    stalled_id = _stored_event(uid, "userProfileUpdated", updatedClaims=claims(first_name="Stalled"))
    later_id = _stored_event(uid, "userProfileUpdated", updatedClaims=claims(last_name="Later"))
    stalled, resume = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def stall(_: str) -> None:
        stalled.set()
        resume.wait(60)

    def first_batch() -> None:
        try:
            apply_events([stalled_id], services=dataclasses.replace(SERVICES, request_refresh=stall))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=first_batch)
    thread.start()
    try:
        assert stalled.wait(10), "the first batch did not reach its refresh request"
        started = time.monotonic()
        applied = apply_events([later_id], services=dataclasses.replace(SERVICES, request_refresh=lambda _: None))
        waited = time.monotonic() - started
    finally:
        resume.set()
        thread.join(30)
    limit = float(APPLY_IDLE_TIMEOUT.removesuffix("s"))
    assert [a.status for a in applied] == ["applied"]
    assert limit - 2 < waited < limit + 8, waited  # held by the stalled batch, then released by Postgres
    assert len(outcome) == 1
    assert isinstance(outcome[0], TRANSIENT_ERRORS), outcome  # its session is gone, nothing of it committed: retried
    assert _event_row(stalled_id).status == "queued"
    assert _event_row(later_id).status == "applied"


def _error_from_an_unreachable_postgres() -> Exception:
    """What a worker's last retry raises while Postgres does not answer: the real error, from a port nothing serves."""
    from models.db import make_engine

    dead = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    try:
        with dead.connect():
            pass
    except Exception as exc:  # the error is the point
        return exc
    finally:
        dead.dispose()
    raise AssertionError("a connection to port 1 succeeded")


def test_an_event_whose_last_retry_found_postgres_unreachable_is_left_for_the_relay_not_failed() -> None:
    """Postgres back just as an event's last retry failed for want of it: the failure can be written, but it was
    never the event's. ``failed`` would leave it to an admin's replay; queued, the relay sends it again."""
    from tasks.events import apply as apply_task

    uid = str(uuid.uuid4())
    event_id = _stored_event(uid)
    apply_task.on_failure(_error_from_an_unreachable_postgres(), "task-id", (event_id,), {}, None)
    row = _event_row(event_id)
    assert (row.status, row.attempts) == ("queued", 1)
    assert (row.last_error or "").startswith("OperationalError")
    with unit_of_work() as session:  # its message overdue, as it is once the relay's deadline has passed
        session.execute(
            update(WebhookEvent).where(WebhookEvent.id == event_id).values(queued_at=func.now() - timedelta(hours=1))
        )
    relay.delay()
    wait_for(lambda: _event_row(event_id).status == "applied", what="the relayed event applied")
    assert user(uid) is not None


def test_an_event_postgres_keeps_refusing_is_failed_once_its_retries_are_spent(
    refuse_user_writes: Callable[[Iterable[str]], None],
) -> None:
    """A transient error about the event itself (here a serialization failure on its user's row, every time) is
    still the event's: once its retries are spent it is ``failed``, visible to an admin, not sent round forever."""
    from tasks.events import apply as apply_task

    uid = str(uuid.uuid4())
    event_id = _stored_event(uid)
    refuse_user_writes([uid])
    with pytest.raises(Exception) as refused:  # whichever error Postgres gives is the input below
        apply_task.run(event_id)
    apply_task.on_failure(refused.value, "task-id", (event_id,), {}, None)
    row = _event_row(event_id)
    assert row.status == "failed"
    assert "SQLSTATE 40001" in (row.last_error or "")
