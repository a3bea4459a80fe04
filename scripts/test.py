#!/usr/bin/env python3
"""The second command: install and run the test suite (``python3 scripts/test.py [pytest args]``).

Also runs the linters and the type checker first, as CI does; pass ``--no-lint`` to skip them locally.
"""

from __future__ import annotations

import os
import subprocess
import sys

from bootstrap import ROOT, ensure_venv

if __name__ == "__main__":
    python = ensure_venv("local,test,dev")
    os.chdir(ROOT)
    args = sys.argv[1:]
    if "--no-lint" in args:
        args.remove("--no-lint")
    else:
        for check in (["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]):
            print(f"[test] {' '.join(check)}", flush=True)
            subprocess.run([python, "-m", *check], check=True)
    os.execv(python, [str(python), "-m", "pytest", *args])
