"""Read the Procfile, so the local run, the Dockerfile and docker-compose all start the same command lines."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read_procfile(path: Path = ROOT / "Procfile") -> dict[str, str]:
    """``{process name: shell command}`` in file order; blank lines and ``#`` comments are skipped."""
    processes: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip().isidentifier() or not command.strip():
            raise ValueError(f"{path.name}:{number}: expected 'name: command', got {raw!r}")
        processes[name.strip()] = command.strip()
    return processes
