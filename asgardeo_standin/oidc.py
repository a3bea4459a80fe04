"""OIDC provider with Asgardeo's URL shapes, built on Authlib's authorization server.

Authlib does the protocol work (grant validation, PKCE, client authentication, ID token encoding, userinfo,
RP-initiated logout); this module supplies the storage Authlib asks for (clients, codes, tokens, sessions) and
Asgardeo's specifics: issuer ``{base}/oauth2/token``, ``kid`` ending ``_RS256``, S256-only PKCE, opaque access
tokens, the M2M scopes, and back-channel logout when a session ends.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode, OpenIDToken, UserInfo, UserInfoEndpoint
from authlib.oidc.rpinitiated import EndSessionEndpoint
from flask import Blueprint, Flask, Response, jsonify, render_template, request, session
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from .config import StandinConfig
from .directory import Change, Directory, UserNotFound, UserRecord, now_ms, organization_ids

log = logging.getLogger(__name__)

M2M_SCOPES = (
    "internal_role_mgt_view",
    "internal_user_mgt_list",
    "internal_user_mgt_view",
    "internal_user_mgt_create",
    "internal_user_mgt_update",
    "internal_user_mgt_delete",
)
WEB_SCOPES = ("openid", "profile", "email", "groups")
REFRESH_TOKEN_TTL = 24 * 3600
KEYS_KEPT = 2
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


class KeyStore:
    """RS256 signing keys. The newest signs; after a rotation the previous one stays in the JWKS."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: list[RSAKey] = []
        self.rotate()

    def rotate(self) -> str:
        """Generate a new signing key and return its ``kid``; older keys beyond ``KEYS_KEPT`` leave the JWKS."""
        fresh = RSAKey.generate_key(2048, private=True)
        key = RSAKey.import_key(
            fresh.as_dict(private=True), {"kid": f"{fresh.thumbprint()}_RS256", "use": "sig", "alg": "RS256"}
        )
        with self._lock:
            self._keys = [key, *self._keys][:KEYS_KEPT]
        return str(key.kid)

    @property
    def signing_key(self) -> RSAKey:
        with self._lock:
            return self._keys[0]

    def public_jwks(self) -> dict[str, Any]:
        with self._lock:
            return dict(KeySet(list(self._keys)).as_dict(private=False))

    def sign(self, claims: dict[str, Any], typ: str | None = None) -> str:
        key = self.signing_key
        header = {"alg": "RS256", "kid": key.kid}
        if typ:
            header["typ"] = typ
        return jwt.encode(header, claims, key, algorithms=["RS256"])


@dataclass
class Client:
    """A registered application, in the shape Authlib's ``ClientMixin`` expects."""

    client_id: str
    client_secret: str
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]
    redirect_uris: list[str] = field(default_factory=list)
    post_logout_redirect_uris: list[str] = field(default_factory=list)
    backchannel_logout_uri: str | None = None

    @property
    def client_metadata(self) -> dict[str, Any]:
        return {
            "post_logout_redirect_uris": self.post_logout_redirect_uris,
            "backchannel_logout_uri": self.backchannel_logout_uri,
        }

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str | None) -> str:
        return " ".join(s for s in (scope or "").split() if s in self.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@dataclass(frozen=True)
class Subject:
    """The logged-in user of one OIDC session (``sid``); what Authlib calls the grant user."""

    user: UserRecord
    sid: str


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user_id: str
    sid: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int
    expires_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


@dataclass
class Token:
    """An opaque access token (and its refresh token), as Authlib's ``TokenMixin``."""

    access_token: str
    refresh_token: str | None
    client: Client
    scope: str
    issued_at: float
    expires_in: int
    subject: Subject | None
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_refresh_token_expired(self) -> bool:
        return time.time() >= self.issued_at + REFRESH_TOKEN_TTL

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> Subject | None:
        return self.subject

    def get_client(self) -> Client:
        return self.client


def subject_for(user: UserRecord, subject_claim: str) -> str:
    """The ``sub`` of this user's tokens: the id, or the username or email as the application chose."""
    subjects = {"id": user.id, "username": user.username, "email": user.email}
    return subjects.get(subject_claim) or user.id


def user_claims(user: UserRecord, scope: str, org: str, subject_claim: str = "id") -> dict[str, Any]:
    """Claims released for ``scope`` (profile, email, groups), plus ``username`` and the org claims; ``sub`` is the
    user id, or the username or email when the application is set to issue that as its subject."""
    scopes = set(scope.split())
    org_ids = organization_ids(org)
    claims: dict[str, Any] = {
        "sub": subject_for(user, subject_claim),
        "username": user.username,
        "org_id": org_ids["id"],
        "org_name": org,
        "org_handle": org,
    }
    if "profile" in scopes:
        claims["given_name"] = user.given_name
        claims["family_name"] = user.family_name
    if "email" in scopes:
        claims["email"] = user.email
        claims["email_verified"] = bool(user.email)
    if "groups" in scopes:
        claims["groups"] = list(user.groups)
    return {k: v for k, v in claims.items() if v is not None}


class OidcProvider:
    """Clients, codes, tokens and sessions of one organisation, and the Authlib server using them."""

    def __init__(self, config: StandinConfig, directory: Directory, keys: KeyStore) -> None:
        self.config = config
        self.directory = directory
        self.keys = keys
        self.root_url = ""
        self._lock = threading.RLock()
        self.clients = {
            config.web_client_id: Client(
                client_id=config.web_client_id,
                client_secret=config.web_client_secret,
                grant_types=("authorization_code", "refresh_token"),
                scopes=WEB_SCOPES,
                redirect_uris=list(config.web_redirect_uris),
                post_logout_redirect_uris=list(config.web_post_logout_redirect_uris),
                backchannel_logout_uri=config.web_backchannel_logout_uri,
            ),
            config.m2m_client_id: Client(
                client_id=config.m2m_client_id,
                client_secret=config.m2m_client_secret,
                grant_types=("client_credentials",),
                scopes=M2M_SCOPES,
            ),
        }
        self._codes: dict[str, AuthCode] = {}
        self._tokens: dict[str, Token] = {}
        self._refresh: dict[str, Token] = {}
        self._sessions: dict[str, tuple[str, set[str]]] = {}
        # When each session began (epoch ms): the session channel's events report it as ``loginTime``.
        self._session_started: dict[str, int] = {}
        self._backchannel = ThreadPoolExecutor(max_workers=2, thread_name_prefix="standin-backchannel")
        self.backchannel_counts = {"sent": 0, "failed": 0}
        self.server = AuthorizationServer()
        self.protector = ResourceProtector()
        directory.subscribe(self._on_change)

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/t/{self.config.org}"

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/oauth2/token"

    # --- Authlib wiring ----------------------------------------------------------------------------------
    def init_app(self, app: Flask) -> None:
        """Bind Authlib's server and resource protector to ``app`` with this provider's storage."""
        ttl = self.config.access_token_ttl
        app.config.update(
            OAUTH2_REFRESH_TOKEN_GENERATOR=True,
            OAUTH2_TOKEN_EXPIRES_IN={"authorization_code": ttl, "refresh_token": ttl, "client_credentials": ttl},
        )
        self.server.init_app(app, query_client=self.clients.get, save_token=self._save_token)
        provider = self

        class S256Only(CodeChallenge):  # type: ignore[misc]
            """PKCE mandatory for every client (Asgardeo's per-app setting, on here), S256 only."""

            SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
            DEFAULT_CODE_CHALLENGE_METHOD = "S256"

            def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
                data = grant.request.payload.data
                if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
                    raise InvalidRequestError("PKCE with code_challenge_method=S256 is mandatory")
                super().validate_code_challenge(grant, redirect_uri)

        class IdToken:
            """Claims and key for ID tokens, shared by the code and the refresh grants."""

            def resolve_client_private_key(self, client: Client) -> RSAKey:
                return provider.keys.signing_key

            def get_encode_header(self, client: Client) -> dict[str, Any]:
                return {"alg": "RS256", "kid": provider.keys.signing_key.kid}

            def get_client_claims(self, client: Client) -> dict[str, Any]:
                now = int(time.time())
                return {
                    "iss": provider.issuer,
                    "aud": [client.client_id],
                    "azp": client.client_id,
                    "iat": now,
                    "exp": now + provider.config.id_token_ttl,
                }

            def generate_user_info(self, subject: Subject, scope: str) -> UserInfo:
                return UserInfo(
                    {
                        **user_claims(subject.user, scope, provider.config.org, provider.config.subject_claim),
                        "sid": subject.sid,
                    }
                )

        class CodeIdToken(IdToken, OpenIDCode):  # type: ignore[misc]
            def exists_nonce(self, nonce: str, request: Any) -> bool:
                return False

        class RefreshIdToken(IdToken, OpenIDToken):  # type: ignore[misc]
            pass

        class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

            def save_authorization_code(self, code: str, request: Any) -> None:
                data = request.payload.data
                subject: Subject = request.user
                provider._store_code(
                    AuthCode(
                        code=code,
                        client_id=request.client.client_id,
                        redirect_uri=request.payload.redirect_uri,
                        scope=request.payload.scope or "",
                        user_id=subject.user.id,
                        sid=subject.sid,
                        nonce=data.get("nonce"),
                        code_challenge=data.get("code_challenge"),
                        code_challenge_method=data.get("code_challenge_method"),
                        auth_time=int(time.time()),
                        expires_at=time.time() + 300,
                    )
                )

            def query_authorization_code(self, code: str, client: Client) -> AuthCode | None:
                return provider._find_code(code, client)

            def delete_authorization_code(self, authorization_code: AuthCode) -> None:
                provider._drop_code(authorization_code.code)

            def authenticate_user(self, authorization_code: AuthCode) -> Subject | None:
                return provider._live_subject(authorization_code.user_id, authorization_code.sid)

        class RefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
            INCLUDE_NEW_REFRESH_TOKEN = True

            def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
                return provider._find_refresh(refresh_token)

            def authenticate_user(self, token: Token) -> Subject | None:
                if token.subject is None:
                    return None
                return provider._live_subject(token.subject.user.id, token.subject.sid)

            def revoke_old_credential(self, token: Token) -> None:
                token.revoked = True

        class ClientCredentials(grants.ClientCredentialsGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

        class Validator(BearerTokenValidator):  # type: ignore[misc]
            def authenticate_token(self, token_string: str) -> Token | None:
                return provider.find_access_token(token_string)

        class UserInfoView(UserInfoEndpoint):  # type: ignore[misc]
            def get_issuer(self) -> str:
                return provider.issuer

            def generate_user_info(self, subject: Subject, scope: str) -> UserInfo:
                return UserInfo(user_claims(subject.user, scope, provider.config.org, provider.config.subject_claim))

            def resolve_private_key(self) -> RSAKey:
                return provider.keys.signing_key

        class Logout(EndSessionEndpoint):  # type: ignore[misc]
            def get_server_jwks(self) -> KeySet:
                return KeySet.import_key_set(provider.keys.public_jwks())  # type: ignore[arg-type]

            def resolve_client_from_id_token_claims(self, id_token_claims: dict[str, Any]) -> Client | None:
                # Our ID tokens carry ``aud`` as a list; ``azp`` names the client unambiguously.
                return provider.clients.get(str(id_token_claims.get("azp", "")))

            def is_post_logout_redirect_uri_legitimate(
                self, request: Any, uri: str, client: Any, logout_hint: str | None
            ) -> bool:
                # Asgardeo accepts client_id + a registered post_logout_redirect_uri without id_token_hint.
                return client is not None

            def end_session(self, end_session_request: Any) -> None:
                sid = (end_session_request.id_token_claims or {}).get("sid")
                if sid:
                    provider.end_session(sid)

        self.server.register_grant(CodeGrant, [S256Only(required=True), CodeIdToken(require_nonce=False)])
        self.server.register_grant(RefreshGrant, [RefreshIdToken()])
        self.server.register_grant(ClientCredentials)
        self.protector.register_token_validator(Validator())
        self.server.register_endpoint(UserInfoView(resource_protector=self.protector))
        self.server.register_endpoint(Logout)

    # --- storage Authlib calls ---------------------------------------------------------------------------
    def _store_code(self, code: AuthCode) -> None:
        with self._lock:
            self._codes[code.code] = code
            if code.sid in self._sessions:
                self._sessions[code.sid][1].add(code.client_id)

    def _find_code(self, code: str, client: Client) -> AuthCode | None:
        with self._lock:
            found = self._codes.get(code)
        if found is None or found.client_id != client.client_id or time.time() > found.expires_at:
            return None
        return found

    def _drop_code(self, code: str) -> None:
        with self._lock:
            self._codes.pop(code, None)

    def _find_refresh(self, refresh_token: str) -> Token | None:
        with self._lock:
            token = self._refresh.get(refresh_token)
        if token is None or token.revoked or token.is_refresh_token_expired():
            return None
        return token

    def _live_subject(self, user_id: str, sid: str) -> Subject | None:
        """The session's user if the session is still open and the user may still log in."""
        with self._lock:
            if sid not in self._sessions:
                return None
        try:
            user = self.directory.get(user_id)
        except UserNotFound:
            return None
        return Subject(user, sid) if user.can_log_in else None

    def _save_token(self, token: dict[str, Any], request: Any) -> None:
        record = Token(
            access_token=token["access_token"],
            refresh_token=token.get("refresh_token"),
            client=request.client,
            scope=token.get("scope", ""),
            issued_at=time.time(),
            expires_in=int(token["expires_in"]),
            subject=request.user,
        )
        with self._lock:
            self._tokens[record.access_token] = record
            if record.refresh_token:
                self._refresh[record.refresh_token] = record

    def find_access_token(self, token_string: str) -> Token | None:
        """The token if it exists and, for a user token, its session and user are still live."""
        with self._lock:
            token = self._tokens.get(token_string)
        if token is None:
            return None
        if token.subject is not None and self._live_subject(token.subject.user.id, token.subject.sid) is None:
            return None
        return token

    # --- sessions ----------------------------------------------------------------------------------------
    def open_session(self, user: UserRecord, client_id: str | None = None) -> Subject:
        """A new login session; emits ``sessionEstablished`` (for ``client_id``, the application signing in)."""
        sid = str(uuid.uuid4())
        with self._lock:
            self._sessions[sid] = (user.id, {client_id} if client_id else set())
            self._session_started[sid] = now_ms()
        self._announce_session(user.id, "sessionEstablished", sid, client_id)
        return Subject(user, sid)

    def present_session(self, subject: Subject, client_id: str) -> None:
        """An existing session signs into an application (single sign-on); emits ``sessionPresented``."""
        self._store_session_client(subject.sid, client_id)
        self._announce_session(subject.user.id, "sessionPresented", subject.sid, client_id)

    def _application(self, client_id: str) -> dict[str, str]:
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"application:{client_id}")), "name": client_id}

    def _session_entry(self, sid: str) -> dict[str, Any] | None:
        """A session as the session channel shows it: Asgardeo's 64-hex id (not the OIDC ``sid``), the login time
        and the applications it signed into."""
        with self._lock:
            entry = self._sessions.get(sid)
            started = self._session_started.get(sid, now_ms())
        if entry is None:
            return None
        return {
            "id": hashlib.sha256(sid.encode()).hexdigest(),
            "loginTime": started,
            "applications": [self._application(c) for c in sorted(entry[1])],
        }

    def _announce_session(self, user_id: str, name: str, sid: str, client_id: str | None) -> None:
        entry = self._session_entry(sid)
        if entry is None:
            return
        fields: dict[str, Any] = {"session": entry}
        if client_id:
            fields["application"] = self._application(client_id)
        self.directory.announce(user_id, "session", name, fields)

    def _announce_revoked(self, user_id: str, sids: list[str]) -> None:
        """Emits ``sessionRevoked`` listing the sessions about to end (call before ending them)."""
        sessions = [entry for sid in sids if (entry := self._session_entry(sid)) is not None]
        if sessions:
            self.directory.announce(user_id, "session", "sessionRevoked", {"sessions": sessions})

    def session_subject(self, sid: str | None) -> Subject | None:
        if not sid:
            return None
        with self._lock:
            entry = self._sessions.get(sid)
        return self._live_subject(entry[0], sid) if entry else None

    def _store_session_client(self, sid: str, client_id: str) -> None:
        with self._lock:
            if sid in self._sessions:
                self._sessions[sid][1].add(client_id)

    def sessions_of(self, user_id: str) -> list[str]:
        with self._lock:
            return [sid for sid, (uid, _) in self._sessions.items() if uid == user_id]

    def end_session(self, sid: str) -> bool:
        """End one session: revoke its tokens and send a back-channel logout to each client that used it."""
        with self._lock:
            entry = self._sessions.pop(sid, None)
            self._session_started.pop(sid, None)
            if entry is None:
                return False
            user_id, client_ids = entry
            for token in self._tokens.values():
                if token.subject is not None and token.subject.sid == sid:
                    token.revoked = True
        for client_id in sorted(client_ids):
            client = self.clients.get(client_id)
            if client and client.backchannel_logout_uri:
                self._backchannel.submit(self._send_logout, client, user_id, sid)
        return True

    def end_user_sessions(self, user_id: str, *, announce: bool = False) -> int:
        """End every session of a user (admin action, and on disable, lock and delete). Returns the count.

        ``announce``: emit ``sessionRevoked`` first, as Asgardeo does when an administrator terminates a user's
        sessions.
        """
        sids = self.sessions_of(user_id)
        if announce:
            self._announce_revoked(user_id, sids)
        return sum(self.end_session(sid) for sid in sids)

    def subject_of(self, user_id: str) -> str:
        """The ``sub`` this user's tokens carry under the configured ``subject_claim`` (the id if deleted)."""
        try:
            user = self.directory.get(user_id)
        except UserNotFound:
            return user_id
        return subject_for(user, self.config.subject_claim)

    def logout_token(self, client: Client, user_id: str, sid: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": client.client_id,
            "iat": now,
            "exp": now + 120,
            "jti": str(uuid.uuid4()),
            "sid": sid,
            "sub": self.subject_of(user_id),
            "events": {BACKCHANNEL_EVENT: {}},
        }
        return self.keys.sign(claims, typ="logout+jwt")

    def _send_logout(self, client: Client, user_id: str, sid: str) -> None:
        assert client.backchannel_logout_uri
        try:
            response = requests.post(
                client.backchannel_logout_uri,
                data={"logout_token": self.logout_token(client, user_id, sid)},
                timeout=5,
            )
            ok = response.status_code < 300
        except requests.RequestException:
            ok = False
        with self._lock:
            self.backchannel_counts["sent" if ok else "failed"] += 1

    def _on_change(self, change: Change) -> None:
        if change.user is None:
            return
        names = {name for _, name in change.events}
        if names & {"userDisabled", "userAccountLocked", "userDeleted"}:
            user_id = change.user.id
            # Runs under the directory lock: do the session work on the back-channel worker.
            self._backchannel.submit(self.end_user_sessions, user_id)

    def stop(self) -> None:
        self._backchannel.shutdown(wait=False, cancel_futures=True)


def create_blueprint(provider: OidcProvider) -> Blueprint:
    """Routes of the OIDC provider under ``/t/{org}``, the paths Asgardeo uses."""
    bp = Blueprint("oidc", __name__, url_prefix=f"/t/{provider.config.org}", template_folder="templates")
    server = provider.server

    @bp.get("/oauth2/token/.well-known/openid-configuration")
    @bp.get("/oauth2/oidcdiscovery/.well-known/openid-configuration")
    def discovery() -> Response:
        base = provider.base_url
        return jsonify(
            {
                "issuer": provider.issuer,
                "authorization_endpoint": f"{base}/oauth2/authorize",
                "token_endpoint": f"{base}/oauth2/token",
                "jwks_uri": f"{base}/oauth2/jwks",
                "userinfo_endpoint": f"{base}/oauth2/userinfo",
                "end_session_endpoint": f"{base}/oidc/logout",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
                "subject_types_supported": ["public"],
                "scopes_supported": [*WEB_SCOPES, *M2M_SCOPES],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "claims_supported": [
                    "sub",
                    "email",
                    "email_verified",
                    "given_name",
                    "family_name",
                    "username",
                    "groups",
                    "sid",
                    "org_id",
                    "org_name",
                    "org_handle",
                ],
                "backchannel_logout_supported": True,
                "backchannel_logout_session_supported": True,
                "code_challenge_methods_supported": ["S256"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    @bp.route("/oauth2/authorize", methods=["GET", "POST"])
    def authorize() -> Any:
        """Username/password form; on success issues a code through Authlib (PKCE S256 enforced there)."""
        try:
            grant = server.get_consent_grant(end_user=None)
        except OAuth2Error as error:
            return server.handle_error_response(None, error)
        if request.method == "GET":
            subject = provider.session_subject(session.get("sid"))
            if subject is not None and request.args.get("prompt") != "login":
                provider.present_session(subject, grant.client.client_id)
                return server.create_authorization_response(grant=grant, grant_user=subject)
            return render_template(
                "login.html",
                org=provider.config.org,
                client_id=grant.client.client_id,
                action=request.full_path,
                error=None,
            )
        user = provider.directory.authenticate(request.form.get("username", ""), request.form.get("password", ""))
        if user is None:
            return render_template(
                "login.html",
                org=provider.config.org,
                client_id=grant.client.client_id,
                action=request.full_path,
                error="Login failed! Please check your username and password and try again.",
            ), 401
        subject = provider.open_session(user, grant.client.client_id)
        session["sid"] = subject.sid
        return server.create_authorization_response(grant=grant, grant_user=subject)

    @bp.post("/oauth2/token")
    def token() -> Any:
        return server.create_token_response()

    @bp.get("/oauth2/jwks")
    def jwks() -> Response:
        return jsonify(provider.keys.public_jwks())

    @bp.route("/oauth2/userinfo", methods=["GET", "POST"])
    def userinfo() -> Any:
        return server.create_endpoint_response("userinfo")

    @bp.route("/oidc/logout", methods=["GET", "POST"])
    def logout() -> Any:
        """RP-initiated logout: ends the browser's session (and the id_token_hint's) and maybe redirects."""
        sid = session.pop("sid", None)
        if sid:
            subject = provider.session_subject(sid)
            if subject is not None:
                provider._announce_revoked(subject.user.id, [sid])
            provider.end_session(sid)
        response = server.create_endpoint_response("end_session")
        if response is not None:
            return response
        return render_template(
            "login.html", org=provider.config.org, client_id=None, action=None, error=None, signed_out=True
        )

    return bp
