"""Sends privacy commands to the matcher and records what a privacy run did."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncSession

from services.shared.avro import AvroCodec
from services.shared.config import HubSettings
from services.shared.db.models import PrivacyRun
from services.shared.events import PRIVACY_COMMAND_SCHEMA_NAME
from services.shared.topics import privacy_commands_topic


class CommandSender:
    """Publishes ERASE, PURGE and REKEY commands, keyed by household like its events."""

    def __init__(self, settings: HubSettings, codec: AvroCodec, producer: AIOKafkaProducer):
        self._topic = privacy_commands_topic(settings)
        self._codec = codec
        self._producer = producer

    async def send(
        self,
        kind: str,
        household_ids: Iterable[str],
        reason: str,
        *,
        cutoffs: dict[str, str] | None = None,
        new_ids: dict[str, str] | None = None,
    ) -> int:
        """Sends one command per household and waits until the broker has them all."""
        issued_at = dt.datetime.now(dt.UTC)
        pending = []
        for household_id in household_ids:
            record = {
                "command_id": str(uuid.uuid4()),
                "kind": kind,
                "household_id": household_id,
                "issued_at": issued_at,
                "reason": reason,
                "cutoffs": cutoffs or {},
                "new_household_id": (new_ids or {}).get(household_id),
                "state_json": None,
            }
            pending.append(
                await self._producer.send(
                    self._topic,
                    self._codec.encode(PRIVACY_COMMAND_SCHEMA_NAME, record),
                    key=household_id.encode(),
                )
            )
        for delivery in pending:
            await delivery
        return len(pending)


def record_run(
    session: AsyncSession,
    kind: str,
    started_at: dt.datetime,
    summary: dict[str, Any],
    reference: str | None = None,
) -> None:
    session.add(PrivacyRun(kind=kind, started_at=started_at, summary=summary, reference=reference))
