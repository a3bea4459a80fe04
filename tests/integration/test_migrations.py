from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import inspect

from models import migrate
from models.db import make_engine
from models.tables import Base
from tests.services import TestServices, libpq_url


@pytest.fixture
def scratch_database(services: TestServices) -> Iterator[str]:
    name = f"migr_{uuid.uuid4().hex[:8]}"
    admin = libpq_url(services.server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base, _, _ = services.database_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _tables(url: str) -> set[str]:
    engine = make_engine(url, pool_size=1)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_every_model_table_and_downgrade_removes_them(scratch_database: str) -> None:
    migrate.upgrade(scratch_database)
    assert set(Base.metadata.tables) <= _tables(scratch_database)
    migrate.downgrade(scratch_database)
    assert _tables(scratch_database) == {"alembic_version"}
    migrate.upgrade(scratch_database)
    assert set(Base.metadata.tables) <= _tables(scratch_database)


def test_upgrade_twice_is_harmless(scratch_database: str) -> None:
    migrate.upgrade(scratch_database)
    migrate.upgrade(scratch_database)
    assert "users" in _tables(scratch_database)


def test_models_and_migrations_agree(scratch_database: str) -> None:
    """Autogenerate finds nothing to do: the migration creates exactly what the models declare."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    migrate.upgrade(scratch_database)
    engine = make_engine(scratch_database, pool_size=1)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
