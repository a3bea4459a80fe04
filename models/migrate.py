"""Apply Alembic migrations from code, so the run and test commands never leave a database behind the schema."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config

from models.db import make_engine
from models.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def _configured(database_url: str | None) -> Iterator[Config]:
    """Alembic's config with one open transaction on ``database_url`` (default: ``DATABASE_URL``)."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    engine = make_engine(database_url or get_settings().database_url, pool_size=1)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            yield config
    finally:
        engine.dispose()


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    """Migrate up; safe to re-run (Alembic records the applied revision)."""
    with _configured(database_url) as config:
        command.upgrade(config, revision)


def downgrade(database_url: str | None = None, revision: str = "base") -> None:
    """Migrate down, for tests of the migrations and for operators rolling back a release."""
    with _configured(database_url) as config:
        command.downgrade(config, revision)
