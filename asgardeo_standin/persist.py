"""Keeping the stand-in's directory in a file, so a restart (of the local run) finds the same users with the same ids.

Without it every start made the demo users again with new random ids: the application then held two active
``admin@example.com`` rows, and the next full reconciliation ended ``guarded``. The file is written by a background
thread shortly after changes (a directory listener only flags them: listeners run under the directory's lock and must
not block) and once more at stop; each write replaces the file atomically, so a crash leaves the previous version.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from .directory import Change, Directory

log = logging.getLogger(__name__)

SAVE_DELAY_SECONDS = 0.5


class DirectoryFile:
    def __init__(self, directory: Directory, path: str | os.PathLike[str]) -> None:
        self.directory = directory
        self.path = Path(path)
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> int:
        """Restore the directory from the file if there is one; returns the number of users restored."""
        if not self.path.exists():
            return 0
        return self.directory.restore(json.loads(self.path.read_text()))

    def start(self) -> None:
        self.directory.subscribe(self._on_change)
        self._thread = threading.Thread(target=self._run, name="standin-directory-file", daemon=True)
        self._thread.start()

    def _on_change(self, _change: Change) -> None:
        self._changed.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._changed.wait(timeout=1.0) and not self._stop.wait(SAVE_DELAY_SECONDS):
                self._changed.clear()
                self.save()

    def save(self) -> None:
        """Write the whole directory to a temporary file beside the target, then rename it over the target."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        temporary.write_text(json.dumps(self.directory.snapshot()))
        temporary.chmod(0o600)
        os.replace(temporary, self.path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.save()
