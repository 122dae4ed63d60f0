"""Settings of the ingest service."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from services.shared.config import DatabaseSettings, HubSettings, PseudonymSettings, VaultSettings
from services.shared.events import EventType


class PartnerKey(BaseModel):
    """A partner and its API key. The partner registry in PostgreSQL replaces this list later."""

    partner_id: str = Field(min_length=1, max_length=64)
    partner_type: str = Field(min_length=1, max_length=32)
    api_key: SecretStr
    event_types: list[EventType]
    may_send_bsn: bool = False


class IngestSettings(HubSettings, PseudonymSettings, DatabaseSettings, VaultSettings):
    ingest_host: str = "127.0.0.1"
    ingest_port: int = Field(8001, ge=1, le=65535)
    #: JSON list of partners in HUB_INGEST_PARTNERS.
    ingest_partners: list[PartnerKey] = Field(default_factory=list)
