"""Settings shared by every service; each service subclasses HubSettings with its own env prefix."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.shared.errors import ConfigurationError
from services.shared.events import EventType

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
    #: Consumer group of the notifier (the alerts topic).
    notifier_group_id: str = "hub-notifier"
    #: Consumer group of the Kafka intake; ingest instances in one group share the partitions.
    ingest_intake_group: str = "hub-ingest-intake"
    topic_partitions: int = Field(4, ge=1)
    topic_replication: int = Field(1, ge=1)
    #: How many days after the day it was received an event may be dated: ingest answers 422
    #: beyond it, the matcher dead-letters (reason `future-event`) what came another way.
    future_tolerance_days: int = Field(1, ge=0, le=30)
    schemas_dir: Path = DEFAULT_SCHEMAS_DIR
    log_json: bool = False
    log_level: str = "INFO"
    #: Days an event counts after its event date, per event type (also the topic retention).
    #: Defaults to be confirmed by the privacy officer (docs/privacy.md).
    retention_event_days: dict[str, int] = Field(
        default_factory=lambda: {
            "debt-signal": 180,
            "wvggz-report": 180,
            "streettriage-handover": 180,
            "care-indication": 365,
        }
    )
    #: Days the Kafka intake topics and their dead letters keep a record (identity in clear).
    retention_intake_days: int = Field(7, ge=1, le=30)
    #: Days ingest keeps an upload's report and a batch's or upload's Idempotency-Key answer.
    retention_upload_days: int = Field(30, ge=1)
    #: Days an open alert keeps its personal details after it was raised.
    retention_open_alert_days: int = Field(730, ge=1)
    #: Days a closed alert keeps its personal details after closing, per outcome.
    retention_closed_alert_days: dict[str, int] = Field(
        default_factory=lambda: {"niet-opgepakt": 90}
    )
    retention_closed_alert_default_days: int = Field(365, ge=1)

    @model_validator(mode="after")
    def _retention_for_every_type(self) -> HubSettings:
        missing = sorted({t.value for t in EventType} - self.retention_event_days.keys())
        unknown = sorted(self.retention_event_days.keys() - {t.value for t in EventType})
        if missing or unknown or min(self.retention_event_days.values()) < 1:
            raise ConfigurationError(
                "HUB_RETENTION_EVENT_DAYS needs a positive number of days for each of "
                f"{', '.join(t.value for t in EventType)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(unknown)}" if unknown else "")
            )
        return self


def _is_placeholder(secret: str) -> bool:
    return secret.lower() in _PLACEHOLDERS or secret.startswith("development-only")


class PseudonymSettings(BaseSettings):
    """The regional secrets behind household and person pseudonyms (versioned for rotation).

    Version 1 pseudonymises the address; each later version pseudonymises the pseudonym of
    the version before it, so a rotation can re-key stored pseudonyms without any address.
    """

    model_config = SettingsConfigDict(env_prefix="HUB_", frozen=True, extra="ignore")

    environment: str = "development"
    pseudonym_secret: SecretStr = SecretStr("development-only-pseudonym-secret")
    pseudonym_version: int = Field(1, ge=1)
    #: The secrets of every earlier version, {version: secret}, needed from version 2 on.
    pseudonym_previous_secrets: dict[int, SecretStr] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete_and_not_placeholder(self) -> PseudonymSettings:
        missing = [
            v for v in range(1, self.pseudonym_version) if v not in self.pseudonym_previous_secrets
        ]
        if missing:
            raise ConfigurationError(
                f"HUB_PSEUDONYM_PREVIOUS_SECRETS lacks the secret of version(s) "
                f"{', '.join(map(str, missing))}; pseudonym version {self.pseudonym_version} "
                "is derived from every earlier version"
            )
        secrets = [self.pseudonym_secret.get_secret_value()] + [
            s.get_secret_value() for s in self.pseudonym_previous_secrets.values()
        ]
        if self.environment == "production" and any(
            _is_placeholder(s) or len(s) < 32 for s in secrets
        ):
            raise ConfigurationError(
                "HUB_PSEUDONYM_SECRET (and every previous secret) must be a random secret of at "
                "least 32 characters in production"
            )
        return self

    def secrets(self) -> dict[int, bytes]:
        """Every version's secret, oldest first."""
        known = {
            v: s.get_secret_value().encode() for v, s in self.pseudonym_previous_secrets.items()
        }
        known[self.pseudonym_version] = self.pseudonym_secret.get_secret_value().encode()
        return {v: known[v] for v in range(1, self.pseudonym_version + 1)}


_DEV_MASTER_KEY = base64.b64encode(b"development-only-master-key-32by").decode()


class VaultSettings(BaseSettings):
    """The master key that wraps every household's data key (envelope encryption)."""

    model_config = SettingsConfigDict(env_prefix="HUB_", frozen=True, extra="ignore")

    environment: str = "development"
    #: 32 random bytes, base64. Generate one with `hub privacy new-master-key`.
    master_key: SecretStr = SecretStr(_DEV_MASTER_KEY)
    #: Stored with each wrapped data key so a later master key can be told apart.
    master_key_id: str = Field("mk1", min_length=1, max_length=32)

    @model_validator(mode="after")
    def _thirty_two_bytes(self) -> VaultSettings:
        try:
            raw = base64.b64decode(self.master_key.get_secret_value(), validate=True)
        except binascii.Error:
            raw = b""
        if len(raw) != 32:
            raise ConfigurationError("HUB_MASTER_KEY must be 32 random bytes in base64")
        if self.environment == "production" and raw.startswith(b"development-only"):
            raise ConfigurationError("HUB_MASTER_KEY must not be the development key in production")
        return self

    def master_key_bytes(self) -> bytes:
        return base64.b64decode(self.master_key.get_secret_value())


class DatabaseSettings(BaseSettings):
    """Where the notifier keeps alerts."""

    model_config = SettingsConfigDict(env_prefix="HUB_", frozen=True, extra="ignore")

    database_url: SecretStr = SecretStr("postgresql+asyncpg://postgres@127.0.0.1:5432/hub")
