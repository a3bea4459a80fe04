"""The embedded PostgreSQL server (the README's first command, and the tests and benchmarks without DATABASE_URL) runs
with the settings its disposable data allows."""

from __future__ import annotations

from pathlib import Path

import psycopg

from localrun.embedded import EmbeddedPostgres
from tests.services import libpq_url


def test_the_embedded_server_neither_syncs_nor_zero_fills_its_wal(tmp_path: Path) -> None:
    """Zero-filling each new WAL segment stalled every commit 50-65 ms once every 16 MB of WAL in the soak (every
    24 s at 200 deliveries/s); with fsync off the zeros buy nothing."""
    server = EmbeddedPostgres(tmp_path / "pg")
    url = server.start()
    try:
        with psycopg.connect(libpq_url(url)) as conn:
            shown = {name: conn.execute(f"SHOW {name}").fetchone() for name in ("fsync", "wal_init_zero")}
    finally:
        server.stop()
    assert shown == {"fsync": ("off",), "wal_init_zero": ("off",)}
