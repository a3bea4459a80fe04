#!/usr/bin/env python3
"""The first command: set up and run the whole service locally (``python3 scripts/run.py``)."""

from __future__ import annotations

import os
import sys

from bootstrap import ROOT, ensure_venv

if __name__ == "__main__":
    python = ensure_venv("local")
    os.chdir(ROOT)
    os.execv(python, [str(python), "-m", "localrun", *sys.argv[1:]])
