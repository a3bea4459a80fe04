"""Helpers for the console's browser tests: many users at once, and a browser carrying a session cookie."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from models.db import unit_of_work

# One statement for thousands of rows: the tests need a big table, not a slow set-up.
_MANY_USERS = text(
    "INSERT INTO users (asgardeo_id, username, email, first_name, last_name, status, role, groups, source_version,"
    " last_synced_at)"
    " SELECT :prefix || '-' || n, :prefix || n || '@example.com', :prefix || n || '@example.com', 'Bulk',"
    " 'Person' || n,"
    " 'active', 'employee', '[]'::jsonb, 1, now() FROM generate_series(1, :count) AS n"
)


def many_users(count: int, prefix: str = "bulk") -> None:
    with unit_of_work() as session:
        session.execute(_MANY_USERS, {"prefix": prefix, "count": count})


def sign_in_with_cookie(context: Any, base_url: str, token: str) -> Any:
    """A page whose browser carries this session token as the HttpOnly cookie."""
    from models.settings import get_settings

    cookie = {"name": get_settings().session_cookie_name, "value": token, "url": base_url, "httpOnly": True}
    context.add_cookies([cookie])
    return context.new_page()
