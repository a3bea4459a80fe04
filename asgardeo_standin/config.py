"""Configuration of the Asgardeo stand-in.

The dataclass is the whole contract between the stand-in and whoever starts it (the local run, test fixtures,
benchmarks). ``from_env`` is the only place the stand-in reads the environment, and only the CLI calls it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# What an ID token carries as ``sub``: the user id (Asgardeo's default), or, as an application may choose, the username
# (as WSO2 shows it: bare for the primary store, ``STORE/name`` otherwise) or the email.
SUBJECT_CLAIMS = frozenset({"id", "username", "email"})
# How the SCIM listing treats a filter on ``meta.lastModified`` (documented for WSO2, unsure for an Asgardeo
# organisation): ``honour`` it, ``refuse`` it (400 invalidFilter) or ``ignore`` it (answer the unfiltered listing),
# as an organisation that does not support it might.
LASTMODIFIED_FILTER_MODES = frozenset({"honour", "refuse", "ignore"})


@dataclass
class ChaosConfig:
    """Delivery faults injected by the webhook publisher, drawn from ``random.Random(seed)``.

    Rates are probabilities in [0, 1] applied per event; ``delay_ms_max`` delays each delivery by a uniform
    0..max milliseconds. All zero means a well-behaved publisher.
    """

    seed: int = 0
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    delay_ms_max: int = 0
    reorder_rate: float = 0.0


@dataclass
class StandinConfig:
    """Everything needed to start one stand-in organisation."""

    org: str = "demo"
    host: str = "127.0.0.1"
    port: int = 0
    rate_limit_per_minute: int = 200
    web_client_id: str = "standin-web"
    web_client_secret: str = "standin-web-secret"  # noqa: S105 - a fixed test-double credential
    web_redirect_uris: list[str] = field(default_factory=lambda: ["http://127.0.0.1:5000/auth/callback"])
    web_post_logout_redirect_uris: list[str] = field(default_factory=lambda: ["http://127.0.0.1:5000/"])
    web_backchannel_logout_uri: str | None = None
    m2m_client_id: str = "standin-m2m"
    m2m_client_secret: str = "standin-m2m-secret"  # noqa: S105 - a fixed test-double credential
    webhook_url: str | None = None
    webhook_secret: str | None = None
    chaos: ChaosConfig = field(default_factory=ChaosConfig)
    seed_demo: bool = False
    # A JSON file that keeps the directory (users, ids, passwords' digests) across restarts; None keeps it in memory.
    state_file: str | None = None
    access_token_ttl: int = 3600
    id_token_ttl: int = 3600
    subject_claim: str = "id"
    lastmodified_filter: str = "honour"
    # The pauses before each retry of a delivery answered 5xx or not answered at all. Deliveries go out one at a
    # time, so at the default about 0.75 s pass per lost delivery: a test that lets hundreds fail while the
    # subscriber is down sets these to 0 so they all fail within the outage, not minutes after it.
    webhook_retry_backoff_s: tuple[float, ...] = (0.05, 0.2, 0.5)

    def __post_init__(self) -> None:
        if self.lastmodified_filter not in LASTMODIFIED_FILTER_MODES:
            raise ValueError(f"lastmodified_filter must be one of {sorted(LASTMODIFIED_FILTER_MODES)}")
        if any(pause < 0 for pause in self.webhook_retry_backoff_s):
            raise ValueError("webhook_retry_backoff_s must not be negative")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> StandinConfig:
        """Build a config from ``STANDIN_*`` variables; unset variables keep the defaults.

        Lists are comma-separated; booleans accept 1/true/yes.
        """
        env = dict(os.environ if environ is None else environ)
        cfg = cls()

        def text(name: str) -> str | None:
            value = env.get(f"STANDIN_{name}")
            return value if value else None

        def listing(name: str) -> list[str] | None:
            value = text(name)
            return [part.strip() for part in value.split(",") if part.strip()] if value else None

        for attr in ("org", "host", "web_client_id", "web_client_secret", "m2m_client_id", "m2m_client_secret"):
            if (value := text(attr.upper())) is not None:
                setattr(cfg, attr, value)
        for attr in ("port", "rate_limit_per_minute", "access_token_ttl", "id_token_ttl"):
            if (value := text(attr.upper())) is not None:
                setattr(cfg, attr, int(value))
        for attr in ("web_backchannel_logout_uri", "webhook_url", "webhook_secret", "state_file", "subject_claim"):
            if (value := text(attr.upper())) is not None:
                setattr(cfg, attr, value)
        if (value := text("LASTMODIFIED_FILTER")) is not None:
            if value not in LASTMODIFIED_FILTER_MODES:
                raise ValueError(f"STANDIN_LASTMODIFIED_FILTER must be one of {sorted(LASTMODIFIED_FILTER_MODES)}")
            cfg.lastmodified_filter = value
        if (pauses := listing("WEBHOOK_RETRY_BACKOFF_S")) is not None:
            cfg.webhook_retry_backoff_s = tuple(float(pause) for pause in pauses)
        if (uris := listing("WEB_REDIRECT_URIS")) is not None:
            cfg.web_redirect_uris = uris
        if (uris := listing("WEB_POST_LOGOUT_REDIRECT_URIS")) is not None:
            cfg.web_post_logout_redirect_uris = uris
        if (flag := text("SEED_DEMO")) is not None:
            cfg.seed_demo = flag.lower() in {"1", "true", "yes"}
        chaos = cfg.chaos
        if (value := text("CHAOS_SEED")) is not None:
            chaos.seed = int(value)
        for attr in ("drop_rate", "duplicate_rate", "reorder_rate"):
            if (value := text(f"CHAOS_{attr.upper()}")) is not None:
                setattr(chaos, attr, float(value))
        if (value := text("CHAOS_DELAY_MS_MAX")) is not None:
            chaos.delay_ms_max = int(value)
        return cfg
