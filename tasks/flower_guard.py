"""Flower must never run open: it shows task arguments and can revoke tasks.

``celery -A tasks flower`` imports this app before Flower reads its ``FLOWER_*`` options, so the guard runs first:
it hands ``FLOWER_BASIC_AUTH`` from the settings (which also read ``.env``) to Flower, and outside development it
stops start-up when there are no credentials.
"""

from __future__ import annotations

import os
import sys

from models.settings import Settings


def starting_flower(argv: list[str]) -> bool:
    return "flower" in argv[1:]


def guard_flower(settings: Settings, argv: list[str] | None = None) -> None:
    """Raise ``SystemExit`` when Flower would start without authentication outside development."""
    if not starting_flower(sys.argv if argv is None else argv):
        return
    if settings.flower_basic_auth is not None:
        os.environ.setdefault("FLOWER_BASIC_AUTH", settings.flower_basic_auth.get_secret_value())
    if not os.environ.get("FLOWER_BASIC_AUTH") and settings.app_env != "development":
        raise SystemExit("refusing to start Flower without FLOWER_BASIC_AUTH (user:password) outside development")
