"""The local-run entry point: ``python -m asgardeo_standin serve`` prints its URL and demo credentials."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def test_serve_prints_base_url_and_cli_operates_it() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "asgardeo_standin", "serve", "--port", "0", "--seed-demo", "--org", "acme"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(6)]
        base_url = lines[0].rsplit(" ", 1)[-1].strip()
        assert base_url.endswith("/t/acme")
        assert any("admin@example.com" in line for line in lines)
        meta = requests.get(f"{base_url}/oauth2/token/.well-known/openid-configuration", timeout=5).json()
        assert meta["issuer"] == f"{base_url}/oauth2/token"
        seeded = subprocess.run(
            [sys.executable, "-m", "asgardeo_standin", "seed", "5", "--url", base_url],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        assert json.loads(seeded.stdout)["created"] == 5
        dumped = subprocess.run(
            [sys.executable, "-m", "asgardeo_standin", "dump", "--url", base_url],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        assert len(json.loads(dumped.stdout)["users"]) == 7
    finally:
        process.terminate()
        process.wait(timeout=10)
