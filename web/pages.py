"""The few HTML pages a person sees: the start page with the sign-in button and the profile page."""

from __future__ import annotations

from datetime import UTC
from urllib.parse import urlencode

from flask import Blueprint, redirect, render_template
from werkzeug.wrappers import Response

from web.access import current_user

bp = Blueprint("pages", __name__)


@bp.get("/")
def home() -> str:
    return render_template("home.html", user=current_user())


@bp.get("/profile")
def profile() -> Response | str:
    """The signed-in person's name, email, role and last login; without a session, off to sign in first."""
    user = current_user()
    if user is None:
        return redirect("/auth/login?" + urlencode({"next": "/profile"}), code=303)
    last_login = user.last_login_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if user.last_login_at else None
    return render_template("profile.html", user=user, last_login=last_login)
