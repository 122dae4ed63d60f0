"""Settings of the ingest service. Partners and their keys are in PostgreSQL (`hub partners`)."""

from __future__ import annotations

from pathlib import Path

from limits import parse_many
from pydantic import Field, field_validator

from services.shared.config import DatabaseSettings, HubSettings, PseudonymSettings, VaultSettings

_MIB = 1024 * 1024


class IngestSettings(HubSettings, PseudonymSettings, DatabaseSettings, VaultSettings):
    ingest_host: str = "127.0.0.1"
    ingest_port: int = Field(8001, ge=1, le=65535)
    #: Seconds ingest remembers which partner holds a key, so not every event asks the
    #: registry; a rotated-out, disabled or expired key is refused at most this much later.
    #: 0 asks the registry on every request.
    ingest_key_cache_s: float = Field(10.0, ge=0, le=300)
    #: Largest JSON body (one event or a batch); larger gets 413 before it is read.
    ingest_max_body_bytes: int = Field(32 * _MIB, ge=1024)
    #: Most events in one `POST /v1/events/{type}/batch`.
    ingest_max_batch_events: int = Field(10_000, ge=1, le=100_000)
    #: Largest CSV file of `POST /v1/uploads/{type}`.
    ingest_max_upload_bytes: int = Field(512 * _MIB, ge=1024)
    #: Requests a partner may make to the POST endpoints, per ingest instance, in the
    #: notation of the `limits` library: `50/second`, `3000/minute`, `10/second;1000/hour`.
    ingest_rate_limit: str = "50/second"
    #: Where uploads wait, encrypted with a key only the processing instance holds, until
    #: their rows are processed; the system's temporary directory when not set.
    ingest_upload_dir: Path | None = None
    #: Rows of an upload validated, stored and published together.
    ingest_upload_chunk_rows: int = Field(1000, ge=1, le=10_000)
    #: Uploads one ingest instance processes at the same time; more wait their turn.
    ingest_uploads_parallel: int = Field(2, ge=1, le=32)
    #: Consume the Kafka intake topics (direct partner producers) in this instance.
    ingest_kafka_intake: bool = True
    #: Seconds between readings of every hub consumer group's lag (`hub_kafka_consumer_lag`,
    #: HUB_LAG_INTERVAL_S).
    lag_interval_s: float = Field(15.0, gt=0, le=3600)

    @field_validator("ingest_rate_limit")
    @classmethod
    def _rate_limit_notation(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like `50/second`: {exc}") from exc
        return value
