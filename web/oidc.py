"""The OpenID Connect relying party: Authlib's Flask client, configured from the provider's discovery document.

Any compliant provider works; Asgardeo's issuer (``{base}/oauth2/token``) comes from the settings. Authlib and
joserfc do every JWT operation here (signature, ``alg`` allow-list, claim checks); this module only chooses the
claims options and turns failures into two kinds of error:

- :class:`LoginRejected`: the request, the provider's answer or a token is not acceptable (a 4xx, nothing created);
- :class:`ProviderUnavailable`: the provider did not answer in time or answered with a server error (a 502).

The discovery document and the JWKS live on the registered client (one per app and process) and are re-read after
``METADATA_TTL_SECONDS``; a token signed with an unknown ``kid`` makes Authlib re-read the JWKS once. Anybody may
post a back-channel logout token, so there a forced re-read is let through at most once per
``JWKS_FORCED_REFRESH_SECONDS`` per process: forged tokens with invented ``kid`` values cannot turn this service
into a stream of requests to the provider (the ID token of a login comes from the provider itself). Every call to
the provider carries ``OIDC_HTTP_TIMEOUT_SECONDS``; the time spent in those calls is added up on ``g`` so the
callback can log (and the benchmark subtract) the provider's share.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, current_app, g, session
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from models.settings import Settings

log = logging.getLogger(__name__)

PROVIDER = "asgardeo"
EXTENSION = "hrms.oidc"
REFRESH_GATE = "hrms.oidc.jwks_refresh_gate"
JWKS_FORCED_REFRESH_SECONDS = 30.0
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
METADATA_TTL_SECONDS = 3600.0
DEFAULT_ALGORITHMS = ["RS256"]
MAX_CODE_CHARS = 2048
MAX_STATE_CHARS = 256
MAX_JWT_CHARS = 16 * 1024
# Provider error codes that mean "try again later" rather than "this login is wrong".
_PROVIDER_SIDE_ERRORS = frozenset({"server_error", "temporarily_unavailable"})


class LoginRejected(Exception):
    """A login or logout request that must be refused; ``error`` is a stable code, ``detail`` says why."""

    def __init__(self, error: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.status = status


class ProviderUnavailable(Exception):
    """The OpenID provider timed out, refused the connection or answered with a server error."""


class RefreshGate:
    """Lets one forced JWKS re-read through per interval (per app and process), whoever asks."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: float | None = None
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last < self.interval:
                return False
            self._last = now
            return True


@dataclass(frozen=True)
class VerifiedLogin:
    """The outcome of a valid callback: the ID token's validated claims, the raw token (for ``id_token_hint``) and
    the same-origin path to return to."""

    claims: dict[str, Any]
    id_token: str
    next_path: str


def init_app(app: Flask, settings: Settings) -> None:
    """Create this app's Authlib registry and register the provider by discovery (no network until first use).

    The registry is created here, not at import, so each app (each test) gets its own configuration and caches.
    Without an issuer or client id the login routes answer 503 ``oidc_not_configured``.
    """
    oauth = OAuth()
    oauth.init_app(app)
    if settings.issuer and settings.oidc_client_id:
        oauth.register(
            PROVIDER,
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None,
            server_metadata_url=settings.issuer + "/.well-known/openid-configuration",
            client_kwargs={
                "scope": settings.oidc_scopes,
                "code_challenge_method": "S256",
                "token_endpoint_auth_method": "client_secret_basic",
                "default_timeout": settings.oidc_http_timeout_seconds,
            },
        )
    app.extensions[EXTENSION] = oauth
    app.extensions[REFRESH_GATE] = RefreshGate(JWKS_FORCED_REFRESH_SECONDS)


def _settings() -> Settings:
    settings: Settings = current_app.config["SETTINGS"]
    return settings


def _client() -> Any:
    oauth: OAuth = current_app.extensions[EXTENSION]
    client = oauth.create_client(PROVIDER)
    if client is None:
        raise LoginRejected(
            "oidc_not_configured",
            "Sign-in is not configured: set ASGARDEO_BASE_URL (or OIDC_ISSUER) and OIDC_CLIENT_ID.",
            status=503,
        )
    metadata: dict[str, Any] = client.server_metadata
    loaded_at = metadata.get("_loaded_at")
    if loaded_at is not None and time.time() - float(loaded_at) > METADATA_TTL_SECONDS:
        metadata.pop("_loaded_at", None)
        metadata.pop("jwks", None)
    return client


def expected_issuer(settings: Settings) -> str | None:
    """The issuer as configured, character for character (``OIDC_ISSUER`` as given, else Asgardeo's)."""
    return settings.oidc_issuer or settings.issuer


def provider_metadata(client: Any) -> dict[str, Any]:
    """The provider's discovery document, whose ``issuer`` must equal the configured one exactly (OpenID Connect
    Discovery 1.0, section 4.3: otherwise its contents must not be used). Raises :class:`LoginRejected` (502)."""
    with provider_call("discovery"):
        metadata: dict[str, Any] = client.load_server_metadata()
    expected = expected_issuer(_settings())
    if metadata.get("issuer") != expected:
        log.warning("discovery issuer mismatch", extra={"expected": expected, "found": str(metadata.get("issuer"))})
        raise LoginRejected(
            "issuer_mismatch",
            "The sign-in provider's discovery document names another issuer than the one configured"
            " (OIDC_ISSUER or ASGARDEO_BASE_URL); sign-in stays off until they are identical.",
            status=502,
        )
    return metadata


def check_response_issuer(args: Mapping[str, str], metadata: Mapping[str, Any]) -> None:
    """RFC 9207: an authorization response's ``iss`` must be the provider's issuer; a provider that announces the
    parameter must send it. Defeats mix-up attacks between providers."""
    iss = args.get("iss")
    if iss is None:
        if metadata.get("authorization_response_iss_parameter_supported") is True:
            raise LoginRejected("invalid_issuer", "The sign-in response lacks the iss parameter its provider promises.")
        return
    if iss != metadata.get("issuer"):
        raise LoginRejected(
            "invalid_issuer", "The sign-in response comes from another issuer; start the sign-in again."
        )


@contextmanager
def provider_call(what: str) -> Iterator[None]:
    """Time a call to the provider into ``g.provider_seconds`` and map network failures to ProviderUnavailable."""
    started = time.perf_counter()
    try:
        yield
    except requests.Timeout as exc:
        log.warning("oidc provider timed out", extra={"call": what})
        raise ProviderUnavailable(f"The sign-in provider did not answer in time ({what}).") from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        log.warning("oidc provider error", extra={"call": what, "status": status})
        raise ProviderUnavailable(f"The sign-in provider answered {what} with HTTP {status}.") from exc
    except (requests.RequestException, ValueError) as exc:
        log.warning("oidc provider unreachable", extra={"call": what, "error": type(exc).__name__})
        raise ProviderUnavailable(f"The sign-in provider could not be reached ({what}).") from exc
    finally:
        g.provider_seconds = g.get("provider_seconds", 0.0) + time.perf_counter() - started


def authorization_url(redirect_uri: str, next_path: str) -> str:
    """Start a login: a fresh ``state``, ``nonce`` and PKCE verifier kept in Flask's signed session cookie."""
    client = _client()
    provider_metadata(client)
    with provider_call("discovery"):
        created = client.create_authorization_url(redirect_uri)
    url = str(created.pop("url"))
    client.save_authorize_data(redirect_uri=redirect_uri, next_path=next_path, **created)
    return url


def _claims_options(settings: Settings, issuer: str) -> dict[str, Any]:
    return {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": settings.oidc_client_id},
        "sub": {"essential": True},
        "exp": {"essential": True},
        "iat": {"essential": True},
    }


def finish_login(args: Mapping[str, str]) -> VerifiedLogin:
    """Complete the code flow for the callback's query ``args``: state, code exchange, ID token validation.

    The login state is removed from the session first, so a second use of the same callback URL in the same browser
    fails on ``state``; a replayed code sent with an old cookie is refused by the provider (``invalid_grant``).
    """
    client = _client()
    state = args.get("state") or ""
    state_data = client.framework.get_state_data(session, state) if 0 < len(state) <= MAX_STATE_CHARS else None
    if state:
        client.framework.clear_state_data(session, state)
    metadata = provider_metadata(client)
    check_response_issuer(args, metadata)
    if args.get("error"):
        code = args["error"][:64]
        if not code.replace("_", "").isalnum():
            code = "provider_error"
        description = (args.get("error_description") or "").strip()[:200]
        reason = f": {description}" if description else "."
        raise LoginRejected(code, "The sign-in provider refused the login" + reason)
    if not state:
        raise LoginRejected("invalid_state", "The callback carries no state; start the sign-in again.")
    if state_data is None:
        raise LoginRejected(
            "invalid_state", "The sign-in state does not match this browser, or it expired; start the sign-in again."
        )
    code = args.get("code") or ""
    if not code or len(code) > MAX_CODE_CHARS:
        raise LoginRejected("invalid_request", "The callback carries no usable authorization code.")
    try:
        with provider_call("token"):
            token = client.fetch_access_token(
                code=code,
                redirect_uri=state_data.get("redirect_uri"),
                code_verifier=state_data.get("code_verifier"),
            )
    except OAuthError as exc:
        if exc.error in _PROVIDER_SIDE_ERRORS:
            raise ProviderUnavailable(f"The sign-in provider could not complete the login ({exc.error}).") from exc
        raise LoginRejected(
            "invalid_grant" if exc.error == "invalid_grant" else "token_exchange_failed",
            f"The sign-in provider did not accept the authorization code ({exc.error}); start the sign-in again.",
        ) from exc
    id_token = token.get("id_token")
    if not isinstance(id_token, str) or not id_token or len(id_token) > MAX_JWT_CHARS:
        raise LoginRejected("invalid_id_token", "The provider's answer carries no usable ID token.")
    settings = _settings()
    try:
        with provider_call("jwks"):
            issuer = str(metadata["issuer"])
            userinfo = client.parse_id_token(
                token,
                nonce=state_data.get("nonce"),
                claims_options=_claims_options(settings, issuer),
                leeway=settings.oidc_clock_leeway_seconds,
            )
    except JoseError as exc:
        log.warning("id token rejected", extra={"reason": type(exc).__name__, "claim": str(exc)[:120]})
        raise LoginRejected("invalid_id_token", f"The ID token is not valid: {_describe(exc)}.") from exc
    return VerifiedLogin(claims=dict(userinfo), id_token=id_token, next_path=str(state_data.get("next_path") or "/"))


def _describe(exc: JoseError) -> str:
    name = type(exc).__name__
    text = str(exc).strip()
    return f"{name} ({text[:120]})" if text else name


def end_session_url(id_token_hint: str | None) -> str | None:
    """The provider's RP-initiated logout URL, returning to ``PUBLIC_BASE_URL/``; None when the provider has no
    ``end_session_endpoint`` or cannot be reached (the local session is ended regardless)."""
    settings = _settings()
    try:
        client = _client()
        metadata = provider_metadata(client)
        if not metadata.get("end_session_endpoint"):
            return None
        created = client.create_logout_url(
            post_logout_redirect_uri=settings.public_base_url.rstrip("/") + "/",
            id_token_hint=id_token_hint,
            client_id=settings.oidc_client_id,
        )
    except (LoginRejected, ProviderUnavailable):
        return None
    return str(created["url"])


def _key_set(client: Any, force: bool) -> KeySet:
    with provider_call("jwks"):
        return KeySet.import_key_set(client.fetch_jwk_set(force=force))


def verify_logout_token(logout_token: str) -> dict[str, Any]:
    """Validate a back-channel logout token (OIDC Back-Channel Logout 1.0, section 2.6) and return its claims.

    Signature against the cached JWKS (re-read once on an unknown ``kid``), ``iss``, ``aud``, ``iat``, ``exp`` when
    present, the back-channel ``events`` member, ``sid`` or ``sub``, and no ``nonce`` (so an ID token cannot be
    passed off as a logout token). Raises :class:`LoginRejected` on any failure.
    """
    if not logout_token or len(logout_token) > MAX_JWT_CHARS:
        raise LoginRejected("invalid_request", "The form field logout_token is missing or too large.")
    client = _client()
    settings = _settings()
    metadata = provider_metadata(client)
    algorithms = metadata.get("id_token_signing_alg_values_supported") or DEFAULT_ALGORITHMS
    registry = JWSRegistry(algorithms=[a for a in algorithms if a != "none"])
    try:
        try:
            decoded = jwt.decode(logout_token, _key_set(client, force=False), registry=registry)
        except InvalidKeyIdError:
            gate: RefreshGate = current_app.extensions[REFRESH_GATE]
            if not gate.allow():
                log.warning("logout token with an unknown kid; the JWKS was re-read moments ago, so not again")
                raise
            decoded = jwt.decode(logout_token, _key_set(client, force=True), registry=registry)
        issuer = str(metadata["issuer"])
        jwt.JWTClaimsRegistry(
            leeway=settings.oidc_clock_leeway_seconds,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": str(settings.oidc_client_id)},
            iat={"essential": True},
            events={"essential": True},
        ).validate(decoded.claims)
    except JoseError as exc:
        raise LoginRejected("invalid_logout_token", f"The logout token is not valid: {_describe(exc)}.") from exc
    claims = dict(decoded.claims)
    events = claims.get("events")
    if not isinstance(events, dict) or BACKCHANNEL_EVENT not in events:
        raise LoginRejected("invalid_logout_token", "The logout token lacks the back-channel logout event.")
    if "nonce" in claims:
        raise LoginRejected("invalid_logout_token", "A logout token must not carry a nonce.")
    sid, sub = claims.get("sid"), claims.get("sub")
    if not (isinstance(sid, str) and sid) and not (isinstance(sub, str) and sub):
        raise LoginRejected("invalid_logout_token", "The logout token names neither a sid nor a sub.")
    for name in ("sid", "sub"):
        if name in claims and not (isinstance(claims[name], str) and 0 < len(claims[name]) <= 200):
            raise LoginRejected("invalid_logout_token", f"The logout token's {name} is not a usable string.")
    return claims
