"""The operator's JSON API under ``/_standin/`` (no auth: a test double bound to loopback).

Every directory change made here goes through :class:`~asgardeo_standin.directory.Directory`, so it emits the
same webhooks a SCIM write would. Nothing here waits on webhook delivery except ``webhook/flush``, whose job
is to wait.

Bodies are flat JSON objects with exactly the keys documented in docs/standin.md (:data:`BODIES`); anything else
(an unknown key, a SCIM-style ``Operations`` list, a body that is not an object) is a 400 naming what is accepted,
so a plausible-looking body never answers 200 while changing nothing.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, jsonify, request

from .config import LASTMODIFIED_FILTER_MODES, SUBJECT_CLAIMS, ChaosConfig
from .directory import PROFILE_FIELDS, DirectoryError, RoleRecord, RoleStore
from .scim import user_resource

if TYPE_CHECKING:
    from .server import Standin


# The keys each route accepts (profile fields: username, email, given_name, family_name, groups).
BODIES: dict[str, frozenset[str]] = {
    "seed": frozenset({"count", "prefix"}),
    "create_user": frozenset({*PROFILE_FIELDS, "password", "disabled", "locked", "id"}),
    "update_user": frozenset({*PROFILE_FIELDS, "password"}),
    "chaos": frozenset(ChaosConfig.__dataclass_fields__),
    "webhook": frozenset({"url", "secret"}),
    "flush": frozenset({"timeout"}),
    "ratelimit": frozenset({"per_minute", "window_seconds"}),
    "fail_get": frozenset({"status", "times"}),
    "reset_password": frozenset({"password", "action"}),
    "create_role": frozenset({"name", "audience_type", "audience_value", "audience_display", "id"}),
    "role_members": frozenset({"add", "remove"}),
    "rename_role": frozenset({"name"}),
    "oidc": frozenset({"subject_claim"}),
    "scim": frozenset({"lastmodified_filter"}),
}


def body(route: str, *, required: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The request's JSON object with only the keys :data:`BODIES` lists for ``route``; else a 400."""
    accepted = ", ".join(sorted(BODIES[route]))
    if not request.get_data(cache=True).strip():
        data: Any = {}
    else:
        data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise DirectoryError(f"send a JSON object with some of: {accepted}")
    unknown = sorted(set(data) - BODIES[route])
    if unknown:
        raise DirectoryError(f"unknown field(s) {', '.join(unknown)}; this route accepts: {accepted}")
    missing = sorted(required - set(data))
    if missing:
        raise DirectoryError(f"missing field(s) {', '.join(missing)}; this route accepts: {accepted}")
    return data


def create_blueprint(standin: Standin) -> Blueprint:  # noqa: PLR0915 - one route table
    bp = Blueprint("standin_admin", __name__, url_prefix="/_standin")
    directory = standin.directory

    @bp.errorhandler(DirectoryError)
    def directory_error(exc: DirectoryError) -> tuple[Response, int]:
        return jsonify({"error": type(exc).__name__, "detail": str(exc)}), exc.status

    def resource(user_id: str) -> Response:
        return jsonify(user_resource(directory.get(user_id), standin.base_url))

    @bp.get("/health")
    def health() -> Response:
        return jsonify({"ok": True, "base_url": standin.base_url, "users": directory.count()})

    @bp.post("/seed")
    def seed() -> Response:
        data = body("seed", required=frozenset({"count"}))
        result = directory.seed(int(data.get("count", 0)), str(data.get("prefix", "user")))
        return jsonify({**result, "total": directory.count()})

    @bp.post("/users")
    def create_user() -> tuple[Response, int]:
        data = body("create_user")
        fields = {k: data[k] for k in PROFILE_FIELDS if k in data}
        if "username" not in fields:
            raise DirectoryError("username is required")
        user = directory.create_user(
            password=data.get("password"),
            disabled=bool(data.get("disabled")),
            locked=bool(data.get("locked")),
            user_id=data.get("id"),
            **fields,
        )
        return jsonify(user_resource(user, standin.base_url)), 201

    @bp.patch("/users/<user_id>")
    def update_user(user_id: str) -> Response:
        data = body("update_user")
        if not data:
            raise DirectoryError(f"send at least one of: {', '.join(sorted(BODIES['update_user']))}")
        directory.update_profile(
            user_id, {k: data[k] for k in PROFILE_FIELDS if k in data}, password=data.get("password")
        )
        return resource(user_id)

    @bp.post("/users/<user_id>/<action>")
    def user_action(user_id: str, action: str) -> Response:
        actions = {
            "disable": lambda: directory.set_disabled(user_id, True),
            "enable": lambda: directory.set_disabled(user_id, False),
            "lock": lambda: directory.set_locked(user_id, True),
            "unlock": lambda: directory.set_locked(user_id, False),
        }
        if action == "end-sessions":
            directory.get(user_id)
            return jsonify({"ended": standin.provider.end_user_sessions(user_id, announce=True)})
        if action not in actions:
            return Response(status=404)
        actions[action]()
        return resource(user_id)

    roles = RoleStore(directory)

    def role_json(role: RoleRecord) -> Response:
        return jsonify(
            {
                "id": role.id,
                "name": role.name,
                "audience": {
                    "type": role.audience_type,
                    "value": role.audience_value,
                    "display": role.audience_display,
                },
                "members": len(role.members),
            }
        )

    @bp.post("/roles")
    def create_role() -> tuple[Response, int]:
        data = body("create_role", required=frozenset({"name"}))
        role = roles.create(
            str(data["name"]),
            str(data.get("audience_type") or "organization"),
            str(data.get("audience_value") or ""),
            str(data.get("audience_display") or ""),
            data.get("id"),
        )
        return role_json(role), 201

    @bp.patch("/roles/<role_id>/users")
    def role_members(role_id: str) -> Response:
        """``{"add": [user ids], "remove": [user ids]}``; emits ``roleUsersUpdated`` (lists over 1,000 cut)."""
        data = body("role_members")
        add, remove = data.get("add") or [], data.get("remove") or []
        if not isinstance(add, list) or not isinstance(remove, list):
            raise DirectoryError("add and remove must be lists of user ids")
        return role_json(roles.update_members(role_id, [str(u) for u in add], [str(u) for u in remove]))

    @bp.patch("/roles/<role_id>")
    def rename_role(role_id: str) -> Response:
        return role_json(roles.rename(role_id, str(body("rename_role", required=frozenset({"name"}))["name"])))

    @bp.delete("/roles/<role_id>")
    def delete_role(role_id: str) -> Response:
        roles.delete(role_id)
        return Response(status=204)

    @bp.post("/users/<user_id>/reset-password")
    def reset_password(user_id: str) -> Response:
        """An administrator's reset: ``{"password", "action"}``; emits ``credentialUpdated`` with ``action``
        (default ``CREDENTIAL_RESET``, the flow name Asgardeo's code emits)."""
        data = body("reset_password", required=frozenset({"password"}))
        directory.reset_password(user_id, str(data["password"]), str(data.get("action") or "CREDENTIAL_RESET"))
        return resource(user_id)

    @bp.post("/users/<user_id>/fail-get")
    def fail_get(user_id: str) -> Response:
        """The next ``times`` SCIM GETs of this user answer ``status`` (default: one 404), present or not."""
        data = body("fail_get")
        standin.get_faults.inject(user_id, int(data.get("status", 404)), int(data.get("times", 1)))
        return jsonify({"user_id": user_id, "status": int(data.get("status", 404)), "times": int(data.get("times", 1))})

    @bp.put("/oidc")
    def set_oidc() -> Response:
        """``{"subject_claim": "id" | "username" | "email"}``: what ID tokens carry as ``sub`` from now on."""
        claim = body("oidc", required=frozenset({"subject_claim"})).get("subject_claim")
        if claim not in SUBJECT_CLAIMS:
            return Response(f"subject_claim must be one of {sorted(SUBJECT_CLAIMS)}", status=400)
        standin.config.subject_claim = claim
        return jsonify({"subject_claim": claim})

    @bp.put("/scim")
    def set_scim() -> Response:
        """``{"lastmodified_filter": "honour" | "refuse" | "ignore"}``: how SCIM listings treat a filter on
        ``meta.lastModified`` from now on (an organisation without that support refuses or ignores it)."""
        mode = body("scim", required=frozenset({"lastmodified_filter"})).get("lastmodified_filter")
        if mode not in LASTMODIFIED_FILTER_MODES:
            return Response(f"lastmodified_filter must be one of {sorted(LASTMODIFIED_FILTER_MODES)}", status=400)
        standin.config.lastmodified_filter = mode
        return jsonify({"lastmodified_filter": mode})

    @bp.delete("/users/<user_id>")
    def delete_user(user_id: str) -> Response:
        directory.delete_user(user_id)
        return Response(status=204)

    @bp.post("/keys/rotate")
    def rotate_keys() -> Response:
        return jsonify({"kid": standin.keys.rotate(), "jwks": standin.keys.public_jwks()})

    @bp.get("/dump")
    def dump() -> Response:
        return jsonify(
            {
                "users": [user_resource(u, standin.base_url) for u in directory.all_users()],
                "deleted": directory.deleted_ids(),
            }
        )

    @bp.put("/chaos")
    def set_chaos() -> Response:
        known = set(ChaosConfig.__dataclass_fields__)
        chaos = ChaosConfig(**{k: v for k, v in body("chaos").items() if k in known})
        standin.publisher.set_chaos(chaos)
        return jsonify(asdict(chaos))

    @bp.put("/webhook")
    def set_webhook() -> Response:
        data = body("webhook")
        standin.publisher.configure(data.get("url"), data.get("secret"))
        return jsonify(standin.publisher.status())

    @bp.get("/webhook")
    def webhook_status() -> Response:
        return jsonify(standin.publisher.status())

    @bp.post("/webhook/flush")
    def flush() -> Response:
        idle = standin.publisher.wait_idle(float(body("flush").get("timeout", 10)))
        return jsonify({"idle": idle, **standin.publisher.status()})

    @bp.put("/ratelimit")
    def set_rate_limit() -> Response:
        data = body("ratelimit")
        window = data.get("window_seconds")
        standin.limiter.configure(int(data.get("per_minute", 0)), float(window) if window else None)
        return jsonify({"per_minute": standin.limiter.per_minute})

    @bp.get("/stats")
    def stats() -> Response:
        return jsonify(standin.stats_snapshot())

    return bp
