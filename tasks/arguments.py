"""Checks for task arguments. A message can carry anything (a bug elsewhere, a hand-sent task from Flower), so a
task refuses a malformed id up front, logs it, and changes nothing, instead of failing half-way."""

from __future__ import annotations

MAX_ID = 2**63 - 1  # Postgres bigint


def positive_id(value: object) -> int | None:
    """``value`` when it is a usable database id (an int, not a bool, 1..bigint max), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        return None
    return value
