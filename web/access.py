"""Who is calling: the session token from the cookie or an ``Authorization: Bearer`` header, and route guards."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import current_app, g, request

from models.db import unit_of_work
from models.sessions import find_active_session
from models.settings import Settings
from models.tables import AppSession, User
from web.errors import APIError

P = ParamSpec("P")
R = TypeVar("R")


def session_token() -> str | None:
    """The caller's token: a Bearer header wins over the cookie, so API clients are never confused by a browser's."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    settings: Settings = current_app.config["SETTINGS"]
    return request.cookies.get(settings.session_cookie_name) or None


def current_user() -> User | None:
    """The signed-in, active user for this request, looked up once and remembered on ``g``."""
    if "current_user" in g:
        user: User | None = g.current_user
        return user
    g.current_user = None
    g.current_session = None
    token = session_token()
    if token:
        with unit_of_work() as session:
            found = find_active_session(session, token)
            if found is not None:
                app_session, user = found
                app_session.last_used_at = datetime.now(UTC)
                g.current_user, g.current_session = user, app_session
    return g.current_user  # type: ignore[no-any-return]


def current_app_session() -> AppSession | None:
    current_user()
    found: AppSession | None = g.get("current_session")
    return found


def require_login(view: Callable[P, R]) -> Callable[P, R]:
    """401 JSON unless a live session of an active user comes with the request."""

    @wraps(view)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        if current_user() is None:
            raise APIError(
                401,
                "unauthenticated",
                "Sign in first: send the session cookie or a Bearer token.",
                headers={"WWW-Authenticate": 'Bearer realm="hrms"'},
            )
        return view(*args, **kwargs)

    return guarded


def require_role(*roles: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """401 without a session, 403 when the user's application role is not one of ``roles``."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            user = current_user()
            if user is None:
                raise APIError(
                    401,
                    "unauthenticated",
                    "Sign in first: send the session cookie or a Bearer token.",
                    headers={"WWW-Authenticate": 'Bearer realm="hrms"'},
                )
            if user.role not in roles:
                raise APIError(403, "forbidden", f"This needs the {' or '.join(roles)} role.")
            return view(*args, **kwargs)

        return guarded

    return decorate
