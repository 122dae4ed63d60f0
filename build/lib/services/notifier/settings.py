"""Settings of the notifier service."""

from __future__ import annotations

from pydantic import Field, SecretStr

from services.shared.config import DatabaseSettings, HubSettings


class NotifierSettings(HubSettings, DatabaseSettings):
    notifier_host: str = "127.0.0.1"
    notifier_port: int = Field(8003, ge=1, le=65535)
    notifier_group_id: str = "hub-notifier"
    #: Bearer token for the team API until team accounts exist.
    notifier_api_token: SecretStr = SecretStr("development-only-team-token")
