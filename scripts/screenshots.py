#!/usr/bin/env python3
"""The admin guide's screenshots from the running local run (``python3 scripts/screenshots.py``).

Start ``python3 scripts/run.py`` in another terminal first. Needs Chromium (Debian's ``chromium`` package, or the
``CHROMIUM`` variable naming another binary).
"""

from __future__ import annotations

import os
import sys

from bootstrap import ROOT, ensure_venv

if __name__ == "__main__":
    python = ensure_venv("local,test")
    os.chdir(ROOT)
    os.execv(python, [str(python), "-m", "localrun.screenshots", *sys.argv[1:]])
