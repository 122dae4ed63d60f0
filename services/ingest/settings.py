"""Settings of the ingest service. Partners and their keys are in PostgreSQL (`hub partners`)."""

from __future__ import annotations

from pydantic import Field

from services.shared.config import DatabaseSettings, HubSettings, PseudonymSettings, VaultSettings


class IngestSettings(HubSettings, PseudonymSettings, DatabaseSettings, VaultSettings):
    ingest_host: str = "127.0.0.1"
    ingest_port: int = Field(8001, ge=1, le=65535)
    #: Seconds ingest remembers which partner holds a key, so not every event asks the
    #: registry; a rotated-out, disabled or expired key is refused at most this much later.
    #: 0 asks the registry on every request.
    ingest_key_cache_s: float = Field(10.0, ge=0, le=300)
