"""Sign-in through the OpenID provider and the application's own sessions.

Routes (all under ``/auth``):

- ``GET /login?next=/path``: redirect to the provider with ``state``, ``nonce`` and PKCE S256.
- ``GET /callback``: exchange the code, validate the ID token (see :mod:`web.oidc`), find or create the local user,
  refuse inactive ones, issue a session. Browsers get an HttpOnly cookie and a redirect to ``next``; a client that
  asks for JSON gets ``{"session_token", "expires_at", "user"}`` for use as a Bearer token.
- ``GET /me``: the signed-in user (cookie or Bearer).
- ``POST /logout``: revoke the session and redirect to the provider's end-session endpoint. ``GET /logout`` only
  shows a confirmation form: a state change behind GET could be triggered by any ``<img>`` on another site.
- ``POST /backchannel-logout``: the provider's logout token ends the sessions of that IdP session (or user).

Login follow-ups (audit entry, SCIM refresh) go to the worker after the commit; the callback never waits for them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, jsonify, redirect, render_template, request
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from models.attributes import username_from_directory
from models.db import unit_of_work
from models.identity import MAX_SUBJECT_LENGTH, find_login_user, first_login_id
from models.sessions import (
    IssuedSession,
    create_session,
    revoke_session,
    revoke_sessions_by_sid,
    revoke_subject_sessions,
)
from models.settings import Settings
from models.tables import User
from models.users import Change, UserRecord, get_by_asgardeo_id, has_active_admin, record_change, upsert_users
from tasks.live import publish_changes
from tasks.login import login_followup
from tasks.scim import valid_id
from web import oidc
from web.access import current_app_session, current_user, require_login
from web.errors import error_response, wants_json
from web.oidc import LoginRejected, ProviderUnavailable
from web.serialize import own_profile_json

bp = Blueprint("auth", __name__, url_prefix="/auth")
log = logging.getLogger(__name__)

MAX_NEXT_CHARS = 512
_CLAIM_LIMITS = {"username": 320, "preferred_username": 320, "email": 320, "given_name": 200, "family_name": 200}


def _settings() -> Settings:
    settings: Settings = current_app.config["SETTINGS"]
    return settings


def safe_next(value: str | None) -> str:
    """``value`` when it is a same-origin absolute path, otherwise ``/``.

    Refused: anything not starting with a single ``/`` (``//evil``, ``/\\evil``, ``https://...``, ``javascript:``),
    backslashes and control characters anywhere (browsers read ``\\`` as ``/``), and very long values.
    """
    if not value or len(value) > MAX_NEXT_CHARS or not value.startswith("/") or value.startswith("//"):
        return "/"
    if "\\" in value or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


@dataclass(frozen=True)
class LoginOutcome:
    user: User
    issued: IssuedSession
    changes: list[Change]


def _claim_text(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > _CLAIM_LIMITS[name]:
        raise LoginRejected("invalid_id_token", f"The ID token's {name} claim is not a usable string.")
    return value


def record_from_claims(claims: dict[str, Any], asgardeo_id: str | None = None) -> UserRecord:
    """A new user as the ID token describes them; ``source_version`` 0 so any directory sync data wins over it.

    ``asgardeo_id`` defaults to the ``sub``. The username is Asgardeo's ``username`` claim, else the standard
    ``preferred_username``, else the email.
    """
    groups = claims.get("groups")
    email = _claim_text(claims, "email")
    username = _claim_text(claims, "username") or _claim_text(claims, "preferred_username") or email
    return UserRecord(
        asgardeo_id=asgardeo_id or str(claims["sub"]),
        username=username_from_directory(username),
        email=email,
        first_name=_claim_text(claims, "given_name"),
        last_name=_claim_text(claims, "family_name"),
        groups=tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else (),
        status="active",
        source_version=0,
    )


def bootstrap_admin_rule(claims: dict[str, Any], settings: Settings) -> str | None:
    """The setting that names this login as a bootstrap admin, or None.

    ``BOOTSTRAP_ADMIN_IDS`` matches the directory id (``sub``). ``BOOTSTRAP_ADMIN_EMAILS`` matches the email only
    when the ID token says ``email_verified: true``: an absent claim proves nothing, and anyone who can put an email
    on an account (self sign-up, an unverified profile edit) must not become admin by it.
    """
    if claims.get("sub") in set(settings.bootstrap_admin_ids):
        return "BOOTSTRAP_ADMIN_IDS"
    email = claims.get("email")
    if not isinstance(email, str) or not email or claims.get("email_verified") is not True:
        return None
    if email.strip().lower() in {e.strip().lower() for e in settings.bootstrap_admin_emails}:
        return "BOOTSTRAP_ADMIN_EMAILS"
    return None


def complete_login(session: Session, claims: dict[str, Any], *, id_token: str, settings: Settings) -> LoginOutcome:
    """Turn validated ID token claims into a session: find or create the user, refuse inactive ones, stamp
    ``last_login_at``, apply the bootstrap-admin rule (:func:`bootstrap_admin_rule`, only while no active admin
    exists) and issue a session. The caller commits.

    Raises :class:`LoginRejected` (nothing must then be committed): a missing ``sub`` (400), a missing email when
    ``OIDC_REQUIRE_EMAIL`` is on, an unknown user with ``OIDC_JIT_CREATE`` off, an inactive or deleted user (403).
    """
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT_LENGTH:
        raise LoginRejected("invalid_id_token", "The ID token carries no usable sub (subject) claim.")
    if settings.oidc_require_email and not _claim_text(claims, "email"):
        raise LoginRejected("email_required", "This application needs an email address on your account.", 403)
    changes: list[Change] = []
    user = find_login_user(session, sub, settings.oidc_subject_attribute)
    if user is None:
        if not settings.oidc_jit_create:
            raise LoginRejected(
                "unknown_user",
                "Your account is not known to this application yet; ask an administrator to sync it.",
                403,
            )
        record = record_from_claims(claims, first_login_id(sub, settings.oidc_subject_attribute, valid=valid_id(sub)))
        changes = upsert_users(session, [record], source="login", role_map=settings.group_roles or None).changes
        user = get_by_asgardeo_id(session, record.asgardeo_id)
        assert user is not None  # the upsert above just wrote it
        user.oidc_subject = sub
    if user.status != "active":
        raise LoginRejected("account_inactive", f"This account is {user.status}; sign-in is not allowed.", 403)
    # The first admin is made once: only while the application has no active admin, so an admin's later
    # demotion of a bootstrap admin is never undone at their next sign-in.
    rule = bootstrap_admin_rule(claims, settings) if user.role != "admin" else None
    if rule is not None and not has_active_admin(session):
        changes.append(
            record_change(session, user, "role_changed", {"role": [user.role, "admin"]}, source="bootstrap", actor=rule)
        )
        user.role = "admin"
        log.warning("bootstrap admin granted", extra={"user_id": user.id, "rule": rule})
    user.last_login_at = datetime.now(UTC)
    sid = claims.get("sid")
    issued = create_session(
        session,
        user,
        ttl_seconds=settings.session_ttl_seconds,
        idp_sid=sid if isinstance(sid, str) and 0 < len(sid) <= 200 else None,
        id_token=id_token,
    )
    session.flush()
    return LoginOutcome(user=user, issued=issued, changes=changes)


@bp.errorhandler(LoginRejected)
def _rejected(exc: LoginRejected) -> Response:
    log.info("login refused", extra={"error": exc.error, "path": request.path})
    return error_response(exc.status, exc.error, exc.detail)


@bp.errorhandler(ProviderUnavailable)
def _unavailable(exc: ProviderUnavailable) -> Response:
    return error_response(502, "provider_unavailable", str(exc) + " Try again in a moment.")


def _redirect_uri(settings: Settings) -> str:
    return settings.public_base_url.rstrip("/") + "/auth/callback"


@bp.get("/login")
def login() -> Response:
    """Redirect to the provider; ``next`` (a same-origin path) is where the callback sends the browser."""
    settings = _settings()
    url = oidc.authorization_url(_redirect_uri(settings), safe_next(request.args.get("next")))
    return redirect(url, code=302)


def _enqueue_followup(user_id: int, session_id: int) -> None:
    """Best effort: a broker outage must not fail a login (the audit entry and refresh are then skipped, logged)."""
    try:
        login_followup.apply_async(
            args=[user_id, session_id], retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2}
        )
    except Exception as exc:
        log.warning("login follow-up not enqueued", extra={"user_id": user_id, "error": type(exc).__name__})


@bp.get("/callback")
def callback() -> Response:
    """Finish the login; see the module docstring. Every refusal creates no session and no user."""
    started = time.perf_counter()
    settings = _settings()
    verified = oidc.finish_login(request.args)
    with unit_of_work() as session:
        outcome = complete_login(session, verified.claims, id_token=verified.id_token, settings=settings)
        body = own_profile_json(outcome.user)
        user_id, session_id = outcome.user.id, outcome.issued.session_id
    publish_changes(outcome.changes)
    _enqueue_followup(user_id, session_id)
    provider_ms = round(g.get("provider_seconds", 0.0) * 1000, 2)
    server_ms = round((time.perf_counter() - started) * 1000 - provider_ms, 2)
    log.info(
        "login",
        extra={"user_id": user_id, "session_id": session_id, "server_ms": server_ms, "provider_ms": provider_ms},
    )
    issued = outcome.issued
    response: Response
    if wants_json():
        response = jsonify(session_token=issued.token, expires_at=issued.expires_at.isoformat(), user=body)
    else:
        response = redirect(safe_next(verified.next_path), code=303)
    response.headers["Cache-Control"] = "no-store"
    # The callback's own time and the provider's share, for browser dev tools, monitoring and bench/login_callback.
    response.headers["Server-Timing"] = f"app;dur={server_ms}, idp;dur={provider_ms}"
    response.set_cookie(
        settings.session_cookie_name,
        issued.token,
        max_age=settings.session_ttl_seconds,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=settings.app_env != "development",
    )
    return response


@bp.get("/me")
@require_login
def me() -> Response:
    user = current_user()
    app_session = current_app_session()
    assert user is not None
    assert app_session is not None
    response = jsonify(user=own_profile_json(user), session_expires_at=app_session.expires_at.isoformat())
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/logout")
def logout_confirm() -> Response | str:
    """A confirmation form that POSTs; GET itself changes nothing."""
    if current_user() is None:
        return redirect("/", code=303)
    return render_template("logout.html", user=current_user())


@bp.post("/logout")
def logout() -> Response:
    """Revoke this session, drop the cookie, and send the browser to the provider's end-session endpoint."""
    settings = _settings()
    app_session = current_app_session()
    id_token: str | None = None
    if app_session is not None:
        id_token = app_session.id_token
        with unit_of_work() as session:
            revoke_session(session, app_session.id, reason="logout")
        log.info("logout", extra={"user_id": app_session.user_id, "session_id": app_session.id})
    end_url = oidc.end_session_url(id_token) if app_session is not None else None
    response: Response
    if wants_json():
        response = jsonify(signed_out=app_session is not None, end_session_url=end_url)
    else:
        response = redirect(end_url or "/", code=303)
    response.headers["Cache-Control"] = "no-store"
    response.delete_cookie(
        settings.session_cookie_name, path="/", httponly=True, samesite="Lax", secure=settings.app_env != "development"
    )
    return response


@bp.post("/backchannel-logout")
def backchannel_logout() -> Response:
    """OIDC Back-Channel Logout: validate ``logout_token``, end the sessions of its ``sid`` (or of its ``sub``).

    200 when the token is valid (also when no session matched, so a retry is harmless); 400 and nothing revoked
    otherwise.
    """
    claims = oidc.verify_logout_token(request.form.get("logout_token", ""))
    sid, sub = claims.get("sid"), claims.get("sub")
    with unit_of_work() as session:
        if sid:
            revoked = revoke_sessions_by_sid(session, sid, reason="backchannel_logout", subject=sub)
        else:
            revoked = revoke_subject_sessions(session, str(sub), reason="backchannel_logout")
    log.info("back-channel logout", extra={"jti": claims.get("jti"), "revoked": revoked})
    response = jsonify(revoked=revoked)
    response.headers["Cache-Control"] = "no-store"
    return response
