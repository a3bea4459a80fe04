from __future__ import annotations

import re
from pathlib import Path

import pytest

from models.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_SECRETS = {
    "SECRET_KEY": "s",
    "OIDC_CLIENT_SECRET": "o",
    "SCIM_CLIENT_SECRET": "c",
    "WEBHOOK_SECRETS": "w",
    "FLOWER_BASIC_AUTH": "a:b",
    "METRICS_TOKEN": "m",
    "ASGARDEO_BASE_URL": "https://api.asgardeo.io/t/acme",
}


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.chdir(ROOT / "tests")  # no .env here
    monkeypatch.setenv("APP_ENV", "production")
    for name, value in PRODUCTION_SECRETS.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


@pytest.mark.parametrize("missing", sorted(PRODUCTION_SECRETS))
def test_production_without_a_required_secret_stops_naming_it(production: pytest.MonkeyPatch, missing: str) -> None:
    production.delenv(missing)
    with pytest.raises(SettingsError, match=missing if missing != "ASGARDEO_BASE_URL" else "ASGARDEO_BASE_URL"):
        load_settings()


def test_production_with_every_secret_loads(production: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.issuer == "https://api.asgardeo.io/t/acme/oauth2/token"
    assert settings.webhook_secrets == ["w"]


def test_production_serves_open_metrics_only_when_a_setting_says_so(production: pytest.MonkeyPatch) -> None:
    production.delenv("METRICS_TOKEN")
    with pytest.raises(SettingsError, match="METRICS_TOKEN"):
        load_settings()
    production.setenv("METRICS_PUBLIC", "true")
    assert load_settings().metrics_token is None


def test_an_empty_metrics_token_counts_as_missing(production: pytest.MonkeyPatch) -> None:
    production.setenv("METRICS_TOKEN", "")
    with pytest.raises(SettingsError, match="METRICS_TOKEN"):
        load_settings()


def test_secrets_are_not_shown_in_repr(production: pytest.MonkeyPatch) -> None:
    text = repr(load_settings())
    assert "a:b" not in text
    assert "SecretStr('**********')" in text


def test_malformed_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIM_PAGE_SIZE", "500")
    with pytest.raises(SettingsError, match="SCIM_PAGE_SIZE"):
        load_settings()


def test_non_postgres_database_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///x.db")
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        load_settings()


def test_plain_postgres_urls_get_the_psycopg3_driver() -> None:
    settings = Settings(database_url="postgres://u@h:1/d")
    assert settings.database_url == "postgresql+psycopg://u@h:1/d"


def test_csv_settings_and_group_role_map_parse() -> None:
    settings = Settings(webhook_secrets="new, old ,", group_role_map="hrms-admins=admin,hrms-hr=hr")  # type: ignore[arg-type]
    assert settings.webhook_secrets == ["new", "old"]
    assert settings.group_roles == {"hrms-admins": "admin", "hrms-hr": "hr"}


def test_explicit_issuer_wins_over_the_asgardeo_base() -> None:
    settings = Settings(asgardeo_base_url="https://api.asgardeo.io/t/x", oidc_issuer="https://idp.example/")
    assert settings.issuer == "https://idp.example"


def test_every_setting_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - documented == set()


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = {name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in readme}
    assert missing == set()


def test_retention_defaults_keep_the_audit_trail_and_thirty_days_of_inbox() -> None:
    settings = Settings()
    assert settings.inbox_retention_days == 30
    assert settings.audit_retention_days is None
    assert settings.session_retention_hours > 0
    assert settings.run_retention_days > 0


def test_an_inbox_retention_shorter_than_the_replay_window_is_refused_naming_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INBOX_RETENTION_DAYS", "7")  # WEBHOOK_MAX_AGE_SECONDS is 7 days, plus the clock skew
    with pytest.raises(SettingsError, match="INBOX_RETENTION_DAYS must cover WEBHOOK_MAX_AGE_SECONDS"):
        load_settings()
    monkeypatch.setenv("WEBHOOK_MAX_AGE_SECONDS", str(6 * 86400))
    assert load_settings().inbox_retention_days == 7


def test_an_empty_audit_retention_keeps_the_audit_trail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_RETENTION_DAYS", "")
    assert load_settings().audit_retention_days is None
    monkeypatch.setenv("AUDIT_RETENTION_DAYS", "365")
    assert load_settings().audit_retention_days == 365
