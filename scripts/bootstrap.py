"""Create ``.venv`` and install the project into it, re-installing only when pyproject.toml changed.

Used by scripts/run.py and scripts/test.py, which must work on a machine that has nothing but Python.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("VENV_DIR", ROOT / ".venv"))


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(extras: str) -> Path:
    """The venv's python, with ``.[extras]`` installed (editable) and up to date."""
    python = venv_python()
    if not python.exists():
        print(f"[bootstrap] creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / f".installed-{extras.replace(',', '-')}"
    if stamp.exists() and stamp.read_text() == digest:
        return python
    print(f"[bootstrap] installing the project with extras [{extras}]", flush=True)
    quiet = [] if os.environ.get("CI") else ["--quiet"]
    subprocess.run([python, "-m", "pip", "install", *quiet, "--upgrade", "pip"], check=True)
    subprocess.run([python, "-m", "pip", "install", *quiet, "-e", f"{ROOT}[{extras}]"], check=True)
    stamp.write_text(digest)
    return python


if __name__ == "__main__":
    print(ensure_venv(sys.argv[1] if len(sys.argv) > 1 else "local"))
