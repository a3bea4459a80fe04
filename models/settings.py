"""The one place the environment is read.

Web, worker, beat and the command line all call :func:`get_settings`, so a variable means the same thing in every
process. Values come from environment variables and, in development, from a ``.env`` file in the working directory.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.directory_roles import parse_role_map

AppEnv = Literal["development", "test", "production"]
# Which directory attribute an ID token's ``sub`` carries: the user id (Asgardeo's default), or the username or email
# when the application issues another subject (see docs/architecture.md, "Identity model").
SubjectAttribute = Literal["id", "username", "email"]


class SettingsError(RuntimeError):
    """Start-up must stop: a setting is missing or malformed. The message names the variable."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]
# How far in the future a delivery's ``iat`` may be (models.inbox.check_age's default).
INBOX_CLOCK_SKEW_SECONDS = 300

AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
BROKER_SCHEMES = AMQP_SCHEMES | {"redis", "rediss"}


class Settings(BaseSettings):
    """Typed configuration. Every field is documented in ``.env.example`` and the README."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    app_env: AppEnv = "development"
    log_level: str = "INFO"

    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Every Redis key this service writes (Celery's too) starts with this, so two deployments or two test runs can
    # share one Redis without seeing each other's keys.
    redis_key_prefix: str = ""
    # Celery's broker when it is not REDIS_URL: ``amqp://`` selects RabbitMQ (quorum queues, publisher confirms).
    # Redis keeps the results, the rate budget, the coalescing and the live stream either way.
    celery_broker_url: str | None = None

    secret_key: SecretStr | None = None
    public_base_url: str = "http://127.0.0.1:5000"

    asgardeo_base_url: str | None = None
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_scopes: str = "openid profile email groups"
    oidc_require_email: bool = False
    oidc_jit_create: bool = True
    oidc_subject_attribute: SubjectAttribute = "id"
    oidc_http_timeout_seconds: float = 5.0
    # Clock skew tolerated on ID and logout tokens (exp, iat, nbf).
    oidc_clock_leeway_seconds: int = Field(default=60, ge=0, le=300)
    session_ttl_seconds: int = Field(default=8 * 3600, gt=0)
    session_cookie_name: str = "hrms_session"
    bootstrap_admin_emails: CsvList = Field(default_factory=list)
    # Directory ids (the ID token's sub) that may become the first admin, for accounts without a verified email.
    bootstrap_admin_ids: CsvList = Field(default_factory=list)
    group_role_map: CsvList = Field(default_factory=list)
    # Asgardeo roles that grant application roles: ``NAME[@TYPE[:AUDIENCE]]=role,...`` (models/directory_roles.py).
    role_map: CsvList = Field(default_factory=list)
    # A password change, reset or invitation in Asgardeo (``credentialUpdated``) ends the sessions signed in before it.
    credential_update_ends_sessions: bool = True

    scim_client_id: str | None = None
    scim_client_secret: SecretStr | None = None
    scim_rate_per_minute: int = Field(default=200, ge=1)
    scim_page_size: int = Field(default=100, ge=1, le=100)
    # Listing requests in flight at once during a reconciliation (all still inside the shared rate budget).
    scim_list_concurrency: int = Field(default=4, ge=1, le=8)
    scim_http_timeout_seconds: float = 10.0
    # How long a caller waits for a slot in the shared SCIM rate budget before giving up (a retryable error).
    scim_rate_max_wait_seconds: float = Field(default=60.0, gt=0)
    # Attempts per SCIM/OAuth call when Asgardeo answers 429 or 5xx or the network fails (backoff with jitter).
    scim_max_attempts: int = Field(default=6, ge=1, le=20)

    webhook_secrets: CsvList = Field(default_factory=list)
    # A role event lists up to 1,000 added and 1,000 removed users with their claims (about 300 KB): 64 KiB refused it.
    webhook_max_body_bytes: int = Field(default=512 * 1024, gt=0)
    webhook_max_age_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    webhook_org: str | None = None
    refresh_coalesce_seconds: float = Field(default=5.0, ge=0)
    # The inbox relay re-enqueues events left ``queued`` this long (their message was lost with a killed worker).
    event_requeue_after_seconds: int = Field(default=300, gt=0)
    event_max_retries: int = Field(default=8, ge=0)
    event_retry_backoff_max_seconds: int = Field(default=600, gt=0)
    # Each live stream closes after this long; the browser reconnects with Last-Event-ID and misses nothing.
    live_stream_max_seconds: float = Field(default=300.0, gt=0)
    live_stream_heartbeat_seconds: float = Field(default=15.0, gt=0)
    # Each open stream holds a web thread; past this many per process new streams get 503 and retry.
    live_stream_max_per_process: int = Field(default=4, ge=1)
    db_pool_size: int = Field(default=10, ge=1, le=100)
    # The web server's read timeouts (web/server_worker.py): a request's headers must arrive within this many seconds
    # of a new connection (or of the request's first byte on a kept-alive one), its body within this many after them.
    web_header_timeout_seconds: float = Field(default=10.0, gt=0)
    web_body_timeout_seconds: float = Field(default=30.0, gt=0)

    reconcile_cron: str = "0 2 * * *"
    reconcile_max_deactivate_share: float = Field(default=0.05, ge=0, le=1)
    # A running full run whose worker holds no lock and whose heartbeat is older than this was abandoned.
    reconcile_stale_after_seconds: int = Field(default=900, ge=60)
    # A bound on the listing loop: a directory that keeps answering pages past this is treated as broken.
    reconcile_max_pages: int = Field(default=20_000, ge=1)
    # The incremental sweep (users changed since the last sweep, by a SCIM filter on meta.lastModified) runs this
    # often on beat; 0 turns it off. It repairs a change whose webhook was lost within one period.
    incremental_sweep_seconds: int = Field(default=900, ge=0)
    # Incremental syncs (the sweep, the catch-up after the web tier was down) start this much before their point, for
    # clock skew between Asgardeo and us and for changes in flight when the point was taken.
    incremental_margin_seconds: int = Field(default=300, ge=0)
    # Users fetched one by one from SCIM every minute and compared with the table (the drift check); 0 turns it off.
    # 20 of the 200 requests a minute checks 28,800 users a day: every user of 10,000 about three times.
    drift_sample_per_minute: int = Field(default=20, ge=0, le=200)

    # Retention, enforced by the housekeeping task (``housekeeping.run``, every ``HOUSEKEEPING_INTERVAL_SECONDS``).
    # Fractions are allowed (the soak benchmark keeps minutes, not days).
    # Expired or revoked sessions are kept this long after they ended (to answer "why was I signed out?").
    session_retention_hours: float = Field(default=24.0, ge=0)
    # Applied and ignored inbox events, counted from when they were processed. Never failed or unapplied ones. The
    # ``jti`` of a removed event no longer deduplicates, so this must outlast WEBHOOK_MAX_AGE_SECONDS (checked below).
    inbox_retention_days: float = Field(default=30.0, gt=0)
    # Finished reconciliation and single-user runs; a run the audit trail still points to is kept with it.
    run_retention_days: float = Field(default=90.0, gt=0)
    # The audit trail (``user_changes``) is kept forever unless an operator sets this.
    audit_retention_days: float | None = Field(default=None, gt=0)
    housekeeping_interval_seconds: float = Field(default=3600.0, ge=1)
    # Rows per delete statement: each batch is its own short transaction, so intake and apply never wait long.
    housekeeping_batch_size: int = Field(default=500, ge=1, le=10_000)
    # One run stops after this long and reports what is left; the next run goes on from there.
    housekeeping_max_seconds: float = Field(default=300.0, gt=0)
    # After each batch the run rests this many times as long as the batch took: at 3 it holds one Postgres backend
    # at most a quarter of the time, so a large backlog (after downtime, or retention first switched on) goes out
    # slowly rather than taking CPU from the intake on a small machine. 0 = no rest.
    housekeeping_rest_ratio: float = Field(default=3.0, ge=0, le=100)

    flower_basic_auth: SecretStr | None = None
    flower_url: str = "http://127.0.0.1:5555"
    metrics_token: SecretStr | None = None
    # Production refuses to start without METRICS_TOKEN unless this says /metrics may be scraped without credentials.
    metrics_public: bool = False

    @field_validator(
        "bootstrap_admin_emails", "bootstrap_admin_ids", "group_role_map", "webhook_secrets", "role_map", mode="before"
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("audit_retention_days", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``AUDIT_RETENTION_DAYS=`` (as .env.example lists it) means "keep forever", like leaving it out."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _psycopg3_driver(cls, value: str) -> str:
        """Accept the ``postgresql://`` URLs that hosting platforms hand out, but always drive them with psycopg 3."""
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        if not value.startswith("postgresql+psycopg://"):
            raise ValueError("DATABASE_URL must be a PostgreSQL URL (postgresql://...)")
        return value

    @field_validator("celery_broker_url")
    @classmethod
    def _known_broker(cls, value: str | None) -> str | None:
        if not value:
            return None
        if value.split("://", 1)[0] not in BROKER_SCHEMES:
            raise ValueError(f"CELERY_BROKER_URL must start with one of {', '.join(sorted(BROKER_SCHEMES))}://")
        return value

    @property
    def broker_url(self) -> str:
        """Celery's broker: ``CELERY_BROKER_URL`` when set, else the Redis of ``REDIS_URL``."""
        return self.celery_broker_url or self.redis_url

    @property
    def broker_is_rabbitmq(self) -> bool:
        return self.broker_url.split("://", 1)[0] in AMQP_SCHEMES

    @property
    def max_request_body_bytes(self) -> int:
        """The largest request body the web tier takes: a webhook delivery's limit, and never under 1 MiB."""
        return max(self.webhook_max_body_bytes, 1024 * 1024)

    @model_validator(mode="after")
    def _inbox_outlasts_replay_window(self) -> Settings:
        """A delivery is refused once its ``iat`` is WEBHOOK_MAX_AGE_SECONDS old (plus the accepted clock skew); its
        inbox row must live at least that long, or a late copy of a removed event would be accepted and applied
        again."""
        if self.inbox_retention_days * 86400 < self.webhook_max_age_seconds + INBOX_CLOCK_SKEW_SECONDS:
            raise ValueError(
                "INBOX_RETENTION_DAYS must cover WEBHOOK_MAX_AGE_SECONDS (plus 5 minutes of clock skew): a removed"
                " event's copy arriving later would otherwise be applied again"
            )
        return self

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def issuer(self) -> str | None:
        """Asgardeo's issuer ends in ``/oauth2/token``; an explicit ``OIDC_ISSUER`` serves any other provider."""
        if self.oidc_issuer:
            return self.oidc_issuer.rstrip("/")
        if self.asgardeo_base_url:
            return self.asgardeo_base_url.rstrip("/") + "/oauth2/token"
        return None

    @field_validator("role_map")
    @classmethod
    def _role_map_entries(cls, value: list[str]) -> list[str]:
        parse_role_map(value)
        return value

    @property
    def asgardeo_roles(self) -> dict[tuple[str, str | None, str | None], str]:
        """``ROLE_MAP`` as ``{(role name, audience type, audience): application role}``."""
        return parse_role_map(self.role_map)

    @property
    def group_roles(self) -> dict[str, str]:
        """``GROUP_ROLE_MAP=hrms-admins=admin,hrms-hr=hr`` as a mapping from Asgardeo group to application role."""
        mapping: dict[str, str] = {}
        for pair in self.group_role_map:
            group, _, role = pair.partition("=")
            mapping[group.strip()] = role.strip()
        return mapping

    def check_production(self) -> None:
        """Refuse to start in production without the secrets; a development run has safe local defaults."""
        if not self.is_production:
            return
        required = {
            "SECRET_KEY": self.secret_key,
            "OIDC_CLIENT_SECRET": self.oidc_client_secret,
            "SCIM_CLIENT_SECRET": self.scim_client_secret,
            "WEBHOOK_SECRETS": self.webhook_secrets,
            "FLOWER_BASIC_AUTH": self.flower_basic_auth,
        }
        missing = [name for name, value in required.items() if not value]
        if not self.metrics_token and not self.metrics_public:
            missing.append("METRICS_TOKEN (or METRICS_PUBLIC=true to serve /metrics without credentials)")
        if missing:
            raise SettingsError("missing required setting(s) for APP_ENV=production: " + ", ".join(missing))
        if self.issuer is None:
            raise SettingsError("missing required setting for APP_ENV=production: ASGARDEO_BASE_URL or OIDC_ISSUER")
        for name, bad in (("GROUP_ROLE_MAP", [p for p in self.group_role_map if "=" not in p]),):
            if bad:
                raise SettingsError(f"{name} entries must look like group=role, got {bad!r}")


def load_settings() -> Settings:
    """Read and check the environment once; raise :class:`SettingsError` naming the variable on any problem."""
    try:
        settings = Settings()
    except ValueError as exc:
        raise SettingsError(_describe_validation_error(exc)) from None
    settings.check_production()
    return settings


def _describe_validation_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for error in errors():
        name = "_".join(str(p) for p in error.get("loc", ())).upper() or "settings"
        parts.append(f"{name}: {error.get('msg', 'invalid')}")
    return "invalid setting(s): " + "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests that change the environment call ``get_settings.cache_clear()``."""
    return load_settings()
