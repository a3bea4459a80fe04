"""SCIM2 ``/Users`` in Asgardeo's shape, on scim2-models.

Requests (create, replace, patch, search) are parsed and patched with scim2-models; responses use the same
models, except the list hot path: :func:`user_resource` builds the dict directly because validating 100,000
pydantic models per full scan would take tens of seconds. Tests assert that this dict round-trips unchanged
through the scim2-models ``User`` model, so both paths produce one shape.

Asgardeo specifics: ``userName`` carries the ``DEFAULT/`` user-store prefix, the ``urn:scim:wso2:schema``
extension holds ``accountDisabled``/``accountLocked`` as the strings ``"true"``/``"false"``, ``count`` is capped
at 100, filters support ``eq ne co sw ew gt ge lt le pr`` and ``and`` but reject ``or``/``not``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar, cast

import orjson
from flask import Blueprint, Response, request
from pydantic import ValidationError
from scim2_models import (
    URN,
    Attribute,
    Context,
    Error,
    Extension,
    ListResponse,
    PatchOp,
    ResourceType,
    ResponseParameters,
    Schema,
    SchemaExtension,
    SCIMException,
    ScimFilter,
    SearchRequest,
    ServiceProviderConfig,
    User,
)
from scim2_models.path.expressions import Comparison, FilterNode, LogicalExpr, LogicalOperator, Present

from .directory import (
    USER_STORE,
    Directory,
    DirectoryError,
    RoleNotFound,
    RoleStore,
    UserRecord,
    group_id,
    qualified_username,
)
from .oidc import OidcProvider

CORE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
WSO2_SCHEMA = "urn:scim:wso2:schema"
MAX_COUNT = 100
SCIM_JSON = "application/scim+json"


class Wso2Extension(Extension):
    """Asgardeo's ``urn:scim:wso2:schema`` extension (only the account flags the product reads)."""

    __schema__ = URN(WSO2_SCHEMA)
    accountDisabled: str | bool | None = None
    accountLocked: str | bool | None = None


ScimUser = User[Wso2Extension]


class ScimError(Exception):
    """An error answered as a SCIM error body."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.scim_type = status, detail, scim_type


def _iso(ms: int) -> str:
    return _iso_second(ms // 1000) + f"{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=65536)
def _iso_second(seconds: int) -> str:
    """Seeded users share a few seconds of creation time: formatting each second once keeps full scans cheap."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def _flag(value: bool) -> str:
    return "true" if value else "false"


def user_resource(user: UserRecord, base_url: str) -> dict[str, Any]:
    """The SCIM resource of one user, as the list endpoint returns it (fast path, see module docstring)."""
    resource: dict[str, Any] = {
        "schemas": [CORE_SCHEMA, WSO2_SCHEMA],
        "id": user.id,
        "userName": qualified_username(user.username),
    }
    name = {k: v for k, v in (("givenName", user.given_name), ("familyName", user.family_name)) if v}
    if name:
        resource["name"] = name
    if user.email:
        resource["emails"] = [{"value": user.email, "primary": True}]
    if user.groups:
        resource["groups"] = [{"value": group_id(g), "display": g} for g in user.groups]
    resource["meta"] = {
        "resourceType": "User",
        "created": _iso(user.created_ms),
        "lastModified": _iso(user.last_modified_ms),
        "location": f"{base_url}/scim2/Users/{user.id}",
    }
    resource[WSO2_SCHEMA] = {"accountDisabled": _flag(user.disabled), "accountLocked": _flag(user.locked)}
    return resource


def _truthy(value: str | bool | None) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ScimError(400, f"Invalid boolean {value!r}", "invalidValue")


def fields_from_model(resource: Any) -> tuple[dict[str, Any], bool | None, bool | None, str | None]:
    """Profile fields, disabled, locked and password from a parsed scim2-models user."""
    if not resource.user_name:
        raise ScimError(400, "userName is required", "invalidValue")
    emails = resource.emails or []
    primary = next((e for e in emails if e.primary), emails[0] if emails else None)
    name = resource.name
    fields = {
        "username": str(resource.user_name).removeprefix(f"{USER_STORE}/"),
        "email": primary.value if primary else None,
        "given_name": name.given_name if name else None,
        "family_name": name.family_name if name else None,
    }
    ext = resource[Wso2Extension] if WSO2_SCHEMA in (resource.schemas or []) else None
    disabled = _truthy(ext.accountDisabled) if ext else None
    locked = _truthy(ext.accountLocked) if ext else None
    return fields, disabled, locked, resource.password


# --- filters ------------------------------------------------------------------------------------------------
def _values(user: UserRecord, attr: str, sub: str | None, uri: str | None) -> list[Any]:
    key = attr.lower() + ("." + sub.lower() if sub else "")
    if uri and uri.lower() == WSO2_SCHEMA:
        return {"accountdisabled": [_flag(user.disabled)], "accountlocked": [_flag(user.locked)]}.get(key, [])
    table: dict[str, list[Any]] = {
        "id": [user.id],
        "username": sorted({user.username, qualified_username(user.username)}),
        "name.givenname": [user.given_name],
        "name.familyname": [user.family_name],
        "emails": [user.email],
        "emails.value": [user.email],
        "groups": [group_id(g) for g in user.groups],
        "groups.value": [group_id(g) for g in user.groups],
        "groups.display": list(user.groups),
        "meta.created": [_iso(user.created_ms)],
        "meta.lastmodified": [_iso(user.last_modified_ms)],
    }
    return [v for v in table.get(key, []) if v is not None]


def _compare(op: str, actual: Any, expected: Any) -> bool:
    a, e = str(actual).lower(), str(expected).lower()
    checks: dict[str, Callable[[], bool]] = {
        "eq": lambda: a == e,
        "ne": lambda: a != e,
        "co": lambda: e in a,
        "sw": lambda: a.startswith(e),
        "ew": lambda: a.endswith(e),
        "gt": lambda: a > e,
        "ge": lambda: a >= e,
        "lt": lambda: a < e,
        "le": lambda: a <= e,
    }
    return checks[op]()


# Timestamps compare as instants, not as text: "...:00Z" and "...:00.500Z" are not ordered by their characters.
_TIMESTAMPS: dict[str, Callable[[UserRecord], int]] = {
    "meta.created": lambda u: u.created_ms,
    "meta.lastmodified": lambda u: u.last_modified_ms,
}
_ORDER: dict[str, Callable[[int, int], bool]] = {
    "eq": lambda a, e: a == e,
    "ne": lambda a, e: a != e,
    "gt": lambda a, e: a > e,
    "ge": lambda a, e: a >= e,
    "lt": lambda a, e: a < e,
    "le": lambda a, e: a <= e,
}


def _instant_ms(value: Any) -> int:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise ScimError(400, f"Invalid timestamp {value!r}", "invalidFilter") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _timestamp_comparison(key: str, op: str, value: Any) -> Callable[[UserRecord], bool] | None:
    stamp = _TIMESTAMPS.get(key)
    if stamp is None or op not in _ORDER:
        return None
    expected, compare = _instant_ms(value), _ORDER[op]
    return lambda u: compare(stamp(u), expected)


def filters_on_last_modified(text: str) -> bool:
    """Whether a filter mentions ``meta.lastModified`` (what an organisation without that support refuses)."""
    return "meta.lastmodified" in text.lower()


def compile_filter(text: str) -> Callable[[UserRecord], bool]:
    """Parse with scim2-models and return a predicate; ``or`` and ``not`` are rejected like Asgardeo does."""
    try:
        ast = ScimFilter(text).ast
    except SCIMException as exc:
        raise ScimError(400, str(exc), "invalidFilter") from exc

    def build(node: FilterNode) -> Callable[[UserRecord], bool]:
        if isinstance(node, LogicalExpr) and node.op == LogicalOperator.and_:
            parts = [build(t) for t in node.terms]
            return lambda u: all(p(u) for p in parts)
        if isinstance(node, Comparison):
            path, op, value = node.attr_path, str(node.op.value), node.value
            key = path.attr.lower() + ("." + path.sub_attr.lower() if path.sub_attr else "")
            timed = None if path.uri else _timestamp_comparison(key, op, value)
            if timed is not None:
                return timed
            if op == "ne":
                return lambda u: all(_compare("ne", v, value) for v in _values(u, path.attr, path.sub_attr, path.uri))
            return lambda u: any(_compare(op, v, value) for v in _values(u, path.attr, path.sub_attr, path.uri))
        if isinstance(node, Present):
            path = node.attr_path
            return lambda u: bool(_values(u, path.attr, path.sub_attr, path.uri))
        raise ScimError(400, f"Unsupported filter: {text}", "invalidFilter")

    return build(ast)


def _username_eq(text: str) -> str | None:
    """The value of a plain ``userName eq "..."`` filter: answered from the index, not a scan."""
    ast = ScimFilter(text).ast
    if (
        isinstance(ast, Comparison)
        and ast.attr_path.attr.lower() == "username"
        and not ast.attr_path.sub_attr
        and str(ast.op.value) == "eq"
    ):
        return str(ast.value).removeprefix(f"{USER_STORE}/")
    return None


# --- discovery documents ------------------------------------------------------------------------------------
def user_schema() -> Schema:
    """The core User schema, trimmed to the attributes this directory stores (what Asgardeo's product uses)."""
    schema = User.to_schema()
    keep = {"id", "userName", "name", "emails", "groups", "password"}
    sub_keep = {"name": {"givenName", "familyName"}, "emails": {"value", "primary"}}
    attributes: list[Attribute] = []
    for attribute in schema.attributes or []:
        if attribute.name not in keep:
            continue
        if attribute.name in sub_keep and attribute.sub_attributes:
            attribute.sub_attributes = [s for s in attribute.sub_attributes if s.name in sub_keep[attribute.name]]
        attributes.append(attribute)
    schema.attributes = attributes
    return schema


def wso2_schema() -> Schema:
    schema = Wso2Extension.to_schema()
    schema.name = schema.description = "WSO2 user extension"
    for attribute in schema.attributes or []:
        attribute.type = Attribute.Type.boolean
    return schema


T = TypeVar("T", bound=Callable[..., Response])


class GetFaults:
    """Answers to force on single-user GETs, to reproduce a directory that errs for one user now and then: e.g. a
    404 once for a user who is present (``/_standin/users/<id>/fail-get``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, list[int]] = {}

    def inject(self, user_id: str, status: int, times: int) -> None:
        with self._lock:
            self._pending.setdefault(user_id, []).extend([status] * times)

    def take(self, user_id: str) -> int | None:
        with self._lock:
            pending = self._pending.get(user_id)
            if not pending:
                return None
            status = pending.pop(0)
            if not pending:
                del self._pending[user_id]
            return status


def create_blueprint(  # noqa: PLR0915 - one route table
    directory: Directory, provider: OidcProvider, faults: GetFaults | None = None
) -> Blueprint:
    """``/t/{org}/scim2``: Users CRUD + search behind Bearer tokens with Asgardeo's scopes, and discovery."""
    bp = Blueprint("scim", __name__, url_prefix=f"/t/{provider.config.org}/scim2")
    roles = RoleStore(directory)

    def base() -> str:
        return provider.base_url

    def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(orjson.dumps(body), status=status, mimetype=SCIM_JSON, headers=headers)

    def error(status: int, detail: str, scim_type: str | None = None) -> Response:
        body = Error(status=status, detail=detail, scim_type=scim_type).model_dump(scim_ctx=Context.DEFAULT)
        body["status"] = str(status)
        headers = {"WWW-Authenticate": 'Bearer realm="scim2"'} if status == 401 else None
        return respond(body, status, headers)

    def guarded(scope: str) -> Callable[[T], T]:
        """Require a live Bearer token carrying ``scope``: 401 without/with a bad token, 403 without scope."""

        def decorate(view: T) -> T:
            @wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Response:
                header = request.headers.get("Authorization", "")
                kind, _, value = header.partition(" ")
                if kind.lower() != "bearer" or not value:
                    return error(401, "Authorization failure. Authorization information was invalid or missing.")
                token = provider.find_access_token(value.strip())
                if token is None or token.is_expired() or token.is_revoked():
                    return error(401, "Authorization failure. Authorization information was invalid or missing.")
                if scope not in token.scope.split():
                    return error(403, f"Operation is not permitted. The token lacks the scope {scope}.")
                try:
                    return view(*args, **kwargs)
                except ScimError as exc:
                    return error(exc.status, exc.detail, exc.scim_type)
                except DirectoryError as exc:
                    return error(exc.status, str(exc), exc.scim_type)
                except SCIMException as exc:
                    return error(exc.status, str(exc), exc.scim_type or None)
                except ValidationError as exc:
                    return error(400, exc.errors()[0]["msg"] if exc.errors() else str(exc), "invalidValue")

            return cast(T, wrapper)

        return decorate

    def listing(start_index: int, count: int, filter_text: str | None) -> Response:
        count = max(0, min(count, MAX_COUNT))
        start_index = max(start_index, 1)
        mode = provider.config.lastmodified_filter
        if filter_text and mode != "honour" and filters_on_last_modified(filter_text):
            if mode == "refuse":
                raise ScimError(400, "Filtering on meta.lastModified is not supported", "invalidFilter")
            filter_text = None  # "ignore": the whole listing, as if no filter had been sent
        if filter_text:
            username = _username_eq(filter_text)
            if username is not None:
                found = directory.find_by_username(username)
                matches = [found] if found else []
            else:
                predicate = compile_filter(filter_text)
                matches = [u for u in directory.all_users() if predicate(u)]
            total, users = len(matches), matches[start_index - 1 : start_index - 1 + count]
        else:
            total, users = directory.page(start_index, count)
        envelope: dict[str, Any] = {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": total,
            "startIndex": start_index,
            "itemsPerPage": len(users),
        }
        if users:
            url = base()
            resources = [user_resource(u, url) for u in users]
            for resource, user in zip(resources, users, strict=True):
                if user.roles:
                    resource["roles"] = roles.scim_roles(user, url)
            if request.args.get("attributes") or request.args.get("excludedAttributes"):
                resources = [project(r) for r in resources]  # asked once per page: a full scan is the hot path
            envelope["Resources"] = resources
        return respond(envelope)

    def int_arg(name: str, default: int) -> int:
        raw = request.args.get(name)
        try:
            return int(raw) if raw not in (None, "") else default
        except ValueError as exc:
            raise ScimError(400, f"{name} must be an integer", "invalidValue") from exc

    def project(resource: dict[str, Any]) -> dict[str, Any]:
        """Apply ``attributes``/``excludedAttributes`` with scim2-models (only when asked: it is the slow path)."""
        attributes = request.args.get("attributes")
        excluded = request.args.get("excludedAttributes")
        if not attributes and not excluded:
            return resource
        model = ScimUser.model_validate(resource, scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        parameters: ResponseParameters[Any] = ResponseParameters.model_validate(
            {"attributes": attributes, "excludedAttributes": excluded}
        )
        return dict(model.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE, response_parameters=parameters))

    def one(user: UserRecord, status: int = 200) -> Response:
        resource = ScimUser.model_validate(user_resource(user, base()), scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        dumped = resource.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        if user.roles:
            # Added after the model: today's roles[] entries carry Asgardeo's audience fields, which it does not know.
            dumped["roles"] = roles.scim_roles(user, base())
        body = project(dumped)
        location = f"{base()}/scim2/Users/{user.id}"
        return respond(body, status, {"Location": location})

    def apply(
        user: UserRecord, fields: dict[str, Any], disabled: bool | None, locked: bool | None, password: str | None
    ) -> UserRecord:
        user = directory.update_profile(user.id, fields, password=password)
        if disabled is not None:
            user = directory.set_disabled(user.id, disabled)
        if locked is not None:
            user = directory.set_locked(user.id, locked)
        return user

    @bp.get("/Users")
    @guarded("internal_user_mgt_list")
    def list_users() -> Response:
        return listing(int_arg("startIndex", 1), int_arg("count", MAX_COUNT), request.args.get("filter"))

    @bp.post("/Users/.search")
    @guarded("internal_user_mgt_list")
    def search_users() -> Response:
        search: SearchRequest[Any] = SearchRequest.model_validate(
            request.get_json(force=True), scim_ctx=Context.SEARCH_REQUEST
        )
        return listing(
            search.start_index or 1,
            search.count if search.count is not None else MAX_COUNT,
            str(search.filter) if search.filter else None,
        )

    @bp.get("/Users/<user_id>")
    @guarded("internal_user_mgt_view")
    def get_user(user_id: str) -> Response:
        forced = faults.take(user_id) if faults is not None else None
        if forced is not None:
            return error(forced, f"User {user_id} not found" if forced == 404 else "Injected fault")
        return one(directory.get(user_id))

    @bp.post("/Users")
    @guarded("internal_user_mgt_create")
    def create_user() -> Response:
        resource = ScimUser.model_validate(request.get_json(force=True), scim_ctx=Context.RESOURCE_CREATION_REQUEST)
        fields, disabled, locked, password = fields_from_model(resource)
        user = directory.create_user(password=password, disabled=bool(disabled), locked=bool(locked), **fields)
        return one(user, 201)

    @bp.put("/Users/<user_id>")
    @guarded("internal_user_mgt_update")
    def replace_user(user_id: str) -> Response:
        user = directory.get(user_id)
        resource = ScimUser.model_validate(request.get_json(force=True), scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
        fields, disabled, locked, password = fields_from_model(resource)
        return one(apply(user, fields, disabled, locked, password))

    @bp.patch("/Users/<user_id>")
    @guarded("internal_user_mgt_update")
    def patch_user(user_id: str) -> Response:
        user = directory.get(user_id)
        current = ScimUser.model_validate(user_resource(user, base()), scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        operation = PatchOp[ScimUser].model_validate(
            request.get_json(force=True), scim_ctx=Context.RESOURCE_PATCH_REQUEST
        )
        operation.patch(current)
        fields, disabled, locked, password = fields_from_model(current)
        return one(apply(user, fields, disabled, locked, password))

    @bp.delete("/Users/<user_id>")
    @guarded("internal_user_mgt_delete")
    def delete_user(user_id: str) -> Response:
        directory.delete_user(user_id)
        return Response(status=204)

    @bp.get("/ServiceProviderConfig")
    def service_provider_config() -> Response:
        config = ServiceProviderConfig.model_validate(
            {
                "documentationUri": "https://wso2.com/asgardeo/docs/apis/scim2/",
                "patch": {"supported": True},
                "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
                "filter": {"supported": True, "maxResults": MAX_COUNT},
                "changePassword": {"supported": True},
                "sort": {"supported": False},
                "etag": {"supported": False},
                "authenticationSchemes": [
                    {
                        "type": "oauthbearertoken",
                        "name": "OAuth Bearer Token",
                        "description": "Client credentials token from /oauth2/token",
                        "primary": True,
                    }
                ],
                "meta": {"resourceType": "ServiceProviderConfig", "location": f"{base()}/scim2/ServiceProviderConfig"},
            }
        )
        return respond(config.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))

    def resource_type() -> dict[str, Any]:
        rt = ResourceType(
            id="User",
            name="User",
            endpoint="/Users",
            description="User Account",
            schema_=URN(CORE_SCHEMA),
            schema_extensions=[SchemaExtension(schema_=URN(WSO2_SCHEMA), required=False)],
        )
        body = rt.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        body["meta"] = {"resourceType": "ResourceType", "location": f"{base()}/scim2/ResourceTypes/User"}
        return body

    def schemas() -> list[dict[str, Any]]:
        out = []
        for schema in (user_schema(), wso2_schema()):
            body = schema.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
            body["meta"] = {"resourceType": "Schema", "location": f"{base()}/scim2/Schemas/{schema.id}"}
            out.append(body)
        return out

    def list_of(items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": len(items),
            "startIndex": 1,
            "itemsPerPage": len(items),
            "Resources": items,
        }

    @bp.get("/ResourceTypes")
    def resource_types() -> Response:
        return respond(list_of([resource_type()]))

    @bp.get("/ResourceTypes/<name>")
    def one_resource_type(name: str) -> Response:
        return respond(resource_type()) if name == "User" else error(404, f"Resource type {name} not found")

    @bp.get("/Schemas")
    def all_schemas() -> Response:
        return respond(list_of(schemas()))

    @bp.get("/Schemas/<schema_id>")
    def one_schema(schema_id: str) -> Response:
        found = [s for s in schemas() if s["id"] == schema_id]
        return respond(found[0]) if found else error(404, f"Schema {schema_id} not found")

    @bp.get("/v2/Roles/<role_id>")
    @guarded("internal_role_mgt_view")
    def get_role(role_id: str) -> Response:
        """The SCIM2 Roles API (v2): a role with its complete member list, as a truncated role event asks for."""
        try:
            role = roles.get(role_id)
        except RoleNotFound:
            return error(404, f"Role {role_id} not found")
        with directory._lock:
            members = [(u, directory._users.get(u)) for u in role.members]
        return respond(
            {
                "schemas": ["urn:ietf:params:scim:schemas:extension:2.0:Role"],
                "id": role.id,
                "displayName": role.name,
                "audience": {
                    "type": role.audience_type,
                    "value": role.audience_value,
                    "display": role.audience_display,
                },
                "users": [
                    {"value": u, "display": user.username if user else u, "$ref": f"{base()}/scim2/Users/{u}"}
                    for u, user in members
                ],
                "meta": {"resourceType": "Role", "location": f"{base()}/scim2/v2/Roles/{role.id}"},
            }
        )

    @bp.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def unknown(rest: str) -> Response:
        if rest.split("/", 1)[0] in ("ServiceProviderConfig", "ResourceTypes", "Schemas"):
            return error(405, f"{request.method} is not supported on /{rest}")
        return error(404, f"Endpoint /{rest} not found")

    return bp


__all__ = ["ListResponse", "ScimUser", "Wso2Extension", "create_blueprint", "user_resource"]
