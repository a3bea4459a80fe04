"""The single-user upsert (every webhook event) must not read the whole users table when Postgres has no statistics
for it yet: a new database's first import, or a busy first hour, before autovacuum's first ANALYZE. Without them
Postgres guesses a few rows per page for a table of wide text columns, and a seq scan then looks cheap."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from sqlalchemy import text

from models import users
from models.db import get_engine, unit_of_work
from tests.factories import user_record

pytestmark = pytest.mark.usefixtures("clean_db")


@pytest.fixture
def users_without_fresh_statistics() -> Iterator[None]:
    """20,000 users committed into a table Postgres has never analysed (a truncated table has no statistics)."""
    engine = get_engine()
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE users CASCADE"))
        conn.execute(text("ALTER TABLE users SET (autovacuum_enabled = off)"))
    try:
        for _ in range(20):
            with unit_of_work() as session:
                users.upsert_users(session, [user_record() for _ in range(1000)], source="reconcile")
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE users RESET (autovacuum_enabled)"))


def test_a_single_user_upsert_uses_the_index_whatever_the_statistics_say(
    users_without_fresh_statistics: None,
) -> None:
    record = user_record()
    row = {**record.__dict__, "groups": [], "mapped_role": None}
    params = {
        "rows": orjson.dumps([row]).decode(),
        "ids": [record.asgardeo_id],
        "mapped_ids": [],
        "run_id": None,
        "seen_run_id": None,
        "source": "webhook",
        "event_jti": None,
        "actor": None,
    }
    with unit_of_work() as session:
        plan = "\n".join(session.execute(text("EXPLAIN " + users._UPSERT_SQL.text), params).scalars())
        session.rollback()
    assert "Seq Scan on users" not in plan, plan
