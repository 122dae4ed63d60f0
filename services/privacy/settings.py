"""Settings of the privacy officer's commands (`hub privacy ...`)."""

from __future__ import annotations

from services.shared.config import DatabaseSettings, HubSettings, PseudonymSettings


class PrivacySettings(HubSettings, DatabaseSettings, PseudonymSettings):
    """Kafka and topics, retention, the database, and the pseudonym secrets (erase, rotate)."""
