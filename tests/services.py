"""Where the test run's Postgres and Redis come from, and the per-run database and key prefix on them.

``DATABASE_URL`` / ``REDIS_URL`` name existing servers (CI's); otherwise embedded servers are started for the run.
Each run creates its own database and Redis key prefix, so two runs on one server never collide.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
from psycopg import sql

from localrun.embedded import EmbeddedPostgres, EmbeddedRedis, remove_tree


def libpq_url(database_url: str) -> str:
    """A ``DATABASE_URL`` (SQLAlchemy's, naming the psycopg driver) as libpq and ``psycopg.connect`` take it."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


class ServiceUnavailable(RuntimeError):
    pass


@dataclass
class TestServices:
    __test__ = False  # a helper, not a test class

    server_url: str = ""
    database_url: str = ""
    database_name: str = ""
    redis_url: str = ""
    key_prefix: str = ""
    _embedded: list[EmbeddedPostgres | EmbeddedRedis] = field(default_factory=list)
    _tmp: Path | None = None

    def start(self) -> None:
        run_id = uuid.uuid4().hex[:10]
        self.server_url = os.environ.get("DATABASE_URL", "")
        self.redis_url = os.environ.get("REDIS_URL", "")
        if not self.server_url or not self.redis_url:
            self._tmp = Path(tempfile.mkdtemp(prefix="asgardeo-sync-test-"))
        if not self.server_url:
            pg = EmbeddedPostgres(self._tmp / "pg")  # type: ignore[operator]
            self.server_url = pg.start()
            self._embedded.append(pg)
        if not self.redis_url:
            rd = EmbeddedRedis(self._tmp / "redis", persistent=False)  # type: ignore[operator]
            self.redis_url = rd.start()
            self._embedded.append(rd)
        self.database_name = f"test_{run_id}"
        self.key_prefix = f"test-{run_id}:"
        self._create_database()
        self._check_redis()

    def _admin_conninfo(self) -> str:
        return libpq_url(self.server_url)

    def _create_database(self) -> None:
        try:
            with psycopg.connect(self._admin_conninfo(), autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database_name)))
        except psycopg.OperationalError as exc:
            raise ServiceUnavailable(f"PostgreSQL at DATABASE_URL is unreachable: {exc}") from exc
        base, _, _ = self._admin_conninfo().rpartition("/")
        self.database_url = f"{base}/{self.database_name}".replace("postgresql://", "postgresql+psycopg://", 1)

    def _check_redis(self) -> None:
        try:
            redis.Redis.from_url(self.redis_url, socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            raise ServiceUnavailable(f"Redis at REDIS_URL is unreachable: {exc}") from exc

    def stop(self) -> None:
        if self.database_name:
            try:
                with psycopg.connect(self._admin_conninfo(), autocommit=True, connect_timeout=5) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.database_name))
                    )
            except psycopg.Error:
                pass
        if self.key_prefix:
            try:
                client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=3)
                for key in client.scan_iter(match=f"{self.key_prefix}*", count=1000):
                    client.delete(key)
            except redis.RedisError:
                pass
        for server in reversed(self._embedded):
            server.stop()
        if self._tmp is not None:
            remove_tree(self._tmp)
