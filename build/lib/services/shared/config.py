"""Settings shared by every service; each service subclasses HubSettings with its own env prefix."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.shared.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCHEMAS_DIR = REPO_ROOT / "schemas"

_PLACEHOLDERS = {"", "changeme", "change-me", "secret"}


class HubSettings(BaseSettings):
    """What every service needs: Kafka, topics, the environment it runs in."""

    model_config = SettingsConfigDict(env_prefix="HUB_", frozen=True, extra="ignore")

    environment: str = Field("development", description="development, test or production")
    kafka_bootstrap: str = "127.0.0.1:9092"
    #: The embedded Tansu broker does not support idempotent producers; Apache Kafka does.
    kafka_idempotent_producer: bool = True
    topic_prefix: str = "hub"
    #: Faust app id of the matcher: its consumer group and the prefix of its changelog topics.
    matcher_app_id: str = "hub-matcher"
    topic_partitions: int = Field(4, ge=1)
    topic_replication: int = Field(1, ge=1)
    schemas_dir: Path = DEFAULT_SCHEMAS_DIR
    log_json: bool = False
    log_level: str = "INFO"


class PseudonymSettings(BaseSettings):
    """The regional secret behind household and person pseudonyms (versioned for rotation)."""

    model_config = SettingsConfigDict(env_prefix="HUB_", frozen=True, extra="ignore")

    environment: str = "development"
    pseudonym_secret: SecretStr = SecretStr("development-only-pseudonym-secret")
    pseudonym_version: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _refuse_placeholder_outside_development(self) -> PseudonymSettings:
        secret = self.pseudonym_secret.get_secret_value()
        if self.environment == "production" and (
            secret.lower() in _PLACEHOLDERS
            or secret.startswith("development-only")
            or len(secret) < 32
        ):
            raise ConfigurationError(
                "HUB_PSEUDONYM_SECRET must be set to a random secret of at least 32 characters "
                "in production"
            )
        return self


class DatabaseSettings(BaseSettings):
    """Where the notifier keeps alerts."""

    model_config = SettingsConfigDict(env_prefix="HUB_", frozen=True, extra="ignore")

    database_url: SecretStr = SecretStr("postgresql+asyncpg://postgres@127.0.0.1:5432/hub")
